//! The snapshot store with real overlay mounts (root only; under `CI=true` a missing overlay is
//! a failure) and with the copy backend.

mod common;

use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use common::{diff_id, entry_names, fingerprint, prerequisite, set_mtime, walk_paths};
use kiln_snapshotter::{
    ApplyOptions, Backend, ChainId, DiffOptions, Digest, Error, KernelMounter, Mounter,
    OverlayMount, Snapshotter, SnapshotterOptions, WhiteoutMode, apply_layer, chain_id, write_tree,
};

/// Mount points under `dir` in this process's mount namespace.
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = fs::canonicalize(dir).unwrap();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|mp| Path::new(mp).starts_with(&dir))
        .collect()
}

/// Leftover temporary or active directories in the store.
fn leftovers(store: &Path) -> Vec<String> {
    fs::read_dir(store.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

fn overlay_snapshotter(store: &Path, mounter: KernelMounter) -> Option<Snapshotter> {
    let s =
        Snapshotter::with_mounter(store, SnapshotterOptions::default(), Arc::new(mounter)).unwrap();
    match s.backend() {
        Backend::Overlay => Some(s),
        Backend::Copy { reason } => {
            prerequisite(false, &format!("overlay snapshots: {reason}"));
            None
        }
    }
}

/// A base layer: files, a directory to replace, one to rename, a hard link pair.
fn base_layer(tmp: &Path) -> Vec<u8> {
    let src = tmp.join("base-src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::create_dir_all(src.join("replace/old/deep")).unwrap();
    fs::create_dir_all(src.join("dold/inner")).unwrap();
    fs::write(src.join("a"), b"a").unwrap();
    fs::write(src.join("d/x"), b"x").unwrap();
    fs::write(src.join("d/y"), b"y").unwrap();
    fs::write(src.join("replace/old/deep/f"), b"old").unwrap();
    fs::write(src.join("replace/keep-name"), b"old").unwrap();
    fs::write(src.join("dold/inner/f"), b"moving").unwrap();
    fs::write(src.join("mv-me"), b"moving file").unwrap();
    fs::write(src.join("hl1"), b"linked").unwrap();
    fs::hard_link(src.join("hl1"), src.join("hl2")).unwrap();
    for p in walk_paths(&src) {
        set_mtime(&p, 500_000);
    }
    let mut tar = Vec::new();
    write_tree(&src, &mut tar, &DiffOptions::default()).unwrap();
    tar
}

/// What a RUN step might do: delete, replace a directory, rename a file and a directory
/// (as `mv` does: rename, or copy and delete where overlayfs answers EXDEV), modify, create.
/// It leaves hard-linked files alone: a write through one name copies up only that name on
/// overlayfs (no inode index), while a copy keeps the link — the one place the backends differ.
fn mutate(root: &Path) {
    fs::remove_file(root.join("a")).unwrap();
    fs::remove_dir_all(root.join("replace")).unwrap();
    fs::create_dir(root.join("replace")).unwrap();
    fs::write(root.join("replace/new"), b"new").unwrap();
    fs::rename(root.join("mv-me"), root.join("moved")).unwrap();
    match fs::rename(root.join("dold"), root.join("dnew")) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(18) => {
            kiln_snapshotter::copy_tree(&root.join("dold"), &root.join("dnew")).unwrap();
            fs::remove_dir_all(root.join("dold")).unwrap();
        }
        Err(e) => panic!("rename: {e}"),
    }
    fs::write(root.join("d/x"), b"changed").unwrap();
    fs::write(root.join("brand-new"), b"hello").unwrap();
}

fn clamp() -> DiffOptions {
    // Everything the step touched gets this mtime, so two runs can be compared byte for byte.
    DiffOptions {
        clamp_mtime: Some(1_000_000),
        exclude: Vec::new(),
    }
}

/// Runs the base + mutate scenario on `snap`; returns (diff bytes, merged view of the result).
fn scenario(
    snap: &Snapshotter,
    tmp: &Path,
) -> (Vec<u8>, std::collections::BTreeMap<String, common::Node>) {
    let base = base_layer(tmp);
    let c1 = snap.apply_layer(None, &diff_id(&base), &base[..]).unwrap();
    assert!(snap.exists(&c1));
    let active = snap.prepare(Some(&c1)).unwrap();
    assert_eq!(fs::read(active.mount_point().join("d/x")).unwrap(), b"x");
    mutate(active.mount_point());
    let mut layer = Vec::new();
    let committed = active.commit(&mut layer, &clamp()).unwrap();
    assert_eq!(committed.diff_id, diff_id(&layer));
    assert_eq!(committed.chain_id, chain_id(Some(&c1), &committed.diff_id));
    assert!(snap.exists(&committed.chain_id));

    let view = snap.prepare(Some(&committed.chain_id)).unwrap();
    let merged = fingerprint(view.mount_point());
    view.abort().unwrap();
    (layer, merged)
}

fn check_scenario(
    layer: &[u8],
    merged: &std::collections::BTreeMap<String, common::Node>,
    tmp: &Path,
) {
    let names = entry_names(layer);
    for want in [
        ".wh.a",
        "d/",
        "d/x",
        "dnew/",
        "dnew/inner/f",
        ".wh.dold",
        "moved",
        ".wh.mv-me",
        "replace/",
        "replace/.wh..wh..opq",
        "replace/new",
        "brand-new",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("replace/old") || n == "replace/keep-name")
    );

    assert!(!merged.contains_key("a"));
    assert!(!merged.contains_key("mv-me"));
    assert!(!merged.contains_key("dold"));
    assert!(!merged.contains_key("replace/old"));
    assert!(!merged.contains_key("replace/keep-name"));
    assert_eq!(merged["replace/new"].content, b"new");
    assert_eq!(merged["moved"].content, b"moving file");
    assert_eq!(merged["dnew/inner/f"].content, b"moving");
    assert_eq!(merged["d/x"].content, b"changed");
    assert_eq!(merged["d/y"].content, b"y");
    // Hard links of the base layer are links in the mounted view too. (Writing through one
    // is where the backends differ: overlayfs without an index copies up one name only.)
    assert_eq!(merged["hl2"].hardlink_group.as_deref(), Some("hl1"));

    // The same two layers applied onto a flat directory give the same tree as the mount.
    let flat = tmp.join("flat-check");
    fs::create_dir(&flat).unwrap();
    let base = base_layer(&tmp.join("again"));
    apply_layer(&base[..], &flat, &ApplyOptions::new(WhiteoutMode::Delete)).unwrap();
    apply_layer(layer, &flat, &ApplyOptions::new(WhiteoutMode::Delete)).unwrap();
    let flat_fp = fingerprint(&flat);
    assert_eq!(
        flat_fp.keys().collect::<Vec<_>>(),
        merged.keys().collect::<Vec<_>>()
    );
    for (k, v) in &flat_fp {
        assert_eq!(v.content, merged[k].content, "{k}");
        assert_eq!(v.kind, merged[k].kind, "{k}");
        assert_eq!(v.mode, merged[k].mode, "{k}");
    }
}

#[test]
fn whiteouts_opaque_dirs_and_renames_roundtrip_through_overlay() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(snap) = overlay_snapshotter(tmp.path(), KernelMounter::default()) else {
        return;
    };
    let (layer, merged) = scenario(&snap, tmp.path());
    check_scenario(&layer, &merged, tmp.path());
    assert!(mounts_under(tmp.path()).is_empty());
    assert!(
        leftovers(tmp.path()).is_empty(),
        "{:?}",
        leftovers(tmp.path())
    );
}

