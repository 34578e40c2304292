//! The snapshot store: `<store>/snapshots/<chain-id hex>/`.
//!
//! ```text
//! snapshots/<chain>/fs        the layer applied on its own, overlay whiteouts and all (a lowerdir)
//! snapshots/<chain>/flat      the whole chain flattened (copy snapshotter only)
//! snapshots/<chain>/parent    the parent chain id, empty for a bottom layer
//! snapshots/<chain>/diffid    the layer's diff-id
//! snapshots/.tmp-*            applies in progress; renamed into place when complete
//! snapshots/.active-*         prepared snapshots: upper, work, merged (or a working copy)
//! ```
//!
//! A snapshot that outlives its process (a stopped container's changes) is prepared under a
//! directory its owner chooses ([`Snapshotter::prepare_at`]), with the same layout, and kept
//! there unmounted ([`ActiveSnapshot::unmount_keep`]) until diffed or removed.
//!
//! A snapshot appears under its final name only by `rename`, after its layer was applied and
//! verified against its diff-id, so a killed apply never leaves half a snapshot that later
//! builds would trust.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::apply::{ApplyOptions, WhiteoutMode, apply_layer};
use crate::chain::{ChainId, DiffId, Digest};
use crate::copy::{copy_tree, remove_tree};
use crate::diff::{self, CopyHints, DiffOptions, DiffStats};
use crate::error::{Error, Result};
use crate::mount::{KernelMounter, Mounter, OverlayMount, OverlayOptions, is_mounted};
use crate::root;
use crate::xattr::XattrNamespace;

/// Overlayfs allows at most this many lower layers.
const MAX_CHAIN: usize = 500;

/// How snapshots are made on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Overlay mounts over the layer directories.
    Overlay,
    /// Full copies of the flattened chain, diffed by comparing trees. Slower and bigger; used
    /// where overlayfs cannot be mounted, and says why so the caller can tell the user once.
    Copy { reason: String },
}

/// Choices for [`Snapshotter::with_options`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotterOptions {
    /// Use the copy backend even where overlayfs works.
    pub force_copy: bool,
    /// Mount with `userxattr` and keep overlay markers in `user.overlay.*` (rootless, inside a
    /// user namespace). Defaults to true unless running as root of the initial namespace.
    pub userxattr: bool,
    /// Let device nodes in snapshots be opened (mount without `nodev`). Off by default: a
    /// sandbox mounts its own `/dev`, and a device node planted by an image must not give a
    /// build step the host's disks. Applies to overlay snapshots; copies cannot enforce it.
    pub allow_devices: bool,
}

impl Default for SnapshotterOptions {
    fn default() -> Self {
        SnapshotterOptions {
            force_copy: false,
            userxattr: !crate::privilege::is_host_root(),
            allow_devices: false,
        }
    }
}

/// The result of [`ActiveSnapshot::commit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// Digest of the uncompressed layer tar that was written.
    pub diff_id: DiffId,
    /// The chain of the new snapshot (parent chain + this layer), now in the store.
    pub chain_id: ChainId,
    pub stats: DiffStats,
}

/// Layer snapshots in a store. Cheap to clone; clones share the store.
#[derive(Clone)]
pub struct Snapshotter {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    backend: Backend,
    mounter: Arc<dyn Mounter>,
    options: SnapshotterOptions,
}

impl std::fmt::Debug for Snapshotter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshotter")
            .field("dir", &self.inner.dir)
            .field("backend", &self.inner.backend)
            .field("options", &self.inner.options)
            .finish()
    }
}

impl Snapshotter {
    /// Opens (creating) the snapshots of the store at `store_root`, probing once whether
    /// overlayfs can be mounted here.
    pub fn new(store_root: &Path) -> Result<Self> {
        Self::with_options(store_root, SnapshotterOptions::default())
    }

    pub fn with_options(store_root: &Path, options: SnapshotterOptions) -> Result<Self> {
        Self::with_mounter(store_root, options, Arc::new(KernelMounter::default()))
    }

