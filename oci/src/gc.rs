//! Garbage collection (`kiln prune`) and verification (`kiln fsck`).
//!
//! Roots are what index.json references (manifests, the manifests of nested indexes, configs,
//! layers), the pins of live kiln processes, and whatever other components register through
//! [`GcParticipant`] (the snapshotter's snapshots and the build cache keep layers alive that no
//! tagged image uses). Everything else under `blobs/sha256/` is garbage.

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::{IndexExt, is_index_type, ref_name};
use crate::store::{Store, StoreLock};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

/// A component that keeps state in the store besides images (snapshots, build cache). The
/// collector calls it with the store's lock held exclusively, so it must not take that lock.
pub trait GcParticipant {
    /// A short name for reports ("snapshots", "build cache").
    fn name(&self) -> &str;
    /// Blobs it still needs; they survive the sweep.
    fn roots(&self) -> Result<Vec<Digest>>;
    /// Bytes it occupies outside `blobs/`.
    fn usage(&self) -> Result<u64>;
    /// Frees space: with `all`, everything it holds; otherwise what nothing uses any more, and
    /// then, least recently used first, until `want` bytes are freed (`want` is 0 unless a
    /// `--keep-storage` cap is being enforced). Returns the bytes freed.
    fn reclaim(&mut self, all: bool, want: u64) -> Result<u64>;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct PruneOptions {
    /// Also drop everything participants hold (all build cache and unused snapshots).
    pub all: bool,
    /// Shrink the store to at most this many bytes, as far as untagged content allows.
    pub keep_storage: Option<u64>,
}

#[derive(Debug, Default)]
pub struct PruneReport {
    /// Dangling images removed from index.json (their manifest digests).
    pub removed_images: Vec<Digest>,
    pub removed_blobs: usize,
    pub reclaimed_bytes: u64,
    /// Store size afterwards: blobs plus what participants report.
    pub usage_after: u64,
    /// Set when `keep_storage` could not be met because tagged images alone need more.
    pub over_cap_by: Option<u64>,
}

pub fn prune(
    store: &Store,
    options: PruneOptions,
    participants: &mut [&mut dyn GcParticipant],
) -> Result<PruneReport> {
    let lock = store.lock_exclusive()?;
    let removed_images = store.update_index_locked(&lock, |index| {
        let mut removed = Vec::new();
        index.manifests_mut().retain(|d| {
            if ref_name(d).is_some() {
                return true;
            }
            if let Ok(digest) = Digest::from_oci(d.digest()) {
                removed.push(digest);
            }
            false
        });
        Ok(removed)
    })?;
    let mut report = PruneReport {
        removed_images,
        ..PruneReport::default()
    };
    for participant in participants.iter_mut() {
        report.reclaimed_bytes += participant.reclaim(options.all, 0)?;
    }
    sweep(store, &lock, participants, &mut report)?;
    let mut usage = usage(store, participants)?;
    if let Some(cap) = options.keep_storage
        && usage > cap
    {
        for participant in participants.iter_mut() {
            if usage <= cap {
                break;
            }
            let freed = participant.reclaim(false, usage - cap)?;
            report.reclaimed_bytes += freed;
            usage = usage.saturating_sub(freed);
        }
        sweep(store, &lock, participants, &mut report)?;
        usage = self::usage(store, participants)?;
        if usage > cap {
            report.over_cap_by = Some(usage - cap);
        }
    }
    report.usage_after = usage;
    Ok(report)
}

fn usage(store: &Store, participants: &[&mut dyn GcParticipant]) -> Result<u64> {
    let blobs: u64 = store.list_blobs()?.iter().map(|(_, size)| size).sum();
    let mut total = blobs;
    for participant in participants {
        total += participant.usage()?;
    }
    Ok(total)
}

fn sweep(
    store: &Store,
    _held: &StoreLock,
    participants: &[&mut dyn GcParticipant],
    report: &mut PruneReport,
) -> Result<()> {
    let index = store.read_index()?;
    let mut live = reachable(store, &index)?;
    live.extend(store.live_pins()?);
    for participant in participants {
        live.extend(participant.roots()?);
    }
    for (digest, size) in store.list_blobs()? {
        if !live.contains(&digest) {
            store.remove_blob(&digest)?;
            report.removed_blobs += 1;
            report.reclaimed_bytes += size;
        }
    }
    // Chunk records of removed blobs would point nowhere.
    crate::gzip::memo::prune(store.root(), store.blobs_dir())
}

/// Every blob index.json reaches. Fails if a manifest cannot be read: its layers are unknown,
/// and deleting them as garbage would destroy an image that `fsck --repair` might still save.
pub fn reachable(store: &Store, index: &ImageIndex) -> Result<BTreeSet<Digest>> {
    let mut live = BTreeSet::new();
    for desc in index.manifests() {
        walk(store, desc, &mut live, 0).map_err(|e| Error::InvalidImage {
            image: ref_name(desc).map_or_else(|| desc.digest().to_string(), str::to_string),
            reason: format!("{e}; run `kiln fsck` before pruning"),
        })?;
    }
    Ok(live)
}

fn walk(store: &Store, desc: &Descriptor, live: &mut BTreeSet<Digest>, depth: u32) -> Result<()> {
    let digest = Digest::from_oci(desc.digest())?;
    if !live.insert(digest.clone()) {
        return Ok(());
    }
    if depth > 4 {
        return Err(Error::InvalidImage {
            image: digest.to_string(),
            reason: "image indexes are nested too deeply".into(),
        });
    }
    let bytes = store.read_blob(&digest, Some(desc.size()))?;
    if is_index_type(desc.media_type()) {
        let index: ImageIndex =
            serde_json::from_slice(&bytes).map_err(|e| Error::json(digest.to_string(), e))?;
        for child in index.manifests() {
            walk(store, child, live, depth + 1)?;
        }
        return Ok(());
    }
    let manifest: ImageManifest =
        serde_json::from_slice(&bytes).map_err(|e| Error::json(digest.to_string(), e))?;
    live.insert(Digest::from_oci(manifest.config().digest())?);
    for layer in manifest.layers() {
        live.insert(Digest::from_oci(layer.digest())?);
    }
    Ok(())
}

#[derive(Debug, Default)]
pub struct FsckReport {
    pub blobs_checked: usize,
    /// Blobs whose content does not hash to their name.
    pub corrupt: Vec<Digest>,
    /// Referenced blobs that are absent (or corrupt), with who references them.
    pub missing: BTreeMap<Digest, Vec<String>>,
    /// index.json entries (tag or digest) whose content is incomplete.
    pub broken_images: Vec<String>,
    /// What `--repair` removed.
    pub repaired: Vec<String>,
}

impl FsckReport {
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty() && self.missing.is_empty() && self.broken_images.is_empty()
    }
}