#[test]
fn upper_committed_in_place_matches_the_layer_it_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(snap) = overlay_snapshotter(&tmp.path().join("store"), KernelMounter::default())
    else {
        return;
    };
    let base = base_layer(tmp.path());
    let c1 = snap.apply_layer(None, &diff_id(&base), &base[..]).unwrap();
    let active = snap.prepare(Some(&c1)).unwrap();
    mutate(active.mount_point());
    let mut layer = Vec::new();
    let committed = active
        .commit_upper(&mut layer, &DiffOptions::default(), |w| Ok(diff_id(w)))
        .unwrap();
    assert_eq!(committed.diff_id, diff_id(&layer));
    assert_eq!(committed.chain_id, chain_id(Some(&c1), &committed.diff_id));
    assert!(leftovers(&tmp.path().join("store")).is_empty());
    let view = snap.prepare(Some(&committed.chain_id)).unwrap();
    let moved = fingerprint(view.mount_point());
    view.abort().unwrap();

    // The same layer applied in another store gives the same tree.
    let other = overlay_snapshotter(&tmp.path().join("other"), KernelMounter::default()).unwrap();
    let o1 = other.apply_layer(None, &diff_id(&base), &base[..]).unwrap();
    let o2 = other
        .apply_layer(Some(&o1), &committed.diff_id, &layer[..])
        .unwrap();
    assert_eq!(o2, committed.chain_id);
    let view = other.prepare(Some(&o2)).unwrap();
    let applied = fingerprint(view.mount_point());
    view.abort().unwrap();
    assert_eq!(moved, applied);
    assert_eq!(moved["d/x"].content, b"changed");
    assert!(!moved.contains_key("a"));
}

