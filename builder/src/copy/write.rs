//! Writing a selection into a destination root. Every parent directory is reached through the
//! snapshotter's `openat2(RESOLVE_IN_ROOT)` resolver, and the final component is always acted on
//! relative to that resolved parent without following it, so an image's `/usr -> /` or
//! `../../x` symlinks cannot send a write outside the root.

use super::archive;
use super::{
    CopySpec, CopyStats, Item, ItemKind, ItemSource, NodeKind, Owner, Selection, SourceRoot, select,
};
use crate::error::{Error, Result};
use kiln_snapshotter::{
    ApplyOptions, RelPath, Root, WhiteoutMode, apply_layer, fd_path, is_overlay_internal,
    list_xattrs, remove_all_at, set_xattr, type_at,
};
use rayon::prelude::*;
use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid};
use rustix::io::Errno;
use std::collections::HashMap;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write as _};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

pub(super) fn apply(sel: &Selection, dest_root: &Path, users_root: &Path) -> Result<CopyStats> {
    let chown = sel
        .chown
        .as_deref()
        .map(|c| Owner::resolve(c, Some(users_root)))
        .transpose()?;
    // Canonical, so that paths the kernel reports for descriptors can be made relative to it.
    let canonical_root = std::fs::canonicalize(dest_root).map_err(|e| Error::io(dest_root, e))?;
    let root = Root::open(&canonical_root).map_err(|e| Error::io(dest_root, e))?;
    // Only root can give files away; a rootless build (root in its user namespace) is root here.
    let can_chown = std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    let mut w = Writer {
        root,
        canonical_root,
        chown,
        can_chown,
        links: HashMap::new(),
        dirs: Vec::new(),
        last_parent: None,
        stats: CopyStats::default(),
    };
    let mut rest = &sel.items[..];
    while !rest.is_empty() {
        let batch = plain_file_run(rest);
        if batch > 1 {
            w.write_files(sel, &rest[..batch])?;
            rest = &rest[batch..];
        } else {
            w.write(sel, &rest[0])?;
            rest = &rest[1..];
        }
    }
    w.finish()?;
    Ok(w.stats)
}

struct Writer {
    root: Root,
    canonical_root: std::path::PathBuf,
    chown: Option<Owner>,
    can_chown: bool,
    /// Source (device, inode) of multiply-linked files already written → their destination.
    links: HashMap<(u64, u64), RelPath>,
    /// Directories whose mode and times are set once nothing more is written into them.
    dirs: Vec<(RelPath, u32, Option<Timestamps>)>,
    /// The directory the last file went into. Most files share their parent with the one
    /// before, and resolving it again from the root costs a lookup per path component. Only
    /// creating regular files keeps it: anything else may change what a path resolves to.
    last_parent: Option<(RelPath, Arc<OwnedFd>)>,
    stats: CopyStats,
}

fn rel_of(dest: &str) -> Result<RelPath> {
    RelPath::parse(dest.as_bytes()).map_err(|reason| Error::CopyInvalid {
        instruction: "COPY",
        reason: format!("destination {dest:?}: {reason}"),
    })
}

/// `rel` as an absolute path inside the destination, for messages and nested copies.
fn shown(rel: &RelPath) -> String {
    if rel.components().is_empty() {
        "/".to_string()
    } else {
        format!("/{}", rel.to_path().display())
    }
}

impl Writer {
    fn err(&self, rel: &RelPath, what: &str, e: impl Into<io::Error>) -> Error {
        Error::io(
            &self.root.path().join(rel.to_path()),
            io::Error::other(format!("{what}: {}", e.into())),
        )
    }