/// Re-hashes every blob and checks that every image in index.json is complete. With `repair`,
/// corrupt blobs are deleted and index entries pointing at incomplete content are dropped.
pub fn fsck(store: &Store, repair: bool) -> Result<FsckReport> {
    // Repair holds the lock throughout so no writer sees half-repaired state; a plain check
    // needs none (blobs appear atomically and are never rewritten).
    let lock = if repair {
        Some(store.lock_exclusive()?)
    } else {
        None
    };
    let blobs = store.list_blobs()?;
    let verdicts: Vec<(Digest, Result<bool>)> = blobs
        .par_iter()
        .map(|(digest, _)| (digest.clone(), store.verify_blob(digest)))
        .collect();
    let mut report = FsckReport {
        blobs_checked: blobs.len(),
        ..FsckReport::default()
    };
    for (digest, verdict) in verdicts {
        match verdict {
            Ok(true) | Err(Error::BlobNotFound(_)) => {}
            Ok(false) => report.corrupt.push(digest),
            Err(e) => return Err(e),
        }
    }
    let corrupt: BTreeSet<Digest> = report.corrupt.iter().cloned().collect();
    let index = store.read_index()?;
    let mut broken: BTreeSet<String> = BTreeSet::new();
    for desc in index.manifests() {
        let label = ref_name(desc).map_or_else(|| desc.digest().to_string(), str::to_string);
        let mut problems = Vec::new();
        check_closure(store, desc, &corrupt, &mut problems, 0);
        if !problems.is_empty() {
            broken.insert(desc.digest().to_string());
            report.broken_images.push(label.clone());
            for digest in problems {
                report
                    .missing
                    .entry(digest)
                    .or_default()
                    .push(label.clone());
            }
        }
    }
    if let Some(lock) = &lock {
        for digest in &report.corrupt {
            store.remove_blob(digest)?;
            report
                .repaired
                .push(format!("removed corrupt blob {digest}"));
        }
        // A corrupt blob's chunks must not be copied into new layers.
        crate::gzip::memo::prune(store.root(), store.blobs_dir())?;
        let dropped = store.update_index_locked(lock, |index| {
            let mut dropped = Vec::new();
            index.manifests_mut().retain(|d| {
                let keep = !broken.contains(&d.digest().to_string());
                if !keep {
                    dropped
                        .push(ref_name(d).map_or_else(|| d.digest().to_string(), str::to_string));
                }
                keep
            });
            Ok(dropped)
        })?;
        for label in dropped {
            report.repaired.push(format!("removed index entry {label}"));
        }
    }
    Ok(report)
}

