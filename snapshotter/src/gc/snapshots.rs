//! Collecting snapshots: `snapshots/<chain hex>/` directories that no root needs.

use super::roots::Roots;
use super::{GcError, GcResult};
use crate::chain::ChainId;
use crate::copy::remove_tree;
use kiln_oci::Store;
use kiln_oci::gc::GcParticipant;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

static REMOVALS: AtomicU64 = AtomicU64::new(0);

/// Overlayfs stacks at most this many layers; a longer parent walk is a loop.
const MAX_DEPTH: usize = 500;

/// The snapshot directories under `snapshots_dir` by chain. Hidden entries are work in
/// progress (`.tmp-*`, `.active-*`), not snapshots; names that are not chain ids are returned
/// separately.
pub(super) fn scan(snapshots_dir: &Path) -> GcResult<(BTreeMap<ChainId, PathBuf>, Vec<PathBuf>)> {
    let mut snapshots = BTreeMap::new();
    let mut strangers = Vec::new();
    let entries = match fs::read_dir(snapshots_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((snapshots, strangers)),
        Err(e) => return Err(GcError::io("listing", snapshots_dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| GcError::io("listing", snapshots_dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        match crate::chain::parse(&format!("sha256:{name}")) {
            Ok(chain) if chain.hex() == name => {
                snapshots.insert(chain, entry.path());
            }
            _ => strangers.push(entry.path()),
        }
    }
    Ok((snapshots, strangers))
}

/// The parent chain a snapshot records; `None` for a bottom layer or an unreadable file (fsck
/// reports those).
pub(super) fn parent_of(dir: &Path) -> Option<ChainId> {
    let text = read_quietly(&dir.join("parent")).ok()?;
    crate::chain::parse(text.trim()).ok()
}

/// Reads a small metadata file without updating its access time where the kernel allows it:
/// access times of `parent` files are how [`last_used`] tells when a snapshot was mounted, and
/// housekeeping reading them must not make every snapshot look fresh.
pub(super) fn read_quietly(path: &Path) -> io::Result<String> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::CLOEXEC;
    let fd = match rustix::fs::open(path, flags | OFlags::NOATIME, Mode::empty()) {
        Ok(fd) => fd,
        // O_NOATIME needs ownership of the file (or CAP_FOWNER).
        Err(rustix::io::Errno::PERM) => rustix::fs::open(path, flags, Mode::empty())?,
        Err(e) => return Err(e.into()),
    };
    io::read_to_string(fs::File::from(fd).take(1 << 16))
}

/// `roots` and every chain below them that is in the store.
fn with_lineage(
    roots: &BTreeSet<ChainId>,
    snapshots: &BTreeMap<ChainId, PathBuf>,
) -> BTreeSet<ChainId> {
    let mut out = BTreeSet::new();
    for root in roots {
        let mut cur = root.clone();
        for _ in 0..MAX_DEPTH {
            let Some(dir) = snapshots.get(&cur) else {
                break;
            };
            if !out.insert(cur.clone()) {
                break; // the rest of this lineage is already in
            }
            match parent_of(dir) {
                Some(parent) => cur = parent,
                None => break,
            }
        }
    }
    out
}

/// Bytes a directory tree occupies on disk (hard links counted once), without crossing into
/// other filesystems. Unreadable parts count as nothing.
pub(super) fn disk_usage(dir: &Path) -> u64 {
    let Ok(top) = fs::symlink_metadata(dir) else {
        return 0;
    };
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.dev() != top.dev() || (meta.nlink() > 1 && !seen.insert(meta.ino())) {
            continue;
        }
        total += meta.blocks() * 512;
        if meta.is_dir()
            && let Ok(entries) = fs::read_dir(&path)
        {
            stack.extend(entries.flatten().map(|e| e.path()));
        }
    }
    total
}

/// When a snapshot was last mounted: every mount reads the `parent` file of each layer in its
/// chain, which updates its access time (daily with `relatime`, enough to pick an eviction).
fn last_used(dir: &Path) -> SystemTime {
    fs::metadata(dir.join("parent"))
        .ok()
        .into_iter()
        .flat_map(|m| [m.accessed().ok(), m.modified().ok()])
        .flatten()
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Removes a snapshot directory. It is first renamed to a hidden `.tmp-` name, so a prune
/// killed half-way never leaves a partial tree under a chain id that builds would trust (the
/// next sweep finishes it). Returns the bytes freed.
pub(super) fn remove_snapshot(dir: &Path) -> GcResult<u64> {
    let bytes = disk_usage(dir);
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique per call: a leftover of a killed prune (swept later) must not be in the way.
    let n = REMOVALS.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let doomed = dir.with_file_name(format!(".tmp-gc-{}-{nanos}-{n}-{name}", std::process::id()));
    match fs::rename(dir, &doomed) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(GcError::io("removing snapshot", dir, e)),
    }
    remove_tree(&doomed)?;
    Ok(bytes)
}

/// The snapshots as a participant of `kiln prune`: removes those no root needs; with `all`,
/// every one not in use (they are re-created from the image's layers when needed); with a size
/// cap, least recently used ones (top layers first) until the cap is met. Snapshots in use —
/// mounted lower layers, containers' images — are never removed.
pub struct SnapshotGc<'s> {
    store: &'s Store,
}