    /// As [`Snapshotter::with_options`], with the system calls supplied (tests use a mounter
    /// that fails on purpose).
    pub fn with_mounter(
        store_root: &Path,
        options: SnapshotterOptions,
        mounter: Arc<dyn Mounter>,
    ) -> Result<Self> {
        let dir = store_root.join("snapshots");
        fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
        let backend = if options.force_copy {
            Backend::Copy {
                reason: "the copy snapshotter was requested".into(),
            }
        } else {
            match probe_overlay(&dir, mounter.as_ref(), options) {
                Ok(()) => Backend::Overlay,
                Err(e) => Backend::Copy {
                    reason: format!("overlayfs cannot be mounted here: {e}"),
                },
            }
        };
        Ok(Snapshotter {
            inner: Arc::new(Inner {
                dir,
                backend,
                mounter,
                options,
            }),
        })
    }

    pub fn backend(&self) -> &Backend {
        &self.inner.backend
    }

    fn is_overlay(&self) -> bool {
        self.inner.backend == Backend::Overlay
    }

    /// Where overlay markers live for this store's mounts.
    fn namespace(&self) -> XattrNamespace {
        if self.inner.options.userxattr {
            XattrNamespace::User
        } else {
            XattrNamespace::Trusted
        }
    }

    /// The directory holding the chain's tree for this backend: the layer alone (overlay) or
    /// the flattened chain (copy).
    pub fn snapshot_dir(&self, chain: &ChainId) -> PathBuf {
        self.inner.dir.join(chain.hex()).join(self.tree_name())
    }

