//! Housekeeping of snapshots and cache records against a real store: `prune` keeps what images,
//! records and mounts need and removes the rest, a size cap evicts the least recently used,
//! `fsck` finds and repairs damage, and debris of killed processes is swept. Mount tests need
//! root (under `CI=true` its absence is a failure).

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use common::{RawTar, diff_id, is_root, prerequisite, set_mtime};
use kiln_oci::gc::{self, GcParticipant, PruneOptions, PruneReport};
use kiln_oci::{Compression, ImageConfig, LayerOptions, LayerWriter, Reference, Store};
use kiln_snapshotter::gc::{CacheRecords, SnapshotGc, Sweep, fsck, sweep_debris};
use kiln_snapshotter::{Backend, ChainId, Snapshotter, SnapshotterOptions, is_mounted};

struct Fixture {
    dir: tempfile::TempDir,
    store: Store,
    snap: Snapshotter,
}

fn copies() -> SnapshotterOptions {
    SnapshotterOptions {
        force_copy: true,
        ..SnapshotterOptions::default()
    }
}

/// A one-file layer; `size` bytes of content make its snapshot measurably big.
fn layer(name: &str, size: usize) -> Vec<u8> {
    let mut t = RawTar::default();
    let content: Vec<u8> = (0..size).map(|i| (i * 7 + name.len()) as u8).collect();
    t.file(name, &content);
    t.finish()
}

impl Fixture {
    fn new(options: SnapshotterOptions) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let snap = Snapshotter::with_options(dir.path(), options).unwrap();
        Fixture { dir, store, snap }
    }

    /// Applies `tars` as a chain and returns its chain ids, bottom first.
    fn chain(&self, parent: Option<&ChainId>, tars: &[&[u8]]) -> Vec<ChainId> {
        let mut out: Vec<ChainId> = Vec::new();
        for tar in tars {
            let below = out.last().or(parent);
            out.push(self.snap.apply_layer(below, &diff_id(tar), *tar).unwrap());
        }
        out
    }

    /// An image of `tars` (untagged when `tag` is None) whose snapshots are in the store.
    fn image(&self, tars: &[&[u8]], tag: Option<&str>) -> Vec<ChainId> {
        let mut layers = Vec::new();
        for tar in tars {
            let options = LayerOptions {
                compression: Compression::None,
                threads: 1,
            };
            let mut writer = LayerWriter::new(&self.store, options).unwrap();
            writer.write_all(tar).unwrap();
            layers.push(writer.finish().unwrap());
        }
        let tags: Vec<Reference> = tag
            .map(|t| Reference::parse(t).unwrap())
            .into_iter()
            .collect();
        self.store
            .write_image(&ImageConfig::for_host(), &layers, &tags)
            .unwrap();
        self.chain(None, tars)
    }

    /// A cache record in the builder's format, naming `blob` and the chain `chain`.
    fn record(&self, key: char, blob: &str, chain: &ChainId) -> PathBuf {
        let path = self.store.cache_dir().join(key.to_string().repeat(64));
        let record = serde_json::json!({
            "created": "2026-01-01T00:00:00Z",
            "layer": {
                "digest": blob,
                "diff_id": chain.as_str(),
                "size": 1,
                "media_type": "application/vnd.oci.image.layer.v1.tar",
                "chain_id": chain.as_str(),
            }
        });
        fs::write(&path, record.to_string()).unwrap();
        path
    }

    fn prune(&self, options: PruneOptions) -> PruneReport {
        let mut snapshots = SnapshotGc::new(&self.store);
        let mut records = CacheRecords::new(&self.store);
        let mut participants: [&mut dyn GcParticipant; 2] = [&mut snapshots, &mut records];
        gc::prune(&self.store, options, &mut participants).unwrap()
    }

    fn has(&self, chain: &ChainId) -> bool {
        self.dir.path().join("snapshots").join(chain.hex()).is_dir()
    }

    fn snapshot_dir(&self, chain: &ChainId) -> PathBuf {
        self.dir.path().join("snapshots").join(chain.hex())
    }
}

fn all() -> PruneOptions {
    PruneOptions {
        all: true,
        keep_storage: None,
    }
}