impl<'s> SnapshotGc<'s> {
    pub fn new(store: &'s Store) -> Self {
        SnapshotGc { store }
    }

    fn reclaim_inner(&self, all: bool, want: u64) -> GcResult<u64> {
        let roots = Roots::gather(self.store)?;
        let (snapshots, _) = scan(&self.store.snapshots_dir())?;
        let in_use = with_lineage(&roots.in_use(), &snapshots);
        let keep = if all {
            in_use.clone()
        } else {
            with_lineage(&roots.all(), &snapshots)
        };
        let mut freed = 0;
        let mut remaining = BTreeMap::new();
        for (chain, dir) in snapshots {
            if keep.contains(&chain) {
                remaining.insert(chain, dir);
            } else {
                freed += remove_snapshot(&dir)?;
            }
        }
        if freed >= want {
            return Ok(freed);
        }
        // Only a snapshot no other one stacks on can go: removing a lower layer would leave
        // the chains above it unmountable. Each removal may turn its parent into such a leaf.
        let parent: BTreeMap<ChainId, Option<ChainId>> = remaining
            .iter()
            .map(|(chain, dir)| (chain.clone(), parent_of(dir)))
            .collect();
        let mut children: BTreeMap<ChainId, usize> = BTreeMap::new();
        for p in parent.values().flatten() {
            *children.entry(p.clone()).or_default() += 1;
        }
        // Least recently used first.
        let mut leaves: BinaryHeap<Reverse<(SystemTime, ChainId)>> = remaining
            .iter()
            .filter(|(chain, _)| !in_use.contains(*chain) && !children.contains_key(*chain))
            .map(|(chain, dir)| Reverse((last_used(dir), chain.clone())))
            .collect();
        while freed < want {
            let Some(Reverse((_, victim))) = leaves.pop() else {
                break;
            };
            let Some(dir) = remaining.remove(&victim) else {
                continue;
            };
            freed += remove_snapshot(&dir)?;
            let Some(Some(up)) = parent.get(&victim) else {
                continue;
            };
            let left = children.get_mut(up).map(|n| {
                *n -= 1;
                *n
            });
            if left == Some(0)
                && !in_use.contains(up)
                && let Some(dir) = remaining.get(up)
            {
                leaves.push(Reverse((last_used(dir), up.clone())));
            }
        }
        Ok(freed)
    }
}

impl GcParticipant for SnapshotGc<'_> {
    fn name(&self) -> &str {
        "snapshots"
    }

    /// Snapshots are extracted trees; they need no blob.
    fn roots(&self) -> kiln_oci::Result<Vec<kiln_oci::Digest>> {
        Ok(Vec::new())
    }

    fn usage(&self) -> kiln_oci::Result<u64> {
        let (snapshots, _) = scan(&self.store.snapshots_dir())?;
        Ok(snapshots.values().map(|d| disk_usage(d)).sum())
    }

    fn reclaim(&mut self, all: bool, want: u64) -> kiln_oci::Result<u64> {
        Ok(self.reclaim_inner(all, want)?)
    }
}
