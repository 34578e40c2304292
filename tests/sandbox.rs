//! The sandbox, driven through `kiln sandbox` over a busybox root filesystem made offline by
//! `testdata/busybox-rootfs.sh`. These tests need root (namespaces, mounts, cgroups); without it
//! they fail under `CI=true` and are skipped, saying why, otherwise.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::{KILN, is_root, require, wait_until};

/// docker's default capability set as `/proc/<pid>/status` shows it.
const DEFAULT_CAPS_HEX: &str = "00000000a80425fb";

/// Generous: the machine is shared, and a hung sandbox must fail the test, not hang it.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

struct Fixture {
    dir: tempfile::TempDir,
    rootfs: PathBuf,
    /// TMPDIR of kiln: must be empty again after every run.
    tmp: PathBuf,
}

fn fixture() -> Option<Fixture> {
    if !require(is_root(), "the sandbox tests need root") {
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let rootfs = dir.path().join("rootfs");
    if !support::busybox_rootfs(&rootfs) {
        return None;
    }
    let tmp = dir.path().join("tmp");
    fs::create_dir(&tmp).expect("tmp");
    Some(Fixture { dir, rootfs, tmp })
}

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }
}

impl Fixture {
    fn command(&self, flags: &[&str], argv: &[&str]) -> Command {
        let mut cmd = Command::new(KILN);
        cmd.arg("sandbox")
            .arg("--rootfs")
            .arg(&self.rootfs)
            .args(flags)
            .arg("--")
            .args(argv)
            .env("TMPDIR", &self.tmp)
            .stdin(Stdio::null());
        cmd
    }

    fn spawn(&self, mut cmd: Command, name: &str) -> (Child, PathBuf, PathBuf) {
        let out = self.dir.path().join(format!("{name}.out"));
        let err = self.dir.path().join(format!("{name}.err"));
        cmd.stdout(fs::File::create(&out).expect("stdout file"))
            .stderr(fs::File::create(&err).expect("stderr file"));
        (cmd.spawn().expect("spawn kiln"), out, err)
    }

    fn finish(&self, mut child: Child, out: &Path, err: &Path) -> Run {
        let status = wait_until(&mut child, Instant::now() + RUN_TIMEOUT, || {
            format!("kiln sandbox did not finish within {RUN_TIMEOUT:?}")
        });
        let run = Run {
            status,
            stdout: fs::read_to_string(out).unwrap_or_default(),
            stderr: fs::read_to_string(err).unwrap_or_default(),
        };
        self.assert_clean();
        run
    }

    fn run(&self, flags: &[&str], argv: &[&str]) -> Run {
        let (child, out, err) = self.spawn(self.command(flags, argv), "run");
        self.finish(child, &out, &err)
    }

    fn sh(&self, flags: &[&str], script: &str) -> Run {
        self.run(flags, &["sh", "-c", script])
    }

    /// Nothing of a finished run may remain: no mount on the host mentions the rootfs, and the
    /// runner's temporary files are gone.
    fn assert_clean(&self) {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let root = self.dir.path().to_string_lossy().into_owned();
        assert!(
            !mountinfo.contains(&root),
            "mounts left behind:\n{mountinfo}"
        );
        let left: Vec<_> = fs::read_dir(&self.tmp)
            .expect("tmp")
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        assert!(left.is_empty(), "temporary files left behind: {left:?}");
    }
}

fn status_field<'a>(status: &'a str, field: &str) -> Option<&'a str> {
    status.lines().find_map(|l| {
        l.strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim)
    })
}

