//! Layer apply: an uncompressed layer tar → a directory.
//!
//! `tar` is used as a codec only (headers, PAX records, data); every filesystem change is made
//! here, relative to a parent directory that [`Root`] resolved inside the target root. The tar
//! crate's own `unpack` is not used: it stores hard links twice, unpacks devices as files and
//! knows nothing of whiteouts.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;
use tar::EntryType;

use crate::error::{Error, Result};
use crate::paths::{self, RelPath, Root};
use crate::sparse::{self, CopyError, PaxSparse};
use crate::xattr::{self, XattrNamespace};

/// What an OCI whiteout (`.wh.name`, `.wh..wh..opq`) becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// The target is one overlay layer directory: a whiteout becomes a 0:0 character device and
    /// an opaque marker the `<ns>.overlay.opaque=y` attribute, for overlayfs to interpret.
    Overlay(XattrNamespace),
    /// The target is a flattened tree (copy snapshots, exported root filesystems): a whiteout
    /// deletes its path and an opaque marker deletes everything in its directory that this layer
    /// did not itself write.
    Delete,
}

/// How to apply a layer.
#[derive(Clone, Copy, Debug)]
pub struct ApplyOptions {
    pub whiteouts: WhiteoutMode,
    /// Give entries the archive's numeric owners (needs CAP_CHOWN). Without it everything
    /// belongs to the applying user.
    pub chown: bool,
    /// Create character and block devices (needs CAP_MKNOD in the initial user namespace).
    /// Without it a device entry is an error that says so.
    pub devices: bool,
}

impl ApplyOptions {
    /// Options for applying as the current user: ownership as root (also root of a user
    /// namespace, among its mapped ids), devices only as root of the initial namespace.
    pub fn new(whiteouts: WhiteoutMode) -> Self {
        ApplyOptions {
            whiteouts,
            chown: crate::privilege::is_root(),
            devices: crate::privilege::is_host_root(),
        }
    }
}

/// What an apply did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Tar entries applied (whiteouts included, PAX and GNU extension headers not).
    pub entries: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
}

/// Applies the uncompressed layer tar `reader` onto the directory `root`.
///
/// Stops at the tar end marker; bytes after it are not read (callers hashing the stream drain it
/// themselves). On error the target is left partially applied: callers apply into a temporary
/// directory and discard it.
pub fn apply_layer(reader: impl Read, root: &Path, opts: &ApplyOptions) -> Result<ApplyStats> {
    let root = Root::open(root).map_err(|e| Error::io("open layer target", root, e))?;
    let mut applier = Applier {
        root,
        opts: *opts,
        dirs: HashMap::new(),
        written: HashSet::new(),
        stats: ApplyStats::default(),
    };
    let between = Rc::new(Cell::new(None));
    let mut archive = tar::Archive::new(HeaderBudget {
        inner: reader,
        left: Rc::clone(&between),
    });
    let mut entries = archive.entries().map_err(|e| Error::Tar {
        at: None,
        source: e,
    })?;
    let mut last: Option<String> = None;
    loop {
        // Everything read while the tar reader looks for the next entry is headers, long
        // names and PAX records, which it keeps in memory: cap them.
        between.set(Some(MAX_HEADER_BYTES));
        let next = entries.next();
        between.set(None);
        let Some(entry) = next else { break };
        let mut entry = entry.map_err(|e| Error::Tar {
            // A broken header is reported after the last good entry: that is where to look.
            at: last.as_ref().map(|l| format!("after {l}")),
            source: e,
        })?;
        let name = display_name(&entry.path_bytes());
        applier.apply_entry(&mut entry, &name)?;
        last = Some(name);
    }
    applier.finish()?;
    Ok(applier.stats)
}

/// The most header data (headers, GNU long names, PAX records, data of non-file entries)
/// between two entries. PAX records carry attributes of at most 64 KiB each; 16 MiB leaves
/// room for hundreds of them while a hostile multi-gigabyte "long name" cannot exhaust memory.
const MAX_HEADER_BYTES: u64 = 16 << 20;

/// Counts what the tar reader reads between entries and fails once over budget.
struct HeaderBudget<R> {
    inner: R,
    /// Bytes still allowed while between entries; None while an entry's data is read.
    left: Rc<Cell<Option<u64>>>,
}

