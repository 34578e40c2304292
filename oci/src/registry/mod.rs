//! Registries: pull images into the store, push them out, log in and out.
//!
//! Everything here is blocking. [`Client`] owns the async machinery (a tokio runtime and an
//! `oci-client` client per registry) and exposes a small set of operations:
//!
//! | operation | what it does |
//! |---|---|
//! | [`Client::fetch_manifest`] | a manifest or index by tag or digest: bytes, media type, digest (at most 4 MiB, digest checked) |
//! | [`Client::put_manifest`] | uploads manifest bytes under a tag (or digest) |
//! | [`Client::blob_exists`] | `HEAD` of a blob |
//! | [`Client::fetch_blob`] | downloads a blob into the store, size and digest verified before it is committed |
//! | [`Client::push_blob`] | uploads a store blob (skipped when present, mounted from another repository when possible, else chunked) |
//!
//! [`pull`] and [`push`] build the image-level commands on them. Credentials come from Docker's
//! config file ([`credentials`]); plain-HTTP registries and mirrors from kiln's
//! ([`RegistryConfig`]).

pub mod credentials;

mod cache_transport;
mod client;
mod config;
mod pull;
mod push;

pub use cache_transport::RegistryTransport;
pub use client::{Client, MAX_MANIFEST_SIZE, RemoteManifest};
pub use config::RegistryConfig;
pub use credentials::{login, logout};
pub use pull::{PullOptions, Pulled, pull};
pub use push::push;

/// Installs the TLS crypto provider (ring) for this process: rustls needs one, and kiln's HTTP
/// clients (registries, `ADD` of URLs) share it. Installing twice, or after another, is harmless.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

use crate::digest::Digest;

/// What went wrong talking to a registry. Every variant names the registry or the reference.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry could not be reached or the connection failed.
    #[error("{registry}: {message}")]
    Connection { registry: String, message: String },
    /// Credentials were needed and missing, or refused.
    #[error("{registry}: authentication required or refused: {message}")]
    Unauthorized { registry: String, message: String },
    /// The repository, tag or blob does not exist there.
    #[error("{what}: not found in the registry")]
    NotFound { what: String },
    /// The registry answered with an error status.
    #[error("{what}: the registry answered {status}: {message}")]
    Status {
        what: String,
        status: u16,
        message: String,
    },
    /// A multi-platform image has nothing for the platform wanted.
    #[error("{reference}: no image for {wanted}; the registry has {available}")]
    NoMatchingPlatform {
        reference: String,
        wanted: String,
        available: String,
    },
    /// Content from the registry is not what its descriptor promised.
    #[error("{what} from {registry}: {reason}")]
    BadContent {
        registry: String,
        what: String,
        reason: String,
    },
    /// A manifest the registry sent cannot be used.
    #[error("{reference}: {reason}")]
    InvalidManifest { reference: String, reason: String },
    /// Reading or writing Docker's credentials failed.
    #[error("credentials: {0}")]
    Credentials(String),
}

impl RegistryError {
    /// What the user can do about it, where there is something.
    pub fn hint(&self) -> Option<String> {
        match self {
            RegistryError::Unauthorized { registry, .. } => {
                Some(format!("log in with `kiln login {registry}`"))
            }
            // It answered TLS with something else: it speaks plain HTTP.
            RegistryError::Connection { registry, message }
                if message.contains("https://")
                    && (message.contains("InvalidContentType")
                        || message.contains("corrupt message")) =>
            {
                Some(format!(
                    "a registry without TLS needs --insecure-registry {registry} \
                     (or \"insecure-registries\" in kiln's config.json)"
                ))
            }
            RegistryError::Connection { message, .. } if message.contains("peer certificate") => {
                Some(
                    "the registry's certificate is not trusted here: add its CA to the system's \
                     certificates (update-ca-certificates)"
                        .into(),
                )
            }
            RegistryError::NoMatchingPlatform { .. } => {
                Some("choose one of them with --platform".into())
            }
            _ => None,
        }
    }
}

/// What a pull or push is doing, for a progress display. Called from several threads.
pub trait Progress: Sync {
    /// A blob is about to be transferred (`size` bytes).
    fn started(&self, _digest: &Digest, _size: u64) {}
    /// `done` of its bytes have been transferred so far.
    fn advanced(&self, _digest: &Digest, _done: u64) {}
    /// The blob is finished; `status` says how (`Pull complete`, `Already exists`, …).
    fn finished(&self, _digest: &Digest, _status: BlobStatus) {}
}

/// How a blob ended up where it is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobStatus {
    /// Downloaded and verified.
    Pulled,
    /// Already in the store: not fetched.
    AlreadyInStore,
    /// Uploaded.
    Pushed,
    /// The registry already had it.
    AlreadyInRegistry,
    /// Mounted from another repository of the same registry.
    Mounted,
}

impl BlobStatus {
    /// Docker's words.
    pub fn message(self) -> &'static str {
        match self {
            BlobStatus::Pulled => "Pull complete",
            BlobStatus::AlreadyInStore => "Already exists",
            BlobStatus::Pushed => "Pushed",
            BlobStatus::AlreadyInRegistry => "Layer already exists",
            BlobStatus::Mounted => "Mounted from another repository",
        }
    }
}

/// A progress display that shows nothing.
pub struct NoProgress;

impl Progress for NoProgress {}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection(message: &str) -> RegistryError {
        RegistryError::Connection {
            registry: "r.lan:5000".into(),
            message: message.into(),
        }
    }

    #[test]
    fn hints_say_what_to_do() {
        let plain = connection(
            "error sending request for url (https://r.lan:5000/v2/): received corrupt message \
             of type InvalidContentType",
        );
        assert!(
            plain
                .hint()
                .unwrap()
                .contains("--insecure-registry r.lan:5000")
        );
        let untrusted = connection(
            "error sending request for url (https://r.lan:5000/v2/): invalid peer certificate: \
             UnknownIssuer",
        );
        assert!(untrusted.hint().unwrap().contains("update-ca-certificates"));
        let dns = connection("error sending request for url (https://r.lan:5000/v2/): dns error");
        assert_eq!(dns.hint(), None);
        let auth = RegistryError::Unauthorized {
            registry: "r.lan:5000".into(),
            message: "401".into(),
        };
        assert_eq!(auth.hint().unwrap(), "log in with `kiln login r.lan:5000`");
    }
}