#[test]
fn command_is_pid_1_with_its_own_hostname_and_no_host_processes() {
    let Some(fx) = fixture() else { return };
    let run = fx.sh(
        &["--hostname", "boxed"],
        "echo pid=$$; hostname; cat /etc/hostname; ls /proc | grep -c '^[0-9]*$'; \
         [ -e /proc/$PPID ] && echo ppid-visible; ls / | grep -c '^work$' || true",
    );
    assert_eq!(run.code(), 0, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], "pid=1");
    assert_eq!(lines[1], "boxed");
    assert_eq!(lines[2], "boxed");
    // sh, ls and grep at most: nothing of the host.
    let procs: u32 = lines[3].parse().expect("process count");
    assert!(procs <= 3, "saw {procs} processes: {}", run.stdout);
    // The test process's own pid is not visible (pid 1 has no parent inside).
    assert!(!run.stdout.contains("ppid-visible"));
    assert_eq!(lines.last(), Some(&"0"), "host root visible");
}

#[test]
fn capabilities_seccomp_and_no_new_privs_are_dockers() {
    let Some(fx) = fixture() else { return };
    let run = fx.run(&[], &["cat", "/proc/self/status"]);
    assert_eq!(run.code(), 0, "{}", run.stderr);
    for field in ["CapEff", "CapPrm", "CapBnd", "CapInh"] {
        assert_eq!(
            status_field(&run.stdout, field),
            Some(DEFAULT_CAPS_HEX),
            "{field}"
        );
    }
    assert_eq!(
        status_field(&run.stdout, "CapAmb"),
        Some("0000000000000000")
    );
    assert_eq!(status_field(&run.stdout, "Seccomp"), Some("2"));
    assert_eq!(status_field(&run.stdout, "NoNewPrivs"), Some("1"));
}