    fn tree_name(&self) -> &'static str {
        if self.is_overlay() { "fs" } else { "flat" }
    }

    /// Whether the chain's snapshot is in the store.
    pub fn exists(&self, chain: &ChainId) -> bool {
        self.snapshot_dir(chain).is_dir()
    }

    /// The chain ids from `chain` down to its bottom layer (top first).
    pub fn lineage(&self, chain: &ChainId) -> Result<Vec<ChainId>> {
        let mut out = vec![chain.clone()];
        let mut cur = chain.clone();
        loop {
            if !self.exists(&cur) {
                return Err(Error::UnknownSnapshot(cur.to_string()));
            }
            let p = self.inner.dir.join(cur.hex()).join("parent");
            let text = fs::read_to_string(&p).map_err(|e| Error::io("reading", &p, e))?;
            let text = text.trim();
            if text.is_empty() {
                return Ok(out);
            }
            cur = crate::chain::parse(text)?;
            out.push(cur.clone());
            if out.len() > MAX_CHAIN {
                return Err(Error::io(
                    "reading",
                    p,
                    io::Error::other(format!("chain deeper than {MAX_CHAIN} layers (or a loop)")),
                ));
            }
        }
    }

    /// Applies the uncompressed layer `tar` (diff-id `diff_id`) on the chain `parent` and
    /// returns the new chain id. The stream is hashed while applied and must match `diff_id`.
    /// If the snapshot already exists the stream is not read at all.
    pub fn apply_layer(
        &self,
        parent: Option<&ChainId>,
        diff_id: &DiffId,
        tar: impl Read,
    ) -> Result<ChainId> {
        let chain = crate::chain::chain_id(parent, diff_id);
        if self.exists(&chain) {
            return Ok(chain);
        }
        let (tmp, actual) = self.apply_to_temp(parent, tar)?;
        if &actual != diff_id {
            let _ = remove_tree(tmp.path());
            return Err(Error::DiffIdMismatch {
                expected: diff_id.to_string(),
                actual: actual.to_string(),
            });
        }
        self.install(tmp, &chain, parent, diff_id)?;
        Ok(chain)
    }

    /// Applies `tar` into a fresh temporary snapshot directory; returns it and the stream's
    /// diff-id.
    fn apply_to_temp(
        &self,
        parent: Option<&ChainId>,
        tar: impl Read,
    ) -> Result<(tempfile::TempDir, DiffId)> {
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempdir_in(&self.inner.dir)
            .map_err(|e| Error::io("creating a temporary directory in", &self.inner.dir, e))?;
        let tree = tmp.path().join(self.tree_name());
        let mode = if self.is_overlay() {
            fs::create_dir(&tree).map_err(|e| Error::io("creating", &tree, e))?;
            WhiteoutMode::Overlay(self.namespace())
        } else {
            match parent {
                Some(p) => {
                    let from = self.existing_dir(p)?;
                    copy_tree(&from, &tree)?;
                }
                None => fs::create_dir(&tree).map_err(|e| Error::io("creating", &tree, e))?,
            }
            WhiteoutMode::Delete
        };
        let mut hashing = HashingReader {
            inner: tar,
            hash: kiln_oci::digest::Hasher::new(),
        };
        let result = apply_layer(&mut hashing, &tree, &ApplyOptions::new(mode)).and_then(|_| {
            // The diff-id covers the whole stream, end-of-archive padding included.
            io::copy(&mut hashing, &mut io::sink())
                .map(|_| ())
                .map_err(|e| Error::Tar {
                    at: None,
                    source: e,
                })
        });
        if let Err(e) = result {
            let _ = remove_tree(&tree);
            return Err(e);
        }
        Ok((tmp, hashing.hash.finish().0))
    }

    /// Moves an applied temporary snapshot to its final name. Whoever renames first wins; a
    /// concurrent duplicate is discarded.
    fn install(
        &self,
        tmp: tempfile::TempDir,
        chain: &ChainId,
        parent: Option<&ChainId>,
        diff_id: &DiffId,
    ) -> Result<()> {
        let tmp_path = tmp.keep();
        let result = self.install_kept(&tmp_path, chain, parent, diff_id);
        let _ = remove_tree(&tmp_path);
        result
    }

    fn install_kept(
        &self,
        tmp: &Path,
        chain: &ChainId,
        parent: Option<&ChainId>,
        diff_id: &DiffId,
    ) -> Result<()> {
        let write = |name: &str, text: &str| {
            let p = tmp.join(name);
            fs::write(&p, text).map_err(|e| Error::io("writing", &p, e))
        };
        write("parent", parent.map(Digest::as_str).unwrap_or(""))?;
        write("diffid", diff_id.as_str())?;
        let dest = self.inner.dir.join(chain.hex());
        match fs::rename(tmp, &dest) {
            Ok(()) => return Ok(()),
            // The chain directory exists: another process installed it, or it holds the
            // other backend's tree. Add ours beside it.
            Err(e) if is_exists(&e) => {}
            Err(e) => return Err(Error::io("installing snapshot", &dest, e)),
        }
        let tree = self.tree_name();
        match fs::rename(tmp.join(tree), dest.join(tree)) {
            Ok(()) => Ok(()),
            Err(_) if self.exists(chain) => Ok(()),
            Err(e) => Err(Error::io("installing snapshot", dest.join(tree), e)),
        }
    }

    fn existing_dir(&self, chain: &ChainId) -> Result<PathBuf> {
        let d = self.snapshot_dir(chain);
        if d.is_dir() {
            Ok(d)
        } else {
            Err(Error::UnknownSnapshot(chain.to_string()))
        }
    }

    /// Removes a snapshot from the store (the caller makes sure no chain above it is in use).
    pub fn remove(&self, chain: &ChainId) -> Result<()> {
        remove_tree(&self.inner.dir.join(chain.hex()))
    }

    /// Removes what killed processes left in the store: half-applied layers (`.tmp-*`),
    /// probes and prepared snapshots (`.active-*`, unmounted first if still mounted). Only
    /// call this while holding the store lock exclusively: it cannot tell a dead process's
    /// snapshot from a live one's.
    pub fn sweep(&self) -> Result<()> {
        let dir = &self.inner.dir;
        for e in fs::read_dir(dir).map_err(|e| Error::io("listing", dir, e))? {
            let e = e.map_err(|e| Error::io("listing", dir, e))?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if !(name.starts_with(".tmp-")
                || name.starts_with(".probe-")
                || name.starts_with(".active-"))
            {
                continue;
            }
            let path = e.path();
            let merged = path.join("merged");
            if is_mounted(&merged) {
                self.inner.mounter.unmount(&merged)?;
                if is_mounted(&merged) {
                    continue;
                }
            }
            remove_tree(&path)?;
        }
        Ok(())
    }

    /// Prepares a writable snapshot on top of `parent` (an empty one for None).
    pub fn prepare(&self, parent: Option<&ChainId>) -> Result<ActiveSnapshot> {
        let dir = tempfile::Builder::new()
            .prefix(".active-")
            .tempdir_in(&self.inner.dir)
            .map_err(|e| Error::io("creating a temporary directory in", &self.inner.dir, e))?
            .keep();
        self.prepare_in(parent, dir)
    }

    /// As [`Snapshotter::prepare`], with the snapshot's directories (upper, work and mount point,
    /// or the working copy) under `dir`, which must not exist yet; its parent must, on the
    /// store's filesystem. Meant for snapshots that outlive one process: see
    /// [`ActiveSnapshot::unmount_keep`], [`Snapshotter::diff_kept`] and
    /// [`Snapshotter::remove_kept`].
    pub fn prepare_at(&self, parent: Option<&ChainId>, dir: &Path) -> Result<ActiveSnapshot> {
        fs::create_dir(dir).map_err(|e| Error::io("creating", dir, e))?;
        self.prepare_in(parent, dir.to_path_buf())
    }

    fn prepare_in(&self, parent: Option<&ChainId>, dir: PathBuf) -> Result<ActiveSnapshot> {
        let mut active = ActiveSnapshot {
            snapshotter: self.clone(),
            parent: parent.cloned(),
            dir: dir.clone(),
            state: State::Cleaned,
        };
        // From here on `active` owns `dir`: any error below drops it, which unmounts and
        // removes whatever was made.
        active.state = if self.is_overlay() {
            self.prepare_overlay(parent, &dir)?
        } else {
            self.prepare_copy(parent, &dir)?
        };
        Ok(active)
    }

    /// Prepares the live root filesystem `root` (normally `/`) as the writable snapshot of a
    /// step that runs without isolation: everything in it but `exclude` (root-relative or
    /// absolute paths), kiln's own files, other filesystems and mount points is made to match
    /// `parent`'s flattened chain, and its metadata recorded so that the diff finds what the
    /// step changed. Needs the copy backend (which keeps flattened chains).
    pub fn prepare_root(
        &self,
        parent: Option<&ChainId>,
        root: &Path,
        exclude: &[String],
    ) -> Result<ActiveSnapshot> {
        if self.is_overlay() {
            return Err(Error::io(
                "preparing",
                root,
                io::Error::other("a live root needs the copy snapshotter (force_copy)"),
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix(".active-")
            .tempdir_in(&self.inner.dir)
            .map_err(|e| Error::io("creating a temporary directory in", &self.inner.dir, e))?
            .keep();
        let mut active = ActiveSnapshot {
            snapshotter: self.clone(),
            parent: parent.cloned(),
            dir: dir.clone(),
            state: State::Cleaned,
        };
        let lower = match parent {
            Some(p) => self.existing_dir(p)?,
            None => {
                let empty = dir.join(COPY_WORK);
                fs::create_dir(&empty).map_err(|e| Error::io("creating", &empty, e))?;
                empty
            }
        };
        let device = {
            use std::os::unix::fs::MetadataExt;
            fs::symlink_metadata(root)
                .map_err(|e| Error::io("reading", root, e))?
                .dev()
        };
        let store = self
            .inner
            .dir
            .parent()
            .map(|p| p.to_string_lossy().into_owned());
        let mounts = root::mount_points();
        let own = root::own_files();
        let exclusions = root::Exclusions::new(
            exclude
                .iter()
                .chain(store.iter())
                .chain(mounts.iter())
                .chain(own.iter())
                .filter_map(|p| relative_to(root, p)),
            Some(device),
        );
        let (_, before) = root::sync(&lower, root, &exclusions)?;
        active.state = State::Root {
            root: root.to_path_buf(),
            lower,
            before,
            exclusions,
        };
        Ok(active)
    }

    /// Writes the changes of a snapshot kept by [`ActiveSnapshot::unmount_keep`] in `dir`, made
    /// on `parent`, as an uncompressed layer tar into `out`.
    pub fn diff_kept(
        &self,
        dir: &Path,
        parent: Option<&ChainId>,
        out: impl Write,
        opts: &DiffOptions,
    ) -> Result<DiffStats> {
        let merged = dir.join(MERGED);
        if is_mounted(&merged) {
            return Err(Error::Mount {
                op: "diffing",
                target: merged,
                hint: Some("the snapshot is still mounted (in use)".into()),
                source: io::Error::from(io::ErrorKind::ResourceBusy),
            });
        }
        // The layout tells which backend made it, whatever this snapshotter uses now.
        let upper = dir.join(UPPER);
        if upper.is_dir() {
            return diff::diff_upper(&upper, out, opts);
        }
        let work = dir.join(COPY_WORK);
        if !work.is_dir() {
            return Err(Error::io(
                "diffing",
                dir,
                io::Error::other("not a kept snapshot: it has neither an upper layer nor a copy"),
            ));
        }
        let Some(parent) = parent else {
            return diff::write_tree(&work, out, opts);
        };
        // A copy is compared with the flattened chain it was copied from.
        let lower = self.inner.dir.join(parent.hex()).join("flat");
        if !lower.is_dir() {
            return Err(Error::UnknownSnapshot(parent.to_string()));
        }
        // Directory identities lived only in the process that made the copy; the stamp's
        // change time is on disk and still spares comparing untouched files.
        let stamp = lstat_ctime(&dir.join(COPY_STAMP))?;
        let hints = CopyHints {
            copied_at: Some(stamp),
            dirs: Default::default(),
        };
        diff::diff_copy(&lower, &work, out, opts, &hints)
    }

    /// Removes a kept snapshot's directory, unmounting it first if a killed process left it
    /// mounted.
    pub fn remove_kept(&self, dir: &Path) -> Result<()> {
        let merged = dir.join(MERGED);
        if is_mounted(&merged) {
            self.inner.mounter.unmount(&merged)?;
            // Never remove a tree through a live mount: that would delete lower layers' files.
            if is_mounted(&merged) {
                return Err(Error::Mount {
                    op: "unmounting",
                    target: merged,
                    hint: Some("still mounted; its directory is left in place".into()),
                    source: io::Error::from(io::ErrorKind::ResourceBusy),
                });
            }
        }
        if dir.exists() {
            remove_tree(dir)?;
        }
        Ok(())
    }

    fn prepare_overlay(&self, parent: Option<&ChainId>, dir: &Path) -> Result<State> {
        let mkdir = |name: &str| {
            let p = dir.join(name);
            fs::create_dir(&p)
                .map_err(|e| Error::io("creating", &p, e))
                .map(|()| p)
        };
        let upper = mkdir(UPPER)?;
        let work = mkdir("work")?;
        let merged = mkdir(MERGED)?;
        let scratch = mkdir("links")?;
        let lowers = match parent {
            Some(p) => self
                .lineage(p)?
                .iter()
                .map(|c| self.snapshot_dir(c))
                .collect(),
            // overlayfs needs a lower layer; an empty one makes a scratch snapshot.
            None => vec![mkdir("empty")?],
        };
        let m = OverlayMount {
            lowers,
            upper: upper.clone(),
            work,
            target: merged.clone(),
            options: OverlayOptions {
                userxattr: self.inner.options.userxattr,
                nodev: !self.inner.options.allow_devices,
            },
        };
        self.inner.mounter.mount_overlay(&m, &scratch)?;
        Ok(State::Overlay {
            merged,
            upper,
            mounted: true,
        })
    }

    fn prepare_copy(&self, parent: Option<&ChainId>, dir: &Path) -> Result<State> {
        let work = dir.join(COPY_WORK);
        match parent {
            Some(p) => {
                copy_tree(&self.existing_dir(p)?, &work)?;
            }
            None => fs::create_dir(&work).map_err(|e| Error::io("creating", &work, e))?,
        }
        // Written after the copy: anything changed later has a newer change time than this.
        let stamp = dir.join(COPY_STAMP);
        fs::write(&stamp, b"").map_err(|e| Error::io("writing", &stamp, e))?;
        let hints = CopyHints::capture(&work, &stamp)?;
        let lower = parent.map(|p| self.snapshot_dir(p));
        Ok(State::Copy { work, lower, hints })
    }
}

/// The names inside a prepared snapshot's directory that outlive it when kept.
const UPPER: &str = "upper";
const MERGED: &str = "merged";
const COPY_WORK: &str = "work";
const COPY_STAMP: &str = "copied";

/// `path` (absolute, or already relative) as a path relative to `root`; `None` outside it.
fn relative_to<'a>(root: &Path, path: &'a str) -> Option<&'a str> {
    if !path.starts_with('/') {
        return Some(path);
    }
    let rest = Path::new(path).strip_prefix(root).ok()?;
    let rel = rest.to_str()?;
    (!rel.is_empty()).then_some(rel)
}