    fn write(&mut self, sel: &Selection, item: &Item) -> Result<()> {
        if item.kind != ItemKind::File {
            self.last_parent = None;
        }
        let mut rel = rel_of(&item.dest)?;
        if let Some(name) = &item.into_dir_name {
            // fsutil resolves a destination written without a trailing `/` (inside the root):
            // an existing directory there receives the file, an existing symlink to a file has
            // its target replaced.
            if self.root.open_dir(&rel).is_ok() {
                rel = rel.join(OsStr::new(name));
            } else if let Some(target) = self.symlink_target(&rel) {
                rel = target;
            }
        }
        let (uid, gid) = item.owner(sel, self.chown);
        if item.created_parent {
            self.ensure_dirs(&rel, (uid, gid))?;
            return Ok(());
        }
        if item.kind == ItemKind::Archive {
            return self.extract(sel, item, &rel);
        }
        let Some((parent, name)) = rel.split_last() else {
            return Err(Error::CopyInvalid {
                instruction: "COPY",
                reason: "cannot replace the root directory with a file".into(),
            });
        };
        let parent_owner = self.chown.map_or((0, 0), |o| (o.uid, o.gid));
        let dir = self.parent_dir(&parent, parent_owner)?;
        let existing = type_at(dir.as_fd(), name).map_err(|e| self.err(&rel, "inspecting", e))?;
        let mode = item.final_mode(sel.chmod.as_ref());
        let source_meta = match &item.source {
            ItemSource::Path(p) => Some(std::fs::symlink_metadata(p).map_err(|e| Error::io(p, e))?),
            _ => None,
        };
        match &item.kind {
            ItemKind::Dir => {
                match existing {
                    Some(FileType::Directory) => {}
                    Some(_) => {
                        remove_all_at(dir.as_fd(), name)
                            .map_err(|e| self.err(&rel, "replacing", e))?;
                        self.mkdir(dir.as_fd(), name, &rel)?;
                    }
                    None => self.mkdir(dir.as_fd(), name, &rel)?,
                }
                self.set_owner(dir.as_fd(), name, &rel, (uid, gid))?;
                self.copy_xattrs(&item.source, dir.as_fd(), name, &rel)?;
                // Mode and times once the children are in: a read-only or non-searchable mode
                // would stop a rootless copy from writing them, and each child changes mtime.
                self.dirs
                    .push((rel.clone(), mode, source_meta.as_ref().map(times_of)));
                self.stats.dirs += 1;
            }
            ItemKind::File => {
                if let Some(meta) = &source_meta
                    && meta.nlink() > 1
                {
                    let key = (meta.dev(), meta.ino());
                    if let Some(first) = self.links.get(&key).cloned() {
                        self.refuse_directory(existing, &rel)?;
                        if existing.is_some() {
                            self.last_parent = None;
                            rustix::fs::unlinkat(&dir, name, AtFlags::empty())
                                .map_err(|e| self.err(&rel, "replacing", e))?;
                        }
                        return self.hard_link(&first, dir.as_fd(), name, &rel);
                    }
                    self.links.insert(key, rel.clone());
                }
                if existing.is_some() {
                    self.last_parent = None;
                }
                let file = PlainFile {
                    item,
                    dir: dir.as_fd(),
                    name,
                    rel: &rel,
                    owner: (uid, gid),
                    mode,
                    source_meta: source_meta.as_ref(),
                };
                self.stats.bytes += self.write_file(&file)?.0;
                self.stats.files += 1;
            }
            ItemKind::Symlink(target) => {
                match existing {
                    Some(FileType::Directory) => {
                        return Err(Error::CopyInvalid {
                            instruction: "COPY",
                            reason: format!(
                                "cannot replace directory {} with a symlink",
                                shown(&rel)
                            ),
                        });
                    }
                    Some(_) => rustix::fs::unlinkat(&dir, name, AtFlags::empty())
                        .map_err(|e| self.err(&rel, "replacing", e))?,
                    None => {}
                }
                rustix::fs::symlinkat(target.as_str(), &dir, name)
                    .map_err(|e| self.err(&rel, "creating symlink", e))?;
                self.set_owner(dir.as_fd(), name, &rel, (uid, gid))?;
                if let Some(meta) = &source_meta {
                    rustix::fs::utimensat(&dir, name, &times_of(meta), AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(|e| self.err(&rel, "setting times", e))?;
                }
                self.stats.symlinks += 1;
            }
            ItemKind::Node(node) => {
                match existing {
                    Some(FileType::Directory) => {
                        return Err(Error::CopyInvalid {
                            instruction: "COPY",
                            reason: format!("cannot replace directory {} with a file", shown(&rel)),
                        });
                    }
                    Some(_) => rustix::fs::unlinkat(&dir, name, AtFlags::empty())
                        .map_err(|e| self.err(&rel, "replacing", e))?,
                    None => {}
                }
                let (file_type, rdev) = match *node {
                    NodeKind::Fifo => (FileType::Fifo, 0),
                    NodeKind::Char { rdev } => (FileType::CharacterDevice, rdev),
                    NodeKind::Block { rdev } => (FileType::BlockDevice, rdev),
                };
                rustix::fs::mknodat(&dir, name, file_type, Mode::from_raw_mode(0o600), rdev)
                    .map_err(|e| self.err(&rel, "creating device node or FIFO", e))?;
                self.set_owner(dir.as_fd(), name, &rel, (uid, gid))?;
                // Owner before mode: chown clears set-id bits.
                rustix::fs::chmodat(&dir, name, Mode::from_raw_mode(mode), AtFlags::empty())
                    .map_err(|e| self.err(&rel, "setting mode", e))?;
                if let Some(meta) = &source_meta {
                    rustix::fs::utimensat(&dir, name, &times_of(meta), AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(|e| self.err(&rel, "setting times", e))?;
                }
                self.stats.files += 1;
            }
            ItemKind::Archive => {}
        }
        Ok(())
    }

    /// Writes a run of plain files (see [`plain_file_run`]) on every core: their directories
    /// are made first, one by one, then the files, which touch nothing but themselves, in
    /// parallel. A file with several links is left to [`Writer::write`] afterwards, in order,
    /// so hard links are made as a sequential copy makes them.
    fn write_files(&mut self, sel: &Selection, items: &[Item]) -> Result<()> {
        let parent_owner = self.chown.map_or((0, 0), |o| (o.uid, o.gid));
        let mut planned = Vec::with_capacity(items.len());
        for item in items {
            let rel = rel_of(&item.dest)?;
            let Some((parent, _)) = rel.split_last() else {
                // A file cannot replace the root: `write` says so.
                return self.write(sel, item);
            };
            let dir = self.parent_dir(&parent, parent_owner)?;
            planned.push((item, rel, dir));
        }
        let this = &*self;
        let written: Vec<Option<(u64, bool)>> = planned
            .par_iter()
            .map(|(item, rel, dir)| {
                let ItemSource::Path(path) = &item.source else {
                    return Ok(None);
                };
                let meta = std::fs::symlink_metadata(path).map_err(|e| Error::io(path, e))?;
                if meta.nlink() > 1 {
                    return Ok(None);
                }
                let Some((_, name)) = rel.split_last() else {
                    return Ok(None);
                };
                let file = PlainFile {
                    item,
                    dir: dir.as_fd(),
                    name,
                    rel,
                    owner: item.owner(sel, this.chown),
                    mode: item.final_mode(sel.chmod.as_ref()),
                    source_meta: Some(&meta),
                };
                this.write_file(&file).map(Some)
            })
            .collect::<Result<_>>()?;
        for ((item, _, _), done) in planned.iter().zip(&written) {
            match done {
                Some((bytes, replaced)) => {
                    self.stats.bytes += bytes;
                    self.stats.files += 1;
                    if *replaced {
                        self.last_parent = None;
                    }
                }
                None => self.write(sel, item)?,
            }
        }
        Ok(())
    }

    fn refuse_directory(&self, existing: Option<FileType>, rel: &RelPath) -> Result<()> {
        if existing == Some(FileType::Directory) {
            return Err(Error::CopyInvalid {
                instruction: "COPY",
                reason: format!("cannot replace directory {} with a file", shown(rel)),
            });
        }
        Ok(())
    }

    /// Writes one regular file (not a hard link to an earlier one), replacing what is at its
    /// place unless that is a directory. Returns the bytes written and whether something was
    /// replaced. Takes `&self` only, so files can be written on several threads.
    fn write_file(&self, file: &PlainFile<'_>) -> Result<(u64, bool)> {
        let PlainFile {
            item,
            dir,
            name,
            rel,
            owner: (uid, gid),
            mode,
            source_meta,
        } = *file;
        let create = || {
            rustix::fs::openat(
                dir,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
        };
        // Usually nothing is there: the exclusive create says so without a stat first.
        let (fd, replaced) = match create() {
            Err(Errno::EXIST) => {
                let existing = type_at(dir, name).map_err(|e| self.err(rel, "inspecting", e))?;
                self.refuse_directory(existing, rel)?;
                rustix::fs::unlinkat(dir, name, AtFlags::empty())
                    .map_err(|e| self.err(rel, "replacing", e))?;
                (create(), true)
            }
            created => (created, false),
        };
        let fd = fd.map_err(|e| self.err(rel, "creating file", e))?;
        let mut out = File::from(fd);
        let bytes = match &item.source {
            ItemSource::Path(p) => {
                let from = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags_nofollow()
                    .open(p)
                    .map_err(|e| Error::io(p, e))?;
                copy_contents(&from, &mut out).map_err(|e| self.err(rel, "writing", e))?
            }
            ItemSource::Inline(text) => {
                out.write_all(text.as_bytes())
                    .map_err(|e| self.err(rel, "writing", e))?;
                text.len() as u64
            }
            ItemSource::None => 0,
        };
        // Owner before mode: chown clears set-id bits.
        if self.can_chown {
            rustix::fs::fchown(&out, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                .map_err(|e| self.err(rel, "setting owner", e))?;
        }
        // After the owner (chown drops file capabilities), before a read-only mode.
        self.copy_xattrs(&item.source, dir, name, rel)?;
        rustix::fs::fchmod(&out, Mode::from_raw_mode(mode))
            .map_err(|e| self.err(rel, "setting mode", e))?;
        if let Some(meta) = source_meta {
            rustix::fs::futimens(&out, &times_of(meta))
                .map_err(|e| self.err(rel, "setting times", e))?;
        }
        Ok((bytes, replaced))
    }

    /// Where the symlink at `rel` leads, resolved inside the root; None when `rel` is not a
    /// symlink or leads nowhere that exists (the link itself is then replaced).
    fn symlink_target(&self, rel: &RelPath) -> Option<RelPath> {
        let (parent, name) = rel.split_last()?;
        let dir = self.root.open_dir(&parent).ok()?;
        if type_at(dir.as_fd(), name).ok()?? != FileType::Symlink {
            return None;
        }
        let fd = self.root.open_in_root(&rel.to_path(), OFlags::PATH).ok()?;
        let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
        let inside = real.strip_prefix(&self.canonical_root).ok()?;
        RelPath::parse(inside.as_os_str().as_bytes()).ok()
    }

    /// Extended attributes of the source (file capabilities, ACLs, `user.*`), as fsutil's
    /// copy keeps them. overlayfs's own attributes are never copied; attributes this process may
    /// not set (privileged namespaces without root) or that the filesystem does not support are
    /// skipped, as a layer apply skips them.
    fn copy_xattrs(
        &self,
        source: &ItemSource,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        rel: &RelPath,
    ) -> Result<()> {
        let ItemSource::Path(src) = source else {
            return Ok(());
        };
        let attrs = list_xattrs(src).map_err(|e| Error::io(src, e))?;
        let target = fd_path(dir, name);
        for (key, value) in attrs {
            if is_overlay_internal(key.as_bytes()) {
                continue;
            }
            if let Err(e) = set_xattr(&target, &key, &value) {
                match Errno::from_io_error(&e) {
                    Some(Errno::NOTSUP) => continue,
                    Some(Errno::PERM) if !self.can_chown => continue,
                    _ => return Err(self.err(rel, "setting extended attribute", e)),
                }
            }
        }
        Ok(())
    }

    fn mkdir(&self, dir: BorrowedFd<'_>, name: &OsStr, rel: &RelPath) -> Result<()> {
        rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o755))
            .map_err(|e| self.err(rel, "creating directory", e))
    }

    fn set_owner(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        rel: &RelPath,
        (uid, gid): (u32, u32),
    ) -> Result<()> {
        if !self.can_chown {
            return Ok(());
        }
        rustix::fs::chownat(
            dir,
            name,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.err(rel, "setting owner", e))
    }

    fn hard_link(
        &mut self,
        first: &RelPath,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        rel: &RelPath,
    ) -> Result<()> {
        let Some((fparent, fname)) = first.split_last() else {
            return Ok(());
        };
        let fdir = self
            .root
            .open_dir(&fparent)
            .map_err(|e| self.err(first, "opening hard link target", e))?;
        rustix::fs::linkat(&fdir, fname, dir, name, AtFlags::empty())
            .map_err(|e| self.err(rel, "creating hard link", e))?;
        self.stats.hardlinks += 1;
        Ok(())
    }

    /// The parent directory for an item: the last one when it is the same, else opened (and
    /// created where missing) with [`Writer::ensure_dirs`].
    fn parent_dir(&mut self, rel: &RelPath, owner: (u32, u32)) -> Result<Arc<OwnedFd>> {
        if let Some((last, fd)) = &self.last_parent
            && last == rel
        {
            return Ok(Arc::clone(fd));
        }
        let fd = Arc::new(self.ensure_dirs(rel, owner)?);
        self.last_parent = Some((rel.clone(), Arc::clone(&fd)));
        Ok(fd)
    }

    /// Open directory `rel`, creating missing components inside the root (0755, owned by
    /// `owner`, as fsutil's `MkdirAll` with the copy's chown).
    fn ensure_dirs(&self, rel: &RelPath, owner: (u32, u32)) -> Result<OwnedFd> {
        let mut existing = 0;
        let mut prefix = RelPath::root();
        for comp in rel.components() {
            prefix = prefix.join(comp);
            if self.root.open_dir(&prefix).is_err() {
                break;
            }
            existing += 1;
        }
        let fd = self
            .root
            .make_dirs(rel)
            .map_err(|e| match Errno::from_io_error(&e) {
                Some(Errno::NOTDIR) | Some(Errno::EXIST) => Error::CopyInvalid {
                    instruction: "COPY",
                    reason: format!(
                        "cannot create directory {}: a file is in the way",
                        shown(rel)
                    ),
                },
                _ => self.err(rel, "creating directory", e),
            })?;
        let mut parent = RelPath::root();
        for (i, comp) in rel.components().iter().enumerate() {
            if i >= existing {
                let pfd = self
                    .root
                    .open_dir(&parent)
                    .map_err(|e| self.err(&parent, "opening", e))?;
                self.set_owner(pfd.as_fd(), comp, &parent.join(comp), owner)?;
            }
            parent = parent.join(comp);
        }
        Ok(fd)
    }

    /// ADD of a local archive: extracted (root-confined, by the snapshotter) into a private
    /// directory, then copied in like a `--from` directory, keeping the archive's owners unless
    /// `--chown` says otherwise.
    fn extract(&mut self, sel: &Selection, item: &Item, rel: &RelPath) -> Result<()> {
        let ItemSource::Path(path) = &item.source else {
            return Ok(());
        };
        let staging = tempfile::tempdir().map_err(|e| Error::io(&std::env::temp_dir(), e))?;
        let reader = archive::open_decompressed(path)?;
        apply_layer(
            reader,
            staging.path(),
            &ApplyOptions::new(WhiteoutMode::Delete),
        )
        .map_err(|e| Error::CopyInvalid {
            instruction: "ADD",
            reason: format!("extracting {}: {e}", path.display()),
        })?;
        let spec = CopySpec {
            sources: vec!["/".into()],
            dest: format!("{}/", shown(rel)),
            workdir: "/".into(),
            chown: sel.chown.clone(),
            ..CopySpec::default()
        };
        let inner = select::select(&spec, &SourceRoot::Dir(staging.path()))?;
        for it in &inner.items {
            self.write(&inner, it)?;
        }
        self.stats.archives += 1;
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        let mut dirs = std::mem::take(&mut self.dirs);
        // Deepest first: a parent's mode may take away the access its children still need.
        dirs.sort_by(|a, b| b.0.cmp(&a.0));
        for (rel, mode, times) in dirs {
            let Some((parent, name)) = rel.split_last() else {
                continue;
            };
            let dir = self
                .root
                .open_dir(&parent)
                .map_err(|e| self.err(&rel, "opening", e))?;
            if type_at(dir.as_fd(), name).map_err(|e| self.err(&rel, "inspecting", e))?
                != Some(FileType::Directory)
            {
                // A later source replaced it.
                continue;
            }
            rustix::fs::chmodat(&dir, name, Mode::from_raw_mode(mode), AtFlags::empty())
                .map_err(|e| self.err(&rel, "setting mode", e))?;
            if let Some(times) = times {
                rustix::fs::utimensat(&dir, name, &times, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| self.err(&rel, "setting times", e))?;
            }
        }
        Ok(())
    }
}

fn times_of(meta: &std::fs::Metadata) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        last_modification: Timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    }
}