#[test]
fn prune_keeps_tagged_images_and_live_records_and_removes_the_rest() {
    let f = Fixture::new(copies());
    let (a, b, x, y, r) = (
        layer("a", 10),
        layer("b", 10),
        layer("x", 10),
        layer("y", 10),
        layer("r", 10),
    );
    let tagged = f.image(&[&a, &b], Some("app:1"));
    let dangling = f.image(&[&a, &x], None);
    let stray = f.chain(None, &[&y]);
    let cached = f.chain(Some(&tagged[0]), &[&r]);
    let (blob, _) = f.store.put_blob(b"the cached layer").unwrap();
    let record = f.record('c', blob.as_str(), &cached[0]);

    let report = f.prune(PruneOptions::default());
    assert_eq!(report.removed_images.len(), 1, "{report:?}");
    for kept in [&tagged[0], &tagged[1], &cached[0]] {
        assert!(f.has(kept), "{kept} was removed");
    }
    for gone in [&dangling[1], &stray[0]] {
        assert!(!f.has(gone), "{gone} was kept");
    }
    assert!(record.exists());
    assert!(f.store.has_blob(&blob));

    // --all drops every record and every snapshot nothing has mounted; images stay.
    f.prune(all());
    assert!(!record.exists());
    for chain in [&tagged[0], &tagged[1], &cached[0]] {
        assert!(!f.has(chain), "{chain} survived --all");
    }
    assert!(f.store.find_image("app:1").is_ok());
    // Nothing half-removed is left behind.
    let left: Vec<_> = fs::read_dir(f.dir.path().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn records_whose_blob_is_gone_are_pruned_with_their_snapshots() {
    let f = Fixture::new(copies());
    let base = f.image(&[&layer("base", 10)], Some("base"));
    let cached = f.chain(Some(&base[0]), &[&layer("step", 10)]);
    let missing = format!("sha256:{}", "e".repeat(64));
    let dead = f.record('d', &missing, &cached[0]);
    let unreadable = f.store.cache_dir().join("f".repeat(64));
    fs::write(&unreadable, b"{ not json").unwrap();
    f.prune(PruneOptions::default());
    assert!(!dead.exists());
    assert!(!unreadable.exists());
    assert!(!f.has(&cached[0]));
    assert!(f.has(&base[0]));
}

fn total_usage(f: &Fixture) -> u64 {
    let blobs: u64 = f.store.list_blobs().unwrap().iter().map(|b| b.1).sum();
    let snapshots = SnapshotGc::new(&f.store).usage().unwrap();
    let records = CacheRecords::new(&f.store).usage().unwrap();
    blobs + snapshots + records
}

fn du(dir: &Path) -> u64 {
    let out = std::process::Command::new("du")
        .args(["-s", "-B1"])
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn keep_storage_evicts_least_recently_used_snapshots_first() {
    let f = Fixture::new(copies());
    let base = f.image(&[&layer("base", 4096)], Some("base"));
    let (b1, _) = f.store.put_blob(b"one").unwrap();
    let (b2, _) = f.store.put_blob(b"two").unwrap();
    let old = f.chain(Some(&base[0]), &[&layer("old", 300_000)]);
    let new = f.chain(Some(&base[0]), &[&layer("new", 300_000)]);
    f.record('1', b1.as_str(), &old[0]);
    f.record('2', b2.as_str(), &new[0]);
    // The old step's snapshot was last mounted a week ago.
    let week_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - 7 * 86_400;
    for p in ["parent", ""] {
        set_mtime(&f.snapshot_dir(&old[0]).join(p), week_ago);
    }

    let before = total_usage(&f);
    let old_size = du(&f.snapshot_dir(&old[0]));
    assert!(old_size > 300_000, "{old_size}");
    let cap = before - old_size + 1000;
    let report = f.prune(PruneOptions {
        all: false,
        keep_storage: Some(cap),
    });
    assert_eq!(report.over_cap_by, None, "{report:?}");
    assert!(report.usage_after <= cap, "{report:?} cap {cap}");
    assert_eq!(report.usage_after, total_usage(&f));
    assert!(!f.has(&old[0]), "the least recently used snapshot was kept");
    assert!(
        f.has(&new[0]) && f.has(&base[0]),
        "more than needed was evicted"
    );
    // Records outlive their evicted snapshots: the layer can be extracted again.
    assert_eq!(fs::read_dir(f.store.cache_dir()).unwrap().count(), 2);

    // A cap nothing but images can meet empties snapshots and cache, and says by how much.
    let report = f.prune(PruneOptions {
        all: false,
        keep_storage: Some(1),
    });
    assert!(report.over_cap_by.is_some(), "{report:?}");
    assert!(!f.has(&base[0]) && !f.has(&new[0]));
    assert_eq!(fs::read_dir(f.store.cache_dir()).unwrap().count(), 0);
    assert!(f.store.find_image("base").is_ok());
}

fn overlay_fixture() -> Option<Fixture> {
    if !prerequisite(is_root(), "overlay mounts need root") {
        return None;
    }
    let f = Fixture::new(SnapshotterOptions::default());
    let overlay = *f.snap.backend() == Backend::Overlay;
    prerequisite(overlay, &format!("overlayfs: {:?}", f.snap.backend())).then_some(f)
}

#[test]
fn prune_keeps_the_lower_layers_of_a_mounted_snapshot() {
    let Some(f) = overlay_fixture() else { return };
    let chain = f.chain(None, &[&layer("a", 10), &layer("b", 10), &layer("c", 10)]);
    let active = f.snap.prepare(Some(&chain[2])).unwrap();
    assert!(is_mounted(active.mount_point()));
    f.prune(all());
    f.prune(PruneOptions {
        all: false,
        keep_storage: Some(1),
    });
    for c in &chain {
        assert!(f.has(c), "{c} was removed while mounted");
    }
    assert_eq!(fs::read(active.mount_point().join("a")).unwrap().len(), 10);
    active.abort().unwrap();
    f.prune(PruneOptions::default());
    for c in &chain {
        assert!(!f.has(c), "{c} outlived its mount");
    }
}

#[test]
fn fsck_finds_bad_snapshots_and_records_and_repair_removes_them() {
    let f = Fixture::new(copies());
    let good = f.image(&[&layer("good", 10)], Some("good"));
    let bad = f.image(&[&layer("a", 10), &layer("b", 10)], Some("bad"));
    let missing = format!("sha256:{}", "e".repeat(64));
    let dead = f.record('d', &missing, &good[0]);
    let odd = f.store.cache_dir().join("0".repeat(64));
    fs::write(&odd, b"not a record").unwrap();
    let clean = fsck(&f.store, false).unwrap();
    assert!(!clean.is_clean(), "the dead record went unnoticed");
    fs::remove_file(&dead).unwrap();
    assert!(fsck(&f.store, false).unwrap().is_clean());
    f.record('d', &missing, &good[0]);

    // The bottom layer's diffid file now names another layer.
    let wrong = diff_id(&layer("other", 10));
    fs::write(f.snapshot_dir(&bad[0]).join("diffid"), wrong.as_str()).unwrap();
    let report = fsck(&f.store, false).unwrap();
    let items: Vec<(&str, &str)> = report
        .broken
        .iter()
        .map(|b| (b.item.as_str(), b.problem.as_str()))
        .collect();
    assert_eq!(report.broken.len(), 3, "{items:?}");
    let about = |what: &str| {
        report
            .broken
            .iter()
            .find(|b| b.item.contains(what))
            .unwrap_or_else(|| panic!("nothing about {what}: {items:?}"))
            .problem
            .clone()
    };
    assert!(about(bad[0].as_str()).contains("diffid"), "{items:?}");
    assert!(
        about(bad[1].as_str()).contains("stacked on broken"),
        "{items:?}"
    );
    assert!(about(&"d".repeat(64)).contains(&missing), "{items:?}");
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.item.contains(&"0".repeat(64)))
    );

    let repaired = fsck(&f.store, true).unwrap();
    assert_eq!(repaired.repaired.len(), 3, "{:?}", repaired.repaired);
    let after = fsck(&f.store, false).unwrap();
    assert!(after.is_clean(), "{:?}", after.broken);
    assert!(!f.has(&bad[0]) && !f.has(&bad[1]));
    assert!(f.has(&good[0]));
    assert!(odd.exists(), "a record of unknown format is only reported");
    // The image is intact: its snapshots come back when it is unpacked again.
    let again = f.chain(None, &[&layer("a", 10), &layer("b", 10)]);
    assert_eq!(again, bad);
    assert!(fsck(&f.store, false).unwrap().is_clean());
}

#[test]
fn fsck_reports_a_missing_parent_and_a_missing_tree() {
    let f = Fixture::new(copies());
    let chain = f.chain(None, &[&layer("a", 10), &layer("b", 10)]);
    let lone = f.chain(None, &[&layer("c", 10)]);
    fs::remove_dir_all(f.snapshot_dir(&lone[0]).join("flat")).unwrap();
    fs::rename(
        f.snapshot_dir(&chain[0]),
        f.dir.path().join("snapshots").join("not-a-chain"),
    )
    .unwrap();
    let report = fsck(&f.store, false).unwrap();
    let problems: Vec<String> = report
        .broken
        .iter()
        .map(|b| format!("{}: {}", b.item, b.problem))
        .collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems
            .iter()
            .any(|p| p.contains(chain[1].as_str()) && p.contains("missing"))
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains(lone[0].as_str()) && p.contains("no tree"))
    );
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.item.ends_with("not-a-chain"))
    );
}

