//! Directory → layer tar. One emitter serves three sources:
//!
//! - [`write_tree`]: a whole directory against nothing (`kiln import DIR`);
//! - [`diff_upper`]: an overlay upper directory, whose 0:0 character devices (or
//!   `*.overlay.whiteout` files) become `.wh.<name>` entries and whose opaque directories get a
//!   `.wh..wh..opq` entry;
//! - [`diff_trees`]: a lower tree against a changed copy of it (the copy snapshotter).
//!
//! Output is deterministic: children in byte order of their names, whiteouts where their name
//! sorts, an opaque marker right after its directory, numeric owners only, mtimes in whole
//! seconds (optionally clamped to `SOURCE_DATE_EPOCH`), no access or change times.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, OFlags};

use crate::error::{Error, Result};
use crate::paths::RelPath;
use crate::sparse::read_full;
use crate::tarwrite::{EntryHeader, Kind, TarWriter};
use crate::xattr;

/// Paths a sandbox mounts over a snapshot. Whatever the mount left in the snapshot (an empty
/// mount-point file or directory) is not part of the step's changes.
pub const SANDBOX_MOUNT_POINTS: &[&str] = &[
    "etc/hosts",
    "etc/resolv.conf",
    "etc/hostname",
    "proc",
    "sys",
    "dev",
];

/// How to write a diff.
#[derive(Clone, Debug, Default)]
pub struct DiffOptions {
    /// Clamp every mtime to at most this many seconds since the epoch (`SOURCE_DATE_EPOCH`).
    pub clamp_mtime: Option<i64>,
    /// Root-relative paths left out of the diff together with everything below them
    /// (a leading `/` is allowed), e.g. [`SANDBOX_MOUNT_POINTS`].
    pub exclude: Vec<String>,
}

/// What a diff wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiffStats {
    /// Tar entries written, whiteouts included.
    pub entries: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

/// Writes the whole tree at `dir` (not the directory itself) as a layer tar into `out`.
pub fn write_tree(dir: &Path, out: impl Write, opts: &DiffOptions) -> Result<DiffStats> {
    let mut e = Emitter::new(out, opts)?;
    let md = lstat(dir)?;
    e.walk(dir, &[], &md, Source::Plain)?;
    e.finish()
}

/// Writes the changes recorded in the overlay upper directory `upper` as a layer tar.
pub fn diff_upper(upper: &Path, out: impl Write, opts: &DiffOptions) -> Result<DiffStats> {
    let mut e = Emitter::new(out, opts)?;
    let md = lstat(upper)?;
    let xattrs = xattr::list(upper).map_err(|err| Error::io("reading attributes", upper, err))?;
    if xattr::is_opaque(&xattrs) {
        e.opaque(&[], &md)?;
    }
    e.walk(upper, &[], &md, Source::Upper)?;
    e.finish()
}

/// Writes the changes that turn the tree `lower` into the tree `upper` as a layer tar.
/// Metadata decides where it can; file contents are compared only when type, mode, owner,
/// size, mtime and attributes are all equal.
pub fn diff_trees(
    lower: &Path,
    upper: &Path,
    out: impl Write,
    opts: &DiffOptions,
) -> Result<DiffStats> {
    diff_copy(lower, upper, out, opts, &CopyHints::default())
}

/// What the copy snapshotter knows about its working copy, which lets a diff skip content
/// compares and see directories that were deleted and created again.
#[derive(Clone, Debug, Default)]
pub(crate) struct CopyHints {
    /// The change time of a marker written right after the copy: a file whose ctime is earlier
    /// has not been touched since, whatever its mtime says.
    pub copied_at: Option<(i64, i64)>,
    /// Every directory of the working copy as it was made, by relative path. A directory
    /// that is another one now was removed and created again: it becomes opaque.
    pub dirs: HashMap<Vec<u8>, DirIdentity>,
}

/// What tells two directories at one path apart. Inode numbers alone do not: a filesystem
/// may hand a freed number straight to the next directory created, so the birth time
/// (where the filesystem records one) is compared too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DirIdentity {
    ino: u64,
    born: Option<std::time::SystemTime>,
}

impl DirIdentity {
    fn of(md: &Metadata) -> Self {
        DirIdentity {
            ino: md.ino(),
            born: md.created().ok(),
        }
    }
}