fn lstat_ctime(path: &Path) -> Result<(i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let md = fs::symlink_metadata(path).map_err(|e| Error::io("reading", path, e))?;
    Ok((md.ctime(), md.ctime_nsec()))
}

/// EEXIST or ENOTEMPTY: `rename` found its target directory already there.
fn is_exists(e: &io::Error) -> bool {
    use rustix::io::Errno;
    matches!(
        Errno::from_io_error(e),
        Some(Errno::EXIST | Errno::NOTEMPTY)
    )
}

fn probe_overlay(
    snapshots: &Path,
    mounter: &dyn Mounter,
    options: SnapshotterOptions,
) -> Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix(".probe-")
        .tempdir_in(snapshots)
        .map_err(|e| Error::io("creating a temporary directory in", snapshots, e))?;
    let p = |n: &str| tmp.path().join(n);
    for d in ["lower", "upper", "work", "merged", "links"] {
        fs::create_dir(p(d)).map_err(|e| Error::io("creating", p(d), e))?;
    }
    fs::write(p("lower/probe"), b"kiln").map_err(|e| Error::io("writing", p("lower/probe"), e))?;
    let m = OverlayMount {
        lowers: vec![p("lower")],
        upper: p("upper"),
        work: p("work"),
        target: p("merged"),
        options: OverlayOptions {
            userxattr: options.userxattr,
            nodev: !options.allow_devices,
        },
    };
    mounter.mount_overlay(&m, &p("links"))?;
    let seen = fs::read(p("merged/probe"));
    // Deleting through the mount checks that whiteouts can be created in the upper layer.
    let deleted = fs::remove_file(p("merged/probe"));
    if let Err(e) = mounter.unmount(&p("merged")) {
        // Removing the directory now would recurse through the live mount; leave it.
        let _ = tmp.keep();
        return Err(e);
    }
    let content =
        seen.map_err(|e| Error::io("reading through the probe mount", p("merged/probe"), e))?;
    deleted.map_err(|e| Error::io("deleting through the probe mount", p("merged/probe"), e))?;
    if content != b"kiln" {
        return Err(Error::io(
            "reading through the probe mount",
            p("merged/probe"),
            io::Error::other("the lower file's content did not show through"),
        ));
    }
    drop(tmp);
    Ok(())
}