impl<R: Read> Read for HeaderBudget<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(left) = self.left.get() {
            let left = left.checked_sub(n as u64).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "more than {} MiB of headers, long names or PAX records before an entry",
                        MAX_HEADER_BYTES >> 20
                    ),
                )
            })?;
            self.left.set(Some(left));
        }
        Ok(n)
    }
}

/// Directory metadata applied after all entries: writing children changes a directory's mtime,
/// and a read-only directory mode would stop a rootless apply from writing them. A directory
/// the layer changes without an entry of its own (`etc/new` with no `etc/`) gets back the
/// mtime it had (`mode` None): the layer says nothing about it, and without this its mtime
/// would be the time of the apply, so flattening one image twice gave different trees.
struct DirMeta {
    mode: Option<u32>,
    mtime: Timespec,
}

struct Applier {
    root: Root,
    opts: ApplyOptions,
    dirs: HashMap<RelPath, DirMeta>,
    /// Delete mode: every path this layer wrote, and their ancestors, so an opaque marker keeps
    /// them while removing what lower layers left.
    written: HashSet<RelPath>,
    stats: ApplyStats,
}

/// An entry's name resolved to its parent directory and final component. For the root itself
/// the component is `.`.
struct Target {
    dir: OwnedFd,
    name: OsString,
}

