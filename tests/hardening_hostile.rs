//! Hostile input end to end: crafted layer tars (through `kiln import`, `kiln load` and the
//! snapshotter's apply), hostile build contexts (also as an unprivileged user), and Dockerfiles
//! that are huge, deep or unfinished. Each gets a clear error or a safe result; none writes
//! outside the store or the output, hangs, or panics.
//!
//! The snapshotter's own tests (`snapshotter/tests/hostile.rs`) try each layer attack on the
//! apply function in detail; here the same kinds of archive go through the whole binary.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

mod hardening_support;
use hardening_support::*;

/// A tar written entry by entry with the `tar` crate's header type, names and sizes set raw so
/// that they can be anything an attacker writes.
struct Layer(tar::Builder<Vec<u8>>);

impl Layer {
    fn new() -> Layer {
        Layer(tar::Builder::new(Vec::new()))
    }

    fn entry(&mut self, name: &[u8], kind: tar::EntryType, link: &[u8], data: &[u8]) {
        let mut h = tar::Header::new_ustar();
        h.as_old_mut().name[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
        h.as_old_mut().linkname[..link.len().min(100)]
            .copy_from_slice(&link[..link.len().min(100)]);
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
            h.set_device_major(8).unwrap();
            h.set_device_minor(3).unwrap();
        }
        h.set_cksum();
        self.0.append(&h, data).unwrap();
    }

    fn file(&mut self, name: &str, data: &[u8]) {
        self.entry(name.as_bytes(), tar::EntryType::Regular, b"", data);
    }

    fn dir(&mut self, name: &str) {
        self.entry(name.as_bytes(), tar::EntryType::Directory, b"", b"");
    }

    fn symlink(&mut self, name: &str, target: &str) {
        self.entry(
            name.as_bytes(),
            tar::EntryType::Symlink,
            target.as_bytes(),
            b"",
        );
    }

    fn hardlink(&mut self, name: &str, target: &str) {
        self.entry(
            name.as_bytes(),
            tar::EntryType::Link,
            target.as_bytes(),
            b"",
        );
    }

    fn pax(&mut self, records: &[(&str, &[u8])]) {
        self.0
            .append_pax_extensions(records.iter().copied())
            .unwrap();
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.0.get_mut().extend_from_slice(bytes);
    }

