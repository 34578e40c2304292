//! Rootless builds. Each test re-runs itself as `nobody`: once inside a new user and mount
//! namespace (`setpriv` + `unshare --user --map-root-user --mount`), where overlayfs needs
//! `userxattr`, owners are limited to the mapped id and device nodes cannot be made; once
//! without, where only the copy snapshotter works.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::{RawTar, diff_id, entry_names, prerequisite};
use kiln_snapshotter::{Backend, DiffOptions, Snapshotter};

const INNER: &str = "KILN_SNAPSHOTTER_ROOTLESS_STORE";
const NOBODY: u32 = 65534;

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Re-runs the test `name` as `nobody` (inside `unshare --user --map-root-user --mount` when
/// `userns`), with a store it owns named in `INNER`. Returns false when skipped.
fn run_unprivileged(name: &str, userns: bool) -> bool {
    if !prerequisite(
        common::is_root(),
        "switching to an unprivileged user needs root",
    ) || !prerequisite(
        have("unshare") && have("setpriv"),
        "util-linux unshare and setpriv",
    ) {
        return false;
    }
    // Copying the binary holds it open for writing; a child forked by the other test at
    // that moment would inherit the descriptor and make our exec fail with ETXTBSY.
    static SPAWN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serial = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    // The test binary, copied where the unprivileged user can run it.
    let exe = tmp.path().join("test-bin");
    fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    let store = tmp.path().join("store");
    fs::create_dir(&store).unwrap();
    std::os::unix::fs::chown(&store, Some(NOBODY), Some(NOBODY)).unwrap();

    let mut cmd = Command::new("setpriv");
    cmd.args([
        &format!("--reuid={NOBODY}"),
        &format!("--regid={NOBODY}"),
        "--clear-groups",
    ]);
    if userns {
        cmd.args(["unshare", "--user", "--map-root-user", "--mount"]);
    }
    let out = cmd
        .arg(&exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(INNER, &store)
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let userns_denied = text.contains("unshare failed") && text.contains("Operation not permitted");
    if !prerequisite(!userns_denied, "unprivileged user namespaces") {
        return false;
    }
    assert!(out.status.success(), "unprivileged run failed:\n{text}");
    assert!(text.contains("1 passed"), "{text}");
    // Whatever nobody left in its store, root can remove (the temp dir's drop does).
    true
}

#[test]
fn rootless_snapshots_in_a_user_namespace() {
    match std::env::var_os(INNER) {
        Some(store) => in_user_namespace(Path::new(&store)),
        None => {
            run_unprivileged("rootless_snapshots_in_a_user_namespace", true);
        }
    }
}

#[test]
fn unprivileged_user_without_namespace_gets_copies() {
    match std::env::var_os(INNER) {
        Some(store) => without_namespace(Path::new(&store)),
        None => {
            run_unprivileged("unprivileged_user_without_namespace_gets_copies", false);
        }
    }
}

/// Runs as root of a fresh user namespace mapped onto an unprivileged user.
fn in_user_namespace(store: &Path) {
    let snap = Snapshotter::new(store).unwrap();
    assert_eq!(
        snap.backend(),
        &Backend::Overlay,
        "rootless overlay with userxattr"
    );

    let mut t = RawTar::default();
    t.dir("etc");
    t.file("etc/os-release", b"ID=kiln\n");
    t.dir("var/cache/old");
    t.file("var/cache/old/f", b"old");
    t.file("gone", b"bye");
    t.symlink("link", "etc/os-release");
    t.header(&common::Raw {
        mode: 0o555,
        ..common::Raw::new(b"readonly/", b'5')
    });
    t.file("readonly/f", b"r");
    let base = t.finish();
    let c1 = snap.apply_layer(None, &diff_id(&base), &base[..]).unwrap();

    let active = snap.prepare(Some(&c1)).unwrap();
    let root = active.mount_point().to_owned();
    fs::remove_file(root.join("gone")).unwrap();
    fs::remove_dir_all(root.join("var/cache")).unwrap();
    fs::create_dir(root.join("var/cache")).unwrap();
    fs::write(root.join("var/cache/new"), b"new").unwrap();
    let mut layer = Vec::new();
    let committed = active.commit(&mut layer, &DiffOptions::default()).unwrap();
    let names: Vec<String> = entry_names(&layer);
    assert_eq!(
        names,
        [
            ".wh.gone",
            "var/",
            "var/cache/",
            "var/cache/.wh..wh..opq",
            "var/cache/new"
        ]
    );

    // The committed snapshot keeps the opaque marker in the user namespace.
    let layer_dir = snap.snapshot_dir(&committed.chain_id);
    let mut buf = [0u8; 8];
    let n = rustix::fs::lgetxattr(
        layer_dir.join("var/cache"),
        "user.overlay.opaque",
        &mut buf[..],
    )
    .unwrap();
    assert_eq!(&buf[..n], b"y");

    let view = snap.prepare(Some(&committed.chain_id)).unwrap();
    assert!(!view.mount_point().join("gone").exists());
    assert!(!view.mount_point().join("var/cache/old").exists());
    assert_eq!(
        fs::read(view.mount_point().join("link")).unwrap(),
        b"ID=kiln\n"
    );
    view.abort().unwrap();

    // Only one id is mapped: other owners are refused with the fix named.
    let mut t = RawTar::default();
    t.header(&common::Raw {
        uid: 4242,
        size: 1,
        ..common::Raw::new(b"owned", b'0')
    });
    t.data(b"x");
    let owned = t.finish();
    let err = snap
        .apply_layer(None, &diff_id(&owned), &owned[..])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not mapped in this user namespace") && err.contains("/etc/subuid"),
        "{err}"
    );

    // Snapshots holding read-only directories can be removed without root.
    snap.remove(&committed.chain_id).unwrap();
    snap.remove(&c1).unwrap();
    assert!(!snap.exists(&c1));

    // Device nodes are refused with a message that says why.
    let mut t = RawTar::default();
    t.header(&common::Raw {
        major: 8,
        minor: 0,
        ..common::Raw::new(b"sda", b'4')
    });
    let dev = t.finish();
    let err = snap
        .apply_layer(None, &diff_id(&dev), &dev[..])
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs root"), "{err}");
}

/// Runs as plain `nobody`: no overlay mounts, no chown, no devices; copies instead.
fn without_namespace(store: &Path) {
    let snap = Snapshotter::new(store).unwrap();
    match snap.backend() {
        Backend::Copy { reason } => {
            assert!(reason.contains("overlayfs cannot be mounted"), "{reason}")
        }
        Backend::Overlay => panic!("overlay mounted without privilege"),
    }
    let mut t = RawTar::default();
    t.header(&common::Raw {
        uid: 1234,
        mode: 0o555,
        ..common::Raw::new(b"readonly/", b'5')
    });
    t.file("readonly/f", b"r");
    t.file("gone", b"bye");
    let base = t.finish();
    let c1 = snap.apply_layer(None, &diff_id(&base), &base[..]).unwrap();

    let active = snap.prepare(Some(&c1)).unwrap();
    let root = active.mount_point().to_owned();
    fs::remove_file(root.join("gone")).unwrap();
    fs::write(root.join("new"), b"new").unwrap();
    let mut layer = Vec::new();
    let committed = active.commit(&mut layer, &DiffOptions::default()).unwrap();
    let names: Vec<String> = entry_names(&layer);
    assert_eq!(names, [".wh.gone", "new"]);
    let flat = snap.snapshot_dir(&committed.chain_id);
    assert!(flat.join("readonly/f").exists() && !flat.join("gone").exists());

    snap.remove(&committed.chain_id).unwrap();
    snap.remove(&c1).unwrap();
    assert!(!snap.exists(&c1));

    let mut t = RawTar::default();
    t.header(&common::Raw {
        major: 1,
        minor: 3,
        ..common::Raw::new(b"null", b'3')
    });
    let dev = t.finish();
    let err = snap
        .apply_layer(None, &diff_id(&dev), &dev[..])
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs root"), "{err}");
}
