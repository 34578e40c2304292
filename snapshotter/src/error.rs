//! The crate's one error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while applying, snapshotting or diffing layers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tar entry that kiln refuses to apply: it would escape the root, has an invalid name, or
    /// cannot be represented on this system.
    #[error("layer entry {name:?}: {reason}")]
    Entry { name: String, reason: String },

    /// The layer stream itself is broken (truncated, corrupt header, lying sizes).
    #[error("reading layer tar{}: {source}", at.as_ref().map(|n| format!(" at entry {n:?}")).unwrap_or_default())]
    Tar {
        at: Option<String>,
        #[source]
        source: io::Error,
    },

    /// A filesystem operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Mounting or unmounting an overlay failed.
    #[error("{op} overlay at {}: {source}{}", target.display(), hint.as_deref().map(|h| format!(" ({h})")).unwrap_or_default())]
    Mount {
        op: &'static str,
        target: PathBuf,
        hint: Option<String>,
        #[source]
        source: io::Error,
    },

    /// A digest string that is not `sha256:<64 lowercase hex>`.
    #[error("invalid digest {0:?}: expected sha256:<64 hex digits>")]
    InvalidDigest(String),

    /// The bytes applied did not hash to the diff-id the caller announced.
    #[error("layer content does not match its diff-id: expected {expected}, got {actual}")]
    DiffIdMismatch { expected: String, actual: String },

    /// A chain id that has no snapshot in the store.
    #[error("no snapshot for chain {0} in the store; apply its layers first")]
    UnknownSnapshot(String),

    /// A background thread of the snapshotter stopped without reporting (it panicked).
    #[error("{0} thread stopped unexpectedly")]
    Thread(&'static str),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
        source: impl Into<io::Error>,
    ) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source: source.into(),
        }
    }

    pub(crate) fn entry(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Entry {
            name: name.into(),
            reason: reason.into(),
        }
    }
}