    fn finish(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

/// A GNU sparse header (type `S`) claiming `real` bytes of which only `data` at the end exist.
fn sparse_claim(name: &str, real: u64, data: &[u8]) -> Vec<u8> {
    let mut b = [0u8; 512];
    let octal = |field: &mut [u8], v: u64| {
        let s = format!("{:0w$o}", v, w = field.len() - 1);
        field[..s.len()].copy_from_slice(s.as_bytes());
    };
    b[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut b[100..108], 0o644);
    octal(&mut b[108..116], 0);
    octal(&mut b[116..124], 0);
    octal(&mut b[124..136], data.len() as u64);
    octal(&mut b[136..148], 1_600_000_000);
    b[156] = b'S';
    b[257..265].copy_from_slice(b"ustar  \0");
    octal(&mut b[386..398], real - data.len() as u64);
    octal(&mut b[398..410], data.len() as u64);
    octal(&mut b[483..495], real);
    b[148..156].fill(b' ');
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = b.to_vec();
    out.extend_from_slice(data);
    out.resize(512 + data.len().div_ceil(512) * 512, 0);
    out
}

/// Every crafted layer: (name, tar). `outside` is a directory beside the store that no layer may
/// touch; several archives aim at it by absolute path and through links.
fn hostile_layers(outside: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let out = outside.to_str().unwrap().trim_start_matches('/');
    let climb = "../".repeat(40);
    let mut layers = Vec::new();

    let mut t = Layer::new();
    t.file(&format!("{climb}{out}/pwned-dotdot"), b"x");
    layers.push(("dotdot", t.finish()));

    let mut t = Layer::new();
    t.file(&format!("/{out}/pwned-absolute"), b"x");
    layers.push(("absolute", t.finish()));

    let mut t = Layer::new();
    t.symlink("link", &format!("/{out}"));
    t.file("link/pwned-through-symlink", b"x");
    t.symlink("rel", &format!("{climb}{out}"));
    t.file("rel/pwned-through-relative-symlink", b"x");
    layers.push(("symlink-then-write-through", t.finish()));

    let mut t = Layer::new();
    t.hardlink("hl", &format!("/{out}/victim"));
    t.file("hl", b"pwned");
    t.hardlink("hl2", &format!("{climb}{out}/victim"));
    layers.push(("hardlink-outside", t.finish()));

    let mut t = Layer::new();
    t.entry(b"dev/null2", tar::EntryType::Char, b"", b"");
    t.entry(b"dev/sda2", tar::EntryType::Block, b"", b"");
    layers.push(("device-nodes", t.finish()));

    let mut t = Layer::new();
    t.pax(&[("size", b"99999999999999")]);
    t.file("big", b"small");
    layers.push(("pax-size-lies", t.finish()));

    // A 10 GB file of which 4 bytes exist, as GNU tar writes sparse files (PAX, format 1.0).
    let mut t = Layer::new();
    let real = 10u64 << 30;
    t.pax(&[
        ("GNU.sparse.major", b"1"),
        ("GNU.sparse.minor", b"0"),
        ("GNU.sparse.name", b"sparse"),
        ("GNU.sparse.realsize", real.to_string().as_bytes()),
    ]);
    let mut data = format!("1\n{}\n4\n", real - 4).into_bytes();
    data.resize(512, 0);
    data.extend_from_slice(b"tail");
    t.file("GNUSparseFile.0/sparse", &data);
    layers.push(("sparse-10g", t.finish()));

    // The old GNU header form, 10 GB again: the tar crate fills its holes with zeros, which the
    // applier must skip as holes at memory speed (neither disk nor minutes of CPU).
    let mut t = Layer::new();
    t.raw(&sparse_claim("gnu-sparse", 10 << 30, b"tail"));
    layers.push(("gnu-sparse-10g", t.finish()));

    let mut t = Layer::new();
    let long = "a/".repeat(32 * 1024);
    t.pax(&[("path", long.as_bytes())]);
    t.file("short", b"x");
    layers.push(("name-64k", t.finish()));

    let mut t = Layer::new();
    t.file("dup", b"first");
    t.file("dup", b"second");
    t.dir("dd");
    t.file("dd", b"a file over a directory");
    t.file("ff", b"a file");
    t.dir("ff");
    t.file("ff/inside", b"x");
    layers.push(("duplicates", t.finish()));

    let mut t = Layer::new();
    t.dir("a");
    t.file("a/.wh...", b"");
    t.file(".wh...", b"");
    layers.push(("whiteout-dotdot", t.finish()));

    let mut t = Layer::new();
    for i in 0..100_000 {
        if i % 1000 == 0 {
            t.dir(&format!("d{}", i / 1000));
        }
        t.file(&format!("d{}/f{i}", i / 1000), b"");
    }
    layers.push(("100k-entries", t.finish()));
    layers
}

/// What `dir` holds: every path with its type and content, for before/after comparisons.
fn tree(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let kind = e.file_type().unwrap();
            let what = if kind.is_dir() {
                pending.push(p.clone());
                "dir".to_string()
            } else if kind.is_symlink() {
                format!("link {:?}", std::fs::read_link(&p).unwrap())
            } else {
                format!("file {:?}", std::fs::read(&p).unwrap_or_default())
            };
            out.insert(p, what);
        }
    }
    out
}

/// Names with `pwned` anywhere in the temp dir outside the store and the outputs.
fn escapes(env: &Env) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![env.dir.path().to_path_buf()];
    while let Some(d) = pending.pop() {
        if d.starts_with(env.root()) || d.starts_with(env.path("out")) {
            continue;
        }
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.to_string_lossy().contains("pwned") {
                found.push(p.clone());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(p);
            }
        }
    }
    found
}

