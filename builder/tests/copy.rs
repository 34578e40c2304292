//! COPY and ADD end to end: a context (or a directory root) in a temp dir, a destination root in
//! another, `select` + `cache_sources` + `apply`, and the resulting tree checked.

use kiln_builder::Error;
use kiln_builder::context::{BuildContext, DigestMemo, Entry};
use kiln_builder::copy::{self, CopySpec, HeredocSource, SourceRoot};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use tempfile::TempDir;

fn tmp() -> TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
}

fn write(root: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let p = root.join(path);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{e}"));
        }
        fs::write(&p, content).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    }
}

fn context_with(files: &[(&str, &str)]) -> TempDir {
    let dir = tmp();
    write(dir.path(), files);
    dir
}

fn spec(sources: &[&str], dest: &str) -> CopySpec {
    CopySpec {
        sources: sources.iter().map(|s| s.to_string()).collect(),
        dest: dest.into(),
        workdir: "/".into(),
        ..CopySpec::default()
    }
}

fn entries(ctx: &BuildContext) -> Vec<Entry> {
    ctx.walk_hashed(&DigestMemo::default())
        .unwrap_or_else(|e| panic!("walk: {e}"))
        .0
}

/// Run one COPY from the context at `ctx_dir` into `dest`.
fn copy_from_context(
    ctx_dir: &Path,
    spec: &CopySpec,
    dest: &Path,
) -> Result<copy::CopyStats, Error> {
    let ctx = BuildContext::open(ctx_dir, None)?;
    let entries = entries(&ctx);
    let root = SourceRoot::Context(&ctx, &entries);
    let selection = copy::select(spec, &root)?;
    selection.cache_sources(Some(dest))?;
    copy::apply(&selection, dest)
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Files (and symlinks as `-> target`) below `root`, sorted, for whole-tree comparisons.
fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap_or_else(|e| panic!("{e}"));
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap_or(e.path())
            .display()
            .to_string();
        let ft = e.file_type();
        if ft.is_symlink() {
            let t = fs::read_link(e.path()).unwrap_or_else(|e| panic!("{e}"));
            out.push(format!("{rel} -> {}", t.display()));
        } else if ft.is_dir() {
            out.push(format!("{rel}/"));
        } else {
            out.push(format!("{rel}={}", read(e.path())));
        }
    }
    out
}

fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Whether a root-only test may run: under `CI=true` missing root is a failure.
fn need_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} needs root and CI=true is set");
    }
    eprintln!("skipping {test}: needs root");
    false
}

#[test]
fn destinations_table() {
    let files = [
        ("a.txt", "A"),
        ("b.txt", "B"),
        ("c.md", "C"),
        ("dir/x", "X"),
        ("dir/sub/y", "Y"),
    ];
    // (sources, dest, workdir, expected tree)
    let cases: &[(&[&str], &str, &str, &[&str])] = &[
        (&["a.txt"], "/out.txt", "/", &["out.txt=A"]),
        (&["a.txt"], "/d/", "/", &["d/", "d/a.txt=A"]),
        (&["a.txt"], "rel", "/work", &["work/", "work/rel=A"]),
        (&["a.txt"], ".", "/work", &["work/", "work/a.txt=A"]),
        (
            &["dir"],
            "/app",
            "/",
            &["app/", "app/sub/", "app/sub/y=Y", "app/x=X"],
        ),
        (
            &["dir/"],
            "/app/",
            "/",
            &["app/", "app/sub/", "app/sub/y=Y", "app/x=X"],
        ),
        (&["*.txt"], "/d/", "/", &["d/", "d/a.txt=A", "d/b.txt=B"]),
        (&["?.md", "dir/x"], "/d/", "/", &["d/", "d/c.md=C", "d/x=X"]),
        (&["[ab].txt"], "/d/", "/", &["d/", "d/a.txt=A", "d/b.txt=B"]),
        (&["*/x"], "/d/", "/", &["d/", "d/x=X"]),
        // A wildcard matching nothing is fine while another source matches.
        (&["nothing*", "c.md"], "/d/", "/", &["d/", "d/c.md=C"]),
        // A single wildcard match may go to a file destination.
        (&["c*"], "/one", "/", &["one=C"]),
    ];
    for (sources, dest, workdir, want) in cases {
        let ctx = context_with(&files);
        let out = tmp();
        let mut s = spec(sources, dest);
        s.workdir = workdir.to_string();
        copy_from_context(ctx.path(), &s, out.path())
            .unwrap_or_else(|e| panic!("{sources:?} -> {dest}: {e}"));
        assert_eq!(
            tree(out.path()),
            *want,
            "{sources:?} -> {dest} (workdir {workdir})"
        );
    }
}

