//! Snapshots of a live root filesystem, for builds without isolation (kaniko's model): the
//! steps run in the current `/`, which is first made to hold exactly the parent chain's
//! flattened tree, and the step's layer is what changed in `/` while it ran.
//!
//! Nothing is mounted. Both the sync and the diff compare metadata gathered by parallel stat
//! walks (size, mtime, ctime, mode, owner, inode); only entries whose metadata moved are read,
//! so the diff of a step that touched nothing costs one walk. The walk never enters the
//! exclusions (the store, kiln's own files, the build context), other filesystems (`/proc`,
//! `/sys`, `/dev`, volumes: any directory on another device, any mount point listed in
//! `/proc/self/mountinfo`).

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, Metadata};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use rustix::fs::{AtFlags, CWD, Dir, Mode, OFlags, Statx, StatxFlags};
use rustix::io::Errno;
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};

use crate::copy::{copy_dir_metadata, copy_node, remove_tree};
use crate::diff::{self, Change, CopyHints, DiffOptions, DiffStats, join, lstat};
use crate::error::{Error, Result};

/// Paths never walked in a root, whatever else is excluded: kernel filesystems.
const VIRTUAL: [&str; 3] = ["proc", "sys", "dev"];

/// What a stat tells about one entry, enough to see whether it may have changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Node {
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
    rdev: u64,
    /// Birth time where the filesystem records one: a freed inode number may go straight to
    /// the next directory created, so the number alone does not tell a recreated directory.
    born: Option<(i64, u32)>,
}

impl Node {
    fn of(md: &Metadata) -> Self {
        Node {
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            size: md.size(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
            ino: md.ino(),
            rdev: md.rdev(),
            born: md
                .created()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .and_then(|d| Some((i64::try_from(d.as_secs()).ok()?, d.subsec_nanos()))),
        }
    }

    fn of_statx(st: &Statx) -> Self {
        let time = |t: &rustix::fs::StatxTimestamp| (t.tv_sec, i64::from(t.tv_nsec));
        Node {
            mode: u32::from(st.stx_mode),
            uid: st.stx_uid,
            gid: st.stx_gid,
            size: st.stx_size,
            mtime: time(&st.stx_mtime),
            ctime: time(&st.stx_ctime),
            ino: st.stx_ino,
            rdev: rustix::fs::makedev(st.stx_rdev_major, st.stx_rdev_minor),
            born: StatxFlags::from_bits_retain(st.stx_mask)
                .contains(StatxFlags::BTIME)
                .then_some((st.stx_btime.tv_sec, st.stx_btime.tv_nsec)),
        }
    }

    fn is_dir(&self) -> bool {
        self.mode & libc_s_ifmt() == 0o040000
    }

    fn kind(&self) -> u32 {
        self.mode & libc_s_ifmt()
    }

    /// Whether a layer would record these two differently, not counting content, link targets
    /// and attributes (compared separately where needed).
    fn same_recorded(&self, other: &Node) -> bool {
        self.mode == other.mode
            && self.uid == other.uid
            && self.gid == other.gid
            && self.mtime == other.mtime
            && (self.is_dir() || self.size == other.size)
            && self.rdev == other.rdev
    }
}

const fn libc_s_ifmt() -> u32 {
    0o170000
}

/// The entries of a tree, by path relative to its root (`a/b`), the root itself left out.
#[derive(Debug, Default)]
pub(crate) struct Index {
    pub(crate) entries: HashMap<Vec<u8>, Node>,
}

/// Which paths a walk leaves out.
#[derive(Clone, Debug, Default)]
pub(crate) struct Exclusions {
    /// Root-relative paths, left out with everything below them.
    paths: HashSet<Vec<u8>>,
    /// Every directory above an excluded path: never removed as a whole.
    ancestors: HashSet<Vec<u8>>,
    /// The device of the root: directories on another one are mounts and left out.
    device: Option<u64>,
}

impl Exclusions {
    /// `paths` (absolute or root-relative) plus the kernel filesystems; `device` is checked
    /// when given.
    pub(crate) fn new<'a>(paths: impl IntoIterator<Item = &'a str>, device: Option<u64>) -> Self {
        let mut x = Exclusions {
            device,
            ..Exclusions::default()
        };
        for p in paths.into_iter().chain(VIRTUAL) {
            let rel: Vec<u8> = p.trim_matches('/').as_bytes().to_vec();
            if rel.is_empty() {
                continue;
            }
            let mut end = 0;
            while let Some(i) = rel[end..].iter().position(|&b| b == b'/') {
                x.ancestors.insert(rel[..end + i].to_vec());
                end += i + 1;
            }
            x.paths.insert(rel);
        }
        x
    }