/// A docker-archive holding one image whose single layer is `layer`.
fn docker_archive(env: &Env, name: &str, layer: &[u8]) -> PathBuf {
    let dir = env.path(&format!("archive-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("layer.tar"), layer).unwrap();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [kiln_oci::Digest::of(layer).as_str()]},
        "history": [{"created_by": "hostile"}],
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let manifest = serde_json::json!([{
        "Config": "config.json",
        "RepoTags": [format!("loaded-{name}:1")],
        "Layers": ["layer.tar"],
    }]);
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
    let archive = env.path(&format!("{name}.docker.tar"));
    let made = Command::new("tar")
        .arg("-cf")
        .arg(&archive)
        .arg("-C")
        .arg(&dir)
        .args(["manifest.json", "config.json", "layer.tar"])
        .status()
        .unwrap();
    assert!(made.success());
    archive
}

/// A build that applies `image`'s layers (COPY --from unpacks the image as a snapshot chain,
/// then looks for a path no layer has): exit 1 with a short message, the apply's own error or
/// else "not found".
fn apply_by_build(env: &Env, image: &str, case: &str) -> String {
    let ctx = env.path(&format!("ctx-{case}"));
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM busybox\nCOPY --from={image} /no-layer-has-this /x\n"),
    )
    .unwrap();
    let out = env.run(&["build", "--progress=plain", ctx.to_str().unwrap()]);
    let err = text(&out.stderr);
    match out.status.code() {
        Some(1) => {
            let message = err.lines().rfind(|l| l.starts_with("error:")).unwrap_or("");
            assert!(
                !message.is_empty() && message.len() < 2048,
                "{case}: unclear error:\n{err}"
            );
            message.to_string()
        }
        _ => panic!("{case}: kiln build exited {}:\n{err}", out.status),
    }
}

#[test]
fn hostile_layers_through_import_load_and_apply() {
    let Some(env) = Env::with_busybox() else {
        return;
    };
    let outside = env.path("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("victim"), b"keep me").unwrap();
    let before = tree(&outside);
    let mut results = Vec::new();
    for (case, layer) in hostile_layers(&outside) {
        // Through the snapshotter's apply, into a fresh root, as an unprivileged applier
        // would (no devices, no chown) and as root.
        // (The biggest archive only through the binary below: here it would only add time.)
        let modes: &[bool] = if case == "100k-entries" {
            &[]
        } else {
            &[false, true]
        };
        for &devices in modes {
            let root = env.path(&format!("apply-{case}-{devices}"));
            std::fs::create_dir(&root).unwrap();
            let options = kiln_snapshotter::ApplyOptions {
                devices,
                chown: devices,
                ..kiln_snapshotter::ApplyOptions::new(kiln_snapshotter::WhiteoutMode::Delete)
            };
            let applied = kiln_snapshotter::apply_layer(layer.as_slice(), &root, &options);
            if let Err(e) = &applied {
                assert!(e.to_string().len() < 2048, "{case}: {e}");
            }
            if case == "device-nodes" && !devices {
                let e = applied.as_ref().unwrap_err().to_string();
                assert!(e.contains("device"), "{case}: {e}");
            }
            if case.contains("sparse")
                && applied.is_ok()
                && let Ok(meta) = std::fs::metadata(root.join("sparse"))
            {
                use std::os::unix::fs::MetadataExt;
                assert!(
                    meta.blocks() * 512 < 1 << 30,
                    "the sparse claim was written out"
                );
            }
            kiln_snapshotter::remove_tree(&root).unwrap();
        }
        // Through `kiln import` (the tar as a layer) and `kiln load` (in a docker-archive),
        // then applied by a build.
        let tar = env.path(&format!("{case}.tar"));
        std::fs::write(&tar, &layer).unwrap();
        let imported = format!("import-{case}:1");
        let out = env.run(&["import", tar.to_str().unwrap(), &imported]);
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "{case}: {}",
            text(&out.stderr)
        );
        let via_import = if out.status.success() {
            apply_by_build(&env, &imported, &format!("{case}-import"))
        } else {
            text(&out.stderr)
        };
        if case == "100k-entries" {
            std::fs::remove_file(&tar).unwrap();
            results.push((case, via_import, "not loaded (see import)".into()));
            continue;
        }
        let archive = docker_archive(&env, case, &layer);
        let out = env.run(&["load", "-i", archive.to_str().unwrap()]);
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "{case}: {}",
            text(&out.stderr)
        );
        let via_load = if out.status.success() {
            apply_by_build(&env, &format!("loaded-{case}:1"), &format!("{case}-load"))
        } else {
            text(&out.stderr)
        };
        std::fs::remove_file(&tar).unwrap();
        std::fs::remove_file(&archive).unwrap();
        results.push((case, via_import, via_load));
        assert_eq!(
            tree(&outside),
            before,
            "{case} changed a directory outside the store"
        );
        assert!(escapes(&env).is_empty(), "{case}: {:?}", escapes(&env));
    }
    for (case, import, load) in &results {
        eprintln!("{case}: import → {import}; load → {load}");
    }
    let outcome = |case: &str| results.iter().find(|r| r.0 == case).unwrap().1.clone();
    // What must be refused outright; the rest is confined (checked above) and applies.
    for case in ["dotdot", "pax-size-lies", "name-64k", "whiteout-dotdot"] {
        assert!(
            outcome(case).contains("entry \""),
            "{case}: {}",
            outcome(case)
        );
    }
    for case in [
        "absolute",
        "duplicates",
        "100k-entries",
        "sparse-10g",
        "gnu-sparse-10g",
    ] {
        assert!(
            outcome(case).contains("not found"),
            "{case}: {}",
            outcome(case)
        );
    }
    env.assert_store_whole();
}