#[test]
fn existing_directory_receives_the_file_and_files_are_replaced() {
    let ctx = context_with(&[("a.txt", "new")]);
    let out = tmp();
    write(out.path(), &[("d/keep", "k"), ("f", "old")]);
    copy_from_context(ctx.path(), &spec(&["a.txt"], "/d"), out.path())
        .unwrap_or_else(|e| panic!("{e}"));
    copy_from_context(ctx.path(), &spec(&["a.txt"], "/f"), out.path())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(tree(out.path()), ["d/", "d/a.txt=new", "d/keep=k", "f=new"]);
}

#[test]
fn a_file_destination_that_is_a_symlink_is_followed_inside_the_root() {
    let ctx = context_with(&[("py", "new")]);
    let out = tmp();
    write(out.path(), &[("usr/bin/python3.11", "old")]);
    symlink("python3.11", out.path().join("usr/bin/python")).unwrap_or_else(|e| panic!("{e}"));
    symlink("/etc/shadow-kiln-none", out.path().join("usr/bin/dangling"))
        .unwrap_or_else(|e| panic!("{e}"));
    copy_from_context(ctx.path(), &spec(&["py"], "/usr/bin/python"), out.path())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read(&out.path().join("usr/bin/python3.11")), "new");
    assert!(
        fs::symlink_metadata(out.path().join("usr/bin/python"))
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false)
    );
    // A link to nothing is replaced by the file (nothing is created at its target).
    copy_from_context(ctx.path(), &spec(&["py"], "/usr/bin/dangling"), out.path())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read(&out.path().join("usr/bin/dangling")), "new");
    // With a trailing slash the name inside the directory is replaced, not followed.
    fs::write(out.path().join("usr/bin/python3.11"), "old").unwrap_or_else(|e| panic!("{e}"));
    symlink("python3.11", out.path().join("usr/bin/py")).unwrap_or_else(|e| panic!("{e}"));
    copy_from_context(ctx.path(), &spec(&["py"], "/usr/bin/"), out.path())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read(&out.path().join("usr/bin/python3.11")), "old");
    assert!(
        fs::symlink_metadata(out.path().join("usr/bin/py"))
            .map(|m| m.file_type().is_file())
            .unwrap_or(false)
    );
    assert_eq!(read(&out.path().join("usr/bin/py")), "new");
}

#[test]
fn several_sources_need_a_directory_destination() {
    let ctx = context_with(&[("a.txt", "A"), ("b.txt", "B")]);
    let out = tmp();
    for sources in [&["a.txt", "b.txt"][..], &["*.txt"][..]] {
        match copy_from_context(ctx.path(), &spec(sources, "/d"), out.path()) {
            Err(e @ Error::CopyDestNotDir("COPY")) => assert!(
                e.to_string()
                    .starts_with("When using COPY with more than one source file")
            ),
            other => panic!("{sources:?}: expected CopyDestNotDir, got {other:?}"),
        }
    }
}

#[test]
fn missing_sources_say_why() {
    let ctx = context_with(&[
        ("config.yaml", "c"),
        ("secret.env", "s"),
        (".dockerignore", "secret.env\n"),
    ]);
    let out = tmp();
    let err = copy_from_context(ctx.path(), &spec(&["config.yml"], "/"), out.path())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("\"config.yml\" not found"), "{err}");
    assert!(err.contains("did you mean \"config.yaml\""), "{err}");
    let err = copy_from_context(ctx.path(), &spec(&["secret.env"], "/"), out.path())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("excluded by .dockerignore"), "{err}");
    let err = copy_from_context(ctx.path(), &spec(&["*.none"], "/d/"), out.path())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("\"*.none\" not found"), "{err}");
}

