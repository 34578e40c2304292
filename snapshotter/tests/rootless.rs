//! A rootless build's view: the test re-runs itself as an unprivileged user inside a new user
//! and mount namespace (`setpriv` + `unshare --user --map-root-user --mount`), where overlayfs
//! needs `userxattr`, owners are limited to the mapped id and device nodes cannot be made.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::{RawTar, prerequisite};
use kiln_snapshotter::{Backend, DiffOptions, Digest, Snapshotter};
use sha2::{Digest as _, Sha256};

const INNER: &str = "KILN_SNAPSHOTTER_ROOTLESS_STORE";
const NOBODY: u32 = 65534;

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn rootless_snapshots_in_a_user_namespace() {
    if let Some(store) = std::env::var_os(INNER) {
        inner(Path::new(&store));
        return;
    }
    if !prerequisite(
        common::is_root(),
        "switching to an unprivileged user needs root",
    ) || !prerequisite(
        have("unshare") && have("setpriv"),
        "util-linux unshare and setpriv",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    // The test binary, copied where the unprivileged user can run it.
    let exe = tmp.path().join("test-bin");
    fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    let store = tmp.path().join("store");
    fs::create_dir(&store).unwrap();
    std::os::unix::fs::chown(&store, Some(NOBODY), Some(NOBODY)).unwrap();

    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
        ])
        .arg(&exe)
        .args([
            "--exact",
            "rootless_snapshots_in_a_user_namespace",
            "--nocapture",
            "--test-threads=1",
        ])
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
        return;
    }
    assert!(out.status.success(), "rootless run failed:\n{text}");
    assert!(text.contains("1 passed"), "{text}");
}

fn diff_id(tar: &[u8]) -> Digest {
    Digest::from_sha256(&Sha256::digest(tar))
}

/// Runs as root of a fresh user namespace mapped onto an unprivileged user.
fn inner(store: &Path) {
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
    let names: Vec<String> = tar::Archive::new(&layer[..])
        .entries()
        .unwrap()
        .map(|e| String::from_utf8(e.unwrap().path_bytes().into_owned()).unwrap())
        .collect();
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