#[test]
fn copy_backend_gives_the_same_diff() {
    let tmp = tempfile::tempdir().unwrap();
    let copy_store = tmp.path().join("copy");
    let snap = Snapshotter::with_options(
        &copy_store,
        SnapshotterOptions {
            force_copy: true,
            ..SnapshotterOptions::default()
        },
    )
    .unwrap();
    assert!(matches!(snap.backend(), Backend::Copy { .. }));
    let copy_dir = tmp.path().join("copy-scratch");
    fs::create_dir(&copy_dir).unwrap();
    let (copy_layer, copy_merged) = scenario(&snap, &copy_dir);
    check_scenario(&copy_layer, &copy_merged, &copy_dir);
    assert!(
        leftovers(&copy_store).is_empty(),
        "{:?}",
        leftovers(&copy_store)
    );

    let ov_store = tmp.path().join("ov");
    let Some(ov) = overlay_snapshotter(&ov_store, KernelMounter::default()) else {
        return;
    };
    let ov_dir = tmp.path().join("ov-scratch");
    fs::create_dir(&ov_dir).unwrap();
    let (ov_layer, ov_merged) = scenario(&ov, &ov_dir);
    assert_eq!(entry_names(&copy_layer), entry_names(&ov_layer));
    assert!(
        copy_layer == ov_layer,
        "the two backends wrote different bytes"
    );
    assert_eq!(
        copy_merged.keys().collect::<Vec<_>>(),
        ov_merged.keys().collect::<Vec<_>>()
    );
}

/// 150 layers, each adding a file and deleting the previous layer's second file.
fn long_chain(snap: &Snapshotter, tmp: &Path, n: usize) -> ChainId {
    let mut parent: Option<ChainId> = None;
    for i in 0..n {
        let mut t = common::RawTar::default();
        t.file(&format!("layers/f{i:03}"), format!("layer {i}").as_bytes());
        t.file(&format!("layers/tmp{i:03}"), b"short-lived");
        if i > 0 {
            t.file(&format!("layers/.wh.tmp{:03}", i - 1), b"");
        }
        let tar = t.finish();
        let _ = tmp;
        parent = Some(
            snap.apply_layer(parent.as_ref(), &diff_id(&tar), &tar[..])
                .unwrap(),
        );
    }
    parent.unwrap()
}

fn check_long_chain(snap: &Snapshotter, top: &ChainId, n: usize) {
    assert_eq!(snap.lineage(top).unwrap().len(), n);
    let active = snap.prepare(Some(top)).unwrap();
    let root = active.mount_point().to_owned();
    for i in 0..n {
        assert_eq!(
            fs::read(root.join(format!("layers/f{i:03}"))).unwrap(),
            format!("layer {i}").as_bytes()
        );
    }
    let tmps: Vec<_> = fs::read_dir(root.join("layers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tmp"))
        .collect();
    assert_eq!(tmps, [format!("tmp{:03}", n - 1)]);
    assert!(kiln_snapshotter::is_mounted(&root));
    active.abort().unwrap();
    assert!(!root.exists());
}

#[test]
fn chain_of_150_layers_mounts_with_the_new_mount_api() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(snap) = overlay_snapshotter(tmp.path(), KernelMounter::default()) else {
        return;
    };
    let top = long_chain(&snap, tmp.path(), 150);
    check_long_chain(&snap, &top, 150);
    assert!(mounts_under(tmp.path()).is_empty());
}

#[test]
fn chain_of_150_layers_mounts_with_mount2_and_short_names() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(snap) = overlay_snapshotter(tmp.path(), KernelMounter { new_api: false }) else {
        return;
    };
    let top = long_chain(&snap, tmp.path(), 150);
    check_long_chain(&snap, &top, 150);
    assert!(mounts_under(tmp.path()).is_empty());
    // The process's working directory was not changed by the mount.
    assert_ne!(
        std::env::current_dir().unwrap(),
        tmp.path().join("snapshots")
    );
}

struct FailingWriter(usize);