#[test]
fn paths_outside_the_context_are_refused() {
    let ctx = context_with(&[("a", "1")]);
    let out = tmp();
    for src in ["../x", "a/../../x", ".."] {
        match copy_from_context(ctx.path(), &spec(&[src], "/"), out.path()) {
            Err(Error::CopyOutsideContext(s)) => assert_eq!(s, src),
            other => panic!("{src}: expected CopyOutsideContext, got {other:?}"),
        }
    }
}

#[test]
fn symlinks_stay_symlinks_and_named_links_resolve_inside_the_context() {
    let ctx = context_with(&[("dir/real", "R"), ("top", "T")]);
    symlink("real", ctx.path().join("dir/link")).unwrap_or_else(|e| panic!("{e}"));
    symlink("/etc/passwd", ctx.path().join("dir/abs")).unwrap_or_else(|e| panic!("{e}"));
    symlink("../../../../top", ctx.path().join("escape")).unwrap_or_else(|e| panic!("{e}"));
    symlink("dir", ctx.path().join("dirlink")).unwrap_or_else(|e| panic!("{e}"));
    let out = tmp();
    copy_from_context(ctx.path(), &spec(&["dir"], "/d/"), out.path())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        tree(out.path()),
        ["d/", "d/abs -> /etc/passwd", "d/link -> real", "d/real=R"]
    );
    // A named symlink is followed, inside the context: `../../../../top` is the context's `top`.
    let out = tmp();
    copy_from_context(
        ctx.path(),
        &spec(&["escape", "dirlink/real"], "/e/"),
        out.path(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(tree(out.path()), ["e/", "e/escape=T", "e/real=R"]);
    // A link to something outside the context that does not exist inside it is not found.
    symlink("/etc/hostname-kiln-none", ctx.path().join("dangling"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        copy_from_context(ctx.path(), &spec(&["dangling"], "/"), out.path()),
        Err(Error::CopySourceNotFound { .. })
    ));
}

#[test]
fn writes_through_planted_symlinks_stay_inside_the_destination() {
    let ctx = context_with(&[("f", "payload"), ("dir/g", "G")]);
    let out = tmp();
    let outside = tmp();
    // An image may carry `/usr -> /` or a link that points straight at the host.
    symlink("/", out.path().join("usr")).unwrap_or_else(|e| panic!("{e}"));
    symlink(outside.path(), out.path().join("host")).unwrap_or_else(|e| panic!("{e}"));
    symlink("../../..", out.path().join("up")).unwrap_or_else(|e| panic!("{e}"));
    copy_from_context(ctx.path(), &spec(&["f"], "/usr/lib/f"), out.path())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read(&out.path().join("lib/f")), "payload");
    copy_from_context(ctx.path(), &spec(&["dir"], "/up/x/"), out.path())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read(&out.path().join("x/g")), "G");
    // The link's target does not exist inside the root: refused, and nothing lands outside.
    assert!(copy_from_context(ctx.path(), &spec(&["f"], "/host/"), out.path()).is_err());
    assert_eq!(
        fs::read_dir(outside.path()).map(|d| d.count()).unwrap_or(1),
        0,
        "wrote outside"
    );
    // Once it exists inside the root, that is where the write goes.
    let host_target = outside.path().strip_prefix("/").unwrap_or(outside.path());
    fs::create_dir_all(out.path().join(host_target)).unwrap_or_else(|e| panic!("{e}"));
    copy_from_context(ctx.path(), &spec(&["f"], "/host/"), out.path())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        fs::read_dir(outside.path()).map(|d| d.count()).unwrap_or(1),
        0,
        "wrote outside"
    );
    assert_eq!(read(&out.path().join(host_target).join("f")), "payload");
}