impl CopyHints {
    /// Records the working copy `work` right after it was made; `stamp` is a file written
    /// after the copy finished.
    pub(crate) fn capture(work: &Path, stamp: &Path) -> Result<Self> {
        let md = lstat(stamp)?;
        let mut hints = CopyHints {
            copied_at: Some((md.ctime(), md.ctime_nsec())),
            dirs: HashMap::new(),
        };
        hints.record_dirs(work, &[])?;
        Ok(hints)
    }

    fn record_dirs(&mut self, dir: &Path, rel: &[u8]) -> Result<()> {
        for name in read_dir_sorted(dir)? {
            let path = dir.join(&name);
            let md = lstat(&path)?;
            if !md.is_dir() {
                continue;
            }
            let child = join(rel, &name);
            self.dirs.insert(child.clone(), DirIdentity::of(&md));
            self.record_dirs(&path, &child)?;
        }
        Ok(())
    }
}

pub(crate) fn diff_copy(
    lower: &Path,
    upper: &Path,
    out: impl Write,
    opts: &DiffOptions,
    hints: &CopyHints,
) -> Result<DiffStats> {
    let mut e = Emitter::new(out, opts)?;
    let mut changes = Vec::new();
    let umd = lstat(upper)?;
    e.compare(lower, upper, &[], &umd, hints, &mut changes)?;
    for c in changes {
        e.emit(c)?;
    }
    e.finish()
}

/// Writes changes found by another comparison (the no-isolation root diff), in the order given,
/// as a layer tar into `out`.
pub(crate) fn write_changes(
    out: impl Write,
    opts: &DiffOptions,
    changes: Vec<Change>,
) -> Result<DiffStats> {
    let mut e = Emitter::new(out, opts)?;
    for c in changes {
        e.emit(c)?;
    }
    e.finish()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Every node is an entry.
    Plain,
    /// Overlay whiteouts and opaque markers are interpreted.
    Upper,
}

/// A change found by comparing trees, emitted once the whole comparison is done (a directory
/// is only known to belong in the diff after its children were compared).
pub(crate) enum Change {
    Entry {
        path: PathBuf,
        rel: Vec<u8>,
        md: Metadata,
        /// A directory new in this diff: everything below it follows its entry.
        with_subtree: bool,
    },
    Whiteout {
        rel: Vec<u8>,
        parent_md: Metadata,
    },
    Opaque {
        rel: Vec<u8>,
        md: Metadata,
    },
}

struct Emitter<W: Write> {
    tar: TarWriter<W>,
    clamp: Option<i64>,
    excluded: HashSet<Vec<u8>>,
    /// (device, inode) → name of the first entry written for a multiply-linked file.
    links: HashMap<(u64, u64), Vec<u8>>,
    stats: DiffStats,
}

impl<W: Write> Emitter<W> {
    fn new(out: W, opts: &DiffOptions) -> Result<Self> {
        let mut excluded = HashSet::new();
        for x in &opts.exclude {
            let rel = RelPath::parse(x.as_bytes())
                .map_err(|r| Error::entry(x.as_str(), format!("invalid exclusion: {r}")))?;
            excluded.insert(rel_bytes(&rel));
        }
        Ok(Emitter {
            tar: TarWriter::new(out),
            clamp: opts.clamp_mtime,
            excluded,
            links: HashMap::new(),
            stats: DiffStats::default(),
        })
    }

    fn finish(self) -> Result<DiffStats> {
        self.tar.finish().map_err(write_err)?;
        Ok(self.stats)
    }

    fn walk(&mut self, dir: &Path, rel: &[u8], dir_md: &Metadata, source: Source) -> Result<()> {
        for name in read_dir_sorted(dir)? {
            let child_rel = join(rel, &name);
            if self.excluded.contains(&child_rel) {
                continue;
            }
            let path = dir.join(&name);
            let md = lstat(&path)?;
            let node = Node::open(&path, &md)?;
            if source == Source::Upper {
                if is_whiteout(&md, &node.xattrs) {
                    self.whiteout(&child_rel, dir_md)?;
                    continue;
                }
                let opaque = md.is_dir() && xattr::is_opaque(&node.xattrs);
                self.entry(&path, &child_rel, &md, node)?;
                if opaque {
                    self.opaque(&child_rel, &md)?;
                }
            } else {
                self.entry(&path, &child_rel, &md, node)?;
            }
            if md.is_dir() {
                self.walk(&path, &child_rel, &md, source)?;
            }
        }
        Ok(())
    }

