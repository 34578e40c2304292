//! `kiln build --secret` and `--ssh` end to end, and ONBUILD triggers: the built binary against
//! a temporary `--root` holding the busybox image. Secret values must reach the RUN that mounts
//! them and nothing else: no layer, config, cache record or output line.

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod support;
use support::{KILN, is_root, require};

const FILE_VALUE: &str = "cli-file-secret-93b1e0";
const ENV_VALUE: &str = "cli-env-secret-c4d2f8";

/// A temp dir with a store holding `busybox:latest` and a context directory.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Option<Env> {
        if !require(is_root(), "root (RUN steps run in the sandbox)") {
            return None;
        }
        let env = Env {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir(env.path("ctx")).unwrap();
        let tar = env.path("busybox.tar");
        if !support::busybox_tar(&tar) {
            return None;
        }
        let out = env.run(&["import", tar.to_str().unwrap(), "busybox:latest"], &[]);
        assert!(out.status.success(), "import: {}", stderr(&out));
        Some(env)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn dockerfile(&self, text: &str) {
        std::fs::write(self.path("ctx/Dockerfile"), text).unwrap();
    }

    fn run(&self, args: &[&str], vars: &[(&str, &str)]) -> Output {
        let mut command = Command::new(KILN);
        command
            .arg("--root")
            .arg(self.path("root"))
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("KILN_ROOT")
            .env_remove("BUILDKIT_PROGRESS")
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::null());
        for (key, value) in vars {
            command.env(key, value);
        }
        command.output().unwrap()
    }

    /// Builds `ctx` with `flags`, exporting the image's filesystem to `out`.
    fn build(&self, flags: &[&str], vars: &[(&str, &str)]) -> Output {
        let mut args = vec!["build", "--progress=plain", "-o", "type=local,dest=out"];
        args.extend_from_slice(flags);
        args.push("ctx");
        self.run(&args, vars)
    }

    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.path("out").join(path)).unwrap_or_default()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn sha256sum(text: &str) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Every file of the store as stored (its path included, so that a cache key or a snapshot
/// name made from a secret shows), and every blob that is a compressed stream decompressed:
/// the layers of tagged images, of untagged ones and of cache records alike.
fn store_contents(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let kind = entry.file_type().unwrap();
            let name = entry.path().display().to_string();
            out.push((format!("name {name}"), name.clone().into_bytes()));
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                let bytes = std::fs::read(entry.path()).unwrap_or_default();
                out.push((name, bytes));
            } else if kind.is_symlink() {
                let target = std::fs::read_link(entry.path()).unwrap();
                out.push((name, target.into_os_string().into_encoded_bytes()));
            }
        }
    }
    let store = kiln_oci::Store::open(root).unwrap();
    for (digest, _) in store.list_blobs().unwrap() {
        let Ok(mut reader) = kiln_oci::open_layer_blob(&store, &digest) else {
            continue;
        };
        let mut plain = Vec::new();
        if reader.read_to_end(&mut plain).is_ok() {
            out.push((format!("blob {digest} decompressed"), plain));
        }
    }
    out
}

fn holds(bytes: &[u8], value: &str) -> bool {
    bytes.windows(value.len()).any(|w| w == value.as_bytes())
}

#[test]
fn secrets_from_files_and_env_reach_run_and_nothing_else() {
    let Some(env) = Env::new() else { return };
    std::fs::write(env.path("token"), FILE_VALUE).unwrap();
    env.dockerfile(
        "FROM busybox\n\
         RUN --mount=type=secret,id=tok sha256sum /run/secrets/tok | cut -d' ' -f1 > /file.sum\n\
         RUN --mount=type=secret,id=API_KEY,env=KEY printf %s \"$KEY\" | sha256sum | cut -d' ' -f1 > /env.sum\n\
         RUN --mount=type=secret,id=other,target=/s cat /s > /other.txt\n",
    );
    let out = env.build(
        &[
            "--secret",
            "id=tok,src=token",
            // A bare id reads the variable of that name.
            "--secret",
            "id=API_KEY",
            "--secret",
            "id=other,env=OTHER_VALUE",
        ],
        &[("API_KEY", ENV_VALUE), ("OTHER_VALUE", "not-secret-here")],
    );
    let text = stderr(&out);
    assert!(out.status.success(), "{text}");
    assert_eq!(env.read("file.sum").trim(), sha256sum(FILE_VALUE));
    assert_eq!(env.read("env.sum").trim(), sha256sum(ENV_VALUE));
    assert_eq!(env.read("other.txt"), "not-secret-here");
    assert!(!env.path("out/run/secrets").exists());
    for value in [FILE_VALUE, ENV_VALUE] {
        assert!(!text.contains(value) && !holds(&out.stdout, value));
        for (name, bytes) in store_contents(&env.path("root")) {
            assert!(!holds(&bytes, value), "{name} holds a secret value");
        }
    }
}