enum State {
    Overlay {
        merged: PathBuf,
        upper: PathBuf,
        mounted: bool,
    },
    Copy {
        work: PathBuf,
        lower: Option<PathBuf>,
        hints: CopyHints,
    },
    /// The live root filesystem (no isolation), synced to `lower` before the step.
    Root {
        root: PathBuf,
        lower: PathBuf,
        before: root::Index,
        exclusions: root::Exclusions,
    },
    Cleaned,
}

/// A writable snapshot. Unmounted and removed by [`ActiveSnapshot::commit`],
/// [`ActiveSnapshot::abort`] or, failing those, when dropped.
pub struct ActiveSnapshot {
    snapshotter: Snapshotter,
    parent: Option<ChainId>,
    dir: PathBuf,
    state: State,
}

impl std::fmt::Debug for ActiveSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActiveSnapshot")
            .field("parent", &self.parent)
            .field("mount_point", &self.mount_point())
            .finish()
    }
}

impl ActiveSnapshot {
    /// The root filesystem to run in or copy into.
    pub fn mount_point(&self) -> &Path {
        match &self.state {
            State::Overlay { merged, .. } => merged,
            State::Copy { work, .. } => work,
            State::Root { root, .. } => root,
            State::Cleaned => &self.dir,
        }
    }