#[test]
fn user_switch_sets_uid_gid_groups_and_home() {
    let Some(fx) = fixture() else { return };
    let run = fx.sh(
        &["-u", "daemon"],
        "id -u; id -g; id -G; echo $HOME; grep CapEff /proc/self/status",
    );
    assert_eq!(run.code(), 0, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(&lines[..4], ["1", "1", "1", "/usr/sbin"]);
    // A non-root user keeps no effective capabilities, as in docker.
    assert!(lines[4].ends_with("0000000000000000"), "{}", lines[4]);

    // The primary gid is a supplementary group too (docker's fix for CVE-2022-36109).
    let groups = "grep Groups /proc/self/status | tr -s '\\t ' ' '";
    let run = fx.sh(&["-u", "daemon"], groups);
    assert_eq!(run.stdout.trim(), "Groups: 1");

    // Root gets the groups that list it as a member.
    let run = fx.sh(&[], "id -G");
    assert_eq!(run.stdout.trim(), "0 10");
    let run = fx.sh(&[], groups);
    assert_eq!(run.stdout.trim(), "Groups: 0 10");

    // Numeric ids need no passwd entry; an explicit group drops supplementary groups.
    let run = fx.sh(&["-u", "4242:wheel"], "id -u; id -g; id -G; echo $HOME");
    assert_eq!(run.code(), 0, "{}", run.stderr);
    assert_eq!(run.stdout, "4242\n10\n10\n/\n");

    let run = fx.sh(&["-u", "ghost"], "true");
    assert_eq!(run.code(), 125);
    assert!(
        run.stderr.contains("unable to find user ghost"),
        "{}",
        run.stderr
    );
}

#[test]
fn environment_gets_default_path_and_home() {
    let Some(fx) = fixture() else { return };
    let run = fx.run(&["-e", "FOO=bar", "-e", "FOO=baz"], &["env"]);
    assert_eq!(run.code(), 0, "{}", run.stderr);
    let env: Vec<&str> = run.stdout.lines().collect();
    assert!(env.contains(&"FOO=baz"), "{env:?}");
    assert!(!env.contains(&"FOO=bar"), "{env:?}");
    assert!(env.contains(&"HOME=/root"), "{env:?}");
    assert!(
        env.contains(&"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        "{env:?}"
    );
}

#[test]
fn missing_workdir_is_created() {
    let Some(fx) = fixture() else { return };
    let run = fx.run(&["-w", "/srv/app/deep"], &["pwd"]);
    assert_eq!(run.code(), 0, "{}", run.stderr);
    assert_eq!(run.stdout, "/srv/app/deep\n");
    let made = fx.rootfs.join("srv/app/deep");
    assert!(made.is_dir());
    assert_eq!(
        fs::metadata(&made).expect("workdir").permissions().mode() & 0o7777,
        0o755
    );
}

#[test]
fn every_exit_code_comes_back() {
    let Some(fx) = fixture() else { return };
    for code in 0..=255 {
        let run = fx.sh(&[], &format!("exit {code}"));
        assert_eq!(run.code(), code, "exit {code}: {}", run.stderr);
    }
}

#[test]
fn signals_come_back_as_128_plus_n() {
    let Some(fx) = fixture() else { return };
    // Under an init the command is not PID 1, so it can die of a signal it sends itself.
    for (sig, n) in [("TERM", 15), ("KILL", 9), ("USR1", 10), ("HUP", 1)] {
        let run = fx.sh(&["--init"], &format!("kill -{sig} $$; sleep 5"));
        assert_eq!(run.code(), 128 + n, "SIG{sig}: {}", run.stderr);
    }
}

#[test]
fn init_reaps_orphans() {
    let Some(fx) = fixture() else { return };
    let run = fx.sh(
        &["--init"],
        "(sleep 0.2 &); sleep 1; grep -l '^State:.*Z' /proc/[0-9]*/status | wc -l; cat /proc/1/comm",
    );
    assert_eq!(run.code(), 0, "{}", run.stderr);
    assert_eq!(run.stdout, "0\ninit\n");
}

#[test]
fn missing_and_unexecutable_commands_fail_like_docker() {
    let Some(fx) = fixture() else { return };
    let run = fx.run(&[], &["no-such-command"]);
    assert_eq!(run.code(), 127);
    assert!(
        run.stderr.contains("executable file not found"),
        "{}",
        run.stderr
    );
    let run = fx.run(&[], &["/etc/passwd"]);
    assert_eq!(run.code(), 126, "{}", run.stderr);
}

#[test]
fn network_none_has_only_loopback_and_it_is_up() {
    let Some(fx) = fixture() else { return };
    let run = fx.sh(
        &[],
        "ls /sys/class/net; ping -c 1 -W 2 127.0.0.1 >/dev/null && echo ping-ok",
    );
    assert_eq!(run.code(), 0, "{}", run.stderr);
    assert_eq!(run.stdout, "lo\nping-ok\n");
}

#[test]
fn network_host_shares_the_hosts_interfaces() {
    let Some(fx) = fixture() else { return };
    let host: Vec<String> = fs::read_dir("/sys/class/net")
        .expect("host interfaces")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    let run = fx.run(&["--network", "host"], &["ls", "/sys/class/net"]);
    assert_eq!(run.code(), 0, "{}", run.stderr);
    let inside: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(inside.len(), host.len(), "{inside:?} vs {host:?}");
}

#[test]
fn bind_mounts_read_write_and_read_only() {
    let Some(fx) = fixture() else { return };
    let shared = fx.dir.path().join("shared");
    fs::create_dir(&shared).expect("shared");
    fs::write(shared.join("in.txt"), "from host").expect("write");
    let rw = format!("{}:/data", shared.display());
    let ro = format!("{}:/ro:ro", shared.display());
    let run = fx.sh(
        &["-v", &rw, "-v", &ro],
        "cat /ro/in.txt; echo; echo from-sandbox > /data/out.txt && echo rw-ok; \
         touch /ro/nope 2>/dev/null || echo ro-refused",
    );
    assert_eq!(run.code(), 0, "{}", run.stderr);
    assert_eq!(run.stdout, "from host\nrw-ok\nro-refused\n");
    assert_eq!(
        fs::read_to_string(shared.join("out.txt")).expect("written through"),
        "from-sandbox\n"
    );
    assert!(!shared.join("nope").exists());
}

#[test]
fn escape_attempts_fail() {
    let Some(fx) = fixture() else { return };
    let marker = fx.dir.path().join("host-marker");
    let script = format!(
        "echo owned > {marker} 2>/dev/null; \
         mount -t tmpfs none /mnt 2>/dev/null && echo mounted; \
         mount --bind / /mnt 2>/dev/null && echo bound; \
         unshare -n true 2>/dev/null && echo unshared; \
         unshare -U true 2>/dev/null && echo userns; \
         echo junk > /tmp/m.ko; insmod /tmp/m.ko 2>&1 | grep -q 'not permitted' && echo insmod-denied; \
         ls /proc | grep -c '^[0-9]*$'; \
         cat /proc/keys 2>/dev/null | wc -c; \
         echo 1 > /proc/sys/vm/drop_caches 2>/dev/null && echo sysctl-written; \
         hostname other 2>/dev/null && echo renamed; \
         swapoff -a 2>/dev/null && echo swapoff; \
         echo done",
        marker = marker.display()
    );
    let run = fx.sh(&[], &script);
    assert_eq!(run.code(), 0, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"insmod-denied"), "{}", run.stdout);
    let procs: u32 = lines[1].parse().expect("count");
    assert!(procs <= 4, "{}", run.stdout);
    assert_eq!(&lines[2..], ["0", "done"], "{}", run.stdout);
    // The write landed in the rootfs (where the path was created), not on the host.
    assert!(!marker.exists(), "wrote to the host");
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    let Some(fx) = fixture() else { return };
    if !require(
        Path::new("/sys/fs/cgroup/pids").exists()
            || fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
                .is_ok_and(|c| c.contains("pids")),
        "no pids cgroup controller",
    ) {
        return;
    }
    // Bounded: at most 200 background sleeps, each ending on its own.
    let started = Instant::now();
    let run = fx.sh(
        &["--pids-limit", "16"],
        "i=0; while [ $i -lt 200 ]; do sleep 20 & i=$((i+1)); done; echo all-started",
    );
    assert_ne!(run.code(), 0, "{}", run.stdout);
    assert!(!run.stdout.contains("all-started"));
    assert!(run.stderr.contains("fork"), "{}", run.stderr);
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_no_kiln_cgroups();
}

#[test]
fn memory_limit_kills_and_says_so() {
    let Some(fx) = fixture() else { return };
    if !require(
        Path::new("/sys/fs/cgroup/memory").exists()
            || fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
                .is_ok_and(|c| c.contains("memory")),
        "no memory cgroup controller",
    ) {
        return;
    }
    let run = fx.sh(
        &["--memory", "32m"],
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}",
    );
    assert_eq!(run.code(), 137, "{}", run.stderr);
    assert!(run.stderr.contains("memory limit"), "{}", run.stderr);
    assert_no_kiln_cgroups();
}