impl Write for FailingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.0 < buf.len() {
            return Err(io::Error::other("disk full"));
        }
        self.0 -= buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn failed_commit_and_dropped_snapshots_leave_no_mount() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(snap) = overlay_snapshotter(tmp.path(), KernelMounter::default()) else {
        return;
    };
    let base = base_layer(tmp.path());
    let c1 = snap.apply_layer(None, &diff_id(&base), &base[..]).unwrap();

    let active = snap.prepare(Some(&c1)).unwrap();
    fs::write(active.mount_point().join("big"), vec![1u8; 100_000]).unwrap();
    assert_eq!(mounts_under(tmp.path()).len(), 1);
    let err = active
        .commit(FailingWriter(10_000), &DiffOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("disk full"), "{err}");
    assert!(mounts_under(tmp.path()).is_empty());
    assert!(
        leftovers(tmp.path()).is_empty(),
        "{:?}",
        leftovers(tmp.path())
    );

    // Dropped without commit or abort (a panicking step).
    let active = snap.prepare(Some(&c1)).unwrap();
    let mp = active.mount_point().to_owned();
    drop(active);
    assert!(!mp.exists());
    assert!(mounts_under(tmp.path()).is_empty());

    // Preparing on an unknown chain.
    let unknown = Digest::parse(&format!("sha256:{}", "0".repeat(64))).unwrap();
    assert!(matches!(
        snap.prepare(Some(&unknown)),
        Err(Error::UnknownSnapshot(_))
    ));
    assert!(leftovers(tmp.path()).is_empty());

    // A scratch snapshot (FROM scratch) and an empty commit.
    let scratch = snap.prepare(None).unwrap();
    let mut out = Vec::new();
    let c = scratch.commit(&mut out, &DiffOptions::default()).unwrap();
    assert_eq!(c.stats.entries, 0);
    assert_eq!(out.len(), 1024);
    assert!(mounts_under(tmp.path()).is_empty());
}

/// A mounter whose mount always fails, after the real one made its helper files.
struct BrokenMounter;

impl Mounter for BrokenMounter {
    fn mount_overlay(&self, m: &OverlayMount, _scratch: &Path) -> kiln_snapshotter::Result<()> {
        Err(Error::Mount {
            op: "mounting",
            target: m.target.clone(),
            hint: None,
            source: io::Error::other("refused by test"),
        })
    }
    fn unmount(&self, _: &Path) -> kiln_snapshotter::Result<()> {
        Ok(())
    }
}

#[test]
fn unmountable_overlay_falls_back_to_copies_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let snap = Snapshotter::with_mounter(
        tmp.path(),
        SnapshotterOptions::default(),
        Arc::new(BrokenMounter),
    )
    .unwrap();
    match snap.backend() {
        Backend::Copy { reason } => assert!(reason.contains("refused by test"), "{reason}"),
        Backend::Overlay => panic!("probe should have failed"),
    }
    assert!(
        leftovers(tmp.path()).is_empty(),
        "{:?}",
        leftovers(tmp.path())
    );
    let base = base_layer(tmp.path());
    let c1 = snap.apply_layer(None, &diff_id(&base), &base[..]).unwrap();
    let active = snap.prepare(Some(&c1)).unwrap();
    assert_eq!(fs::read(active.mount_point().join("a")).unwrap(), b"a");
    active.abort().unwrap();
    assert!(leftovers(tmp.path()).is_empty());
}

#[test]
fn wrong_diff_id_or_broken_stream_leaves_no_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    for force_copy in [false, true] {
        let store = tmp.path().join(format!("s{force_copy}"));
        let snap = Snapshotter::with_options(
            &store,
            SnapshotterOptions {
                force_copy,
                ..SnapshotterOptions::default()
            },
        )
        .unwrap();
        let base = base_layer(&tmp.path().join(format!("b{force_copy}")));
        let wrong = Digest::parse(&format!("sha256:{}", "1".repeat(64))).unwrap();
        let err = snap.apply_layer(None, &wrong, &base[..]).unwrap_err();
        assert!(matches!(err, Error::DiffIdMismatch { .. }), "{err}");
        assert!(!snap.exists(&wrong));

        // A stream cut off mid-file, as from a killed download.
        let cut = &base[..base.len() / 2];
        let id = diff_id(&base);
        assert!(snap.apply_layer(None, &id, cut).is_err());
        assert!(!snap.exists(&id));
        assert!(leftovers(&store).is_empty(), "{:?}", leftovers(&store));
        let entries: Vec<_> = fs::read_dir(store.join("snapshots")).unwrap().collect();
        assert!(entries.is_empty(), "nothing was installed");

        // And the real thing, twice: the second apply reuses the snapshot.
        let c = snap.apply_layer(None, &id, &base[..]).unwrap();
        assert_eq!(c, id);
        assert_eq!(snap.apply_layer(None, &id, io::empty()).unwrap(), id);
    }
}

