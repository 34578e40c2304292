//! The one error type of `kiln-oci`. Every variant names the thing that failed (a path, a digest,
//! a reference) so the CLI can print it without more context.

use crate::digest::Digest;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid digest {0:?}: expected sha256:<64 lowercase hex digits>")]
    InvalidDigest(String),
    #[error("blob {0} is not in the store")]
    BlobNotFound(Digest),
    #[error("blob {digest} is corrupt: {reason} (run `kiln fsck --repair`)")]
    CorruptBlob { digest: Digest, reason: String },
    #[error("content does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("invalid reference {input:?}: {reason}")]
    InvalidReference { input: String, reason: String },
    #[error("no such image: {0}")]
    ImageNotFound(String),
    #[error("image id prefix {0:?} is ambiguous: it matches more than one image")]
    AmbiguousImageId(String),
    #[error("image {image} is invalid: {reason}")]
    InvalidImage { image: String, reason: String },
    #[error("{what}: invalid JSON: {source}")]
    Json {
        what: String,
        source: serde_json::Error,
    },
    #[error("{what} is too large ({size} bytes; the limit is {limit})")]
    TooLarge { what: String, size: u64, limit: u64 },
    #[error("archive: {0}")]
    Archive(String),
    #[error("{0} is not a valid OCI image layout: {1}")]
    InvalidLayout(PathBuf, String),
    #[error("{0}")]
    Unsupported(String),
    #[error("compression: {0}")]
    Compression(String),
    #[error(transparent)]
    Registry(Box<crate::registry::RegistryError>),
}

pub type Result<T> = std::result::Result<T, Error>;

impl From<crate::registry::RegistryError> for Error {
    fn from(e: crate::registry::RegistryError) -> Self {
        Error::Registry(Box::new(e))
    }
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn json(what: impl Into<String>, source: serde_json::Error) -> Self {
        Error::Json {
            what: what.into(),
            source,
        }
    }

    pub fn archive(message: impl Into<String>) -> Self {
        Error::Archive(message.into())
    }
}

/// Adds the path to a bare `io::Error`.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::result::Result<T, std::io::Error> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::io(path, source))
    }
}