fn assert_no_kiln_cgroups() {
    for hierarchy in ["pids", "memory", "cpu", "unified", ""] {
        let base = Path::new("/sys/fs/cgroup").join(hierarchy);
        let Ok(walk) = fs::read_dir(&base) else {
            continue;
        };
        let mut stack: Vec<PathBuf> = walk.filter_map(|e| e.ok().map(|e| e.path())).collect();
        while let Some(dir) = stack.pop() {
            if !dir.is_dir() || dir.is_symlink() {
                continue;
            }
            let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
            // Run cgroups are named after their helper's pid: one whose helper still runs
            // belongs to a live run (of another test).
            if let Some(helper) = name.as_deref().and_then(|n| n.strip_prefix("kiln-")) {
                assert!(
                    Path::new("/proc").join(helper).exists(),
                    "cgroup left behind: {}",
                    dir.display()
                );
            }
            if let Ok(children) = fs::read_dir(&dir) {
                stack.extend(children.filter_map(|e| e.ok().map(|e| e.path())));
            }
        }
    }
}

impl Fixture {
    /// Waits until the sandboxed command has created `/tmp/started` in the rootfs, so a
    /// signal sent next finds it running whatever the machine's load. Removes the marker.
    fn wait_started(&self) {
        let marker = self.rootfs.join("tmp/started");
        let deadline = Instant::now() + RUN_TIMEOUT;
        while !marker.exists() {
            assert!(Instant::now() < deadline, "the sandbox never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        fs::remove_file(marker).expect("remove marker");
    }
}

fn kill_int(child: &Child) {
    let pid = child.id().to_string();
    let sent = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    assert!(sent.success());
}

#[test]
fn sigint_to_kiln_stops_the_sandbox_and_cleans_up() {
    let Some(fx) = fixture() else { return };
    // PID 1 without a handler ignores the forwarded SIGINT: the stop timeout ends it.
    let cmd = fx.command(
        &["--stop-timeout", "1"],
        &["sh", "-c", "touch /tmp/started; exec sleep 600"],
    );
    let (child, out, err) = fx.spawn(cmd, "sigint");
    fx.wait_started();
    let started = Instant::now();
    kill_int(&child);
    let run = fx.finish(child, &out, &err);
    assert_eq!(run.code(), 137, "{}", run.stderr);
    assert!(started.elapsed() < Duration::from_secs(10));

    // A process that handles SIGINT gets it and exits its own way.
    let cmd = fx.command(
        &["--init"],
        &[
            "sh",
            "-c",
            "trap 'echo interrupted; exit 5' INT; touch /tmp/started; sleep 600 & wait",
        ],
    );
    let (child, out, err) = fx.spawn(cmd, "sigint-trap");
    fx.wait_started();
    kill_int(&child);
    let run = fx.finish(child, &out, &err);
    assert_eq!(run.code(), 5, "{}", run.stderr);
    assert_eq!(run.stdout, "interrupted\n");
}

#[test]
fn failed_setup_leaves_nothing_behind() {
    let Some(fx) = fixture() else { return };
    let missing = format!("{}:/x", fx.dir.path().join("missing").display());
    let run = fx.run(&["-v", &missing], &["true"]);
    assert_ne!(run.code(), 0);
    // A failure inside the sandbox (after the mounts were made).
    let run = fx.run(&["-u", "nobody:nosuchgroup"], &["true"]);
    assert_eq!(run.code(), 125, "{}", run.stderr);
    assert!(run.stderr.contains("nosuchgroup"), "{}", run.stderr);
}

#[test]
fn mount_points_are_created_in_the_rootfs() {
    let Some(fx) = fixture() else { return };
    for p in ["proc", "sys", "dev"] {
        fs::remove_dir(fx.rootfs.join(p)).expect("remove mount point");
    }
    let run = fx.sh(&[], "cat /proc/self/comm; ls /dev/null; cat /etc/hostname");
    assert_eq!(run.code(), 0, "{}", run.stderr);
    assert_eq!(run.stdout, "cat\n/dev/null\nkiln\n");
    assert!(fx.rootfs.join("proc").is_dir());
    // The bind-mounted file was created empty; the runner's content stayed in its own file.
    assert_eq!(
        fs::read_to_string(fx.rootfs.join("etc/hostname")).expect("hostname"),
        ""
    );
}

#[test]
fn stdin_is_connected_only_with_interactive() {
    let Some(fx) = fixture() else { return };
    let mut cmd = fx.command(&["-i"], &["cat"]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"through the sandbox\n").expect("write");
    }
    let out = child.wait_with_output().expect("output");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "through the sandbox\n"
    );
    let run = fx.run(&[], &["cat"]);
    assert_eq!(run.code(), 0);
    assert_eq!(run.stdout, "");
}