/// Opening a source file never follows a symlink in its final component: the selection
/// already resolved what had to be followed.
trait NoFollow {
    fn custom_flags_nofollow(&mut self) -> &mut Self;
}

impl NoFollow for std::fs::OpenOptions {
    fn custom_flags_nofollow(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(OFlags::NOFOLLOW.bits() as i32)
    }
}

/// One regular file to write: where, and with what owner, mode and times.
#[derive(Clone, Copy)]
struct PlainFile<'a> {
    item: &'a Item,
    dir: BorrowedFd<'a>,
    name: &'a OsStr,
    rel: &'a RelPath,
    owner: (u32, u32),
    mode: u32,
    source_meta: Option<&'a std::fs::Metadata>,
}

/// Copies `from` into `out` in the kernel (sendfile until the end of the source), falling back
/// to `io::copy` where the source cannot be spliced. `io::copy` alone would first probe both
/// descriptors with two more stat calls per file.
fn copy_contents(mut from: &File, out: &mut File) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        match rustix::fs::sendfile(&*out, from, None, 1 << 30) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(Errno::INTR) => {}
            Err(Errno::INVAL | Errno::NOSYS) if total == 0 => break,
            Err(e) => return Err(e.into()),
        }
    }
    io::copy(&mut from, out)
}

/// How many items at the head of `items` are plain files that can be written in parallel:
/// regular files from a path, going where they are named (no directory to resolve them into),
/// each to a different place.
fn plain_file_run(items: &[Item]) -> usize {
    let mut seen = HashSet::new();
    items
        .iter()
        .take_while(|item| {
            item.kind == ItemKind::File
                && matches!(item.source, ItemSource::Path(_))
                && !item.created_parent
                && item.into_dir_name.is_none()
                && seen.insert(item.dest.as_str())
        })
        .count()
}