    /// The same paths, on any device (for walking a snapshot, which has no mounts).
    fn any_device(&self) -> Self {
        Exclusions {
            device: None,
            ..self.clone()
        }
    }
}

/// The mount points of this process's mount namespace other than `/`, from
/// `/proc/self/mountinfo` (octal escapes decoded), as absolute paths.
pub fn mount_points() -> Vec<String> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_octal)
        .filter(|p| p != "/")
        .collect()
}

fn unescape_octal(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..=i + 3].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The files this process runs from (its executable, loader and libraries, from
/// `/proc/self/maps`): a root sync must not delete them, or kiln could not start its own helper.
pub fn own_files() -> Vec<String> {
    let mut out: Vec<String> = fs::read_to_string("/proc/self/maps")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.starts_with('/'))
        .map(str::to_string)
        .collect();
    if let Ok(exe) = fs::read_link("/proc/self/exe") {
        out.push(exe.to_string_lossy().into_owned());
    }
    out.sort();
    out.dedup();
    out
}

/// Walks `root` in parallel and records every entry not excluded.
pub(crate) fn index(root: &Path, x: &Exclusions) -> Result<Index> {
    let fd = open_dir(CWD, root).map_err(|e| Error::io("opening", root, e))?;
    let entries = walk(root, fd, &[], x)?;
    Ok(Index {
        entries: entries.into_iter().collect(),
    })
}

fn open_dir<P: rustix::path::Arg>(at: impl AsFd, path: P) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        at,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// One directory's entries and everything below them. Every stat is relative to the open
/// directory (no path lookups from the root), children in parallel.
fn walk(root: &Path, dir: OwnedFd, rel: &[u8], x: &Exclusions) -> Result<Vec<(Vec<u8>, Node)>> {
    let here = || host(root, rel);
    let mut listing =
        Dir::new(dir).map_err(|e| Error::io("listing", here(), io::Error::from(e)))?;
    let mut names: Vec<CString> = Vec::new();
    while let Some(entry) = listing.read() {
        let entry = entry.map_err(|e| Error::io("listing", here(), io::Error::from(e)))?;
        let name = entry.file_name();
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    let fd = listing
        .fd()
        .map_err(|e| Error::io("listing", here(), io::Error::from(e)))?;
    let per_child: Vec<Vec<(Vec<u8>, Node)>> = names
        .par_iter()
        .map(|name| -> Result<Vec<(Vec<u8>, Node)>> {
            let child = join(rel, OsStr::from_bytes(name.to_bytes()));
            if x.paths.contains(&child) {
                return Ok(Vec::new());
            }
            let st = match rustix::fs::statx(
                fd,
                name.as_c_str(),
                AtFlags::SYMLINK_NOFOLLOW,
                StatxFlags::BASIC_STATS | StatxFlags::BTIME,
            ) {
                Ok(st) => st,
                // Gone between the listing and the stat: a process of the host is busy here.
                Err(Errno::NOENT) => return Ok(Vec::new()),
                Err(e) => return Err(Error::io("reading", host(root, &child), io::Error::from(e))),
            };
            let node = Node::of_statx(&st);
            if node.is_dir() {
                let device = rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor);
                if x.device.is_some_and(|d| d != device) {
                    return Ok(Vec::new());
                }
                let sub = open_dir(fd, name.as_c_str())
                    .map_err(|e| Error::io("opening", host(root, &child), e))?;
                let mut below = walk(root, sub, &child, x)?;
                below.push((child, node));
                return Ok(below);
            }
            Ok(vec![(child, node)])
        })
        .collect::<Result<_>>()?;
    Ok(per_child.into_iter().flatten().collect())
}