#[test]
fn tty_gives_the_process_a_terminal() {
    let Some(fx) = fixture() else { return };
    if !require(
        has_program("script", "--version"),
        "script(1) from util-linux is needed to provide a terminal",
    ) {
        return;
    }
    let inner = format!(
        "exec {} sandbox -t --rootfs {} -- sh -c '[ -t 0 ] && [ -t 1 ] && echo is-a-tty; echo $TERM; exit 3'",
        KILN,
        fx.rootfs.display()
    );
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &inner, "/dev/null"])
        .env("SHELL", "/bin/sh")
        .env("TMPDIR", &fx.tmp)
        .stdin(Stdio::null());
    let (child, out, err) = fx.spawn(cmd, "tty");
    let run = fx.finish(child, &out, &err);
    assert_eq!(run.code(), 3, "{} {}", run.stdout, run.stderr);
    assert!(run.stdout.contains("is-a-tty"), "{}", run.stdout);
    assert!(run.stdout.contains("xterm"), "{}", run.stdout);
}

fn has_program(name: &str, arg: &str) -> bool {
    Command::new(name)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A fixture an unprivileged user (nobody, 65534) can use: it owns the rootfs, as a rootless
/// user owns what it extracted, and gets its own copy of kiln it can reach.
fn rootless_fixture() -> Option<(Fixture, PathBuf)> {
    let fx = fixture()?;
    if !require(
        has_program("setpriv", "--version"),
        "setpriv(1) from util-linux is needed to drop to a user",
    ) {
        return None;
    }
    fs::set_permissions(fx.dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::set_permissions(&fx.tmp, fs::Permissions::from_mode(0o1777)).expect("chmod");
    let owned = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&fx.rootfs)
        .status()
        .expect("chown");
    assert!(owned.success());
    let bin = fx.dir.path().join("kiln");
    fs::copy(KILN, &bin).expect("copy kiln");
    Some((fx, bin))
}

fn as_nobody(bin: &Path) -> String {
    format!(
        "setpriv --reuid=65534 --regid=65534 --clear-groups -- {}",
        bin.display()
    )
}

fn run_shell(fx: &Fixture, script: &str, name: &str) -> Run {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script])
        .env("TMPDIR", &fx.tmp)
        .stdin(Stdio::null());
    let (child, out, err) = fx.spawn(cmd, name);
    fx.finish(child, &out, &err)
}