    /// The chain this snapshot is based on.
    pub fn parent(&self) -> Option<&ChainId> {
        self.parent.as_ref()
    }

    /// Writes the snapshot's changes as an uncompressed layer tar into `out`.
    pub fn diff(&self, out: impl Write, opts: &DiffOptions) -> Result<DiffStats> {
        match &self.state {
            State::Overlay { upper, .. } => diff::diff_upper(upper, out, opts),
            State::Copy {
                work,
                lower: Some(lower),
                hints,
            } => diff::diff_copy(lower, work, out, opts, hints),
            State::Copy {
                work, lower: None, ..
            } => diff::write_tree(work, out, opts),
            State::Root {
                root,
                lower,
                before,
                exclusions,
            } => root::diff(lower, root, before, exclusions, out, opts),
            State::Cleaned => Err(Error::io(
                "diffing",
                &self.dir,
                io::Error::other("the snapshot was already released"),
            )),
        }
    }

    /// Writes the diff into `out` and, in the same pass, applies it as a new snapshot in the
    /// store (so the next step mounts exactly what the layer says, whatever the sandbox left
    /// behind outside it). Then unmounts and removes this snapshot.
    pub fn commit(mut self, out: impl Write, opts: &DiffOptions) -> Result<Committed> {
        let result = self.commit_inner(out, opts);
        let cleaned = self.cleanup();
        let committed = result?;
        cleaned?;
        Ok(committed)
    }