impl Applier {
    fn apply_entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, name: &str) -> Result<()> {
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            // Global PAX records carry archive-wide defaults (comments, charset); no file.
            return Ok(());
        }
        let meta = EntryMeta::read(entry, name)?;
        let raw_name = match &meta.sparse.name {
            Some(n) => n.clone(),
            None => entry.path_bytes().into_owned(),
        };
        let rel = RelPath::parse(&raw_name).map_err(|r| Error::entry(name, r))?;
        self.stats.entries += 1;
        // Pre-POSIX archives mark directories only by a trailing slash on a regular entry.
        let kind = if matches!(kind, EntryType::Regular) && raw_name.ends_with(b"/") {
            EntryType::Directory
        } else {
            kind
        };

        if let Some((parent, base)) = rel.split_last()
            && let Some(hidden) = base.as_bytes().strip_prefix(b".wh.")
        {
            return self.whiteout(&meta, name, &parent, hidden);
        }
        let target = self.prepare_target(&rel, name, kind)?;

        match kind {
            EntryType::Directory => {
                self.set_owner_and_xattrs(&target, name, &meta, false)?;
                self.dirs.insert(
                    rel.clone(),
                    DirMeta {
                        mode: Some(meta.mode),
                        mtime: meta.mtime,
                    },
                );
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.write_file(entry, &target, name, &meta.sparse)?;
                self.finish_entry(&target, name, &meta, false)?;
            }
            EntryType::Link => self.hard_link(entry, &target, name)?,
            EntryType::Symlink => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| Error::entry(name, "symlink without a target"))?;
                rustix::fs::symlinkat(OsStr::from_bytes(&link), &target.dir, &target.name)
                    .map_err(|e| {
                        Error::entry(name, format!("creating symlink: {}", io::Error::from(e)))
                    })?;
                self.finish_entry(&target, name, &meta, true)?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                self.make_node(entry, &target, name, kind)?;
                self.finish_entry(&target, name, &meta, false)?;
            }
            other => {
                return Err(Error::entry(
                    name,
                    format!("unsupported tar entry type {:?}", other.as_byte() as char),
                ));
            }
        }
        self.mark_written(&rel);
        Ok(())
    }

    /// Resolves the entry's parent (creating missing directories) and clears the way for it:
    /// anything already at the name is removed, except a directory that the entry is also a
    /// directory for (docker's rule; later duplicates win).
    fn prepare_target(&mut self, rel: &RelPath, name: &str, kind: EntryType) -> Result<Target> {
        let Some((parent, base)) = rel.split_last() else {
            if kind != EntryType::Directory {
                return Err(Error::entry(name, "the layer root can only be a directory"));
            }
            let dir = self
                .root
                .open_dir(rel)
                .map_err(|e| self.fs_err(name, "opening the root", e))?;
            return Ok(Target {
                dir,
                name: ".".into(),
            });
        };
        let dir = self
            .root
            .make_dirs(&parent)
            .map_err(|e| self.fs_err(name, "creating parent directories", e))?;
        self.keep_mtime(&parent, &dir);
        let existing =
            paths::type_at(dir.as_fd(), base).map_err(|e| self.fs_err(name, "inspecting", e))?;
        match (existing, kind) {
            (None, _) => {}
            (Some(FileType::Directory), EntryType::Directory) => {}
            (Some(_), _) => paths::remove_all_at(dir.as_fd(), base)
                .map_err(|e| self.fs_err(name, "replacing the existing entry", e))?,
        }
        if kind == EntryType::Directory && existing != Some(FileType::Directory) {
            rustix::fs::mkdirat(&dir, base, Mode::from_raw_mode(0o700))
                .map_err(|e| self.fs_err(name, "creating directory", e.into()))?;
        }
        Ok(Target {
            dir,
            name: base.to_owned(),
        })
    }

    fn write_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        t: &Target,
        name: &str,
        sparse: &PaxSparse,
    ) -> Result<()> {
        let fd = rustix::fs::openat(
            &t.dir,
            &t.name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| self.fs_err(name, "creating file", e.into()))?;
        let mut file = File::from(fd);
        let (expected, copied) = if sparse.is_sparse() {
            let real = sparse.v1_size().map_err(|r| Error::entry(name, r))?;
            (real, sparse::copy_sparse_v1(entry, &mut file, real))
        } else {
            (entry.size(), sparse::copy_with_holes(entry, &mut file))
        };
        let copied = copied.map_err(|e| match e {
            CopyError::Read(e) => Error::Tar {
                at: Some(name.to_owned()),
                source: e,
            },
            CopyError::Write(e) => self.fs_err(name, "writing file", e),
        })?;
        // The tar reader ends an entry's data quietly at end of input; a short copy is a
        // truncated archive (or a PAX size that lies), not a short file.
        if copied != expected {
            return Err(Error::Tar {
                at: Some(name.to_owned()),
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("archive ends after {copied} of the entry's {expected} bytes"),
                ),
            });
        }
        self.stats.bytes += copied;
        Ok(())
    }

    fn hard_link<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        t: &Target,
        name: &str,
    ) -> Result<()> {
        let link = entry
            .link_name_bytes()
            .ok_or_else(|| Error::entry(name, "hard link without a target"))?;
        let shown = display_name(&link);
        let target = RelPath::parse(&link)
            .map_err(|r| Error::entry(name, format!("hard link target {shown:?}: {r}")))?;
        let Some((tparent, tbase)) = target.split_last() else {
            return Err(Error::entry(name, "hard link to the layer root"));
        };
        let tdir = self.root.open_dir(&tparent).map_err(|e| {
            Error::entry(
                name,
                format!("hard link target {shown:?} not found in the layer: {e}"),
            )
        })?;
        rustix::fs::linkat(&tdir, tbase, &t.dir, &t.name, AtFlags::empty()).map_err(|e| {
            let why = match e {
                Errno::NOENT => "it does not exist in this layer".to_owned(),
                Errno::PERM => "it is a directory or may not be linked".to_owned(),
                e => io::Error::from(e).to_string(),
            };
            Error::entry(name, format!("cannot hard link to {shown:?}: {why}"))
        })
    }

    fn make_node<R: Read>(
        &self,
        entry: &tar::Entry<'_, R>,
        t: &Target,
        name: &str,
        kind: EntryType,
    ) -> Result<()> {
        let h = entry.header();
        let major = h.device_major().ok().flatten().unwrap_or(0);
        let minor = h.device_minor().ok().flatten().unwrap_or(0);
        let refused = || {
            Error::entry(
                name,
                format!(
                    "device node {major}:{minor} needs root to create; a rootless build \
                     cannot apply a layer that contains devices"
                ),
            )
        };
        let (ftype, dev) = match kind {
            EntryType::Fifo => (FileType::Fifo, 0),
            EntryType::Char => (FileType::CharacterDevice, rustix::fs::makedev(major, minor)),
            _ => (FileType::BlockDevice, rustix::fs::makedev(major, minor)),
        };
        if ftype != FileType::Fifo && !self.opts.devices {
            return Err(refused());
        }
        match rustix::fs::mknodat(&t.dir, &t.name, ftype, Mode::from_raw_mode(0o600), dev) {
            Ok(()) => Ok(()),
            // Root inside a user namespace has no CAP_MKNOD where it counts.
            Err(Errno::PERM) if ftype != FileType::Fifo => Err(refused()),
            Err(e) => Err(self.fs_err(name, "creating node", e.into())),
        }
    }

    /// Owner, attributes, mode and times of a freshly created non-directory. The order matters:
    /// chown clears set-id bits and file capabilities, so it comes first, mode after attributes
    /// (a rootless apply could not open a mode-0 file to set them), times last.
    fn finish_entry(&self, t: &Target, name: &str, meta: &EntryMeta, symlink: bool) -> Result<()> {
        self.set_owner_and_xattrs(t, name, meta, symlink)?;
        if !symlink {
            rustix::fs::chmodat(
                &t.dir,
                &t.name,
                Mode::from_raw_mode(meta.mode),
                AtFlags::empty(),
            )
            .map_err(|e| self.fs_err(name, "setting mode", e.into()))?;
        }
        set_times(t, meta.mtime).map_err(|e| self.fs_err(name, "setting times", e))
    }

    fn set_owner_and_xattrs(
        &self,
        t: &Target,
        name: &str,
        meta: &EntryMeta,
        symlink: bool,
    ) -> Result<()> {
        if self.opts.chown {
            rustix::fs::chownat(
                &t.dir,
                &t.name,
                Some(rustix::fs::Uid::from_raw(meta.uid)),
                Some(rustix::fs::Gid::from_raw(meta.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| match e {
                Errno::INVAL => Error::entry(
                    name,
                    format!(
                        "owner {}:{} is not mapped in this user namespace; give the user a \
                         subordinate id range (/etc/subuid, /etc/subgid) large enough for the image",
                        meta.uid, meta.gid
                    ),
                ),
                e => self.fs_err(name, "setting owner", e.into()),
            })?;
        }
        let path = paths::fd_path(t.dir.as_fd(), &t.name);
        for (k, v) in &meta.xattrs {
            if let Err(e) = xattr::set(&path, k, v) {
                // Rootless applies cannot set privileged namespaces (`security.*`, `trusted.*`)
                // and symlinks take no `user.*` attributes; docker skips these the same way.
                let skippable =
                    matches!(Errno::from_io_error(&e), Some(Errno::PERM | Errno::NOTSUP));
                if skippable && (symlink || !crate::privilege::is_host_root()) {
                    continue;
                }
                return Err(self.fs_err(name, "setting extended attribute", e));
            }
        }
        Ok(())
    }

    fn whiteout(
        &mut self,
        meta: &EntryMeta,
        name: &str,
        parent: &RelPath,
        hidden: &[u8],
    ) -> Result<()> {
        if hidden == b".wh..opq" {
            return self.opaque(name, parent);
        }
        if hidden.starts_with(b".wh.") {
            // Other `.wh..wh.` names are aufs bookkeeping (hard link directories); not files.
            return Ok(());
        }
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(Error::entry(name, "whiteout of an invalid name"));
        }
        let hidden = OsStr::from_bytes(hidden);
        match self.opts.whiteouts {
            WhiteoutMode::Delete => {
                let dir = match self.root.open_dir(parent) {
                    Ok(d) => d,
                    // Nothing below a missing (or non-directory) parent to delete.
                    Err(e)
                        if matches!(
                            Errno::from_io_error(&e),
                            Some(Errno::NOENT | Errno::NOTDIR)
                        ) =>
                    {
                        return Ok(());
                    }
                    Err(e) => return Err(self.fs_err(name, "resolving whiteout parent", e)),
                };
                self.keep_mtime(parent, &dir);
                paths::remove_all_at(dir.as_fd(), hidden)
                    .map_err(|e| self.fs_err(name, "applying whiteout", e))
            }
            WhiteoutMode::Overlay(_) => {
                let target = self.prepare_target(&parent.join(hidden), name, EntryType::Char)?;
                rustix::fs::mknodat(
                    &target.dir,
                    &target.name,
                    FileType::CharacterDevice,
                    Mode::from_raw_mode(0o600),
                    0,
                )
                .map_err(|e| self.fs_err(name, "creating overlay whiteout", e.into()))?;
                let meta = EntryMeta {
                    mode: meta.mode & 0o777,
                    uid: meta.uid,
                    gid: meta.gid,
                    mtime: meta.mtime,
                    xattrs: Vec::new(),
                    sparse: PaxSparse::default(),
                };
                self.finish_entry(&target, name, &meta, false)
            }
        }
    }

    fn opaque(&mut self, name: &str, dir: &RelPath) -> Result<()> {
        match self.opts.whiteouts {
            WhiteoutMode::Overlay(ns) => {
                let fd = self
                    .root
                    .make_dirs(dir)
                    .map_err(|e| self.fs_err(name, "creating opaque directory", e))?;
                // `/proc/self/fd/N/.` is the resolved directory itself: no component of it
                // is a symlink from the layer.
                let path = paths::fd_path(fd.as_fd(), OsStr::new("."));
                xattr::set(&path, OsStr::new(ns.opaque()), b"y")
                    .map_err(|e| self.fs_err(name, "marking directory opaque", e))
            }
            WhiteoutMode::Delete => {
                let fd = match self.root.open_dir_readable(dir) {
                    Ok(fd) => fd,
                    Err(e) if Errno::from_io_error(&e) == Some(Errno::NOENT) => {
                        return Ok(());
                    }
                    Err(e) => return Err(self.fs_err(name, "opening opaque directory", e)),
                };
                self.clear_unwritten(fd, dir)
                    .map_err(|e| self.fs_err(name, "clearing opaque directory", e))
            }
        }
    }

    /// Removes everything below `dir` that this layer did not write.
    fn clear_unwritten(&self, fd: OwnedFd, dir: &RelPath) -> io::Result<()> {
        for child in paths::list_dir(fd.as_fd())? {
            let rel = dir.join(&child);
            if !self.written.contains(&rel) {
                paths::remove_all_at(fd.as_fd(), &child)?;
            } else if paths::type_at(fd.as_fd(), &child)? == Some(FileType::Directory) {
                let sub = rustix::fs::openat(
                    &fd,
                    &child,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                self.clear_unwritten(sub, &rel)?;
            }
        }
        Ok(())
    }

    fn mark_written(&mut self, rel: &RelPath) {
        if self.opts.whiteouts != WhiteoutMode::Delete {
            return;
        }
        let mut p = rel.clone();
        while self.written.insert(p.clone()) {
            match p.split_last() {
                Some((parent, _)) => p = parent,
                None => break,
            }
        }
    }

    /// Notes the mtime of directory `rel` (open as `dir`) before an entry changes what is in it,
    /// unless the layer gave the directory an entry of its own: see [`DirMeta`].
    fn keep_mtime(&mut self, rel: &RelPath, dir: &OwnedFd) {
        if self.dirs.contains_key(rel) {
            return;
        }
        // Unreadable: the directory keeps the time of the apply, as before.
        let Ok(stat) = rustix::fs::fstat(dir) else {
            return;
        };
        // The field types differ between architectures; the values are the kernel's.
        #[allow(clippy::unnecessary_cast)]
        let mtime = Timespec {
            tv_sec: stat.st_mtime as i64,
            tv_nsec: stat.st_mtime_nsec as _,
        };
        self.dirs.insert(rel.clone(), DirMeta { mode: None, mtime });
    }

    /// Directory modes and times, now that nothing more is written into them. A directory a
    /// later entry replaced or deleted is skipped.
    fn finish(&mut self) -> Result<()> {
        let mut dirs: Vec<_> = self.dirs.drain().collect();
        dirs.sort_by(|a, b| b.0.cmp(&a.0));
        for (rel, meta) in dirs {
            let shown = rel.to_path().display().to_string();
            let (dir, name) = match rel.split_last() {
                Some((parent, base)) => match self.root.open_dir(&parent) {
                    Ok(fd) => (fd, base.to_owned()),
                    Err(_) => continue,
                },
                None => (
                    self.root
                        .open_dir(&rel)
                        .map_err(|e| self.fs_err(&shown, "opening the root", e))?,
                    OsString::from("."),
                ),
            };
            if paths::type_at(dir.as_fd(), &name)
                .map_err(|e| self.fs_err(&shown, "inspecting", e))?
                != Some(FileType::Directory)
            {
                continue;
            }
            let t = Target { dir, name };
            if let Some(mode) = meta.mode {
                rustix::fs::chmodat(&t.dir, &t.name, Mode::from_raw_mode(mode), AtFlags::empty())
                    .map_err(|e| self.fs_err(&shown, "setting mode", e.into()))?;
            }
            set_times(&t, meta.mtime).map_err(|e| self.fs_err(&shown, "setting times", e))?;
        }
        Ok(())
    }

    fn fs_err(&self, name: &str, what: &str, e: io::Error) -> Error {
        Error::entry(
            name,
            format!("{what} under {}: {e}", self.root.path().display()),
        )
    }
}

fn set_times(t: &Target, mtime: Timespec) -> io::Result<()> {
    let times = Timestamps {
        last_access: mtime,
        last_modification: mtime,
    };
    rustix::fs::utimensat(&t.dir, &t.name, &times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(io::Error::from)
}

/// The metadata kiln applies from a header and its PAX records.
struct EntryMeta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Timespec,
    xattrs: Vec<(OsString, Vec<u8>)>,
    sparse: PaxSparse,
}

impl EntryMeta {
    fn read<R: Read>(entry: &mut tar::Entry<'_, R>, name: &str) -> Result<Self> {
        let mut meta = Self::read_plain(entry, name)?;
        let pax = entry.pax_extensions().map_err(|e| Error::Tar {
            at: Some(name.to_owned()),
            source: e,
        })?;
        if let Some(pax) = pax {
            for ext in pax {
                let ext = ext.map_err(|e| Error::Tar {
                    at: Some(name.to_owned()),
                    source: e,
                })?;
                let key = ext.key_bytes();
                if meta.sparse.take(key, ext.value_bytes()) {
                    continue;
                }
                if key == b"mtime" {
                    meta.mtime = parse_pax_time(ext.value_bytes())
                        .ok_or_else(|| Error::entry(name, "malformed PAX mtime"))?;
                } else if let Some(x) = key.strip_prefix(b"SCHILY.xattr.")
                    && !x.is_empty()
                    && !xattr::is_overlay_internal(x)
                    && !x.contains(&0)
                {
                    meta.xattrs
                        .push((OsStr::from_bytes(x).to_owned(), ext.value_bytes().to_vec()));
                }
            }
        }
        Ok(meta)
    }

    /// Header fields alone (the tar reader has already folded PAX uid/gid/size into them).
    fn read_plain<R: Read>(entry: &tar::Entry<'_, R>, name: &str) -> Result<Self> {
        let h = entry.header();
        let bad =
            |what: &str| Error::entry(name, format!("malformed {what} field in the tar header"));
        let mode = h.mode().map_err(|_| bad("mode"))? & 0o7777;
        let uid = h.uid().map_err(|_| bad("uid"))?;
        let gid = h.gid().map_err(|_| bad("gid"))?;
        let uid = u32::try_from(uid)
            .map_err(|_| Error::entry(name, format!("uid {uid} is out of range")))?;
        let gid = u32::try_from(gid)
            .map_err(|_| Error::entry(name, format!("gid {gid} is out of range")))?;
        let mtime = h.mtime().map_err(|_| bad("mtime"))?;
        Ok(EntryMeta {
            mode,
            uid,
            gid,
            mtime: Timespec {
                tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX),
                tv_nsec: 0,
            },
            xattrs: Vec::new(),
            sparse: PaxSparse::default(),
        })
    }
}