#[test]
fn hostile_contexts_are_refused_or_copied_safely() {
    let Some(env) = Env::with_busybox() else {
        return;
    };
    let ctx = env.ctx();
    let out_dir = env.path("out");
    let build = |dockerfile: &str| {
        env.dockerfile(dockerfile);
        let _ = std::fs::remove_dir_all(&out_dir);
        env.run(&[
            "build",
            "--progress=plain",
            "-o",
            &format!("type=local,dest={}", out_dir.display()),
            "ctx",
        ])
    };
    std::os::unix::fs::symlink("/etc/shadow", ctx.join("shadow")).unwrap();
    // A symlink to /etc/shadow resolves inside the context, where nothing answers to it.
    let out = build("FROM busybox\nCOPY shadow /shadow\n");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("symbolic link to \"/etc/shadow\""), "{err}");
    // Copied as part of a directory, it stays a link.
    let out = build("FROM busybox\nCOPY . /ctx\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let copied = std::fs::symlink_metadata(out_dir.join("ctx/shadow")).unwrap();
    assert!(copied.file_type().is_symlink());
    // …and a path through a link to `..` does not leave the context.
    std::fs::write(env.path("outside-file"), b"outside the context").unwrap();
    std::os::unix::fs::symlink("..", ctx.join("up")).unwrap();
    let out = build("FROM busybox\nCOPY up/outside-file /stolen\n");
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}",
        text(&out.stderr)
    );
    assert_ne!(
        std::fs::read(out_dir.join("stolen")).ok().as_deref(),
        Some(&b"outside the context"[..])
    );
    std::fs::remove_file(ctx.join("up")).unwrap();
    std::fs::remove_file(ctx.join("shadow")).unwrap();

    // A FIFO and a socket: copying the whole context neither blocks on the FIFO nor copies
    // their content; naming one directly is a clear error.
    let fifo = ctx.join("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let _socket = std::os::unix::net::UnixListener::bind(ctx.join("sock")).unwrap();
    let out = build("FROM busybox\nCOPY . /ctx\n");
    let err = text(&out.stderr);
    assert!(matches!(out.status.code(), Some(0 | 1)), "{err}");
    if out.status.success() {
        for name in ["fifo", "sock"] {
            let kind = std::fs::symlink_metadata(out_dir.join("ctx").join(name));
            assert!(
                kind.as_ref().map_or(true, |m| !m.file_type().is_file()),
                "{name} was copied as a file"
            );
        }
    } else {
        assert!(err.contains("fifo") || err.contains("sock"), "{err}");
    }
    let out = build("FROM busybox\nCOPY fifo /fifo\n");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    drop(_socket);
    std::fs::remove_file(&fifo).unwrap();
    std::fs::remove_file(ctx.join("sock")).unwrap();

    // A file that changes while it is hashed: the build copies one consistent version of it
    // or fails saying so.
    let growing = ctx.join("growing");
    write_random(&growing, 8 << 20, 7);
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut n = 0u8;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                use std::io::{Seek, Write};
                if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&growing) {
                    let _ = f.seek(std::io::SeekFrom::Start(u64::from(n) * 4096));
                    let _ = f.write_all(&[n; 4096]);
                }
                n = n.wrapping_add(1);
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        });
        let out = build("FROM busybox\nCOPY growing /growing\n");
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let err = text(&out.stderr);
        assert!(matches!(out.status.code(), Some(0 | 1)), "{err}");
        if out.status.success() {
            let len = std::fs::metadata(out_dir.join("growing")).unwrap().len();
            assert_eq!(len, 8 << 20);
        } else {
            assert!(err.contains("growing"), "{err}");
        }
    });
    std::fs::remove_file(&growing).unwrap();
    env.assert_store_whole();
}