    fn commit_inner(&self, mut out: impl Write, opts: &DiffOptions) -> Result<Committed> {
        let (reader, writer) =
            io::pipe().map_err(|e| Error::io("creating a pipe for", &self.dir, e))?;
        let snap = &self.snapshotter;
        let parent = self.parent.as_ref();
        let (diffed, applied) = std::thread::scope(|s| {
            let applier = s.spawn(move || snap.apply_to_temp(parent, reader));
            let mut tee = Tee {
                a: &mut out,
                b: Some(writer),
            };
            let diffed = self.diff(&mut tee, opts);
            // Closing the pipe ends the applier's input.
            drop(tee.b.take());
            (diffed, applier.join())
        });
        let applied = applied.map_err(|_| Error::Thread("layer apply"))?;
        let err = match (diffed, applied) {
            (Ok(stats), Ok((tmp, diff_id))) => {
                let chain_id = crate::chain::chain_id(parent, &diff_id);
                if snap.exists(&chain_id) {
                    let _ = remove_tree(&tmp.keep());
                } else {
                    snap.install(tmp, &chain_id, parent, &diff_id)?;
                }
                return Ok(Committed {
                    diff_id,
                    chain_id,
                    stats,
                });
            }
            // The diff failed only because the applier stopped reading (a full disk, say): the
            // applier's error is the cause.
            (Err(e), Err(applier)) if is_broken_pipe(&e) => applier,
            (Err(e), _) => e,
            (Ok(_), Err(e)) => e,
        };
        Err(err)
    }

    /// As [`ActiveSnapshot::commit`], for a snapshot whose changes kiln made itself (files it
    /// copied in, directories it created), never a command: on overlay, with nothing excluded
    /// and no mtime clamped, the upper directory already holds exactly what the layer says, so
    /// it is diffed once and then renamed into the store as the new snapshot instead of being
    /// written a second time from the diff. `diff_id` gives the digest of what `out` was handed
    /// (a layer writer hashes it anyway). Anything else takes the path of `commit`.
    pub fn commit_upper<W: Write>(
        mut self,
        mut out: W,
        opts: &DiffOptions,
        diff_id: impl FnOnce(&mut W) -> Result<DiffId>,
    ) -> Result<Committed> {
        let in_place = matches!(self.state, State::Overlay { .. })
            && opts.exclude.is_empty()
            && opts.clamp_mtime.is_none();
        if !in_place {
            return self.commit(out, opts);
        }
        let result = self.commit_upper_inner(&mut out, opts, diff_id);
        let cleaned = self.cleanup();
        let committed = result?;
        cleaned?;
        Ok(committed)
    }