#[test]
fn rootless_style_userxattr_overlay() {
    let tmp = tempfile::tempdir().unwrap();
    let snap = Snapshotter::with_options(
        tmp.path(),
        SnapshotterOptions {
            userxattr: true,
            ..SnapshotterOptions::default()
        },
    )
    .unwrap();
    if !prerequisite(
        snap.backend() == &Backend::Overlay,
        &format!("overlay with userxattr: {:?}", snap.backend()),
    ) {
        return;
    }
    let (layer, merged) = scenario(&snap, tmp.path());
    check_scenario(&layer, &merged, tmp.path());
    assert!(mounts_under(tmp.path()).is_empty());
}

#[test]
fn sweep_removes_what_a_killed_build_left() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(snap) = overlay_snapshotter(tmp.path(), KernelMounter::default()) else {
        return;
    };
    let base = base_layer(tmp.path());
    let c1 = snap.apply_layer(None, &diff_id(&base), &base[..]).unwrap();
    let active = snap.prepare(Some(&c1)).unwrap();
    // A process killed mid-step never runs its destructors.
    std::mem::forget(active);
    fs::create_dir_all(tmp.path().join("snapshots/.tmp-killed/fs/half")).unwrap();
    assert_eq!(mounts_under(tmp.path()).len(), 1);
    snap.sweep().unwrap();
    assert!(mounts_under(tmp.path()).is_empty());
    assert!(
        leftovers(tmp.path()).is_empty(),
        "{:?}",
        leftovers(tmp.path())
    );
    assert!(snap.exists(&c1), "finished snapshots stay");
    assert_eq!(fs::read(snap.snapshot_dir(&c1).join("a")).unwrap(), b"a");
}

#[test]
fn device_nodes_in_snapshots_cannot_be_opened() {
    if !prerequisite(common::is_root(), "device nodes need root") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(snap) = overlay_snapshotter(tmp.path(), KernelMounter::default()) else {
        return;
    };
    let mut t = common::RawTar::default();
    t.header(&common::Raw {
        major: 1,
        minor: 3,
        mode: 0o666,
        ..common::Raw::new(b"null", b'3')
    });
    let tar = t.finish();
    let c = snap.apply_layer(None, &diff_id(&tar), &tar[..]).unwrap();
    let active = snap.prepare(Some(&c)).unwrap();
    let err = fs::File::open(active.mount_point().join("null")).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
    active.abort().unwrap();

    let open = Snapshotter::with_options(
        &tmp.path().join("devices"),
        SnapshotterOptions {
            allow_devices: true,
            ..SnapshotterOptions::default()
        },
    )
    .unwrap();
    let c = open.apply_layer(None, &diff_id(&tar), &tar[..]).unwrap();
    let active = open.prepare(Some(&c)).unwrap();
    fs::File::open(active.mount_point().join("null")).unwrap();
    active.abort().unwrap();
}

/// Mounts for real until told to fail.
struct FailAfter {
    real: KernelMounter,
    left: std::sync::atomic::AtomicUsize,
}

impl Mounter for FailAfter {
    fn mount_overlay(&self, m: &OverlayMount, scratch: &Path) -> kiln_snapshotter::Result<()> {
        use std::sync::atomic::Ordering;
        if self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_err()
        {
            return BrokenMounter.mount_overlay(m, scratch);
        }
        self.real.mount_overlay(m, scratch)
    }
    fn unmount(&self, target: &Path) -> kiln_snapshotter::Result<()> {
        self.real.unmount(target)
    }
}

#[test]
fn failed_mount_in_prepare_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mounter = FailAfter {
        real: KernelMounter::default(),
        left: std::sync::atomic::AtomicUsize::new(1),
    };
    let snap =
        Snapshotter::with_mounter(tmp.path(), SnapshotterOptions::default(), Arc::new(mounter))
            .unwrap();
    if !prerequisite(
        snap.backend() == &Backend::Overlay,
        &format!("overlay snapshots: {:?}", snap.backend()),
    ) {
        return;
    }
    let base = base_layer(tmp.path());
    let c1 = snap.apply_layer(None, &diff_id(&base), &base[..]).unwrap();
    let err = snap.prepare(Some(&c1)).unwrap_err();
    assert!(err.to_string().contains("refused by test"), "{err}");
    assert!(mounts_under(tmp.path()).is_empty());
    assert!(
        leftovers(tmp.path()).is_empty(),
        "{:?}",
        leftovers(tmp.path())
    );
    assert!(snap.exists(&c1));
}
