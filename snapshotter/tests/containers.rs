//! Snapshots kept past their mount (a stopped container's writable layer): prepared under a
//! chosen directory, unmounted with their changes kept, diffed later and removed. With real
//! overlay mounts (root only; under `CI=true` a missing overlay is a failure) and with copies.

mod common;

use std::fs;
use std::path::Path;

use common::{RawTar, diff_id, entry_names, prerequisite};
use kiln_snapshotter::{
    Backend, ChainId, DiffOptions, Snapshotter, SnapshotterOptions, is_mounted,
};

fn base_layer() -> Vec<u8> {
    let mut t = RawTar::default();
    t.file("a", b"a");
    t.dir("d");
    t.file("d/x", b"x");
    t.finish()
}

fn with_base(store: &Path, options: SnapshotterOptions) -> (Snapshotter, ChainId) {
    let snap = Snapshotter::with_options(store, options).unwrap();
    let tar = base_layer();
    let chain = snap.apply_layer(None, &diff_id(&tar), &tar[..]).unwrap();
    (snap, chain)
}

fn keep_diff_remove(snap: &Snapshotter, chain: &ChainId, store: &Path) {
    let containers = store.join("containers");
    fs::create_dir(&containers).unwrap();
    let dir = containers.join("c1");
    let active = snap.prepare_at(Some(chain), &dir).unwrap();
    let root = active.mount_point().to_path_buf();
    assert!(
        root.starts_with(&dir),
        "{} not under {}",
        root.display(),
        dir.display()
    );
    assert_eq!(fs::read(root.join("d/x")).unwrap(), b"x");
    fs::write(root.join("new"), b"written").unwrap();
    fs::remove_file(root.join("a")).unwrap();

    let kept = active.unmount_keep().unwrap();
    assert_eq!(kept, dir);
    assert!(!is_mounted(&dir.join("merged")));
    assert!(dir.is_dir(), "the kept snapshot's directory is gone");

    let mut tar = Vec::new();
    snap.diff_kept(&dir, Some(chain), &mut tar, &DiffOptions::default())
        .unwrap();
    let names = entry_names(&tar);
    assert!(names.iter().any(|n| n == "new"), "{names:?}");
    assert!(names.iter().any(|n| n == ".wh.a"), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("d")), "{names:?}");
    // Diffing again gives the same layer: nothing was consumed.
    let mut again = Vec::new();
    snap.diff_kept(&dir, Some(chain), &mut again, &DiffOptions::default())
        .unwrap();
    assert_eq!(tar, again);

    snap.remove_kept(&dir).unwrap();
    assert!(!dir.exists());
    // The base snapshot is untouched.
    assert_eq!(fs::read(snap.snapshot_dir(chain).join("a")).unwrap(), b"a");
}

/// A base snapshot on the overlay backend, or None (skip; a failure under CI) without root or
/// overlay.
fn overlay_base(dir: &Path) -> Option<(Snapshotter, ChainId)> {
    if !prerequisite(common::is_root(), "overlay mounts need root") {
        return None;
    }
    let (snap, chain) = with_base(dir, SnapshotterOptions::default());
    prerequisite(
        *snap.backend() == Backend::Overlay,
        &format!("overlay snapshots: {:?}", snap.backend()),
    )
    .then_some((snap, chain))
}

#[test]
fn overlay_snapshot_kept_diffed_and_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((snap, chain)) = overlay_base(tmp.path()) else {
        return;
    };
    keep_diff_remove(&snap, &chain, tmp.path());
}

#[test]
fn copy_snapshot_kept_diffed_and_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let options = SnapshotterOptions {
        force_copy: true,
        ..SnapshotterOptions::default()
    };
    let (snap, chain) = with_base(tmp.path(), options);
    keep_diff_remove(&snap, &chain, tmp.path());
}

#[test]
fn dropped_snapshot_at_a_chosen_dir_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let options = SnapshotterOptions {
        force_copy: !common::is_root(),
        ..SnapshotterOptions::default()
    };
    let (snap, chain) = with_base(tmp.path(), options);
    let dir = tmp.path().join("c2");
    let active = snap.prepare_at(Some(&chain), &dir).unwrap();
    fs::write(active.mount_point().join("f"), b"f").unwrap();
    drop(active);
    assert!(!dir.exists());
    // A directory that already exists is refused, not reused.
    fs::create_dir(&dir).unwrap();
    assert!(snap.prepare_at(Some(&chain), &dir).is_err());
    assert!(dir.is_dir());
}

#[test]
fn removing_a_kept_snapshot_left_mounted_unmounts_it() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((snap, chain)) = overlay_base(tmp.path()) else {
        return;
    };
    let dir = tmp.path().join("c3");
    let active = snap.prepare_at(Some(&chain), &dir).unwrap();
    // As a killed process leaves it: still mounted, nothing will unmount it.
    std::mem::forget(active);
    assert!(is_mounted(&dir.join("merged")));
    assert!(
        snap.diff_kept(&dir, Some(&chain), std::io::sink(), &DiffOptions::default())
            .is_err(),
        "a mounted snapshot must not be diffed"
    );
    snap.remove_kept(&dir).unwrap();
    assert!(!dir.exists());
    assert_eq!(fs::read(snap.snapshot_dir(&chain).join("a")).unwrap(), b"a");
}