    fn commit_upper_inner<W: Write>(
        &mut self,
        out: &mut W,
        opts: &DiffOptions,
        diff_id: impl FnOnce(&mut W) -> Result<DiffId>,
    ) -> Result<Committed> {
        // Nothing may write through the mount while the upper directory is read and moved.
        self.unmount()?;
        let State::Overlay { upper, .. } = &self.state else {
            return Err(Error::io(
                "committing",
                &self.dir,
                io::Error::other("not an overlay snapshot"),
            ));
        };
        let stats = diff::diff_upper(upper, &mut *out, opts)?;
        let diff_id = diff_id(out)?;
        let snap = &self.snapshotter;
        let parent = self.parent.as_ref();
        let chain_id = crate::chain::chain_id(parent, &diff_id);
        if !snap.exists(&chain_id) {
            let tmp = tempfile::Builder::new()
                .prefix(".tmp-")
                .tempdir_in(&snap.inner.dir)
                .map_err(|e| Error::io("creating a temporary directory in", &snap.inner.dir, e))?;
            let tree = tmp.path().join(snap.tree_name());
            fs::rename(upper, &tree).map_err(|e| Error::io("moving", upper, e))?;
            snap.install(tmp, &chain_id, parent, &diff_id)?;
        }
        Ok(Committed {
            diff_id,
            chain_id,
            stats,
        })
    }

    /// Unmounts and removes the snapshot, discarding its changes.
    pub fn abort(mut self) -> Result<()> {
        self.cleanup()
    }

    /// Unmounts the snapshot but keeps its changes (the upper layer, or the working copy) in
    /// its directory, which is returned; [`Snapshotter::diff_kept`] turns them into a layer
    /// later and [`Snapshotter::remove_kept`] discards them.
    pub fn unmount_keep(mut self) -> Result<PathBuf> {
        self.unmount()?;
        self.state = State::Cleaned;
        // An emptied path makes the drop below find nothing to remove.
        Ok(std::mem::take(&mut self.dir))
    }

    fn cleanup(&mut self) -> Result<()> {
        self.unmount()?;
        self.state = State::Cleaned;
        if !self.dir.as_os_str().is_empty() && self.dir.exists() {
            remove_tree(&self.dir)?;
        }
        Ok(())
    }

    fn unmount(&mut self) -> Result<()> {
        if let State::Overlay {
            merged, mounted, ..
        } = &mut self.state
        {
            if *mounted {
                self.snapshotter.inner.mounter.unmount(merged)?;
                *mounted = false;
            }
            // Never remove a tree through a live mount: that would delete lower layers' files.
            if is_mounted(merged) {
                return Err(Error::Mount {
                    op: "unmounting",
                    target: merged.clone(),
                    hint: Some("still mounted; its directory is left in place".into()),
                    source: io::Error::from(io::ErrorKind::ResourceBusy),
                });
            }
        }
        Ok(())
    }
}

impl Drop for ActiveSnapshot {
    fn drop(&mut self) {
        // The last guard: commit and abort report errors, a drop can only try.
        let _ = self.cleanup();
    }
}

/// Writes everything to `a` and, while `b` accepts it, to `b`.
struct Tee<'a, A: Write, B: Write> {
    a: &'a mut A,
    b: Option<B>,
}

impl<A: Write, B: Write> Write for Tee<'_, A, B> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.a.write_all(buf)?;
        if let Some(b) = &mut self.b {
            b.write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.a.flush()?;
        if let Some(b) = &mut self.b {
            b.flush()?;
        }
        Ok(())
    }
}

struct HashingReader<R: Read> {
    inner: R,
    hash: kiln_oci::digest::Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// Whether `e` is a write into a pipe whose reader has gone.
fn is_broken_pipe(e: &Error) -> bool {
    match e {
        Error::Io { source, .. } | Error::Tar { source, .. } => {
            source.kind() == io::ErrorKind::BrokenPipe
        }
        _ => false,
    }
}
