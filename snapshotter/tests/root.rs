//! Snapshots of a live root (builds without isolation): the root is synced to the parent chain,
//! and the diff of what a step changed in it is the layer the copy snapshotter would write for
//! the same changes.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use kiln_snapshotter::{ChainId, DiffOptions, Snapshotter, SnapshotterOptions};

fn copies(store: &Path) -> Snapshotter {
    Snapshotter::with_options(
        store,
        SnapshotterOptions {
            force_copy: true,
            ..SnapshotterOptions::default()
        },
    )
    .expect("snapshotter")
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, text).expect("write");
}

/// A base chain: files, a directory tree, a symlink.
fn base(snap: &Snapshotter) -> ChainId {
    let active = snap.prepare(None).expect("prepare");
    let r = active.mount_point();
    write(&r.join("etc/config"), "one\n");
    write(&r.join("etc/keep"), "kept\n");
    write(&r.join("data/a/x"), "x\n");
    write(&r.join("data/a/y"), "y\n");
    write(&r.join("gone/file"), "bye\n");
    write(&r.join("bin/tool"), "#!/bin/sh\n");
    symlink("tool", r.join("bin/link")).expect("symlink");
    active
        .commit(std::io::sink(), &DiffOptions::default())
        .expect("commit")
        .chain_id
}

/// The same step, applied to whatever root it is given.
fn step(r: &Path) {
    write(&r.join("etc/config"), "two\n");
    write(&r.join("new/dir/file"), "new\n");
    fs::remove_dir_all(r.join("gone")).expect("rm gone");
    fs::remove_dir_all(r.join("data/a")).expect("rm data/a");
    write(&r.join("data/a/z"), "z\n");
    fs::set_permissions(r.join("bin/tool"), fs::Permissions::from_mode(0o755)).expect("chmod");
    // Rewritten with the same content: not a change.
    write(&r.join("etc/keep"), "kept\n");
}

fn options() -> DiffOptions {
    DiffOptions {
        // Every mtime to 0: the two runs made their files at different times.
        clamp_mtime: Some(0),
        exclude: Vec::new(),
    }
}

fn tar_listing(bytes: &[u8]) -> Vec<String> {
    let mut archive = tar::Archive::new(bytes);
    archive
        .entries()
        .expect("entries")
        .map(|e| {
            let e = e.expect("entry");
            format!(
                "{} {:o} {}",
                e.path().expect("path").display(),
                e.header().mode().expect("mode"),
                e.header().size().expect("size")
            )
        })
        .collect()
}

#[test]
fn live_root_is_synced_to_the_chain_and_diffs_like_a_copy() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let snap = copies(&tmp.path().join("store"));
    let chain = base(&snap);

    // What the copy snapshotter makes of the step.
    let copy = snap.prepare(Some(&chain)).expect("prepare copy");
    step(copy.mount_point());
    let mut expected = Vec::new();
    copy.diff(&mut expected, &options()).expect("copy diff");
    drop(copy);

    // A root holding other things: some must go, one is excluded and must stay.
    let root = tmp.path().join("root");
    write(&root.join("etc/config"), "stale content\n");
    write(&root.join("usr/share/junk"), "junk\n");
    write(&root.join("kiln/own"), "kiln's own file\n");
    write(&root.join("data/a/x"), "x but different\n");
    let active = snap
        .prepare_root(Some(&chain), &root, &["kiln".to_string()])
        .expect("prepare root");
    assert_eq!(active.mount_point(), root.as_path());
    assert_eq!(
        fs::read_to_string(root.join("etc/config")).expect("config"),
        "one\n"
    );
    assert_eq!(fs::read_to_string(root.join("data/a/x")).expect("x"), "x\n");
    assert!(!root.join("usr").exists(), "entries not in the chain go");
    assert_eq!(
        fs::read_link(root.join("bin/link")).expect("link"),
        Path::new("tool")
    );
    assert!(root.join("kiln/own").is_file(), "exclusions are kept");

    // A step that touches nothing makes an empty layer.
    let mut nothing = Vec::new();
    active.diff(&mut nothing, &options()).expect("empty diff");
    assert!(
        tar_listing(&nothing).is_empty(),
        "{:?}",
        tar_listing(&nothing)
    );

    step(&root);
    write(&root.join("kiln/own"), "changed but excluded\n");
    let mut got = Vec::new();
    active.diff(&mut got, &options()).expect("root diff");
    assert_eq!(tar_listing(&got), tar_listing(&expected));
    assert_eq!(
        got, expected,
        "the same bytes as the copy snapshotter's layer"
    );

    let committed = active.commit(std::io::sink(), &options()).expect("commit");
    assert!(snap.exists(&committed.chain_id));
    assert!(root.is_dir(), "committing never removes the root");
    assert!(root.join("kiln/own").is_file());
}
