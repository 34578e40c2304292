//! `kiln run`, `ps`, `rm`, `commit` and `container prune`, driven through the binary against a
//! temporary store holding the offline busybox image (`testdata/busybox-rootfs.sh`). They need
//! root (namespaces, overlay mounts); without it they fail under `CI=true` and are skipped,
//! saying why, otherwise. After every command no mount of the store may be left.

use kiln_oci::{ContainerConfig, Layer, Reference, Store};
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::{KILN, is_root, require, wait_until};

/// Generous: the machine is shared, and a hung container must fail the test, not hang it.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

struct Env {
    dir: tempfile::TempDir,
    root: PathBuf,
    /// kiln's TMPDIR: the runner's scratch files must be gone after every run.
    tmp: PathBuf,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Env {
    /// A store with `busybox:latest` imported, or None (skip) without the prerequisites.
    fn new() -> Option<Env> {
        if !require(is_root(), "kiln run needs root") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let tar = dir.path().join("busybox.tar");
        if !support::busybox_tar(&tar) {
            return None;
        }
        let tmp = dir.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        let env = Env {
            root: dir.path().join("store"),
            tmp,
            dir,
        };
        env.ok(&["import", tar.to_str().unwrap(), "busybox:latest"]);
        Some(env)
    }

    fn kiln(&self, args: &[&str]) -> Run {
        let run = self.kiln_while_running(args);
        self.assert_clean();
        run
    }

    /// As [`Env::kiln`], for when another container of the store is still running.
    fn kiln_while_running(&self, args: &[&str]) -> Run {
        let out = self.dir.path().join("out");
        let err = self.dir.path().join("err");
        let mut child = Command::new(KILN)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .env_remove("KILN_ROOT")
            .env("TMPDIR", &self.tmp)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        let status = wait_until(&mut child, Instant::now() + RUN_TIMEOUT, || {
            format!("kiln {args:?} did not finish within {RUN_TIMEOUT:?}")
        });
        Run {
            code: status.code().unwrap_or(-1),
            stdout: fs::read_to_string(&out).unwrap(),
            stderr: fs::read_to_string(&err).unwrap(),
        }
    }

    /// Runs kiln, failing the test with its stderr unless it succeeds; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let run = self.kiln(args);
        assert_eq!(run.code, 0, "kiln {args:?} failed:\n{}", run.stderr);
        run.stdout
    }

    /// No mount of the test's directory is left, and the runner's scratch directory is empty.
    fn assert_clean(&self) {
        let root = self.dir.path().to_string_lossy().into_owned();
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let left: Vec<&str> = mountinfo.lines().filter(|l| l.contains(&root)).collect();
        assert!(left.is_empty(), "mounts left behind:\n{}", left.join("\n"));
        let scratch: Vec<_> = fs::read_dir(&self.tmp).unwrap().collect();
        assert!(scratch.is_empty(), "scratch files left: {scratch:?}");
    }