/// Collects the digests under `desc` that are missing, corrupt or unreadable.
fn check_closure(
    store: &Store,
    desc: &Descriptor,
    corrupt: &BTreeSet<Digest>,
    problems: &mut Vec<Digest>,
    depth: u32,
) {
    let Ok(digest) = Digest::from_oci(desc.digest()) else {
        return;
    };
    let mut check_blob = |digest: &Digest, size: u64| -> bool {
        let ok = !corrupt.contains(digest)
            && std::fs::metadata(store.blob_path(digest)).is_ok_and(|m| m.len() == size);
        if !ok {
            problems.push(digest.clone());
        }
        ok
    };
    if !check_blob(&digest, desc.size()) || depth > 4 {
        return;
    }
    let Ok(bytes) = store.read_blob(&digest, Some(desc.size())) else {
        problems.push(digest);
        return;
    };
    if is_index_type(desc.media_type()) {
        match serde_json::from_slice::<ImageIndex>(&bytes) {
            Ok(index) => {
                for child in index.manifests() {
                    check_closure(store, child, corrupt, problems, depth + 1);
                }
            }
            Err(_) => problems.push(digest),
        }
        return;
    }
    let Ok(manifest) = serde_json::from_slice::<ImageManifest>(&bytes) else {
        problems.push(digest);
        return;
    };
    for child in std::iter::once(manifest.config()).chain(manifest.layers()) {
        if let Ok(d) = Digest::from_oci(child.digest()) {
            check_blob(&d, child.size());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::import_rootfs;
    use crate::layer::{Compression, LayerOptions};
    use crate::reference::Reference;

    fn tar_of(content: &[u8]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, "f", content).unwrap();
        builder.into_inner().unwrap()
    }

    fn import(store: &Store, content: &[u8], tag: Option<&str>) -> crate::image::Image {
        let tags: Vec<Reference> = tag
            .map(|t| Reference::parse(t).unwrap())
            .into_iter()
            .collect();
        let options = LayerOptions {
            compression: Compression::Gzip(1),
            threads: 1,
        };
        import_rootfs(store, &mut &tar_of(content)[..], "t", &tags, options, None).unwrap()
    }

    struct FakeCache {
        keep: Digest,
        bytes: u64,
        calls: Vec<(bool, u64)>,
    }

    impl GcParticipant for FakeCache {
        fn name(&self) -> &str {
            "fake cache"
        }
        fn roots(&self) -> Result<Vec<Digest>> {
            Ok(vec![self.keep.clone()])
        }
        fn usage(&self) -> Result<u64> {
            Ok(self.bytes)
        }
        fn reclaim(&mut self, all: bool, want: u64) -> Result<u64> {
            self.calls.push((all, want));
            let freed = if all {
                self.bytes
            } else {
                want.min(self.bytes)
            };
            self.bytes -= freed;
            Ok(freed)
        }
    }

    #[test]
    fn prune_keeps_tagged_pinned_and_participant_roots() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let kept = import(&store, b"kept", Some("kept"));
        let dropped = import(&store, b"dropped", None);
        // Our own process pinned everything it wrote; a fresh handle (another "process" as far
        // as pins go once the first is dropped) sees only index.json.
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let (loose, _) = store.put_blob(b"cache-only layer").unwrap();
        let (garbage, _) = {
            let other = Store::open(dir.path()).unwrap();
            let g = other.put_blob(b"garbage").unwrap();
            drop(other);
            g
        };
        let mut cache = FakeCache {
            keep: loose.clone(),
            bytes: 1000,
            calls: Vec::new(),
        };
        let report = prune(
            &store,
            PruneOptions::default(),
            &mut [&mut cache as &mut dyn GcParticipant],
        )
        .unwrap();
        assert_eq!(report.removed_images, vec![dropped.manifest_digest.clone()]);
        assert!(store.has_blob(&kept.id));
        assert!(store.has_blob(&kept.manifest_digest));
        assert!(store.has_blob(&loose));
        assert!(!store.has_blob(&garbage));
        assert!(!store.has_blob(&dropped.manifest_digest));
        assert!(!store.has_blob(&dropped.id));
        assert_eq!(cache.calls, vec![(false, 0)]);
        assert!(fsck(&store, false).unwrap().is_clean());
    }

    #[test]
    fn retained_blobs_survive_another_process_pruning() {
        let dir = tempfile::tempdir().unwrap();
        let (loose, _) = {
            let writer = Store::open(dir.path()).unwrap();
            writer.put_blob(b"a layer only the cache knows").unwrap()
        };
        let builder = Store::open(dir.path()).unwrap();
        assert!(builder.retain_blob(&loose).unwrap());
        let collector = Store::open(dir.path()).unwrap();
        prune(&collector, PruneOptions::default(), &mut []).unwrap();
        assert!(collector.has_blob(&loose));
        drop(builder);
        prune(&collector, PruneOptions::default(), &mut []).unwrap();
        assert!(!collector.has_blob(&loose));
        assert!(!collector.retain_blob(&loose).unwrap());
    }

    #[test]
    fn keep_storage_cap_is_enforced_through_participants() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        import(&store, b"x", Some("x"));
        let blobs: u64 = store.list_blobs().unwrap().iter().map(|b| b.1).sum();
        let mut cache = FakeCache {
            keep: Digest::of(b"none"),
            bytes: 10_000,
            calls: Vec::new(),
        };
        let options = PruneOptions {
            all: false,
            keep_storage: Some(blobs + 500),
        };
        let report = prune(&store, options, &mut [&mut cache as &mut dyn GcParticipant]).unwrap();
        assert!(report.usage_after <= blobs + 500, "{report:?}");
        assert_eq!(report.over_cap_by, None);
        // A cap below what tagged images need is reported, not met by deleting them.
        let options = PruneOptions {
            all: true,
            keep_storage: Some(1),
        };
        let report = prune(&store, options, &mut [&mut cache as &mut dyn GcParticipant]).unwrap();
        assert_eq!(report.over_cap_by, Some(blobs - 1));
        assert!(store.find_image("x").is_ok());
    }

    #[test]
    fn fsck_finds_and_repairs_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let good = import(&store, b"good", Some("good"));
        let bad = import(&store, b"bad", Some("bad"));
        assert!(fsck(&store, false).unwrap().is_clean());
        let layer = bad.layers().unwrap()[0].digest.clone();
        std::fs::write(store.blob_path(&layer), b"garbage").unwrap();
        let report = fsck(&store, false).unwrap();
        assert_eq!(report.corrupt, vec![layer.clone()]);
        assert_eq!(report.broken_images, vec!["bad:latest".to_string()]);
        assert!(report.missing.contains_key(&layer));
        let report = fsck(&store, true).unwrap();
        assert_eq!(report.repaired.len(), 2, "{:?}", report.repaired);
        assert!(fsck(&store, false).unwrap().is_clean());
        assert!(store.find_image("bad").is_err());
        assert_eq!(store.find_image("good").unwrap().id, good.id);
        // A missing manifest makes prune refuse rather than guess.
        std::fs::remove_file(store.blob_path(&good.manifest_digest)).unwrap();
        assert!(prune(&store, PruneOptions::default(), &mut []).is_err());
        assert_eq!(
            fsck(&store, false).unwrap().broken_images,
            vec!["good:latest".to_string()]
        );
    }
}