#[test]
fn from_a_directory_root_paths_are_absolute_and_owners_kept() {
    let stage = tmp();
    write(stage.path(), &[("usr/bin/tool", "bin"), ("etc/conf", "c")]);
    fs::set_permissions(
        stage.path().join("usr/bin/tool"),
        fs::Permissions::from_mode(0o751),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    symlink("/usr/bin/tool", stage.path().join("usr/bin/alias")).unwrap_or_else(|e| panic!("{e}"));
    // A link that would leave the stage resolves inside it.
    symlink("../../../../../etc/conf", stage.path().join("usr/escape"))
        .unwrap_or_else(|e| panic!("{e}"));
    if is_root() {
        std::os::unix::fs::lchown(stage.path().join("etc/conf"), Some(7), Some(8))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let out = tmp();
    let sel = copy::select(
        &spec(&["/usr/bin/alias", "../usr/escape", "etc/conf"], "/o/"),
        &SourceRoot::Dir(stage.path()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    copy::apply(&sel, out.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        tree(out.path()),
        ["o/", "o/alias=bin", "o/conf=c", "o/escape=c"]
    );
    let mode = fs::metadata(out.path().join("o/alias"))
        .map(|m| m.mode() & 0o7777)
        .unwrap_or(0);
    assert_eq!(mode, 0o751);
    if is_root() {
        let m = fs::metadata(out.path().join("o/conf")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((m.uid(), m.gid()), (7, 8));
    }
}

#[test]
fn fifos_and_device_nodes_of_a_stage_are_made_again_and_sockets_left_out() {
    if !need_root("fifos_and_device_nodes_of_a_stage_are_made_again_and_sockets_left_out") {
        return;
    }
    use std::os::unix::fs::FileTypeExt;
    let stage = tmp();
    write(stage.path(), &[("d/file", "f")]);
    let at = |name: &str| stage.path().join(name);
    let mknod = |name: &str, kind: rustix::fs::FileType, dev: u64| {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            at(name),
            kind,
            rustix::fs::Mode::from_raw_mode(0o640),
            dev,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    };
    mknod("d/pipe", rustix::fs::FileType::Fifo, 0);
    mknod(
        "d/null",
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::makedev(1, 3),
    );
    let _socket =
        std::os::unix::net::UnixListener::bind(at("d/socket")).unwrap_or_else(|e| panic!("{e}"));
    let out = tmp();
    let sel = copy::select(&spec(&["/d"], "/o"), &SourceRoot::Dir(stage.path()))
        .unwrap_or_else(|e| panic!("{e}"));
    copy::apply(&sel, out.path()).unwrap_or_else(|e| panic!("{e}"));
    let meta = |name: &str| fs::symlink_metadata(out.path().join(name)).ok();
    let pipe = meta("o/pipe").unwrap_or_else(|| panic!("the FIFO was not copied"));
    assert!(pipe.file_type().is_fifo());
    assert_eq!(pipe.mode() & 0o7777, 0o640);
    let null = meta("o/null").unwrap_or_else(|| panic!("the device was not copied"));
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
    assert!(meta("o/socket").is_none());
    assert_eq!(read(&out.path().join("o/file")), "f");
    // The cache key sees the nodes (kind and device number), so a changed device is a new key.
    let kinds: Vec<(char, String)> = sel
        .cache_sources(None)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter(|f| f.path.ends_with("pipe") || f.path.ends_with("null"))
        .map(|f| (f.kind, f.link_target))
        .collect();
    assert!(kinds.contains(&('p', String::new())), "{kinds:?}");
    assert!(
        kinds.contains(&('c', rustix::fs::makedev(1, 3).to_string())),
        "{kinds:?}"
    );
}

#[test]
fn modes_and_mtimes_are_kept_and_chmod_applies() {
    let ctx = context_with(&[("run.sh", "#!/bin/sh"), ("d/data", "x")]);
    fs::set_permissions(ctx.path().join("run.sh"), fs::Permissions::from_mode(0o750))
        .unwrap_or_else(|e| panic!("{e}"));
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    fs::File::options()
        .write(true)
        .open(ctx.path().join("run.sh"))
        .and_then(|f| f.set_modified(old))
        .unwrap_or_else(|e| panic!("{e}"));
    let out = tmp();
    copy_from_context(ctx.path(), &spec(&["run.sh"], "/a/"), out.path())
        .unwrap_or_else(|e| panic!("{e}"));
    let m = fs::metadata(out.path().join("a/run.sh")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.mode() & 0o7777, 0o750);
    assert_eq!(m.mtime(), 1_000_000_000);
    assert_eq!(
        fs::metadata(out.path().join("a"))
            .map(|m| m.mode() & 0o7777)
            .unwrap_or(0),
        0o755,
        "created destination directories are 0755"
    );
    // (chmod, mode of the 0750 file, mode of a 0755 directory below a copied directory)
    let cases = [
        ("0640", 0o640, 0o640),
        ("u+x,g-r", 0o710, 0o715),
        // `X` adds execute where some execute bit is set, and to directories.
        ("a=rX", 0o555, 0o555),
        ("go-rwx", 0o700, 0o700),
    ];
    let tree_ctx = context_with(&[("top/sub/f", "f")]);
    fs::set_permissions(
        tree_ctx.path().join("top/sub"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for (chmod, file_mode, dir_mode) in cases {
        let out = tmp();
        let mut s = spec(&["run.sh"], "/b/");
        s.chmod = Some(chmod.into());
        copy_from_context(ctx.path(), &s, out.path()).unwrap_or_else(|e| panic!("{chmod}: {e}"));
        let got = fs::metadata(out.path().join("b/run.sh"))
            .map(|m| m.mode() & 0o7777)
            .unwrap_or(0);
        assert_eq!(got, file_mode, "{chmod}");
        let mut s = spec(&["top"], "/t/");
        s.chmod = Some(chmod.into());
        copy_from_context(tree_ctx.path(), &s, out.path())
            .unwrap_or_else(|e| panic!("{chmod}: {e}"));
        let got = fs::metadata(out.path().join("t/sub"))
            .map(|m| m.mode() & 0o7777)
            .unwrap_or(0);
        assert_eq!(got, dir_mode, "{chmod} on a directory");
    }
    assert!(matches!(
        copy_from_context(
            ctx.path(),
            &CopySpec {
                chmod: Some("9x".into()),
                ..spec(&["run.sh"], "/")
            },
            out.path()
        ),
        Err(Error::CopyInvalid { .. })
    ));
}

#[test]
fn chown_by_name_and_id() {
    if !need_root("chown_by_name_and_id") {
        return;
    }
    let ctx = context_with(&[("f", "x"), ("d/g", "y")]);
    for (chown, want) in [
        ("app", (1000, 1001)),
        ("app:staff", (1000, 50)),
        ("123", (123, 123)),
        ("12:34", (12, 34)),
    ] {
        let out = tmp();
        write(
            out.path(),
            &[
                (
                    "etc/passwd",
                    "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
                ),
                ("etc/group", "root:x:0:\nstaff:x:50:\napp:x:1001:\n"),
            ],
        );
        let mut s = spec(&["f", "d"], "/new/deep/");
        s.chown = Some(chown.into());
        copy_from_context(ctx.path(), &s, out.path()).unwrap_or_else(|e| panic!("{chown}: {e}"));
        for p in ["new", "new/deep", "new/deep/f", "new/deep/g"] {
            let m = fs::metadata(out.path().join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
            assert_eq!((m.uid(), m.gid()), want, "{chown}: {p}");
        }
    }
    // `COPY --link` writes into an empty directory; users come from the stage below.
    let users = tmp();
    write(
        users.path(),
        &[
            ("etc/passwd", "app:x:1000:1001::/home/app:/bin/sh\n"),
            ("etc/group", "app:x:1001:\n"),
        ],
    );
    let layer = tmp();
    let mut s = spec(&["f"], "/f");
    s.chown = Some("app".into());
    let c = BuildContext::open(ctx.path(), None).unwrap_or_else(|e| panic!("{e}"));
    let e = entries(&c);
    let sel = copy::select(&s, &SourceRoot::Context(&c, &e)).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        copy::apply(&sel, layer.path()).is_err(),
        "no passwd in the layer"
    );
    copy::apply_with_users(&sel, layer.path(), users.path()).unwrap_or_else(|e| panic!("{e}"));
    let m = fs::metadata(layer.path().join("f")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((m.uid(), m.gid()), (1000, 1001));
    // Without --chown, context files belong to root whoever owns them on the host.
    std::os::unix::fs::lchown(ctx.path().join("f"), Some(4242), Some(4242))
        .unwrap_or_else(|e| panic!("{e}"));
    let out = tmp();
    copy_from_context(ctx.path(), &spec(&["f"], "/f"), out.path())
        .unwrap_or_else(|e| panic!("{e}"));
    let m = fs::metadata(out.path().join("f")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((m.uid(), m.gid()), (0, 0));
    let out = tmp();
    let mut s = spec(&["f"], "/f");
    s.chown = Some("ghost".into());
    let err = copy_from_context(ctx.path(), &s, out.path())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("unable to find user ghost"), "{err}");
}

#[test]
fn parents_and_exclude() {
    let files = [
        ("a/b/c.txt", "C"),
        ("a/b/d.log", "D"),
        ("a/e.txt", "E"),
        ("x/y/z.txt", "Z"),
    ];
    // (sources, excludes, --parents, expected tree)
    type Case = (
        &'static [&'static str],
        &'static [&'static str],
        bool,
        &'static [&'static str],
    );
    let cases: &[Case] = &[
        (
            &["a/b/c.txt", "x/y/z.txt"],
            &[],
            true,
            &[
                "o/",
                "o/a/",
                "o/a/b/",
                "o/a/b/c.txt=C",
                "o/x/",
                "o/x/y/",
                "o/x/y/z.txt=Z",
            ],
        ),
        (&["a/./b/c.txt"], &[], true, &["o/", "o/b/", "o/b/c.txt=C"]),
        (
            &["*/y"],
            &[],
            true,
            &["o/", "o/x/", "o/x/y/", "o/x/y/z.txt=Z"],
        ),
        (
            &["a"],
            &["**/*.log"],
            false,
            &["o/", "o/b/", "o/b/c.txt=C", "o/e.txt=E"],
        ),
        // Like `.dockerignore`, `*` stays within one directory level.
        (
            &["a"],
            &["*.log"],
            false,
            &["o/", "o/b/", "o/b/c.txt=C", "o/b/d.log=D", "o/e.txt=E"],
        ),
        (&["a"], &["b"], false, &["o/", "o/e.txt=E"]),
        (
            &["a"],
            &["**/*.txt", "!e.txt"],
            false,
            &["o/", "o/b/", "o/b/d.log=D", "o/e.txt=E"],
        ),
        (
            &["a/*"],
            &["e.txt"],
            false,
            &["o/", "o/c.txt=C", "o/d.log=D"],
        ),
    ];
    for (sources, excludes, parents, want) in cases {
        let ctx = context_with(&files);
        let out = tmp();
        let mut s = spec(sources, "/o/");
        s.parents = *parents;
        s.excludes = excludes.iter().map(|e| e.to_string()).collect();
        copy_from_context(ctx.path(), &s, out.path())
            .unwrap_or_else(|e| panic!("{sources:?}: {e}"));
        assert_eq!(
            tree(out.path()),
            *want,
            "{sources:?} excludes {excludes:?} parents {parents}"
        );
    }
}

#[test]
fn heredoc_sources() {
    let ctx = context_with(&[]);
    let out = tmp();
    let mut s = spec(&[], "/etc/");
    s.heredocs = vec![
        HeredocSource {
            name: "motd".into(),
            content: "hello\n".into(),
        },
        HeredocSource {
            name: "issue".into(),
            content: "kiln\n".into(),
        },
    ];
    copy_from_context(ctx.path(), &s, out.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        tree(out.path()),
        ["etc/", "etc/issue=kiln\n", "etc/motd=hello\n"]
    );
    let m = fs::metadata(out.path().join("etc/motd")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.mode() & 0o7777, 0o644);
    let mut one = spec(&[], "/script.sh");
    one.heredocs = vec![HeredocSource {
        name: "EOF".into(),
        content: "echo hi\n".into(),
    }];
    one.chmod = Some("755".into());
    copy_from_context(ctx.path(), &one, out.path()).unwrap_or_else(|e| panic!("{e}"));
    let m = fs::metadata(out.path().join("script.sh")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.mode() & 0o7777, 0o755);
}

#[test]
fn hard_links_within_one_copy_are_kept() {
    let ctx = context_with(&[("d/a", "same")]);
    fs::hard_link(ctx.path().join("d/a"), ctx.path().join("d/b")).unwrap_or_else(|e| panic!("{e}"));
    let out = tmp();
    let stats = copy_from_context(ctx.path(), &spec(&["d"], "/d"), out.path())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stats.hardlinks, 1);
    let a = fs::metadata(out.path().join("d/a")).unwrap_or_else(|e| panic!("{e}"));
    let b = fs::metadata(out.path().join("d/b")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a.ino(), b.ino());
}

/// A tar of `files` (with one directory and one symlink), uncompressed.
fn tar_bytes() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o750);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(0);
    h.set_mtime(1_600_000_000);
    b.append_data(&mut h, "pkg/", std::io::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_uid(33);
    h.set_gid(44);
    h.set_size(5);
    h.set_mtime(1_600_000_000);
    b.append_data(&mut h, "pkg/file", &b"hello"[..])
        .unwrap_or_else(|e| panic!("{e}"));
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_600_000_000);
    h.set_size(0);
    b.append_link(&mut h, "pkg/link", "file")
        .unwrap_or_else(|e| panic!("{e}"));
    b.into_inner().unwrap_or_else(|e| panic!("{e}"))
}

fn compressed(kind: &str) -> Vec<u8> {
    use std::io::Write;
    let raw = tar_bytes();
    match kind {
        "tar" => raw,
        "gz" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&raw).unwrap_or_else(|e| panic!("{e}"));
            e.finish().unwrap_or_else(|e| panic!("{e}"))
        }
        "bz2" => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
            e.write_all(&raw).unwrap_or_else(|e| panic!("{e}"));
            e.finish().unwrap_or_else(|e| panic!("{e}"))
        }
        "xz" => {
            let mut e = lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::default())
                .unwrap_or_else(|e| panic!("{e}"));
            e.write_all(&raw).unwrap_or_else(|e| panic!("{e}"));
            e.finish().unwrap_or_else(|e| panic!("{e}"))
        }
        "zst" => zstd::encode_all(&raw[..], 3).unwrap_or_else(|e| panic!("{e}")),
        other => panic!("unknown kind {other}"),
    }
}