    fn containers(&self) -> Vec<String> {
        match fs::read_dir(self.root.join("containers")) {
            Ok(d) => d
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n != "lock")
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// An image made from busybox's layers with `config` as its run-time defaults.
    fn image_with(&self, tag: &str, config: ContainerConfig) {
        let store = Store::open(&self.root).unwrap();
        let base = store.find_image("busybox:latest").unwrap();
        let layers: Vec<Layer> = base
            .layers()
            .unwrap()
            .into_iter()
            .zip(base.diff_ids().unwrap())
            .map(|(l, diff_id)| Layer {
                digest: l.digest,
                diff_id,
                size: l.size,
                media_type: l.media_type,
            })
            .collect();
        let mut image_config = base.config.clone();
        image_config.config = Some(config);
        store
            .write_image(&image_config, &layers, &[Reference::parse(tag).unwrap()])
            .unwrap();
    }
}

fn strings(v: &[&str]) -> Option<Vec<String>> {
    Some(v.iter().map(|s| s.to_string()).collect())
}

#[test]
fn output_exit_codes_signals_and_pid_1() {
    let Some(env) = Env::new() else { return };
    let run = env.kiln(&["run", "--rm", "busybox", "echo", "hi"]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "hi\n"),
        "{}",
        run.stderr
    );
    for code in [0, 1, 7, 126, 255] {
        let script = format!("exit {code}");
        let run = env.kiln(&["run", "--rm", "busybox", "sh", "-c", &script]);
        assert_eq!(run.code, code, "{}", run.stderr);
    }
    // Under an init the command is not PID 1, so it can die of a signal it sends itself.
    let run = env.kiln(&[
        "run",
        "--rm",
        "--init",
        "busybox",
        "sh",
        "-c",
        "kill -TERM $$; sleep 5",
    ]);
    assert_eq!(run.code, 143, "{}", run.stderr);
    assert_eq!(
        env.ok(&["run", "--rm", "busybox", "sh", "-c", "echo $$"]),
        "1\n"
    );
    // Arguments after the image belong to the command, flags included.
    assert_eq!(env.ok(&["run", "--rm", "busybox", "echo", "-n", "x"]), "x");
    // kiln's own failures are 125; a command that is not there 127, as with docker.
    assert_eq!(env.kiln(&["run", "--rm", "no-such-image"]).code, 125);
    assert_eq!(env.kiln(&["run", "--rm", "busybox", "/nope"]).code, 127);
    assert_eq!(
        env.kiln(&["run", "--rm", "busybox"]).code,
        125,
        "no command"
    );
    assert!(env.containers().is_empty(), "{:?}", env.containers());
}

#[test]
fn image_config_composes_like_docker_run() {
    let Some(env) = Env::new() else { return };
    env.image_with(
        "cfg:1",
        ContainerConfig {
            env: strings(&["FOO=image", "BAR=kept", "PATH=/usr/bin:/bin"]),
            entrypoint: strings(&["/bin/echo", "ep"]),
            cmd: strings(&["default"]),
            working_dir: Some("/srv/app".into()),
            user: Some("nobody".into()),
            ..ContainerConfig::default()
        },
    );
    assert_eq!(env.ok(&["run", "--rm", "cfg:1"]), "ep default\n");
    assert_eq!(env.ok(&["run", "--rm", "cfg:1", "a", "b"]), "ep a b\n");
    // --entrypoint replaces the entrypoint and drops the image's CMD.
    assert_eq!(
        env.ok(&["run", "--rm", "--entrypoint", "/bin/echo", "cfg:1"]),
        "\n"
    );
    let script = "echo $FOO $BAR; pwd; id -u";
    assert_eq!(
        env.ok(&["run", "--rm", "--entrypoint", "sh", "cfg:1", "-c", script]),
        "image kept\n/srv/app\n65534\n"
    );
    // -e, -w and -u override the image's Env, WorkingDir and User.
    let env_file = env.dir.path().join("env");
    fs::write(&env_file, "# comment\n\nBAR=from-file\n").unwrap();
    assert_eq!(
        env.ok(&[
            "run",
            "--rm",
            "-e",
            "FOO=flag",
            "--env-file",
            env_file.to_str().unwrap(),
            "-w",
            "/tmp",
            "-u",
            "root",
            "--entrypoint",
            "sh",
            "cfg:1",
            "-c",
            script,
        ]),
        "flag from-file\n/tmp\n0\n"
    );
    // A shell-form ENTRYPOINT ignores CMD and arguments.
    env.image_with(
        "shellform:1",
        ContainerConfig {
            entrypoint: strings(&["/bin/sh", "-c", "echo shell form"]),
            cmd: strings(&["ignored"]),
            ..ContainerConfig::default()
        },
    );
    assert_eq!(env.ok(&["run", "--rm", "shellform:1"]), "shell form\n");
    assert_eq!(
        env.ok(&["run", "--rm", "shellform:1", "x", "y"]),
        "shell form\n"
    );
}

