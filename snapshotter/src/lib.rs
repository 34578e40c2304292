//! `kiln-snapshotter`: layer directories, overlay snapshots, root-confined layer extraction and
//! upperdir → OCI layer diffs. Knows nothing of Dockerfiles.
//!
//! - [`apply_layer`] turns an uncompressed layer tar into a directory, either as an overlay layer
//!   (whiteouts become overlay whiteouts) or onto a flattened tree (whiteouts delete). Every path
//!   is resolved inside the target root by the kernel (`openat2(RESOLVE_IN_ROOT)`).
//! - [`Snapshotter`] keeps each layer chain once under `<store>/snapshots/<chain-id>/`, mounts
//!   overlay snapshots over them ([`ActiveSnapshot`]) and falls back to copies where overlayfs is
//!   not available.
//! - [`write_tree`], [`diff_upper`] and [`diff_trees`] write deterministic, uncompressed layer tars.
//!
//! A build step, end to end:
//!
//! ```no_run
//! use kiln_snapshotter::{Backend, DiffId, DiffOptions, SANDBOX_MOUNT_POINTS, Snapshotter};
//! # fn main() -> kiln_snapshotter::Result<()> {
//! let snap = Snapshotter::new("/var/lib/kiln".as_ref())?;
//! if let Backend::Copy { reason } = snap.backend() {
//!     eprintln!("warning: {reason}; using copies, which is slower");
//! }
//! // The base image's layers, bottom first: diff-id and uncompressed tar stream.
//! let layers: Vec<(DiffId, std::fs::File)> = Vec::new();
//! let mut chain = None;
//! for (diff_id, tar) in layers {
//!     chain = Some(snap.apply_layer(chain.as_ref(), &diff_id, tar)?);
//! }
//! let step = snap.prepare(chain.as_ref())?;
//! // … run the step with `step.mount_point()` as its root filesystem …
//! let opts = DiffOptions {
//!     clamp_mtime: None,
//!     exclude: SANDBOX_MOUNT_POINTS.iter().map(|p| p.to_string()).collect(),
//! };
//! // In kiln the writer compresses and hashes into a blob; the snapshot of the new chain
//! // is kept for the next step.
//! let committed = step.commit(std::io::sink(), &opts)?;
//! let next = snap.prepare(Some(&committed.chain_id))?;
//! # drop(next);
//! # Ok(())
//! # }
//! ```

mod apply;
mod chain;
mod copy;
mod diff;
mod error;
pub mod gc;
mod mount;
mod paths;
mod privilege;
mod root;
mod snapshotter;
mod sparse;
mod tarwrite;
mod xattr;

pub use apply::{ApplyOptions, ApplyStats, WhiteoutMode, apply_layer};
pub use chain::{ChainId, DiffId, Digest, chain_id, chain_ids};
pub use copy::{CopyStats, copy_tree, remove_tree};
pub use diff::{DiffOptions, DiffStats, SANDBOX_MOUNT_POINTS, diff_trees, diff_upper, write_tree};
pub use error::{Error, Result};
pub use mount::{
    KernelMounter, MountPlan, Mounter, OverlayMount, OverlayOptions, is_mounted, plan_legacy_mount,
};
pub use paths::{RelPath, Root, fd_path, list_dir, remove_all_at, type_at};
pub use root::{SyncStats, mount_points, own_files};
pub use snapshotter::{ActiveSnapshot, Backend, Committed, Snapshotter, SnapshotterOptions};
pub use xattr::{
    XattrNamespace, is_overlay_internal, list as list_xattrs, list_fd as list_fd_xattrs,
    set as set_xattr,
};