/// Parses a PAX time, `[-]seconds[.fraction]`.
fn parse_pax_time(v: &[u8]) -> Option<Timespec> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if secs.is_empty()
        || !secs.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    for (i, d) in frac.bytes().take(9).enumerate() {
        nanos += i64::from(d - b'0') * 10i64.pow(8 - i as u32);
    }
    Some(if neg && nanos > 0 {
        Timespec {
            tv_sec: -secs - 1,
            tv_nsec: 1_000_000_000 - nanos,
        }
    } else if neg {
        Timespec {
            tv_sec: -secs,
            tv_nsec: 0,
        }
    } else {
        Timespec {
            tv_sec: secs,
            tv_nsec: nanos,
        }
    })
}

/// An entry name for messages: lossy UTF-8, shortened so a 64 KiB name does not flood them.
pub(crate) fn display_name(raw: &[u8]) -> String {
    const MAX: usize = 200;
    let s = String::from_utf8_lossy(raw);
    if s.chars().count() <= MAX {
        s.into_owned()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}… ({} bytes)", raw.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        let t = parse_pax_time(b"1700000000.5").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (1_700_000_000, 500_000_000));
        let t = parse_pax_time(b"-1.25").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (-2, 750_000_000));
        assert!(parse_pax_time(b"12x").is_none());
        assert!(parse_pax_time(b"").is_none());
    }

    #[test]
    fn long_names_are_shortened_in_messages() {
        let long = vec![b'a'; 65536];
        let shown = display_name(&long);
        assert!(shown.len() < 300, "{}", shown.len());
        assert!(shown.ends_with("(65536 bytes)"));
    }
}