/// Whether `rel` or a directory above it is excluded.
fn excluded_or_below(x: &Exclusions, rel: &[u8]) -> bool {
    let mut p = rel;
    while !p.is_empty() {
        if x.paths.contains(p) {
            return true;
        }
        p = parent_of(p);
    }
    false
}

fn parent_of(rel: &[u8]) -> &[u8] {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => &rel[..i],
        None => &rel[..0],
    }
}

/// Orders paths as a depth-first walk with children sorted by name visits them: by their
/// components, not their bytes (`a`, `a/b`, `a-c`).
fn tree_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.split(|&c| c == b'/').cmp(b.split(|&c| c == b'/'))
}

fn host(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(OsStr::from_bytes(rel))
}

/// What a sync did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Entries copied from the chain (whole directories count once).
    pub copied: u64,
    /// Entries removed from the root (whole directories count once).
    pub removed: u64,
}

/// Makes `root` hold what `flat` holds, leaving the exclusions alone. Entries whose recorded
/// metadata already match are kept as they are. Returns what it did and the root's index
/// afterwards.
pub(crate) fn sync(flat: &Path, root: &Path, x: &Exclusions) -> Result<(SyncStats, Index)> {
    let (want, have) = rayon::join(|| index(flat, &x.any_device()), || index(root, x));
    let (want, have) = (want?, have?);
    // What needs work, found in parallel; usually little, so only that is sorted.
    let extra = have
        .entries
        .par_iter()
        .filter(|(rel, _)| !want.entries.contains_key(*rel) && !x.ancestors.contains(*rel))
        .map(|(rel, _)| Ok(rel));
    let differing = want.entries.par_iter().filter_map(|(rel, w)| {
        let h = have.entries.get(rel)?;
        let same = if w.is_dir() && h.is_dir() {
            w.same_recorded(h)
        } else {
            let link = || same_link(&host(flat, rel), &host(root, rel), w);
            match (w.kind() == h.kind() && w.same_recorded(h)).then(link) {
                Some(Ok(same)) => same,
                Some(Err(e)) => return Some(Err(e)),
                None => false,
            }
        };
        (!same).then_some(Ok(rel))
    });
    let missing = want
        .entries
        .par_iter()
        .filter(|(rel, _)| !have.entries.contains_key(*rel))
        .map(|(rel, _)| Ok(rel));
    let mut work: Vec<&Vec<u8>> = extra
        .chain(differing)
        .chain(missing)
        .collect::<Result<_>>()?;
    if work.is_empty() {
        return Ok((SyncStats::default(), have));
    }
    work.sort_by(|a, b| tree_order(a, b));

    let mut stats = SyncStats::default();
    // A subtree just copied or removed whole: its descendants need nothing more.
    let mut done: Option<&[u8]> = None;
    // Directories whose metadata is set last, deepest first: changes below move their mtime.
    let mut dirs: HashSet<&[u8]> = HashSet::new();
    for rel in work {
        if let Some(d) = done
            && rel.len() > d.len()
            && rel.starts_with(d)
            && rel[d.len()] == b'/'
        {
            continue;
        }
        let mut p = parent_of(rel);
        while !p.is_empty() && dirs.insert(p) {
            p = parent_of(p);
        }
        let (src, dst) = (host(flat, rel), host(root, rel));
        match (want.entries.get(rel), have.entries.get(rel)) {
            (None, None) => {}
            (Some(w), Some(h)) if w.is_dir() && h.is_dir() => {
                dirs.insert(rel);
            }
            (None, Some(_)) => {
                remove_tree(&dst)?;
                stats.removed += 1;
                done = Some(rel);
            }
            (Some(_), None) => {
                copy_node(&src, &dst)?;
                stats.copied += 1;
                done = Some(rel);
            }
            (Some(_), Some(_)) => {
                if x.ancestors.contains(rel) {
                    return Err(Error::io(
                        "replacing",
                        &dst,
                        io::Error::other(
                            "the image has a file where kiln keeps its own directories",
                        ),
                    ));
                }
                remove_tree(&dst)?;
                copy_node(&src, &dst)?;
                stats.copied += 1;
                done = Some(rel);
            }
        }
    }
    let mut dirs: Vec<&[u8]> = dirs.into_iter().collect();
    dirs.sort_by(|a, b| tree_order(b, a));
    for rel in dirs {
        let (src, dst) = (host(flat, rel), host(root, rel));
        if !src.is_dir() {
            // Above an exclusion only: kept as the root has it.
            continue;
        }
        let (w, h) = (lstat(&src)?, lstat(&dst)?);
        if !Node::of(&w).same_recorded(&Node::of(&h)) {
            copy_dir_metadata(&src, &dst)?;
        }
    }
    Ok((stats, index(root, x)?))
}