#[test]
fn rootless_maps_the_caller_to_root_inside() {
    let Some((fx, bin)) = rootless_fixture() else {
        return;
    };
    let script = format!(
        "{} sandbox --rootfs {} -- sh -c \"id -u; cat /proc/self/uid_map; \
         grep -E '^(CapEff|Seccomp):' /proc/self/status; ls /sys/class/net; echo \\$\\$\"",
        as_nobody(&bin),
        fx.rootfs.display()
    );
    let run = run_shell(&fx, &script, "rootless");
    if !require(
        !run.stderr.contains("creating namespaces"),
        "unprivileged user namespaces are disabled on this machine",
    ) {
        return;
    }
    assert_eq!(run.code(), 0, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], "0");
    let map: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(map, ["0", "65534", "1"], "{}", lines[1]);
    assert_eq!(status_field(lines[2], "CapEff"), Some(DEFAULT_CAPS_HEX));
    assert_eq!(status_field(lines[3], "Seccomp"), Some("2"));
    assert_eq!(&lines[4..], ["lo", "1"]);

    // Without subordinate ids, no other user exists inside, and limits need cgroup access.
    let script = format!(
        "{} sandbox --rootfs {} -u daemon -- true",
        as_nobody(&bin),
        fx.rootfs.display()
    );
    let run = run_shell(&fx, &script, "rootless-user");
    assert_eq!(run.code(), 125);
    assert!(run.stderr.contains("not mapped"), "{}", run.stderr);
}

