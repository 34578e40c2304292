//! Tree → layer tar → tree, without mounts.

mod common;

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use common::{entry_names, fingerprint, is_root, prerequisite, set_mtime, set_xattr, walk_paths};
use kiln_snapshotter::{
    ApplyOptions, DiffOptions, WhiteoutMode, XattrNamespace, apply_layer, diff_trees, write_tree,
};

/// A tree with every node type a layer can carry. Owners, devices and `trusted.*` attributes
/// only as root.
fn build_tree(root: &Path) {
    let long_dir = root.join("d".repeat(120)).join("e".repeat(120));
    fs::create_dir_all(&long_dir).unwrap();
    fs::write(long_dir.join("f".repeat(200)), b"long name").unwrap();
    fs::create_dir(root.join("bin")).unwrap();
    fs::write(root.join("bin/tool"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(root.join("bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(root.join("bin/group"), b"g").unwrap();
    fs::set_permissions(root.join("bin/group"), fs::Permissions::from_mode(0o2711)).unwrap();
    fs::create_dir(root.join("tmp")).unwrap();
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::write(root.join("big"), vec![0xabu8; 1 << 20]).unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    fs::write(root.join("linked"), b"shared inode").unwrap();
    fs::hard_link(root.join("linked"), root.join("bin/linked-too")).unwrap();
    fs::hard_link(root.join("linked"), root.join("zz-third")).unwrap();
    symlink("bin/tool", root.join("rel-link")).unwrap();
    symlink("/etc/passwd", root.join("abs-link")).unwrap();
    symlink("x".repeat(150), root.join("long-link")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    fs::write(root.join("attrs"), b"x").unwrap();
    set_xattr(&root.join("attrs"), "user.plain", b"value");
    set_xattr(&root.join("attrs"), "user.binary", b"\x00\x01\xff");
    fs::create_dir(root.join("ro")).unwrap();
    fs::write(root.join("ro/file"), b"inside a read-only dir").unwrap();
    fs::set_permissions(root.join("ro/file"), fs::Permissions::from_mode(0o400)).unwrap();
    fs::set_permissions(root.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
    if is_root() {
        std::os::unix::fs::lchown(root.join("bin/tool"), Some(1234), Some(5678)).unwrap();
        fs::set_permissions(root.join("bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
        std::os::unix::fs::lchown(root.join("abs-link"), Some(7), Some(8)).unwrap();
        std::os::unix::fs::lchown(root.join("tmp"), Some(3_000_000), Some(3_000_001)).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("null"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 3),
        )
        .unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("loop9"),
            rustix::fs::FileType::BlockDevice,
            rustix::fs::Mode::from_raw_mode(0o660),
            rustix::fs::makedev(7, 9),
        )
        .unwrap();
        set_xattr(&root.join("bin/tool"), "trusted.kiln", b"t");
        // A file capability (cap_net_raw+ep), the xattr real images carry.
        set_xattr(
            &root.join("bin/group"),
            "security.capability",
            &[
                1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        );
    }
    // Fixed times last, deepest first, so creating children does not move them.
    let mut all: Vec<_> = walk_paths(root);
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in all.iter().enumerate() {
        set_mtime(p, 1_500_000_000 + i as i64 * 1000);
    }
    // One mtime before 1970 and one far in the future, both beyond what USTAR holds plainly.
    set_mtime(&root.join("empty"), -86_400);
    set_mtime(&root.join("big"), 9_000_000_000);
}

fn tar_of(dir: &Path, opts: &DiffOptions) -> Vec<u8> {
    let mut out = Vec::new();
    write_tree(dir, &mut out, opts).unwrap();
    out
}

#[test]
fn tree_roundtrips_through_a_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    build_tree(&src);
    let tar = tar_of(&src, &DiffOptions::default());
    for (i, mode) in [
        WhiteoutMode::Delete,
        WhiteoutMode::Overlay(XattrNamespace::Trusted),
    ]
    .into_iter()
    .enumerate()
    {
        let dst = tmp.path().join(format!("dst{i}"));
        fs::create_dir(&dst).unwrap();
        let stats = apply_layer(&tar[..], &dst, &ApplyOptions::new(mode)).unwrap();
        assert!(stats.bytes >= 1 << 20);
        let (a, b) = (fingerprint(&src), fingerprint(&dst));
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (k, v) in &a {
            assert_eq!(Some(v), b.get(k), "{k} differs after roundtrip");
        }
        // And the applied tree writes the very same bytes.
        assert!(
            tar == tar_of(&dst, &DiffOptions::default()),
            "re-diff of the applied tree differs"
        );
    }
}

#[test]
fn same_tree_gives_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    build_tree(&src);
    let a = tar_of(&src, &DiffOptions::default());
    let b = tar_of(&src, &DiffOptions::default());
    assert!(a == b);
    // A copy made at another time (other inodes, other ctimes) writes the same bytes too.
    let copy = tmp.path().join("copy");
    kiln_snapshotter::copy_tree(&src, &copy).unwrap();
    assert!(a == tar_of(&copy, &DiffOptions::default()));
}

#[test]
fn layer_is_readable_by_the_tar_crate_with_hard_links_once() {
    let tmp = tempfile::tempdir().unwrap();
    build_tree(tmp.path());
    let tar = tar_of(tmp.path(), &DiffOptions::default());
    let mut names = Vec::new();
    let mut links = 0;
    for e in tar::Archive::new(&tar[..]).entries().unwrap() {
        let e = e.unwrap();
        let h = e.header();
        assert_eq!(h.username_bytes(), Some(&b""[..]));
        assert_eq!(h.groupname_bytes(), Some(&b""[..]));
        if h.entry_type() == tar::EntryType::Link {
            links += 1;
            assert_eq!(&*e.link_name_bytes().unwrap(), b"bin/linked-too");
        }
        names.push(String::from_utf8(e.path_bytes().into_owned()).unwrap());
    }
    assert_eq!(links, 2, "three names of one inode: one file, two links");
    let mut sorted = names.clone();
    sorted.sort_by(|a, b| {
        a.trim_end_matches('/')
            .split('/')
            .cmp(b.trim_end_matches('/').split('/'))
    });
    assert_eq!(names, sorted, "entries are in sorted depth-first order");
    assert!(names.contains(&"tmp/".to_owned()));
}

#[test]
fn mtime_clamp_and_exclusions() {
    let tmp = tempfile::tempdir().unwrap();
    build_tree(tmp.path());
    fs::create_dir_all(tmp.path().join("proc/1")).unwrap();
    fs::create_dir_all(tmp.path().join("etc")).unwrap();
    fs::write(tmp.path().join("etc/hosts"), b"127.0.0.1 sandbox").unwrap();
    fs::write(tmp.path().join("etc/keep"), b"k").unwrap();
    let opts = DiffOptions {
        clamp_mtime: Some(1_000),
        exclude: kiln_snapshotter::SANDBOX_MOUNT_POINTS
            .iter()
            .map(|s| format!("/{s}"))
            .collect(),
    };
    let tar = tar_of(tmp.path(), &opts);
    let mut seen = Vec::new();
    for e in tar::Archive::new(&tar[..]).entries().unwrap() {
        let e = e.unwrap();
        assert!(e.header().mtime().unwrap() <= 1_000 || e.header().mtime().is_err());
        seen.push(String::from_utf8(e.path_bytes().into_owned()).unwrap());
    }
    assert!(seen.contains(&"etc/keep".to_owned()));
    assert!(
        !seen
            .iter()
            .any(|s| s.starts_with("proc") || s == "etc/hosts"),
        "{seen:?}"
    );
}

#[test]
fn duplicate_entries_later_wins_and_dir_times_are_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let mut t = common::RawTar::default();
    t.header(&common::Raw {
        mode: 0o700,
        mtime: 1_234_567,
        ..common::Raw::new(b"d/", b'5')
    });
    t.file("d/x", b"first");
    t.file("d/x", b"second");
    t.dir("d/x2");
    t.file("d/x2", b"file replaces dir");
    t.file("d/y", b"file");
    t.dir("d/y");
    let tar = t.finish();
    for mode in [
        WhiteoutMode::Delete,
        WhiteoutMode::Overlay(XattrNamespace::Trusted),
    ] {
        let dst = tempfile::tempdir_in(tmp.path()).unwrap();
        apply_layer(&tar[..], dst.path(), &ApplyOptions::new(mode)).unwrap();
        assert_eq!(fs::read(dst.path().join("d/x")).unwrap(), b"second");
        assert_eq!(
            fs::read(dst.path().join("d/x2")).unwrap(),
            b"file replaces dir"
        );
        assert!(dst.path().join("d/y").is_dir());
        let md = fs::metadata(dst.path().join("d")).unwrap();
        assert_eq!(
            std::os::unix::fs::MetadataExt::mtime(&md),
            1_234_567,
            "dir mtime set after its children"
        );
        assert_eq!(md.permissions().mode() & 0o7777, 0o700);
    }
}

#[test]
fn a_directory_the_layer_has_no_entry_for_keeps_its_mtime() {
    // `etc/new` and a whiteout of `etc/old`, without an `etc/` entry: the layer says nothing
    // about `etc`, so it keeps the mtime it had, whenever the layer is applied.
    let mut t = common::RawTar::default();
    t.file("etc/new", b"new");
    t.file("etc/.wh.old", b"");
    t.file("top", b"at the root");
    let tar = t.finish();
    let dst = tempfile::tempdir().unwrap();
    fs::create_dir(dst.path().join("etc")).unwrap();
    fs::write(dst.path().join("etc/old"), b"old").unwrap();
    set_mtime(&dst.path().join("etc"), 1_000_000);
    set_mtime(dst.path(), 2_000_000);
    apply_layer(
        &tar[..],
        dst.path(),
        &ApplyOptions::new(WhiteoutMode::Delete),
    )
    .unwrap();
    assert_eq!(fs::read(dst.path().join("etc/new")).unwrap(), b"new");
    assert!(!dst.path().join("etc/old").exists());
    let mtime = |p: &Path| std::os::unix::fs::MetadataExt::mtime(&fs::metadata(p).unwrap());
    assert_eq!(mtime(&dst.path().join("etc")), 1_000_000);
    assert_eq!(mtime(dst.path()), 2_000_000);
    // A directory the layer does carry takes the layer's mtime, even after its children.
    let mut t = common::RawTar::default();
    t.file("etc/later", b"x");
    t.header(&common::Raw {
        mode: 0o755,
        mtime: 3_000_000,
        ..common::Raw::new(b"etc/", b'5')
    });
    apply_layer(
        &t.finish()[..],
        dst.path(),
        &ApplyOptions::new(WhiteoutMode::Delete),
    )
    .unwrap();
    assert_eq!(mtime(&dst.path().join("etc")), 3_000_000);
}

#[test]
fn whiteouts_in_both_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut t = common::RawTar::default();
    t.dir("keep/");
    t.file("keep/new", b"new");
    t.file("keep/.wh..wh..opq", b"");
    t.file(".wh.gone", b"");
    t.file("sub/.wh.f", b"");
    let tar = t.finish();

    // Flattened: whiteouts delete, opaque clears what lower layers left but keeps this layer's.
    let flat = tmp.path().join("flat");
    fs::create_dir_all(flat.join("keep/old")).unwrap();
    fs::create_dir_all(flat.join("gone/deep")).unwrap();
    fs::create_dir_all(flat.join("sub")).unwrap();
    fs::write(flat.join("sub/f"), b"f").unwrap();
    fs::write(flat.join("sub/g"), b"g").unwrap();
    apply_layer(&tar[..], &flat, &ApplyOptions::new(WhiteoutMode::Delete)).unwrap();
    assert!(!flat.join("gone").exists());
    assert!(!flat.join("keep/old").exists());
    assert_eq!(fs::read(flat.join("keep/new")).unwrap(), b"new");
    assert!(!flat.join("sub/f").exists());
    assert!(flat.join("sub/g").exists());

    if !prerequisite(
        is_root(),
        "overlay whiteouts need root to create trusted.* attributes",
    ) {
        return;
    }
    // Overlay layer: char devices 0:0 and the opaque attribute.
    let layer = tmp.path().join("layer");
    fs::create_dir(&layer).unwrap();
    apply_layer(
        &tar[..],
        &layer,
        &ApplyOptions::new(WhiteoutMode::Overlay(XattrNamespace::Trusted)),
    )
    .unwrap();
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let md = fs::symlink_metadata(layer.join("gone")).unwrap();
    assert!(md.file_type().is_char_device() && md.rdev() == 0);
    assert!(
        fs::symlink_metadata(layer.join("sub/f"))
            .unwrap()
            .file_type()
            .is_char_device()
    );
    let x = xattr_raw(&layer.join("keep"), "trusted.overlay.opaque");
    assert_eq!(x.as_deref(), Some(&b"y"[..]));

    // And back: the overlay layer diffs to the same whiteouts.
    let mut out = Vec::new();
    kiln_snapshotter::diff_upper(&layer, &mut out, &DiffOptions::default()).unwrap();
    let names: Vec<String> = entry_names(&out);
    assert_eq!(
        names,
        [
            ".wh.gone",
            "keep/",
            "keep/.wh..wh..opq",
            "keep/new",
            "sub/",
            "sub/.wh.f"
        ]
    );

    // userxattr form.
    let ulayer = tmp.path().join("ulayer");
    fs::create_dir(&ulayer).unwrap();
    apply_layer(
        &tar[..],
        &ulayer,
        &ApplyOptions::new(WhiteoutMode::Overlay(XattrNamespace::User)),
    )
    .unwrap();
    assert_eq!(
        xattr_raw(&ulayer.join("keep"), "user.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
}

fn xattr_raw(p: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    let n = rustix::fs::lgetxattr(p, name, &mut buf[..]).ok()?;
    buf.truncate(n);
    Some(buf)
}

#[test]
fn diff_trees_finds_changes_and_deletions() {
    let tmp = tempfile::tempdir().unwrap();
    let lower = tmp.path().join("lower");
    fs::create_dir(&lower).unwrap();
    build_tree(&lower);
    let upper = tmp.path().join("upper");
    kiln_snapshotter::copy_tree(&lower, &upper).unwrap();
    let mut empty = Vec::new();
    let stats = diff_trees(&lower, &upper, &mut empty, &DiffOptions::default()).unwrap();
    assert_eq!(stats.entries, 0, "an identical copy has no changes");

    fs::write(upper.join("bin/new"), b"new").unwrap();
    fs::remove_file(upper.join("empty")).unwrap();
    fs::set_permissions(upper.join("ro"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::remove_dir_all(upper.join("d".repeat(120))).unwrap();
    let mut out = Vec::new();
    diff_trees(&lower, &upper, &mut out, &DiffOptions::default()).unwrap();
    let names: Vec<String> = entry_names(&out);
    assert_eq!(
        names,
        [
            "bin/",
            "bin/new",
            format!(".wh.{}", "d".repeat(120)).as_str(),
            ".wh.empty",
            "ro/"
        ]
    );

    // Applying the diff onto a flat copy of the lower tree gives the upper tree.
    let check = tmp.path().join("check");
    kiln_snapshotter::copy_tree(&lower, &check).unwrap();
    apply_layer(&out[..], &check, &ApplyOptions::new(WhiteoutMode::Delete)).unwrap();
    let (a, b) = (fingerprint(&upper), fingerprint(&check));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
}

fn gnu_tar() -> bool {
    std::process::Command::new("tar")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run(cmd: &mut std::process::Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Node metadata that survives any tar implementation (GNU tar does not restore symlink
/// mtimes the same way everywhere, so times are compared for files and directories only).
fn assert_same_tree(a: &Path, b: &Path) {
    let (fa, fb) = (fingerprint(a), fingerprint(b));
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    for (k, x) in &fa {
        let y = &fb[k];
        assert_eq!(
            (&x.kind, x.mode, x.uid, x.gid, x.rdev, &x.content, &x.link),
            (&y.kind, y.mode, y.uid, y.gid, y.rdev, &y.content, &y.link),
            "{k}"
        );
        assert_eq!(x.hardlink_group, y.hardlink_group, "{k}");
        assert_eq!(x.xattrs, y.xattrs, "{k}");
        if x.kind == "file" {
            assert_eq!(x.mtime, y.mtime, "{k}");
        }
    }
}

#[test]
fn applies_what_gnu_tar_writes() {
    if !prerequisite(gnu_tar(), "GNU tar (scripts/install-test-deps installs it)") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    build_tree(&src);
    // A sparse file: 8 MiB with 4 bytes of data in the middle.
    let sparse = fs::File::create(src.join("sparse")).unwrap();
    sparse.set_len(8 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&sparse, b"data", 4 << 20).unwrap();
    drop(sparse);
    for format in ["gnu", "pax"] {
        let archive = tmp.path().join(format!("{format}.tar"));
        run(std::process::Command::new("tar")
            .args([
                "--format",
                format,
                "--xattrs",
                "--xattrs-include=*",
                "--sparse",
                "--numeric-owner",
                "-C",
            ])
            .arg(&src)
            .arg("-cf")
            .arg(&archive)
            .arg("."));
        let dst = tmp.path().join(format!("{format}-out"));
        fs::create_dir(&dst).unwrap();
        let tar = fs::read(&archive).unwrap();
        apply_layer(&tar[..], &dst, &ApplyOptions::new(WhiteoutMode::Delete))
            .unwrap_or_else(|e| panic!("{format}: {e}"));
        assert_same_tree(&src, &dst);
        // Holes stay holes.
        let blocks =
            std::os::unix::fs::MetadataExt::blocks(&fs::metadata(dst.join("sparse")).unwrap());
        assert!(blocks < 1024, "sparse file took {blocks} blocks");
    }
}

#[test]
fn gnu_tar_extracts_what_we_write() {
    if !prerequisite(gnu_tar(), "GNU tar (scripts/install-test-deps installs it)") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    build_tree(&src);
    let archive = tmp.path().join("ours.tar");
    write_tree(
        &src,
        fs::File::create(&archive).unwrap(),
        &DiffOptions::default(),
    )
    .unwrap();
    let dst = tmp.path().join("out");
    fs::create_dir(&dst).unwrap();
    run(std::process::Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
        .arg(&archive)
        .arg("-C")
        .arg(&dst));
    assert_same_tree(&src, &dst);
}

#[test]
fn unprivileged_apply_keeps_its_own_owner_and_old_style_dirs_work() {
    let tmp = tempfile::tempdir().unwrap();
    let mut t = common::RawTar::default();
    t.header(&common::Raw {
        uid: 4242,
        gid: 4343,
        mode: 0o750,
        ..common::Raw::new(b"olddir/", b'0')
    });
    t.header(&common::Raw {
        uid: 4242,
        gid: 4343,
        size: 2,
        mode: 0o4755,
        ..common::Raw::new(b"olddir/f", b'0')
    });
    t.data(b"hi");
    let opts = ApplyOptions {
        whiteouts: WhiteoutMode::Delete,
        chown: false,
        devices: false,
    };
    apply_layer(&t.finish()[..], tmp.path(), &opts).unwrap();
    let fp = fingerprint(tmp.path());
    assert_eq!(fp["olddir"].kind, "dir");
    assert_eq!(fp["olddir"].mode, 0o750);
    assert_eq!(fp["olddir/f"].mode, 0o4755);
    let me = fs::metadata(tmp.path()).unwrap();
    assert_eq!(fp["olddir/f"].uid, std::os::unix::fs::MetadataExt::uid(&me));
}

#[test]
fn xattr_whiteouts_in_an_upper_dir_become_whiteouts() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("gone"), b"").unwrap();
    set_xattr(&tmp.path().join("gone"), "user.overlay.whiteout", b"");
    fs::write(tmp.path().join("kept"), b"").unwrap();
    let mut out = Vec::new();
    kiln_snapshotter::diff_upper(tmp.path(), &mut out, &DiffOptions::default()).unwrap();
    let names: Vec<String> = entry_names(&out);
    assert_eq!(names, [".wh.gone", "kept"]);
}