#[test]
fn add_extracts_local_archives_by_content() {
    // The names lie on purpose: detection is by content.
    for kind in ["tar", "gz", "bz2", "xz", "zst"] {
        let ctx = tmp();
        fs::write(ctx.path().join("bundle.bin"), compressed(kind))
            .unwrap_or_else(|e| panic!("{e}"));
        let out = tmp();
        let mut s = spec(&["bundle.bin"], "/opt");
        s.is_add = true;
        let stats =
            copy_from_context(ctx.path(), &s, out.path()).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(stats.archives, 1, "{kind}");
        assert_eq!(
            tree(out.path()),
            [
                "opt/",
                "opt/pkg/",
                "opt/pkg/file=hello",
                "opt/pkg/link -> file"
            ],
            "{kind}"
        );
        let m = fs::metadata(out.path().join("opt/pkg/file")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.mtime(), 1_600_000_000, "{kind}");
        if is_root() {
            assert_eq!((m.uid(), m.gid()), (33, 44), "{kind}: archive owners kept");
        }
        // --unpack=false copies the archive itself.
        let out = tmp();
        s.unpack = Some(false);
        copy_from_context(ctx.path(), &s, out.path()).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(
            fs::read(out.path().join("opt")).unwrap_or_default(),
            compressed(kind),
            "{kind}"
        );
    }
    // Something that only looks compressed is copied as a file.
    let ctx = context_with(&[("fake.tar.gz", "not really")]);
    let out = tmp();
    let mut s = spec(&["fake.tar.gz"], "/d/");
    s.is_add = true;
    copy_from_context(ctx.path(), &s, out.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(tree(out.path()), ["d/", "d/fake.tar.gz=not really"]);
}

#[test]
fn add_of_a_url_that_was_not_fetched_is_refused_clearly() {
    let ctx = context_with(&[]);
    let out = tmp();
    let mut s = spec(&["https://example.com/x.tgz"], "/");
    s.is_add = true;
    let err = copy_from_context(ctx.path(), &s, out.path())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    // The solver fetches URLs first (kiln_builder::remote); selection alone cannot.
    assert!(
        err.contains("a URL must be fetched before it is copied"),
        "{err}"
    );
}

#[test]
fn cache_sources_follow_content_mode_owner_and_name_only() {
    let ctx = context_with(&[("d/a", "1"), ("d/b", "2")]);
    let out = tmp();
    let list = |s: &CopySpec| {
        let c = BuildContext::open(ctx.path(), None).unwrap_or_else(|e| panic!("{e}"));
        let e = entries(&c);
        copy::select(s, &SourceRoot::Context(&c, &e))
            .and_then(|sel| sel.cache_sources(Some(out.path())))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let base = spec(&["d"], "/d/");
    let first = list(&base);
    assert_eq!(first, list(&base), "same selection, same list");
    assert_eq!(first.len(), 3);
    let paths: Vec<&str> = first.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["", "a", "b"]);
    // Touching a file without changing it changes nothing.
    fs::write(ctx.path().join("d/a"), "1").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first, list(&base));
    // Content.
    fs::write(ctx.path().join("d/a"), "changed").unwrap_or_else(|e| panic!("{e}"));
    let changed = list(&base);
    assert_ne!(first, changed);
    // Mode.
    fs::set_permissions(ctx.path().join("d/b"), fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("{e}"));
    let moded = list(&base);
    assert_ne!(changed, moded);
    // --chmod and --chown.
    let mut chmod = base.clone();
    chmod.chmod = Some("0700".into());
    assert_ne!(moded, list(&chmod));
    let mut chown = base.clone();
    chown.chown = Some("5:5".into());
    let owned = list(&chown);
    assert_ne!(moded, owned);
    assert!(owned.iter().all(|f| (f.uid, f.gid) == (5, 5)));
    // Name.
    fs::rename(ctx.path().join("d/b"), ctx.path().join("d/c")).unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(moded, list(&base));
}