#[test]
fn rootless_with_subordinate_ids_runs_other_users() {
    let Some((fx, bin)) = rootless_fixture() else {
        return;
    };
    if !require(
        has_program("newuidmap", "--help") || Path::new("/usr/bin/newuidmap").exists(),
        "newuidmap/newgidmap are needed (apt-get install uidmap)",
    ) || !require(
        Path::new("/etc/subuid").is_file() && Path::new("/etc/subgid").is_file(),
        "/etc/subuid and /etc/subgid must exist to be replaced in a private mount namespace",
    ) {
        return;
    }
    // The grant exists only in a private mount namespace of this test: the host's files are
    // never touched.
    let grant = fx.dir.path().join("subid");
    fs::write(&grant, "nobody:300000:65536\n").expect("grant");
    let script = format!(
        "unshare -m sh -c 'mount --bind {g} /etc/subuid && mount --bind {g} /etc/subgid && \
         {nobody} sandbox --rootfs {rootfs} -u daemon -- sh -c \"id -u; id -g\" && \
         {nobody} sandbox --rootfs {rootfs} -- \
         sh -c \"cat /proc/self/uid_map; touch /tmp/f; chown 2:2 /tmp/f && echo chowned\"'",
        g = grant.display(),
        nobody = as_nobody(&bin),
        rootfs = fx.rootfs.display()
    );
    let run = run_shell(&fx, &script, "subids");
    assert_eq!(run.code(), 0, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(&lines[..2], ["1", "1"], "{}", run.stdout);
    let maps: Vec<Vec<&str>> = lines[2..4]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(maps, [["0", "65534", "1"], ["1", "300000", "65536"]]);
    assert_eq!(lines[4], "chowned");
    // Container uid 2 is subordinate id 300001 on the host.
    let meta = fs::metadata(fx.rootfs.join("tmp/f")).expect("file");
    assert_eq!((meta.uid(), meta.gid()), (300001, 300001));
}

#[test]
fn library_run_captures_output_and_reports_created_mount_points() {
    use kiln_runner::{ExitStatus, Spec, Stdio as RunnerStdio, Streams};
    use std::io::Read;
    let Some(fx) = fixture() else { return };
    let spec = Spec::new(
        &fx.rootfs,
        ["sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3"]
            .map(String::from)
            .to_vec(),
    );
    let (mut out_r, out_w) = std::io::pipe().expect("pipe");
    let (mut err_r, err_w) = std::io::pipe().expect("pipe");
    let streams = Streams {
        stdin: RunnerStdio::Null,
        stdout: RunnerStdio::Fd(out_w.into()),
        stderr: RunnerStdio::Fd(err_w.into()),
    };
    let sandbox = kiln_runner::spawn_with_helper(Path::new(KILN), &spec, streams).expect("spawn");
    let outcome = sandbox.wait().expect("outcome");
    assert_eq!(outcome.status, ExitStatus::Exited(3));
    assert!(!outcome.oom_killed);
    let (mut out, mut err) = (String::new(), String::new());
    out_r.read_to_string(&mut out).expect("stdout");
    err_r.read_to_string(&mut err).expect("stderr");
    assert_eq!((out.as_str(), err.as_str()), ("to-stdout\n", "to-stderr\n"));
    // The busybox tree has /proc, /sys and /dev but none of the runner's /etc files.
    let created: Vec<String> = outcome
        .created_mountpoints
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(
        created,
        ["/etc/hosts", "/etc/resolv.conf", "/etc/hostname"],
        "{created:?}"
    );
    for p in &created {
        assert!(fx.rootfs.join(&p[1..]).is_file());
    }

    // Errors inside the sandbox come back as the same variants.
    let mut spec = spec;
    spec.user = "ghost".into();
    let err = kiln_runner::run_with_helper(Path::new(KILN), &spec, Streams::default())
        .expect_err("unknown user");
    assert!(matches!(err, kiln_runner::Error::User(_)), "{err}");
    fx.assert_clean();
}

#[test]
fn cpu_limit_is_applied_and_removed() {
    let Some(fx) = fixture() else { return };
    if !require(
        Path::new("/sys/fs/cgroup/cpu").exists()
            || fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
                .is_ok_and(|c| c.contains("cpu")),
        "no cpu cgroup controller",
    ) {
        return;
    }
    let run = fx.run(&["--cpus", "0.5"], &["true"]);
    assert_eq!(run.code(), 0, "{}", run.stderr);
    assert_no_kiln_cgroups();
}

#[test]
fn descriptors_leaked_by_the_caller_do_not_reach_the_sandbox() {
    let Some(fx) = fixture() else { return };
    // bash leaves fd 7 open without close-on-exec, as careless parents do.
    let inner = format!(
        "exec 7</dev/null; exec {} sandbox --rootfs {} -- ls /proc/self/fd",
        KILN,
        fx.rootfs.display()
    );
    let mut cmd = Command::new("bash");
    cmd.args(["-c", &inner])
        .env("TMPDIR", &fx.tmp)
        .stdin(Stdio::null());
    let (child, out, err) = fx.spawn(cmd, "fds");
    let run = fx.finish(child, &out, &err);
    assert_eq!(run.code(), 0, "{}", run.stderr);
    // 0-2 and the directory ls itself has open.
    assert_eq!(
        run.stdout.split_whitespace().collect::<Vec<_>>(),
        ["0", "1", "2", "3"]
    );
}

#[test]
fn symlinks_in_the_rootfs_cannot_redirect_mount_points_to_the_host() {
    let Some(fx) = fixture() else { return };
    // An image whose /etc/hosts points at a host path, and whose /mnt/x climbs out.
    let victim = fx.dir.path().join("victim");
    fs::create_dir(&victim).expect("victim dir");
    std::os::unix::fs::symlink(victim.join("hosts"), fx.rootfs.join("etc/hosts")).expect("link");
    fs::create_dir(fx.rootfs.join("mnt")).expect("mnt");
    std::os::unix::fs::symlink("../../../../../..", fx.rootfs.join("mnt/up")).expect("link");
    let shared = fx.dir.path().join("shared");
    fs::create_dir(&shared).expect("shared");
    let volume = format!("{}:/mnt/up/{}", shared.display(), "escaped");
    let run = fx.sh(
        &["-v", &volume],
        "ls -d /escaped && cat /etc/hosts | head -1",
    );
    assert_eq!(run.code(), 0, "{}", run.stderr);
    assert_eq!(run.stdout, "/escaped\n127.0.0.1\tlocalhost\n");
    // Nothing was created or mounted outside the rootfs.
    assert_eq!(fs::read_dir(&victim).expect("victim").count(), 0);
    assert!(
        fx.rootfs
            .join(victim.strip_prefix("/").expect("absolute"))
            .join("hosts")
            .is_file()
    );
    assert!(fx.rootfs.join("escaped").is_dir());
}

#[test]
fn ctrl_c_at_the_terminal_reaches_the_process_once() {
    let Some(fx) = fixture() else { return };
    if !require(
        has_program("script", "--version"),
        "script(1) from util-linux is needed to provide a terminal",
    ) {
        return;
    }
    let marker = fx.rootfs.join("tmp/started");
    for init in ["", "--init"] {
        // The terminal sends SIGINT to kiln's process group; the process counts what it gets.
        // `exec`: script(1) starts `$SHELL -c`, and a shell left waiting in that group would
        // die of the same Ctrl-C (dash does not replace itself with its last command).
        let inner = format!(
            "exec {} sandbox --rootfs {} {init} -- sh -c \
             'n=0; trap \"n=\\$((n+1))\" INT; touch /tmp/started; sleep 3 & wait; sleep 1; \
             echo count=$n'",
            KILN,
            fx.rootfs.display()
        );
        // ^C is typed once the command runs (a bounded wait), and the terminal stays open.
        let script = "(i=0; while [ ! -e \"$MARKER\" ] && [ $i -lt 600 ]; do sleep 0.1; \
                      i=$((i+1)); done; printf '\\003'; sleep 4) | script -qec \"$INNER\" /dev/null";
        let _ = fs::remove_file(&marker);
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script])
            .env("INNER", &inner)
            .env("MARKER", &marker)
            .env("SHELL", "/bin/sh")
            .env("TMPDIR", &fx.tmp)
            .stdin(Stdio::null());
        let (child, out, err) = fx.spawn(cmd, "ctrl-c");
        let run = fx.finish(child, &out, &err);
        assert_eq!(run.code(), 0, "{init}: {} {}", run.stdout, run.stderr);
        assert!(run.stdout.contains("count=1"), "{init}: {}", run.stdout);
    }
}
