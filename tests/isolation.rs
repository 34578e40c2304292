//! `kiln build --isolation`: the locked-down conditions of an unprivileged CI container made on
//! this machine (a child without CAP_SYS_ADMIN under docker's seccomp profile, so no namespaces
//! and no mounts), and a throwaway root for `--isolation none`. Every image must equal the one
//! namespace isolation builds: same id, same config, same root filesystem.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod support;
use support::{KILN, have_tool, is_root, require};

/// Dockerfiles that exercise what a layer records: a multi-stage build with a heredoc, and a
/// stage that adds, replaces, deletes, recreates, links, chmods and switches users.
const EDITS: &str = r#"FROM busybox:latest
RUN mkdir -p /app/data && echo one > /app/data/a && echo two > /app/data/b \
 && ln -s a /app/data/link && ln /app/data/a /app/data/hard && echo gone > /etc/motd
RUN rm /app/data/b /etc/motd && chmod 700 /app/data && echo three > /app/data/b2
WORKDIR /app
USER 1000:1000
RUN id -u > /tmp/who && touch /tmp/mine
USER root
RUN rm -rf /app/data && mkdir /app/data && echo four > /app/data/c && chown 1000 /app/data/c
ENV GREETING=hi
CMD ["sh", "-c", "cat /app/data/c"]
"#;

fn hello_example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/examples/hello")
}

/// A temp dir with a busybox tar; stores made from it on demand.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Option<Env> {
        if !require(is_root(), "root (the locked-down child must start as root)") {
            return None;
        }
        let env = Env {
            dir: tempfile::tempdir().unwrap(),
        };
        if !support::busybox_tar(&env.path("busybox.tar")) {
            return None;
        }
        std::fs::create_dir(env.path("edits")).unwrap();
        std::fs::write(env.path("edits/Dockerfile"), EDITS).unwrap();
        Some(env)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A new store at `root` holding `busybox:latest`.
    fn store(&self, root: &Path) {
        let tar = self.path("busybox.tar");
        let out = kiln(root, &["import", tar.to_str().unwrap(), "busybox:latest"]).output();
        succeeded("import", &out.unwrap());
    }
}

fn kiln(root: &Path, args: &[&str]) -> Command {
    let mut command = support::kiln_command(root, args);
    command
        .env_remove("KILN_ISOLATION")
        // Fixed history times: builds at different moments give the same image.
        .env("SOURCE_DATE_EPOCH", "0");
    command
}

fn succeeded(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Makes `command` start locked down as an unprivileged CI container is: CAP_SYS_ADMIN gone
/// from its bounding set (so from every capability set after exec) and docker's default seccomp
/// profile installed (no unshare, mount, pivot_root, setns, namespace flags to clone).
fn lock_down(command: &mut Command) {
    // linux/capability.h
    const CAP_SYS_ADMIN: libc::c_ulong = 21;
    let filters = kiln_runner::SeccompFilters::compile().expect("seccomp filters");
    // SAFETY: the closure makes system calls only (prctl, seccomp), async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            let drop = libc::prctl(libc::PR_CAPBSET_DROP, CAP_SYS_ADMIN, 0, 0, 0);
            if drop != 0 {
                return Err(std::io::Error::last_os_error());
            }
            filters
                .install()
                .map_err(|_| std::io::Error::from_raw_os_error(libc::EPERM))
        });
    }
}

/// What the store says of an image: its id and config (`kiln inspect`).
fn inspect(root: &Path, image: &str) -> serde_json::Value {
    let out = kiln(root, &["inspect", image]).output().unwrap();
    let value: serde_json::Value = serde_json::from_str(&succeeded("inspect", &out)).unwrap();
    value[0].clone()
}

/// Every entry of a tree: type, mode, owner, size, and a hash of the content or link target.
fn listing(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    list_into(dir, dir, &mut out);
    out
}

fn list_into(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let md = std::fs::symlink_metadata(&path).unwrap();
        let mut hasher = std::hash::DefaultHasher::new();
        let kind = if md.is_dir() {
            "dir"
        } else if md.file_type().is_symlink() {
            std::fs::read_link(&path).unwrap().hash(&mut hasher);
            "link"
        } else {
            std::fs::read(&path).unwrap().hash(&mut hasher);
            "file"
        };
        let rel = path.strip_prefix(root).unwrap().display().to_string();
        let size = if md.is_dir() { 0 } else { md.size() };
        out.insert(
            rel,
            format!(
                "{kind} {:o} {}:{} {size} {:x}",
                md.mode() & 0o7777,
                md.uid(),
                md.gid(),
                hasher.finish()
            ),
        );
        if md.is_dir() {
            list_into(root, &path, out);
        }
    }
}