/// A secret used in a build stage whose image is never tagged, and by steps answered from the
/// cache the second time: neither the untagged stage's layers, the cache records, nor the
/// rawjson event stream hold it.
#[test]
fn secrets_stay_out_of_intermediate_stages_cache_and_event_streams() {
    let Some(env) = Env::new() else { return };
    std::fs::write(env.path("token"), FILE_VALUE).unwrap();
    env.dockerfile(
        "FROM busybox AS build\n\
         RUN --mount=type=secret,id=tok cp /run/secrets/tok /copy && sha256sum /copy | cut -c1-64 > /sum && rm /copy\n\
         RUN --mount=type=secret,id=tok,env=TOK echo \"length ${#TOK}\" > /length\n\
         FROM busybox\n\
         COPY --from=build /sum /length /\n",
    );
    let args = [
        "build",
        "--progress=rawjson",
        "-o",
        "type=local,dest=out",
        "--secret",
        "id=tok,src=token",
        "ctx",
    ];
    for round in 0..2 {
        let out = env.run(&args, &[]);
        assert!(out.status.success(), "round {round}: {}", stderr(&out));
        assert_eq!(env.read("sum").trim(), sha256sum(FILE_VALUE));
        assert_eq!(
            env.read("length").trim(),
            format!("length {}", FILE_VALUE.len())
        );
        assert!(!holds(&out.stdout, FILE_VALUE) && !holds(&out.stderr, FILE_VALUE));
        if round == 1 {
            assert!(holds(&out.stdout, "\"steps_run\":0"), "round 1 ran again");
        }
        for (name, bytes) in store_contents(&env.path("root")) {
            assert!(!holds(&bytes, FILE_VALUE), "{name} holds the secret value");
        }
    }
}

#[test]
fn a_required_secret_that_is_missing_fails_naming_it() {
    let Some(env) = Env::new() else { return };
    env.dockerfile(
        "FROM busybox\nRUN --mount=type=secret,id=absent touch /ran\n\
         RUN --mount=type=secret,id=needed,required cat /run/secrets/needed\n",
    );
    let out = env.build(&[], &[]);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("\"needed\"") && text.contains("--secret"),
        "{text}"
    );
    // A file that is not there is a usage error before anything runs.
    let out = env.build(&["--secret", "id=needed,src=missing-file"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn ssh_default_forwards_the_agent_socket() {
    let Some(env) = Env::new() else { return };
    let socket = env.path("agent.sock");
    // Bound is enough: the step looks at the socket, it does not talk to an agent.
    let _listener = UnixListener::bind(&socket).unwrap();
    env.dockerfile(
        "FROM busybox\nRUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && echo \"$SSH_AUTH_SOCK\" > /sock\n",
    );
    let out = env.build(
        &["--ssh", "default"],
        &[("SSH_AUTH_SOCK", socket.to_str().unwrap())],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.read("sock"), "/run/buildkit/ssh_agent.0\n");
    assert!(!env.path("out/run/buildkit").exists());
    // Without an agent, `--ssh default` is a usage error.
    let out = env.build(&["--ssh", "default"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn onbuild_triggers_of_the_base_run_in_the_child() {
    let Some(env) = Env::new() else { return };
    std::fs::write(env.path("ctx/x"), "x from the context\n").unwrap();
    env.dockerfile("FROM busybox\nONBUILD RUN echo hi > /onbuild\nONBUILD COPY x /x\n");
    let out = env.run(&["build", "-q", "-t", "base", "ctx"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    env.dockerfile("FROM base\nRUN cat /onbuild /x > /both\n");
    let out = env.run(&["build", "-q", "-t", "child", "ctx"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let store = kiln_oci::Store::open(env.path("root")).unwrap();
    let config = store.find_image("child").unwrap().config;
    assert_eq!(config.config.and_then(|c| c.on_build), None);
    let out = env.build(&[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.read("both"), "hi\nx from the context\n");
}