fn same_link(a: &Path, b: &Path, node: &Node) -> Result<bool> {
    if node.kind() != 0o120000 {
        return Ok(true);
    }
    let read = |p: &Path| fs::read_link(p).map_err(|e| Error::io("reading link", p, e));
    Ok(read(a)? == read(b)?)
}

/// The changes of `root` since `before` was taken, as a layer tar into `out`. `lower` is the
/// tree `root` held then (the parent's flattened chain), which candidates are compared with so
/// that only real changes (content, metadata, attributes) make the layer.
pub(crate) fn diff(
    lower: &Path,
    root: &Path,
    before: &Index,
    x: &Exclusions,
    out: impl Write,
    opts: &DiffOptions,
) -> Result<DiffStats> {
    // The step's own exclusions (the sandbox's mount points) are left out like the root's.
    let x = &Exclusions {
        paths: x
            .paths
            .iter()
            .cloned()
            .chain(
                opts.exclude
                    .iter()
                    .map(|p| p.trim_matches('/').as_bytes().to_vec()),
            )
            .collect(),
        ..x.clone()
    };
    let after = index(root, x)?;
    let before_kept = |rel: &[u8]| !excluded_or_below(x, rel);
    let no_hints = CopyHints::default();
    // Candidates: new, or with any metadata moved (ctime catches content and attributes).
    let moved: Vec<(&Vec<u8>, &Node, Option<&Node>)> = after
        .entries
        .par_iter()
        .filter_map(|(rel, n)| match before.entries.get(rel) {
            Some(b) if b == n => None,
            b => Some((rel, n, b)),
        })
        .collect();
    // Kept: directories recreated (another inode: opaque) and entries that really differ.
    let confirmed: Vec<(Vec<u8>, bool)> = moved
        .par_iter()
        .map(|(rel, now, was)| -> Result<Option<(Vec<u8>, bool)>> {
            let Some(was) = was else {
                return Ok(Some(((*rel).clone(), false)));
            };
            if now.is_dir() && was.is_dir() && (now.ino, now.born) != (was.ino, was.born) {
                return Ok(Some(((*rel).clone(), true)));
            }
            let (l, u) = (host(lower, rel), host(root, rel));
            let (lmd, umd) = match (fs::symlink_metadata(&l), fs::symlink_metadata(&u)) {
                (Ok(lmd), Ok(umd)) => (lmd, umd),
                _ => return Ok(Some(((*rel).clone(), false))),
            };
            let differs = if now.is_dir() && was.is_dir() {
                diff::metadata_differs(&l, &lmd, &u, &umd)?
            } else {
                diff::file_differs(&l, &lmd, &u, &umd, &no_hints)?
            };
            Ok(differs.then(|| ((*rel).clone(), false)))
        })
        .filter_map(|r| r.transpose())
        .collect::<Result<_>>()?;

    let recreated: HashSet<&[u8]> = confirmed
        .iter()
        .filter(|(_, r)| *r)
        .map(|(p, _)| p.as_slice())
        .collect();
    let under_recreated = |rel: &[u8]| {
        let mut p = parent_of(rel);
        while !p.is_empty() {
            if recreated.contains(p) {
                return true;
            }
            p = parent_of(p);
        }
        false
    };
    // (path, what): 0 entry, 1 opaque marker, 2 whiteout; the marker sorts right after its
    // directory's entry, before the children.
    let mut out_list: Vec<(Vec<u8>, u8)> = Vec::new();
    let mut listed: HashSet<Vec<u8>> = HashSet::new();
    let mut add_entry = |rel: &[u8], out_list: &mut Vec<(Vec<u8>, u8)>| {
        if listed.insert(rel.to_vec()) {
            out_list.push((rel.to_vec(), 0));
        }
    };
    for (rel, is_recreated) in &confirmed {
        add_entry(rel, &mut out_list);
        if *is_recreated {
            out_list.push((rel.clone(), 1));
        }
    }
    // Everything below a recreated directory is new.
    for rel in after.entries.keys() {
        if under_recreated(rel) {
            add_entry(rel, &mut out_list);
        }
    }
    for rel in before.entries.keys() {
        if after.entries.contains_key(rel) || under_recreated(rel) || !before_kept(rel) {
            continue;
        }
        // Only the topmost deleted path gets a whiteout, under a directory that still is one.
        let parent = parent_of(rel);
        let parent_kept = parent.is_empty()
            || after
                .entries
                .get(parent)
                .is_some_and(|n| n.is_dir() && !recreated.contains(parent));
        if parent_kept {
            out_list.push((rel.clone(), 2));
        }
    }
    // Every directory above a change is part of the layer.
    let mut ancestors = Vec::new();
    for (rel, _) in &out_list {
        let mut p = parent_of(rel);
        while !p.is_empty() {
            ancestors.push(p.to_vec());
            p = parent_of(p);
        }
    }
    for a in ancestors {
        add_entry(&a, &mut out_list);
    }
    out_list.sort_by(|(a, ka), (b, kb)| {
        tree_order(a, b).then_with(|| {
            // A whiteout takes its name's place; an entry comes before its opaque marker.
            ka.cmp(kb)
        })
    });
    let mut changes = Vec::with_capacity(out_list.len());
    for (rel, what) in out_list {
        let path = host(root, &rel);
        match what {
            0 => changes.push(Change::Entry {
                md: lstat(&path)?,
                path,
                rel,
                with_subtree: false,
            }),
            1 => changes.push(Change::Opaque {
                md: lstat(&path)?,
                rel,
            }),
            _ => {
                let parent = parent_of(&rel);
                changes.push(Change::Whiteout {
                    parent_md: lstat(&host(root, parent))?,
                    rel,
                })
            }
        }
    }
    diff::write_changes(out, opts, changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_order_is_by_components() {
        let mut v: Vec<&[u8]> = vec![b"a-c", b"a/b", b"a", b"b", b"a/b/c"];
        v.sort_by(|a, b| tree_order(a, b));
        assert_eq!(v, vec![&b"a"[..], b"a/b", b"a/b/c", b"a-c", b"b"]);
    }

    #[test]
    fn exclusions_protect_their_ancestors() {
        let x = Exclusions::new(["/var/lib/kiln", "ctx/"], None);
        assert!(x.paths.contains(&b"var/lib/kiln"[..]));
        assert!(x.paths.contains(&b"ctx"[..]));
        assert!(x.paths.contains(&b"proc"[..]));
        assert!(x.ancestors.contains(&b"var"[..]));
        assert!(x.ancestors.contains(&b"var/lib"[..]));
        assert!(!x.ancestors.contains(&b"ctx"[..]));
    }

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape_octal("/a\\040b"), "/a b");
        assert_eq!(unescape_octal("/plain"), "/plain");
    }
}