    fn emit(&mut self, c: Change) -> Result<()> {
        match c {
            Change::Entry {
                path,
                rel,
                md,
                with_subtree,
            } => {
                let node = Node::open(&path, &md)?;
                self.entry(&path, &rel, &md, node)?;
                if with_subtree {
                    self.walk(&path, &rel, &md, Source::Plain)?;
                }
                Ok(())
            }
            Change::Whiteout { rel, parent_md } => self.whiteout(&rel, &parent_md),
            Change::Opaque { rel, md } => self.opaque(&rel, &md),
        }
    }

    /// Compares directory `upper` with its former self `lower`, pushing the changes below it.
    fn compare(
        &mut self,
        lower: &Path,
        upper: &Path,
        rel: &[u8],
        upper_md: &Metadata,
        hints: &CopyHints,
        out: &mut Vec<Change>,
    ) -> Result<()> {
        let lnames = read_dir_sorted(lower)?;
        let unames = read_dir_sorted(upper)?;
        let mut names: Vec<&OsString> = lnames.iter().chain(unames.iter()).collect();
        names.sort();
        names.dedup();
        for name in names {
            let child_rel = join(rel, name);
            if self.excluded.contains(&child_rel) {
                continue;
            }
            let lpath = lower.join(name);
            let upath = upper.join(name);
            let lmd = lstat_opt(&lpath)?;
            let umd = lstat_opt(&upath)?;
            match (lmd, umd) {
                (None, None) => {}
                (Some(_), None) => out.push(Change::Whiteout {
                    rel: child_rel,
                    parent_md: upper_md.clone(),
                }),
                (None, Some(umd)) => out.push(Change::Entry {
                    with_subtree: umd.is_dir(),
                    path: upath,
                    rel: child_rel,
                    md: umd,
                }),
                (Some(lmd), Some(umd)) if lmd.is_dir() && umd.is_dir() => {
                    let recreated = hints
                        .dirs
                        .get(&child_rel)
                        .is_some_and(|id| *id != DirIdentity::of(&umd));
                    if recreated {
                        out.push(Change::Entry {
                            path: upath.clone(),
                            rel: child_rel.clone(),
                            md: umd.clone(),
                            with_subtree: false,
                        });
                        out.push(Change::Opaque {
                            rel: child_rel.clone(),
                            md: umd,
                        });
                        // Everything below a recreated directory is new.
                        self.push_subtree(&upath, &child_rel, out)?;
                        continue;
                    }
                    let mut below = Vec::new();
                    self.compare(&lpath, &upath, &child_rel, &umd, hints, &mut below)?;
                    if !below.is_empty() || metadata_differs(&lpath, &lmd, &upath, &umd)? {
                        out.push(Change::Entry {
                            path: upath,
                            rel: child_rel,
                            md: umd,
                            with_subtree: false,
                        });
                        out.append(&mut below);
                    }
                }
                (Some(lmd), Some(umd)) => {
                    if file_differs(&lpath, &lmd, &upath, &umd, hints)? {
                        out.push(Change::Entry {
                            with_subtree: umd.is_dir(),
                            path: upath,
                            rel: child_rel,
                            md: umd,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Every node below `dir`, as changes (used under a recreated directory, where the
    /// order of entries must interleave with the opaque marker already pushed).
    fn push_subtree(&self, dir: &Path, rel: &[u8], out: &mut Vec<Change>) -> Result<()> {
        for name in read_dir_sorted(dir)? {
            let child_rel = join(rel, &name);
            if self.excluded.contains(&child_rel) {
                continue;
            }
            let path = dir.join(&name);
            let md = lstat(&path)?;
            out.push(Change::Entry {
                with_subtree: md.is_dir(),
                path,
                rel: child_rel,
                md,
            });
        }
        Ok(())
    }

    fn entry(&mut self, path: &Path, rel: &[u8], md: &Metadata, node: Node) -> Result<()> {
        let Node { xattrs, file } = node;
        let ft = FileType::from_raw_mode(md.mode());
        let mut kind = match ft {
            FileType::RegularFile => Kind::Regular { size: md.size() },
            FileType::Directory => Kind::Directory,
            FileType::Symlink => {
                let t = fs::read_link(path).map_err(|e| Error::io("reading link", path, e))?;
                Kind::Symlink(t.into_os_string().into_vec())
            }
            FileType::CharacterDevice => Kind::Char {
                major: rustix::fs::major(md.rdev()),
                minor: rustix::fs::minor(md.rdev()),
            },
            FileType::BlockDevice => Kind::Block {
                major: rustix::fs::major(md.rdev()),
                minor: rustix::fs::minor(md.rdev()),
            },
            FileType::Fifo => Kind::Fifo,
            // Sockets belong to a running process; docker leaves them out too.
            _ => return Ok(()),
        };
        if ft != FileType::Directory && md.nlink() > 1 {
            match self.links.get(&(md.dev(), md.ino())) {
                Some(first) => kind = Kind::HardLink(first.clone()),
                None => {
                    self.links.insert((md.dev(), md.ino()), rel.to_vec());
                }
            }
        }
        let kept: Vec<(OsString, Vec<u8>)> = xattrs
            .iter()
            .filter(|(k, _)| !xattr::is_overlay_internal(k.as_bytes()))
            .cloned()
            .collect();
        let size = match kind {
            Kind::Regular { size } => Some(size),
            _ => None,
        };
        self.tar
            .write_header(&EntryHeader {
                name: rel,
                kind,
                mode: md.mode() & 0o7777,
                uid: u64::from(md.uid()),
                gid: u64::from(md.gid()),
                mtime: self.mtime(md),
                xattrs: &kept,
            })
            .map_err(write_err)?;
        self.stats.entries += 1;
        if let Some(size) = size {
            let f = match file {
                Some(f) => f,
                None => open_nofollow(path)?,
            };
            self.tar
                .write_data(ReadCtx { f, path }, size)
                .map_err(|e| match e.kind() {
                    io::ErrorKind::UnexpectedEof => Error::io("reading", path, e),
                    _ => write_err(e),
                })?;
            self.stats.bytes += size;
        }
        Ok(())
    }

    /// `.wh.<name>` for a deleted path. Whiteouts carry no metadata of their own worth keeping;
    /// they take their parent's mtime (when the deletion happened) so that the overlay and copy
    /// snapshotters give the same bytes.
    fn whiteout(&mut self, rel: &[u8], parent_md: &Metadata) -> Result<()> {
        let (dir, base) = match rel.iter().rposition(|&c| c == b'/') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => (&rel[..0], rel),
        };
        let mut name = b".wh.".to_vec();
        name.extend_from_slice(base);
        self.marker(&join(dir, OsStr::from_bytes(&name)), parent_md)
    }

    fn opaque(&mut self, rel: &[u8], md: &Metadata) -> Result<()> {
        self.marker(&join(rel, OsStr::new(".wh..wh..opq")), md)
    }

    fn marker(&mut self, name: &[u8], md: &Metadata) -> Result<()> {
        self.tar
            .write_header(&EntryHeader {
                name,
                kind: Kind::Regular { size: 0 },
                mode: 0,
                uid: 0,
                gid: 0,
                mtime: self.mtime(md),
                xattrs: &[],
            })
            .map_err(write_err)?;
        self.stats.entries += 1;
        Ok(())
    }

    fn mtime(&self, md: &Metadata) -> i64 {
        match self.clamp {
            Some(c) => md.mtime().min(c),
            None => md.mtime(),
        }
    }
}

/// What a node's entry is written from besides its metadata: its extended attributes and, for a
/// regular file with content, the file opened for reading. Such a file is opened first and its
/// attributes listed through the descriptor: one lookup of its path instead of two. Empty files
/// (overlayfs's attribute whiteouts among them) are never opened, as before.
struct Node {
    xattrs: Vec<(OsString, Vec<u8>)>,
    file: Option<fs::File>,
}

impl Node {
    fn open(path: &Path, md: &Metadata) -> Result<Node> {
        let attributes = |e| Error::io("reading attributes", path, e);
        if md.is_file() && md.len() > 0 {
            let file = open_nofollow(path)?;
            let xattrs = xattr::list_fd(file.as_fd()).map_err(attributes)?;
            Ok(Node {
                xattrs,
                file: Some(file),
            })
        } else {
            Ok(Node {
                xattrs: xattr::list(path).map_err(attributes)?,
                file: None,
            })
        }
    }
}

/// Opens a regular file for reading, refusing a symlink put in its place.
fn open_nofollow(path: &Path) -> Result<fs::File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(|e| Error::io("opening", path, e))
}

/// A file being read into the tar; read errors name it (write errors are the output's).
struct ReadCtx<'a> {
    f: fs::File,
    path: &'a Path,
}

impl Read for ReadCtx<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.f
            .read(buf)
            .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", self.path.display())))
    }
}

fn write_err(e: io::Error) -> Error {
    Error::io("writing layer tar to", "<output>", e)
}

fn is_whiteout(md: &Metadata, xattrs: &[(OsString, Vec<u8>)]) -> bool {
    let ft = FileType::from_raw_mode(md.mode());
    (ft == FileType::CharacterDevice && md.rdev() == 0)
        || (ft == FileType::RegularFile && md.size() == 0 && xattr::is_xattr_whiteout(xattrs))
}

/// Whether the metadata a layer records differs (type, mode, owner, mtime, attributes, device
/// number, link target).
pub(crate) fn metadata_differs(
    lpath: &Path,
    l: &Metadata,
    upath: &Path,
    u: &Metadata,
) -> Result<bool> {
    if l.mode() != u.mode()
        || l.uid() != u.uid()
        || l.gid() != u.gid()
        || l.mtime() != u.mtime()
        || l.mtime_nsec() != u.mtime_nsec()
    {
        return Ok(true);
    }
    let ft = FileType::from_raw_mode(u.mode());
    match ft {
        FileType::CharacterDevice | FileType::BlockDevice if l.rdev() != u.rdev() => {
            return Ok(true);
        }
        FileType::RegularFile if l.size() != u.size() => return Ok(true),
        FileType::Symlink => {
            let lt = fs::read_link(lpath).map_err(|e| Error::io("reading link", lpath, e))?;
            let ut = fs::read_link(upath).map_err(|e| Error::io("reading link", upath, e))?;
            if lt != ut {
                return Ok(true);
            }
        }
        _ => {}
    }
    Ok(diffable_xattrs(lpath)? != diffable_xattrs(upath)?)
}

pub(crate) fn file_differs(
    lpath: &Path,
    l: &Metadata,
    upath: &Path,
    u: &Metadata,
    hints: &CopyHints,
) -> Result<bool> {
    if metadata_differs(lpath, l, upath, u)? {
        return Ok(true);
    }
    if FileType::from_raw_mode(u.mode()) != FileType::RegularFile {
        return Ok(false);
    }
    if let Some(at) = hints.copied_at
        && (u.ctime(), u.ctime_nsec()) < at
    {
        return Ok(false);
    }
    Ok(!same_content(lpath, upath)?)
}

fn diffable_xattrs(path: &Path) -> Result<Vec<(OsString, Vec<u8>)>> {
    let mut x = xattr::list(path).map_err(|e| Error::io("reading attributes", path, e))?;
    x.retain(|(k, _)| !xattr::is_overlay_internal(k.as_bytes()));
    Ok(x)
}

fn same_content(a: &Path, b: &Path) -> Result<bool> {
    let open = |p: &Path| {
        OpenOptions::new()
            .read(true)
            .custom_flags(OFlags::NOFOLLOW.bits() as i32)
            .open(p)
            .map_err(|e| Error::io("opening", p, e))
    };
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let mut ba = vec![0u8; 64 * 1024];
    let mut bb = vec![0u8; 64 * 1024];
    loop {
        let na = read_full(&mut fa, &mut ba).map_err(|e| Error::io("reading", a, e))?;
        let nb = read_full(&mut fb, &mut bb).map_err(|e| Error::io("reading", b, e))?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

pub(crate) fn lstat(p: &Path) -> Result<Metadata> {
    fs::symlink_metadata(p).map_err(|e| Error::io("reading", p, e))
}

fn lstat_opt(p: &Path) -> Result<Option<Metadata>> {
    match fs::symlink_metadata(p) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("reading", p, e)),
    }
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<OsString>> {
    let mut names = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| Error::io("listing", dir, e))? {
        names.push(e.map_err(|e| Error::io("listing", dir, e))?.file_name());
    }
    names.sort();
    Ok(names)
}

pub(crate) fn join(rel: &[u8], name: &OsStr) -> Vec<u8> {
    let mut v = Vec::with_capacity(rel.len() + 1 + name.len());
    if !rel.is_empty() {
        v.extend_from_slice(rel);
        v.push(b'/');
    }
    v.extend_from_slice(name.as_bytes());
    v
}

fn rel_bytes(rel: &RelPath) -> Vec<u8> {
    let mut v = Vec::new();
    for c in rel.components() {
        v = join(&v, c);
    }
    v
}