/// Builds `context` in a fresh store with namespace isolation: the reference image, its config
/// and its root filesystem (exported to `<name>-fs`).
fn reference(env: &Env, name: &str, context: &Path) -> (serde_json::Value, PathBuf) {
    let root = env.path(&format!("{name}-store"));
    env.store(&root);
    let dest = env.path(&format!("{name}-fs"));
    let output = format!("type=local,dest={}", dest.display());
    let out = kiln(
        &root,
        &[
            "build",
            "-q",
            "--isolation",
            "namespace",
            "-t",
            "built:1",
            "-o",
            &output,
            context.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    succeeded("the namespace build", &out);
    (inspect(&root, "built:1"), dest)
}

fn assert_same_image(
    what: &str,
    (want, want_fs): &(serde_json::Value, PathBuf),
    got: &serde_json::Value,
    got_fs: &Path,
) {
    let (want_list, got_list) = (listing(want_fs), listing(got_fs));
    for (path, entry) in &want_list {
        assert_eq!(got_list.get(path), Some(entry), "{what}: /{path} differs");
    }
    for path in got_list.keys() {
        assert!(want_list.contains_key(path), "{what}: /{path} is extra");
    }
    assert_eq!(got["Config"], want["Config"], "{what}: config");
    assert_eq!(got["RootFS"], want["RootFS"], "{what}: layers");
    assert_eq!(got["Id"], want["Id"], "{what}: image id");
}

#[test]
fn auto_in_a_locked_down_child_falls_back_to_chroot_and_builds_the_same_images() {
    let Some(env) = Env::new() else { return };
    for (name, context) in [("hello", hello_example()), ("edits", env.path("edits"))] {
        let want = reference(&env, name, &context);

        let root = env.path(&format!("{name}-locked"));
        env.store(&root);
        let dest = env.path(&format!("{name}-locked-fs"));
        let output = format!("type=local,dest={}", dest.display());
        let mut build = kiln(
            &root,
            &[
                "build",
                "--progress=plain",
                "-t",
                "built:1",
                "-o",
                &output,
                context.to_str().unwrap(),
            ],
        );
        build.env("KILN_ISOLATION", "auto");
        lock_down(&mut build);
        let out = build.output().unwrap();
        succeeded("the locked-down build", &out);
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(
            log.contains("WARNING: RUN isolation: chroot (auto; namespace refused:"),
            "{log}"
        );
        assert!(log.contains("overlayfs cannot be mounted here"), "{log}");
        assert_same_image(name, &want, &inspect(&root, "built:1"), &dest);
    }
}

#[test]
fn what_a_mode_cannot_offer_is_refused_clearly_and_chroot_keeps_mounts_where_it_can() {
    let Some(env) = Env::new() else { return };
    let root = env.path("store");
    env.store(&root);
    let refused = |dockerfile: &str, isolation: &str, locked: bool| {
        let ctx = env.path("refused");
        let _ = std::fs::create_dir(&ctx);
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        let mut build = kiln(
            &root,
            &[
                "build",
                "--progress=plain",
                "--isolation",
                isolation,
                ctx.to_str().unwrap(),
            ],
        );
        if locked {
            lock_down(&mut build);
        }
        let out = build.output().unwrap();
        assert!(!out.status.success(), "{dockerfile} built with {isolation}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    let text = refused(
        "FROM busybox:latest\nRUN --network=none true\n",
        "chroot",
        false,
    );
    assert!(
        text.contains("RUN --network=none needs a network namespace"),
        "{text}"
    );
    let text = refused(
        "FROM busybox:latest\nRUN --mount=type=cache,target=/c true\n",
        "chroot",
        true,
    );
    assert!(text.contains("this environment refuses mounts"), "{text}");
    let text = refused("FROM busybox:latest\n", "jail", false);
    assert!(text.contains("unknown --isolation \"jail\""), "{text}");

    // Where a mount namespace can still be made, chroot isolation keeps RUN --mount.
    let ctx = env.path("cache");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox:latest\nRUN --mount=type=cache,target=/c echo kept > /c/x\n\
         RUN --mount=type=cache,target=/c cp /c/x /from-cache && test -e /proc/self\n",
    )
    .unwrap();
    let out = kiln(
        &root,
        &[
            "build",
            "--isolation",
            "chroot",
            "-o",
            &format!("type=local,dest={}", env.path("cache-fs").display()),
            ctx.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    succeeded("a cache mount with chroot isolation", &out);
    assert_eq!(
        std::fs::read_to_string(env.path("cache-fs/from-cache")).unwrap(),
        "kept\n"
    );
    assert!(
        !env.path("cache-fs/c/x").exists(),
        "the cache is not in the image"
    );
}

/// A throwaway root for `--isolation none`: a busybox tree with kiln, its libraries, a store
/// and the context under `/kiln`, entered by `chroot` in a mount namespace of its own.
struct Throwaway {
    root: PathBuf,
}

impl Throwaway {
    fn new(env: &Env) -> Option<Throwaway> {
        if !require(
            have_tool("unshare") && have_tool("chroot") && have_tool("ldd"),
            "unshare, chroot and ldd (util-linux, coreutils, libc-bin)",
        ) {
            return None;
        }
        let root = env.path("throwaway");
        if !support::busybox_rootfs(&root) {
            return None;
        }
        let bin = root.join("kiln/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy(KILN, bin.join("kiln")).unwrap();
        let ldd = Command::new("ldd").arg(KILN).output().unwrap();
        for lib in String::from_utf8_lossy(&ldd.stdout)
            .split_whitespace()
            .filter(|w| w.starts_with('/'))
        {
            let target = root.join(lib.trim_start_matches('/'));
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::copy(lib, &target).unwrap();
        }
        env.store(&root.join("kiln/store"));
        Some(Throwaway { root })
    }

    /// `kiln ARGS` inside the throwaway root, with `/proc` and `/dev` mounted in a private mount
    /// namespace that goes away with the command.
    fn kiln(&self, args: &[&str]) -> Output {
        let root = self.root.display().to_string();
        let script = format!(
            "mount -t proc proc {root}/proc && mount --rbind /dev {root}/dev && \
             exec chroot {root} /kiln/bin/kiln --root /kiln/store \"$@\""
        );
        Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                &script,
                "sh",
            ])
            .args(args)
            .env_clear()
            .env("PATH", "/bin:/usr/bin:/sbin:/usr/sbin")
            .env("SOURCE_DATE_EPOCH", "0")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

#[test]
fn none_builds_in_a_throwaway_root_the_same_images() {
    let Some(env) = Env::new() else { return };
    let Some(throwaway) = Throwaway::new(&env) else {
        return;
    };
    let marker = throwaway.root.join(".dockerenv");
    for (name, context) in [("hello", hello_example()), ("edits", env.path("edits"))] {
        let want = reference(&env, name, &context);
        let ctx = throwaway.root.join("kiln").join(name);
        let copied = Command::new("cp")
            .arg("-a")
            .arg(&context)
            .arg(&ctx)
            .status()
            .unwrap();
        assert!(copied.success());
        let inside_ctx = format!("/kiln/{name}");
        let output = format!("type=local,dest=/kiln/{name}-fs");
        let args = [
            "build",
            "--progress=plain",
            "--isolation",
            "none",
            "-t",
            "built:1",
            "-o",
            &output,
            &inside_ctx,
        ];

        // Not a recognisable container: refused, the root untouched.
        let _ = std::fs::remove_file(&marker);
        let out = throwaway.kiln(&args);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains("no sign of running in a throwaway container"),
            "{text}"
        );
        assert!(throwaway.root.join("kiln/bin/kiln").is_file());

        // Allowed in a container, or anywhere with --force (the second Dockerfile).
        let (out, why) = if name == "hello" {
            std::fs::write(&marker, "").unwrap();
            (
                throwaway.kiln(&args),
                "as requested; in a container (/.dockerenv)",
            )
        } else {
            let mut forced = args.to_vec();
            forced.insert(1, "--force");
            (throwaway.kiln(&forced), "as requested")
        };
        succeeded("the build without isolation", &out);
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(
            log.contains(&format!("WARNING: RUN isolation: none ({why})\n")),
            "{log}"
        );
        let got = inspect(&throwaway.root.join("kiln/store"), "built:1");
        let got_fs = throwaway.root.join(format!("kiln/{name}-fs"));
        assert_same_image(name, &want, &got, &got_fs);
        // The root now holds the image's last RUN state, with kiln's own files kept.
        assert!(throwaway.root.join("bin/busybox").is_file());
        assert!(throwaway.root.join("kiln/bin/kiln").is_file());
    }
}