#[test]
fn extended_attributes_are_copied() {
    let ctx = context_with(&[("f", "x")]);
    let f = ctx.path().join("f");
    if let Err(e) = kiln_snapshotter::set_xattr(&f, std::ffi::OsStr::new("user.kiln"), b"v") {
        // Filesystems without user attributes (tmpfs before 6.6) cannot hold the source.
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("setting user.kiln on {}: {e}", f.display());
        }
        eprintln!("skipping: {e}");
        return;
    }
    let out = tmp();
    copy_from_context(ctx.path(), &spec(&["f"], "/g"), out.path())
        .unwrap_or_else(|e| panic!("{e}"));
    let attrs =
        kiln_snapshotter::list_xattrs(&out.path().join("g")).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        attrs
            .iter()
            .any(|(k, v)| k == "user.kiln" && v.as_slice() == b"v"),
        "{attrs:?}"
    );
}

#[test]
fn parents_copy_the_directories_on_the_way() {
    let ctx = context_with(&[("a/b/c.txt", "C")]);
    fs::set_permissions(ctx.path().join("a"), fs::Permissions::from_mode(0o700))
        .unwrap_or_else(|e| panic!("{e}"));
    fs::set_permissions(ctx.path().join("a/b"), fs::Permissions::from_mode(0o750))
        .unwrap_or_else(|e| panic!("{e}"));
    let out = tmp();
    let mut s = spec(&["a/b/c.txt"], "/o/");
    s.parents = true;
    copy_from_context(ctx.path(), &s, out.path()).unwrap_or_else(|e| panic!("{e}"));
    let mode = |p: &str| {
        fs::metadata(out.path().join(p))
            .map(|m| m.mode() & 0o7777)
            .unwrap_or(0)
    };
    assert_eq!(
        (mode("o"), mode("o/a"), mode("o/a/b")),
        (0o755, 0o700, 0o750)
    );
    assert_eq!(read(&out.path().join("o/a/b/c.txt")), "C");
}
