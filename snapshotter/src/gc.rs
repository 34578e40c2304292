//! Housekeeping of what kiln keeps in the store besides images: layer snapshots
//! (`snapshots/<chain>/`) and build cache records (`cache/<key>`).
//!
//! - [`SnapshotGc`] and [`CacheRecords`] join `kiln prune` as
//!   [`GcParticipant`](kiln_oci::gc::GcParticipant)s: a snapshot lives while a tagged image, a
//!   live cache record, a container or a mounted overlay needs its chain; a record lives while
//!   the blobs it names exist, and keeps them alive.
//! - [`fsck`] checks that every snapshot is what its name says and every record is readable and
//!   complete; with `repair` it removes what is broken.
//! - [`sweep_debris`] removes what a killed kiln left in `snapshots/` when nobody else is using
//!   the store.
//!
//! Cache records live here rather than in the builder because the snapshot collector must read
//! them (a record keeps its snapshot) and `oci` knows nothing of builds; the builder writes
//! them, this module only reads and deletes them.

mod fsck;
mod records;
mod roots;
mod snapshots;
mod sweep;

pub use fsck::{Finding, FsckReport, fsck};
pub use records::{CacheRecords, Record, RecordRefs};
pub use roots::{Roots, mounted_chains};
pub use snapshots::SnapshotGc;
pub use sweep::{Sweep, sweep_debris};

use std::io;
use std::path::PathBuf;

/// What the housekeeping of snapshots and records can fail with.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// Reading or removing a snapshot failed.
    #[error(transparent)]
    Snapshot(#[from] crate::Error),
    /// The store (index, images, blobs, lock) failed.
    #[error(transparent)]
    Store(#[from] kiln_oci::Error),
    /// A directory of the store could not be listed or an entry removed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl GcError {
    fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        GcError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// The collector speaks `kiln_oci::Error`; its messages name the path either way.
impl From<GcError> for kiln_oci::Error {
    fn from(error: GcError) -> Self {
        match error {
            GcError::Store(e) => e,
            GcError::Io { op, path, source } => kiln_oci::Error::Io {
                path,
                source: io::Error::new(source.kind(), format!("{op}: {source}")),
            },
            GcError::Snapshot(crate::Error::Io { op, path, source }) => kiln_oci::Error::Io {
                path,
                source: io::Error::new(source.kind(), format!("{op}: {source}")),
            },
            GcError::Snapshot(other) => kiln_oci::Error::Io {
                path: PathBuf::from("snapshots"),
                source: io::Error::other(other.to_string()),
            },
        }
    }
}

/// Result of the housekeeping functions.
pub type GcResult<T> = std::result::Result<T, GcError>;