#[test]
fn debris_is_swept_only_when_nobody_else_uses_the_store() {
    let f = Fixture::new(copies());
    let snapshots = f.dir.path().join("snapshots");
    let half = snapshots.join(".tmp-killed");
    fs::create_dir_all(half.join("flat/usr")).unwrap();
    fs::write(half.join("flat/usr/file"), b"half applied").unwrap();
    let active = snapshots.join(".active-killed");
    fs::create_dir_all(active.join("work")).unwrap();

    let other = Store::open(f.dir.path()).unwrap();
    assert_eq!(sweep_debris(&f.store).unwrap(), Sweep::Busy);
    assert!(half.exists() && active.exists());
    drop(other);
    assert_eq!(sweep_debris(&f.store).unwrap(), Sweep::Swept);
    assert!(!half.exists() && !active.exists());
}

#[test]
fn a_killed_process_leaves_no_mount_behind() {
    let Some(f) = overlay_fixture() else { return };
    let chain = f.chain(None, &[&layer("a", 10)]);
    // A prepared snapshot whose process died: its directory and mount stay.
    let active = f.snap.prepare(Some(&chain[0])).unwrap();
    let merged = active.mount_point().to_path_buf();
    std::mem::forget(active);
    // A dead process's tmp directory with a bind mount in it: removing through the mount
    // would delete what it shows.
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("precious"), b"keep me").unwrap();
    let tmp = f.dir.path().join("tmp");
    let dead = tmp.join("1-2-3");
    fs::create_dir_all(dead.join("rootfs")).unwrap();
    fs::write(tmp.join("1-2-3.lock"), b"").unwrap();
    rustix::mount::mount_bind(outside.path(), dead.join("rootfs")).unwrap();

    let second = Store::open(f.dir.path()).unwrap();
    let dead_mounted = is_mounted(&dead.join("rootfs"));
    if dead_mounted {
        let _ = rustix::mount::unmount(dead.join("rootfs"), rustix::mount::UnmountFlags::DETACH);
    }
    assert!(!dead_mounted, "the dead process's mount was left");
    assert!(!dead.exists() && !tmp.join("1-2-3.lock").exists());
    assert_eq!(
        fs::read(outside.path().join("precious")).unwrap(),
        b"keep me"
    );

    drop(second);
    assert_eq!(sweep_debris(&f.store).unwrap(), Sweep::Swept);
    let still = is_mounted(&merged);
    if still {
        let _ = rustix::mount::unmount(&merged, rustix::mount::UnmountFlags::DETACH);
    }
    assert!(!still, "the killed snapshot is still mounted");
    assert!(!merged.exists());
    assert!(f.has(&chain[0]));
}

#[test]
fn containers_keep_their_chains_even_from_prune_all() {
    let f = Fixture::new(copies());
    let chain = f.chain(None, &[&layer("a", 10), &layer("b", 10)]);
    let container = f.dir.path().join("containers").join("c".repeat(64));
    fs::create_dir_all(container.join("rootfs")).unwrap();
    let record = serde_json::json!({
        "id": "c".repeat(64),
        "name": "quirky_kiln",
        "image": "gone:latest",
        "image_id": format!("sha256:{}", "9".repeat(64)),
        "parent_chain": chain[1].as_str(),
        "state": "exited",
    });
    fs::write(container.join("container.json"), record.to_string()).unwrap();
    f.prune(all());
    assert!(
        f.has(&chain[0]) && f.has(&chain[1]),
        "a container's chain was removed"
    );
    fs::remove_dir_all(&container).unwrap();
    f.prune(PruneOptions::default());
    assert!(!f.has(&chain[0]) && !f.has(&chain[1]));
}