#[test]
fn sandbox_flags_apply() {
    let Some(env) = Env::new() else { return };
    assert_eq!(
        env.ok(&["run", "--rm", "-w", "/not/there", "busybox", "pwd"]),
        "/not/there\n"
    );
    assert_eq!(
        env.ok(&["run", "--rm", "-u", "nobody", "busybox", "id", "-u"]),
        "65534\n"
    );
    let ifaces = env.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '",
    ]);
    assert_eq!(ifaces, "lo\n");
    assert_eq!(
        env.ok(&["run", "--rm", "--hostname", "box", "busybox", "hostname"]),
        "box\n"
    );
    let host = env.dir.path().join("vol");
    fs::create_dir(&host).unwrap();
    fs::write(host.join("f"), "from host").unwrap();
    let volume = format!("{}:/data:ro", host.display());
    let run = env.kiln(&[
        "run",
        "--rm",
        "-v",
        &volume,
        "busybox",
        "sh",
        "-c",
        "cat /data/f; echo; touch /data/new",
    ]);
    assert_eq!(run.stdout, "from host\n");
    assert_ne!(run.code, 0, "a read-only volume was written");
    assert!(!host.join("new").exists());
    assert!(env.containers().is_empty());
}

#[test]
fn containers_are_kept_listed_committed_and_removed() {
    let Some(env) = Env::new() else { return };
    let run = env.kiln(&[
        "run",
        "--name",
        "maker",
        "busybox",
        "sh",
        "-c",
        "echo made > /made; rm /etc/group; hostname; exit 3",
    ]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    let hostname = run.stdout.trim().to_string();
    assert_eq!(env.containers().len(), 1);
    let id = env.containers().remove(0);
    assert_eq!(id.len(), 64);
    assert_eq!(hostname, id[..12], "the hostname is the short id");

    // Only running containers without -a.
    assert_eq!(env.ok(&["ps"]).lines().count(), 1, "header only");
    let table = env.ok(&["ps", "-a"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    for column in [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "NAMES",
    ] {
        assert!(lines[0].contains(column), "{table}");
    }
    assert!(lines[1].starts_with(&id[..12]), "{table}");
    assert!(lines[1].contains("Exited (3)"), "{table}");
    assert!(lines[1].ends_with("maker"), "{table}");
    let json: serde_json::Value =
        serde_json::from_str(env.ok(&["ps", "-a", "--format", "json"]).trim()).unwrap();
    assert_eq!(json["Names"], "maker");
    assert_eq!(json["ExitCode"], 3);
    assert_eq!(json["State"], "exited");
    assert_eq!(json["Image"], "busybox");
    assert_eq!(env.ok(&["ps", "-aq", "--no-trunc"]).trim(), id);

    // A name is taken until its container is removed.
    let dup = env.kiln(&["run", "--name", "maker", "busybox", "true"]);
    assert_eq!(dup.code, 125, "{}", dup.stderr);
    assert_eq!(env.containers().len(), 1);

    let image_id = env.ok(&["commit", &id[..8], "made:1"]);
    assert!(image_id.trim().starts_with("sha256:"), "{image_id}");
    assert_eq!(env.ok(&["run", "--rm", "made:1", "cat", "/made"]), "made\n");
    assert_eq!(
        env.kiln(&["run", "--rm", "made:1", "test", "-e", "/etc/group"])
            .code,
        1,
        "the deletion is in the committed layer"
    );
    let history = env.ok(&["history", "made:1"]);
    assert_eq!(history.lines().count(), 3, "{history}");

    assert_eq!(env.ok(&["rm", "maker"]), "maker\n");
    assert!(env.containers().is_empty());
    assert_eq!(env.ok(&["ps", "-a"]).lines().count(), 1);
    assert_ne!(env.kiln(&["rm", "maker"]).code, 0);

    // container prune removes every stopped container.
    env.ok(&["run", "busybox", "true"]);
    env.ok(&["run", "busybox", "true"]);
    assert_eq!(env.containers().len(), 2);
    let pruned = env.ok(&["container", "prune", "-f"]);
    assert!(pruned.starts_with("Deleted Containers:"), "{pruned}");
    assert!(env.containers().is_empty());
}

#[test]
fn a_stopped_run_records_its_signal() {
    let Some(env) = Env::new() else { return };
    let mut child = Command::new(KILN)
        .arg("--root")
        .arg(&env.root)
        // With an init, as PID 1 `sleep` would ignore SIGTERM (docker's behaviour too).
        .args([
            "run", "--init", "--name", "sleeper", "busybox", "sleep", "60",
        ])
        .env("TMPDIR", &env.tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + RUN_TIMEOUT;
    let ps = |args: &[&str]| {
        let run = env.kiln_while_running(args);
        assert_eq!(run.code, 0, "{}", run.stderr);
        run.stdout
    };
    while !ps(&["ps"]).contains("sleeper") {
        assert!(
            Instant::now() < deadline,
            "the container never showed as running"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let running: serde_json::Value =
        serde_json::from_str(ps(&["ps", "--format", "json"]).trim()).unwrap();
    assert_eq!(running["State"], "running");
    assert!(running["Status"].as_str().unwrap().starts_with("Up"));
    assert_ne!(
        env.kiln_while_running(&["rm", "sleeper"]).code,
        0,
        "a running container was removed"
    );
    // SIGTERM is forwarded; the container stops and kiln records how.
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    env.assert_clean();
    let table = env.ok(&["ps", "-a"]);
    assert!(table.contains("Exited (143)"), "{table}");
    env.ok(&["rm", "sleeper"]);
    assert!(env.containers().is_empty());
}

#[test]
fn a_killed_run_reads_as_exited_and_rm_unmounts_it() {
    let Some(env) = Env::new() else { return };
    let mut child = Command::new(KILN)
        .arg("--root")
        .arg(&env.root)
        .args(["run", "--name", "victim", "busybox", "sleep", "30"])
        .env("TMPDIR", &env.tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + RUN_TIMEOUT;
    while !env.kiln_while_running(&["ps"]).stdout.contains("victim") {
        assert!(
            Instant::now() < deadline,
            "the container never showed as running"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SIGKILL: kiln cannot record the exit nor unmount; the sandbox dies with it.
    child.kill().unwrap();
    child.wait().unwrap();
    let json: serde_json::Value = serde_json::from_str(
        env.kiln_while_running(&["ps", "-a", "--format", "json"])
            .stdout
            .trim(),
    )
    .unwrap();
    assert_eq!(json["State"], "exited");
    assert_eq!(env.kiln_while_running(&["ps"]).stdout.lines().count(), 1);
    // `rm` unmounts what the killed run left mounted; `kiln` checks nothing is left.
    assert_eq!(env.ok(&["rm", "victim"]), "victim\n");
    assert!(env.containers().is_empty());
}

#[test]
fn a_commit_leaves_out_what_the_sandbox_mounted() {
    let Some(env) = Env::new() else { return };
    let host = env.dir.path().join("vol");
    fs::create_dir(&host).unwrap();
    fs::write(host.join("f"), "host file").unwrap();
    let volume = format!("{}:/mnt/vol", host.display());
    env.ok(&[
        "run",
        "--name",
        "mounted",
        "-v",
        &volume,
        "busybox",
        "sh",
        "-c",
        "cat /mnt/vol/f > /copied",
    ]);
    env.ok(&["commit", "mounted", "mounted:1"]);
    let script = "cat /copied; echo; test -e /mnt/vol && echo vol-present; cat /etc/hostname";
    let out = env.ok(&[
        "run",
        "--rm",
        "--hostname",
        "fresh",
        "mounted:1",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(out, "host file\nfresh\n");
    env.ok(&["rm", "mounted"]);
}