/// As `nobody`, with its own store: an unreadable context file is a clear error, and a layer
/// with device nodes is refused (an unprivileged user cannot make them) without harm.
#[test]
fn unprivileged_builds_refuse_unreadable_files_and_devices() {
    if !require(is_root(), "root (to become nobody)")
        || !require(have_tool("setpriv"), "setpriv (util-linux)")
    {
        return;
    }
    let env = Env::bare();
    let tar = env.path("busybox.tar");
    if !busybox_tar(&tar) {
        return;
    }
    let mut layer = Layer::new();
    layer.entry(b"null2", tar::EntryType::Char, b"", b"");
    std::fs::write(env.path("devices.tar"), layer.finish()).unwrap();
    std::fs::write(env.ctx().join("unreadable"), b"not for nobody").unwrap();
    env.dockerfile("FROM busybox\nCOPY . /ctx\n");
    let chown = Command::new("chown")
        .args(["-R", "nobody:nogroup"])
        .arg(env.dir.path())
        .status()
        .unwrap();
    assert!(chown.success());
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        env.ctx().join("unreadable"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    let as_nobody = |args: &[&str]| {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid", "nobody", "--regid", "nogroup", "--clear-groups"])
            .arg(KILN)
            .arg("--root")
            .arg(env.root())
            .args(args)
            .current_dir(env.dir.path())
            .env("HOME", env.dir.path())
            .env_remove("KILN_ROOT")
            .env_remove("XDG_DATA_HOME");
        finish(command, args)
    };
    let ok = |args: &[&str]| {
        let out = as_nobody(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    };
    ok(&["import", tar.to_str().unwrap(), "busybox:latest"]);
    ok(&["import", "devices.tar", "devices:1"]);
    let out = as_nobody(&["build", "--progress=plain", "ctx"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("unreadable") && err.contains("Permission denied"),
        "{err}"
    );
    env.dockerfile("FROM busybox\nCOPY --from=devices:1 / /x\n");
    std::fs::remove_file(env.ctx().join("unreadable")).unwrap();
    let out = as_nobody(&["build", "--progress=plain", "ctx"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("device"), "{err}");
    let out = as_nobody(&["fsck"]);
    assert!(
        text(&out.stdout).contains("store is consistent"),
        "{}",
        text(&out.stderr)
    );
    assert!(mounts_below(&env.root()).is_empty());
    // Nothing of the store belongs to anyone but nobody.
    for (path, _) in tree(&env.root()) {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(
            meta.uid() == 65534 || meta.file_type().is_char_device(),
            "{} is owned by {}",
            path.display(),
            meta.uid()
        );
    }
}

/// Dockerfiles the parser must refuse or survive, at the command line: exit 1 with a message
/// naming the Dockerfile, never a panic or a hang. (The parser's own tests and proptests cover
/// the grammar; this is what a user sees.)
#[test]
fn hostile_dockerfiles_fail_clearly_at_the_command_line() {
    let env = Env::bare();
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/hostile/dockerfiles");
    let negative =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/dockerfiles/testfiles-negative");
    let mut cases: Vec<(String, String)> = Vec::new();
    for dir in [&corpus, &negative] {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let file = if path.is_dir() {
                path.join("Dockerfile")
            } else {
                path.clone()
            };
            if let Ok(text) = std::fs::read_to_string(&file) {
                cases.push((path.display().to_string(), text));
            }
        }
    }
    // Generated: too big to commit.
    cases.push((
        "1 MB single line".into(),
        format!("FROM scratch\nLABEL a=\"{}\n", "x".repeat(1 << 20)),
    ));
    cases.push((
        "1 MB of one word".into(),
        format!("FROM scratch\n{}\n", "Y".repeat(1 << 20)),
    ));
    let mut many = String::from("FROM scratch\n");
    for i in 0..10_000 {
        many.push_str(&format!("LABEL l{i}=v{i}\n"));
    }
    many.push_str("FRM oops\n");
    cases.push(("10,000 instructions".into(), many));
    let depth = 20_000;
    cases.push((
        "deeply nested expansion".into(),
        format!(
            "ARG A\nFROM {}busybox{}\n",
            "${A:-".repeat(depth),
            "}".repeat(depth)
        ),
    ));
    cases.push((
        "heredoc without an end".into(),
        "FROM scratch\nRUN <<EOF\necho never ends\n".repeat(50),
    ));
    assert!(cases.len() > 10);
    for (name, text_of) in cases {
        env.dockerfile(&text_of);
        let out = env.run(&["build", "--progress=plain", "ctx"]);
        let err = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{name}: {}",
            &err[..err.len().min(2000)]
        );
        assert!(
            err.starts_with("error") || err.contains("\nerror"),
            "{name}: {}",
            &err[..err.len().min(2000)]
        );
        // An error message, not the input echoed back.
        assert!(
            err.len() < 64 * 1024,
            "{name}: {} bytes of error",
            err.len()
        );
    }
    assert!(mounts_below(&env.root()).is_empty());
}
