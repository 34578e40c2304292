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
    list_fd_xattrs, list_xattrs, remove_all_at, set_xattr, type_at,
};
use rayon::prelude::*;
use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid};
use rustix::io::Errno;
use std::collections::HashMap;
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read as _, Write as _};
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
        creation: std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| Creation::parse(&status)),
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
    /// What a file this process creates gets unasked; None when unknown (`/proc` missing),
    /// and every file then has its owner and mode set.
    creation: Option<Creation>,
    /// Source (device, inode) of multiply-linked files already written → their destination.
    links: HashMap<(u64, u64), RelPath>,
    /// Directories whose mode and times are set once nothing more is written into them.
    dirs: Vec<(RelPath, u32, Option<Timestamps>)>,
    /// The directory the last file went into. Most files share their parent with the one
    /// before, and resolving it again from the root costs a lookup per path component. Only
    /// creating regular files keeps it: anything else may change what a path resolves to.
    last_parent: Option<(RelPath, Arc<ParentDir>)>,
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
        // A file's source is opened once and described through that descriptor; other kinds
        // are described by path (a symlink cannot be opened for reading).
        let source = match (&item.kind, &item.source) {
            (ItemKind::File, ItemSource::Path(p)) => Some(Source::open(p)?),
            _ => None,
        };
        let source_meta = match (&item.kind, &item.source) {
            (ItemKind::File, _) => None,
            (_, ItemSource::Path(p)) => {
                Some(std::fs::symlink_metadata(p).map_err(|e| Error::io(p, e))?)
            }
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
                if let Some(src) = &source
                    && src.meta.nlink() > 1
                {
                    let key = src.link_key();
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
                    content: Content::of(item, source.as_ref()),
                    dir: &dir,
                    name,
                    rel: &rel,
                    owner: (uid, gid),
                    mode,
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
                let source = Source::open(path)?;
                if source.meta.nlink() > 1 {
                    return Ok(None);
                }
                let Some((_, name)) = rel.split_last() else {
                    return Ok(None);
                };
                let file = PlainFile {
                    content: Content::Source(&source),
                    dir,
                    name,
                    rel,
                    owner: item.owner(sel, this.chown),
                    mode: item.final_mode(sel.chmod.as_ref()),
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
            content,
            dir,
            name,
            rel,
            owner,
            mode,
        } = *file;
        // Where the process's own creation already gives the file its owner or its mode, the
        // fchown or fchmod would change nothing: see `Creation`.
        let given = self.creation.zip(dir.probe);
        let owner_given = given.is_some_and(|(c, p)| c.gives_owner(owner, p.gid));
        let given_mode = given.and_then(|(c, p)| c.create_mode(mode, p.default_acl));
        let mode_given = given_mode.is_some();
        let create_mode = given_mode.unwrap_or(0o600);
        let create = || {
            rustix::fs::openat(
                dir,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(create_mode),
            )
        };
        // Usually nothing is there: the exclusive create says so without a stat first.
        let (fd, replaced) = match create() {
            Err(Errno::EXIST) => {
                let existing =
                    type_at(dir.as_fd(), name).map_err(|e| self.err(rel, "inspecting", e))?;
                self.refuse_directory(existing, rel)?;
                rustix::fs::unlinkat(dir, name, AtFlags::empty())
                    .map_err(|e| self.err(rel, "replacing", e))?;
                (create(), true)
            }
            created => (created, false),
        };
        let fd = fd.map_err(|e| self.err(rel, "creating file", e))?;
        let mut out = File::from(fd);
        let bytes = match content {
            Content::Source(src) => copy_contents(&src.file, &mut out, src.size())
                .map_err(|e| self.err(rel, "writing", e))?,
            Content::Inline(text) => {
                out.write_all(text.as_bytes())
                    .map_err(|e| self.err(rel, "writing", e))?;
                text.len() as u64
            }
            Content::Empty => 0,
        };
        // Owner before mode: chown clears set-id bits.
        if self.can_chown && !owner_given {
            let (uid, gid) = owner;
            rustix::fs::fchown(&out, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                .map_err(|e| self.err(rel, "setting owner", e))?;
        }
        if let Content::Source(src) = content {
            // After the owner (chown drops file capabilities), before a read-only mode.
            let attrs = list_fd_xattrs(src.file.as_fd()).map_err(|e| Error::io(src.path, e))?;
            let set_any = self.set_xattrs(attrs, rel, |key, value| {
                rustix::fs::fsetxattr(&out, key, value, rustix::fs::XattrFlags::empty())
                    .map_err(io::Error::from)
            })?;
            // An access ACL sets the mode bits as it is set: the mode is set again after it.
            if !mode_given || set_any {
                rustix::fs::fchmod(&out, Mode::from_raw_mode(mode))
                    .map_err(|e| self.err(rel, "setting mode", e))?;
            }
            rustix::fs::futimens(&out, &times_of(&src.meta))
                .map_err(|e| self.err(rel, "setting times", e))?;
        } else if !mode_given {
            rustix::fs::fchmod(&out, Mode::from_raw_mode(mode))
                .map_err(|e| self.err(rel, "setting mode", e))?;
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
        self.set_xattrs(attrs, rel, |key, value| set_xattr(&target, key, value))?;
        Ok(())
    }

    /// Sets `attrs` (as listed from a source) with `set`, leaving out and skipping what
    /// [`Writer::copy_xattrs`] says. Returns whether any was set.
    fn set_xattrs(
        &self,
        attrs: Vec<(OsString, Vec<u8>)>,
        rel: &RelPath,
        set: impl Fn(&OsStr, &[u8]) -> io::Result<()>,
    ) -> Result<bool> {
        let mut set_any = false;
        for (key, value) in attrs {
            if is_overlay_internal(key.as_bytes()) {
                continue;
            }
            if let Err(e) = set(&key, &value) {
                match Errno::from_io_error(&e) {
                    Some(Errno::NOTSUP) => continue,
                    Some(Errno::PERM) if !self.can_chown => continue,
                    _ => return Err(self.err(rel, "setting extended attribute", e)),
                }
            }
            set_any = true;
        }
        Ok(set_any)
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
    fn parent_dir(&mut self, rel: &RelPath, owner: (u32, u32)) -> Result<Arc<ParentDir>> {
        if let Some((last, dir)) = &self.last_parent
            && last == rel
        {
            return Ok(Arc::clone(dir));
        }
        let fd = self.ensure_dirs(rel, owner)?;
        // Only worth asking when a file's owner and mode might then be left as created.
        let probe = self.creation.and_then(|_| ParentDir::probe(fd.as_fd()));
        let dir = Arc::new(ParentDir { fd, probe });
        self.last_parent = Some((rel.clone(), Arc::clone(&dir)));
        Ok(dir)
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

/// One regular file to write: what goes in, where, and with what owner and mode.
#[derive(Clone, Copy)]
struct PlainFile<'a> {
    content: Content<'a>,
    dir: &'a ParentDir,
    name: &'a OsStr,
    rel: &'a RelPath,
    owner: (u32, u32),
    mode: u32,
}

/// What a regular file is made of.
#[derive(Clone, Copy)]
enum Content<'a> {
    /// An opened source, whose times and extended attributes it takes too.
    Source(&'a Source<'a>),
    Inline(&'a str),
    Empty,
}

impl<'a> Content<'a> {
    /// The content of `item`, with `source` opened when it comes from a path.
    fn of(item: &'a Item, source: Option<&'a Source<'a>>) -> Content<'a> {
        match (source, &item.source) {
            (Some(src), _) => Content::Source(src),
            (None, ItemSource::Inline(text)) => Content::Inline(text),
            (None, _) => Content::Empty,
        }
    }
}

/// A source file, opened once: its content, metadata and extended attributes are all taken
/// through this descriptor, so its path is looked up once.
struct Source<'p> {
    path: &'p Path,
    file: File,
    /// From the open descriptor (statx on it), not from the path again.
    meta: std::fs::Metadata,
}

impl<'p> Source<'p> {
    fn open(path: &'p Path) -> Result<Source<'p>> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags_nofollow()
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        Ok(Source { path, file, meta })
    }

    /// What identifies the source among hard links: (device, inode).
    fn link_key(&self) -> (u64, u64) {
        (self.meta.dev(), self.meta.ino())
    }

    fn size(&self) -> u64 {
        self.meta.len()
    }
}

/// A destination directory files are created in, with what decides the owner and mode they
/// are created with.
struct ParentDir {
    fd: OwnedFd,
    /// None when it could not be learnt: files then always get their owner and mode set.
    probe: Option<DirProbe>,
}

#[derive(Clone, Copy)]
struct DirProbe {
    /// Its group: what a new file takes in place of the creator's where the directory is
    /// set-group-ID (or the filesystem is mounted `grpid`).
    gid: u32,
    /// Whether it has a default ACL, which then replaces the umask for new files.
    default_acl: bool,
}

impl ParentDir {
    fn probe(fd: BorrowedFd<'_>) -> Option<DirProbe> {
        let stat = rustix::fs::fstat(fd).ok()?;
        // The descriptor is `O_PATH`, which attributes cannot be read through: asked through
        // its `/proc` link (followed to the directory itself).
        let default_acl = match rustix::fs::getxattr_query(
            fd_path(fd, OsStr::new("")),
            "system.posix_acl_default",
        ) {
            Ok(_) => true,
            Err(Errno::NODATA | Errno::NOTSUP) => false,
            Err(_) => return None,
        };
        Some(DirProbe {
            gid: stat.st_gid,
            default_acl,
        })
    }
}

impl AsFd for ParentDir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// What a file this process creates gets without being asked: its filesystem user and group
/// (the owner of a new file) and the umask, as `/proc/self/status` gives them. Both are the
/// same for every thread: nothing in this process changes them per thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Creation {
    fsuid: u32,
    fsgid: u32,
    umask: u32,
}

impl Creation {
    fn parse(status: &str) -> Option<Creation> {
        let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name));
        // `Uid:` and `Gid:` list the real, effective, saved and filesystem ids.
        let fs_id =
            |name: &str| -> Option<u32> { field(name)?.split_whitespace().nth(3)?.parse().ok() };
        Some(Creation {
            fsuid: fs_id("Uid:")?,
            fsgid: fs_id("Gid:")?,
            umask: u32::from_str_radix(field("Umask:")?.trim(), 8).ok()?,
        })
    }

    /// Whether a file created in a directory of group `dir_gid` is already owned by `owner`.
    /// Its user is the creator's filesystem user; its group the creator's filesystem group, or
    /// the directory's where the directory is set-group-ID or the mount is `grpid`: when both
    /// are the same, either way gives it. (A chown of a file just created changes nothing else:
    /// it has no set-id bits and no capability attribute yet.)
    fn gives_owner(&self, owner: (u32, u32), dir_gid: u32) -> bool {
        owner == (self.fsuid, self.fsgid) && dir_gid == self.fsgid
    }

    /// The mode to create a file with so that it ends with exactly `mode` without a chmod:
    /// `mode` itself where the umask takes nothing from it (the kernel then applies nothing
    /// else: set-id and sticky bits, which it may strip, are left to chmod, and a default ACL
    /// on the directory would replace the umask). It must leave the owner write access, which
    /// copying the extended attributes of an unprivileged copy needs. (Copying an access ACL
    /// changes the mode again: the mode is then set after it all the same.)
    fn create_mode(&self, mode: u32, default_acl: bool) -> Option<u32> {
        (mode & !0o777 == 0 && mode & self.umask == 0 && mode & 0o200 != 0 && !default_acl)
            .then_some(mode)
    }
}

/// Copies `size` bytes (what the source's stat said) of `from` into `out` in the kernel,
/// falling back to `io::copy` where the source cannot be spliced. Stopping at `size` saves the
/// call that would only find the end; a source that shrank stops at its end, one that grew
/// is copied as it was stat-ed. A `size` of 0 is copied to its end: some files (in `/proc`)
/// say 0 and have content. `io::copy` alone would first probe both descriptors with two more
/// stat calls per file.
fn copy_contents(mut from: &File, out: &mut File, size: u64) -> io::Result<u64> {
    let mut total = 0u64;
    while size == 0 || total < size {
        let want = if size == 0 {
            1 << 30
        } else {
            (size - total).min(1 << 30)
        };
        match rustix::fs::sendfile(&*out, from, None, want as usize) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(Errno::INTR) => {}
            Err(Errno::INVAL | Errno::NOSYS) if total == 0 => {
                return if size == 0 {
                    io::copy(&mut from, out)
                } else {
                    io::copy(&mut from.take(size), out)
                };
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(total)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
    }

    /// Copies the file at `from` with `copy_contents`, told its size is `size`.
    fn copied(from: &Path, size: u64) -> (u64, Vec<u8>) {
        let dir = tempdir();
        let to = dir.path().join("out");
        let src = File::open(from).unwrap_or_else(|e| panic!("{e}"));
        let mut out = File::create(&to).unwrap_or_else(|e| panic!("{e}"));
        let n = copy_contents(&src, &mut out, size).unwrap_or_else(|e| panic!("{e}"));
        (n, std::fs::read(&to).unwrap_or_else(|e| panic!("{e}")))
    }

    #[test]
    fn copies_stop_at_the_stat_size_or_the_end() {
        let dir = tempdir();
        let path = dir.path().join("src");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap_or_else(|e| panic!("{e}"));
        // As stat-ed.
        assert_eq!(copied(&path, 100_000), (100_000, data.clone()));
        // Grew since its stat: what the stat said is copied.
        assert_eq!(copied(&path, 60_000), (60_000, data[..60_000].to_vec()));
        // Shrank since its stat: copied to its end.
        assert_eq!(copied(&path, 250_000), (100_000, data.clone()));
        // A size of 0 says nothing: copied to its end.
        assert_eq!(copied(&path, 0), (100_000, data.clone()));
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(copied(&empty, 0), (0, Vec::new()));
    }

    #[test]
    fn creation_defaults_are_read_from_proc_status() {
        let status =
            "Name:\tkiln\nUmask:\t0027\nState:\tR\nUid:\t1000\t0\t0\t5\nGid:\t100\t0\t0\t7\n";
        assert_eq!(
            Creation::parse(status),
            Some(Creation {
                fsuid: 5,
                fsgid: 7,
                umask: 0o027,
            })
        );
        assert_eq!(
            Creation::parse("Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n"),
            None
        );
        assert_eq!(
            Creation::parse("Umask:\t0022\nUid:\t0\t0\t0\nGid:\t0\t0\t0\t0\n"),
            None
        );
        // This process's.
        let own = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        assert!(Creation::parse(&own).is_some());
    }

    #[test]
    fn only_provable_no_ops_are_left_out() {
        let c = Creation {
            fsuid: 0,
            fsgid: 0,
            umask: 0o022,
        };
        assert!(c.gives_owner((0, 0), 0));
        // A set-group-ID directory (or a `grpid` mount) of another group gives that group.
        assert!(!c.gives_owner((0, 0), 50));
        assert!(!c.gives_owner((1000, 0), 0));
        assert!(!c.gives_owner((0, 1000), 0));
        assert_eq!(c.create_mode(0o644, false), Some(0o644));
        assert_eq!(c.create_mode(0o700, false), Some(0o700));
        assert_eq!(c.create_mode(0o600, false), Some(0o600));
        // The umask would take bits away.
        assert_eq!(c.create_mode(0o664, false), None);
        assert_eq!(c.create_mode(0o777, false), None);
        // Set-id and sticky bits are chmod's; a read-only file takes no attributes unprivileged.
        assert_eq!(c.create_mode(0o4755 & !0o022, false), None);
        assert_eq!(c.create_mode(0o2700, false), None);
        assert_eq!(c.create_mode(0o1600, false), None);
        assert_eq!(c.create_mode(0o444, false), None);
        // A default ACL replaces the umask.
        assert_eq!(c.create_mode(0o644, true), None);
        let open = Creation { umask: 0, ..c };
        assert_eq!(open.create_mode(0o777, false), Some(0o777));
    }

    /// An ACL as its `system.posix_acl_*` attribute holds it: version 2, then each entry's
    /// tag, permissions and id.
    fn acl_xattr(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut value = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in entries {
            value.extend(tag.to_le_bytes());
            value.extend(perm.to_le_bytes());
            value.extend(id.to_le_bytes());
        }
        value
    }

    /// A source's access ACL sets the mode bits when it is copied: a mode that `--chmod`
    /// changed is still set after it, though the file was created with that mode.
    #[test]
    fn the_mode_is_set_after_an_access_acl_is_copied() {
        let src = tempdir();
        let source = src.path().join("f");
        std::fs::write(&source, "x").unwrap_or_else(|e| panic!("{e}"));
        // user::rw-, user:1234:rwx, group::r--, mask::rwx, other::r--: mode 0674.
        let any = u32::MAX;
        let value = acl_xattr(&[
            (0x01, 6, any),
            (0x02, 7, 1234),
            (0x04, 4, any),
            (0x10, 7, any),
            (0x20, 4, any),
        ]);
        if let Err(e) = set_xattr(&source, OsStr::new("system.posix_acl_access"), &value) {
            eprintln!("skipping: no ACLs here: {e}");
            return;
        }
        assert_eq!(meta(&source).mode() & 0o7777, 0o674);
        let dest = tempdir();
        let sel = Selection {
            items: vec![
                file_item("a", &source, 0o644, (0, 0)),
                file_item("b", &source, 0o644, (0, 0)),
            ],
            keep_owner: false,
            chown: None,
            chmod: None,
        };
        apply(&sel, dest.path(), dest.path()).unwrap_or_else(|e| panic!("{e}"));
        for name in ["a", "b"] {
            assert_eq!(
                meta(&dest.path().join(name)).mode() & 0o7777,
                0o644,
                "{name}"
            );
        }
    }

    fn file_item(dest: &str, source: &Path, mode: u32, (uid, gid): (u32, u32)) -> Item {
        Item {
            dest: dest.into(),
            cache_path: dest.into(),
            kind: ItemKind::File,
            source: ItemSource::Path(source.to_path_buf()),
            mode,
            uid,
            gid,
            digest: None,
            into_dir_name: None,
            created_parent: false,
        }
    }

    fn meta(path: &Path) -> std::fs::Metadata {
        std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Files end with the owner and mode asked for whether or not the chown and chmod were
    /// left out: in plain directories, a set-group-ID one of another group, and one with a
    /// default ACL (which would leave a 0600 file 0400), written in a batch and one by one.
    #[test]
    fn files_get_exactly_the_owner_and_mode_asked_for() {
        let src = tempdir();
        let source = src.path().join("f");
        std::fs::write(&source, "content").unwrap_or_else(|e| panic!("{e}"));
        let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        File::options()
            .write(true)
            .open(&source)
            .and_then(|f| f.set_modified(old))
            .unwrap_or_else(|e| panic!("{e}"));
        let root = std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        let dest = tempdir();
        let mut dirs = vec!["plain"];
        if root {
            let sg = dest.path().join("setgid");
            std::fs::create_dir(&sg).unwrap_or_else(|e| panic!("{e}"));
            std::os::unix::fs::chown(&sg, Some(0), Some(4321)).unwrap_or_else(|e| panic!("{e}"));
            std::fs::set_permissions(&sg, std::fs::Permissions::from_mode(0o2755))
                .unwrap_or_else(|e| panic!("{e}"));
            dirs.push("setgid");
        }
        let acl = dest.path().join("acl");
        std::fs::create_dir(&acl).unwrap_or_else(|e| panic!("{e}"));
        // A default ACL of user::r-x, group::r-x, other::---.
        let value = acl_xattr(&[
            (0x01, 5, u32::MAX),
            (0x04, 5, u32::MAX),
            (0x20, 0, u32::MAX),
        ]);
        match set_xattr(&acl, OsStr::new("system.posix_acl_default"), &value) {
            Ok(()) => dirs.push("acl"),
            Err(e) => eprintln!("no default ACL test: {e}"),
        }
        let modes = [0o644, 0o600, 0o666, 0o755, 0o444, 0o4755, 0o2711, 0o1644];
        let owners: &[(u32, u32)] = if root {
            &[(0, 0), (1000, 1000), (0, 1000)]
        } else {
            &[]
        };
        let mut items = Vec::new();
        for dir in &dirs {
            for mode in modes {
                items.push(file_item(
                    &format!("{dir}/m{mode:o}"),
                    &source,
                    mode,
                    (0, 0),
                ));
            }
            for (uid, gid) in owners {
                items.push(file_item(
                    &format!("{dir}/o{uid}-{gid}"),
                    &source,
                    0o644,
                    (*uid, *gid),
                ));
            }
            // Alone, so that it is written one by one.
            items.push(Item {
                kind: ItemKind::Dir,
                ..file_item(&format!("{dir}/sub"), src.path(), 0o755, (0, 0))
            });
            items.push(file_item(&format!("{dir}/single"), &source, 0o644, (0, 0)));
            items.push(Item {
                kind: ItemKind::Dir,
                ..file_item(&format!("{dir}/sub2"), src.path(), 0o755, (0, 0))
            });
        }
        let sel = Selection {
            items,
            keep_owner: true,
            chown: None,
            chmod: None,
        };
        apply(&sel, dest.path(), dest.path()).unwrap_or_else(|e| panic!("{e}"));
        let me = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        for dir in &dirs {
            let at = |name: &str| meta(&dest.path().join(dir).join(name));
            for mode in modes {
                let m = at(&format!("m{mode:o}"));
                assert_eq!(m.mode() & 0o7777, mode, "{dir}: mode {mode:o}");
                assert_eq!((m.uid(), m.gid()), if root { (0, 0) } else { me }, "{dir}");
                assert_eq!(m.mtime(), 1_000_000_000);
                assert_eq!(m.len(), 7);
            }
            for (uid, gid) in owners {
                let m = at(&format!("o{uid}-{gid}"));
                assert_eq!(
                    (m.uid(), m.gid(), m.mode() & 0o7777),
                    (*uid, *gid, 0o644),
                    "{dir}"
                );
            }
            let m = at("single");
            assert_eq!(m.mode() & 0o7777, 0o644, "{dir}");
            if root {
                assert_eq!((m.uid(), m.gid()), (0, 0), "{dir}");
            }
        }
    }
}
