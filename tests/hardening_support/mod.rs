//! What the hardening tests share: a temp store holding the busybox image, kiln runs that may
//! not hang (a deadline kills them) nor panic, and the checks that a store came through whole:
//! `kiln fsck`, no kiln mount left, `tmp/` empty.
// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "../support/mod.rs"]
mod support;
pub use support::*;

/// How long any single kiln command of these tests may take before it counts as hung.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// A temp dir holding a store (`root/`) and a context directory (`ctx/`).
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    /// A store holding `busybox:latest`; `None` (skip) without root or the fixture.
    pub fn with_busybox() -> Option<Env> {
        if !require(is_root(), "root (RUN steps run in the sandbox)") {
            return None;
        }
        let env = Env::bare();
        let tar = env.path("busybox.tar");
        if !busybox_tar(&tar) {
            return None;
        }
        env.ok(&["import", tar.to_str().unwrap(), "busybox:latest"]);
        Some(env)
    }

    /// An empty temp dir: no store yet, an empty context.
    pub fn bare() -> Env {
        let env = Env {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir(env.path("ctx")).unwrap();
        env
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn root(&self) -> PathBuf {
        self.path("root")
    }

    pub fn ctx(&self) -> PathBuf {
        self.path("ctx")
    }

    /// Writes the context's Dockerfile.
    pub fn dockerfile(&self, text: &str) {
        std::fs::write(self.ctx().join("Dockerfile"), text).unwrap();
    }

    /// `kiln --root ROOT ARGS…` in the temp dir, with no inherited kiln settings.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = support::kiln_command(&self.root(), args);
        command.current_dir(self.dir.path());
        command
    }

    /// Runs kiln to completion (see [`finish`]).
    pub fn run(&self, args: &[&str]) -> Output {
        finish(self.command(args), args)
    }

    /// Runs kiln and returns stdout, failing the test with stderr unless it succeeds.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kiln {args:?} failed: {}\n{}",
            out.status,
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Runs kiln and asserts it failed with a clear message: exit code 1 and `want` in stderr.
    pub fn fails(&self, args: &[&str], want: &str) -> String {
        let out = self.run(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "kiln {args:?}: {err}");
        assert!(
            err.to_lowercase().contains(&want.to_lowercase()),
            "kiln {args:?}: {want:?} not in\n{err}"
        );
        err
    }

    /// The store came through whole: `kiln fsck` passes, and after a writer's start (which
    /// sweeps what killed processes left) no kiln mount is left and `tmp/` is empty.
    pub fn assert_store_whole(&self) {
        let out = self.ok(&["fsck"]);
        assert!(out.contains("store is consistent"), "{out}");
        // `kiln tag` opens the store for writing: it sweeps snapshot debris and mounts.
        self.ok(&["tag", "busybox:latest", "hardening-sweep:1"]);
        self.ok(&["rmi", "hardening-sweep:1"]);
        assert_no_mounts_below(&self.root());
        let tmp: Vec<_> = std::fs::read_dir(self.root().join("tmp"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(tmp.is_empty(), "tmp/ was not swept: {tmp:?}");
        let debris: Vec<_> = std::fs::read_dir(self.root().join("snapshots"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(debris.is_empty(), "snapshot debris left: {debris:?}");
    }
}

/// However a test ends (a kiln killed at its deadline leaves its overlay mounted), nothing
/// stays mounted below its temp dir, so that the dir can be removed.
impl Drop for Env {
    fn drop(&mut self) {
        for m in mounts_below(self.dir.path()).iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `command` with a deadline (a hang fails the test after killing it) and asserts that
/// nothing panicked.
pub fn finish(mut command: Command, what: &[&str]) -> Output {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = command.spawn().unwrap();
    let out = wait_with_deadline(child, DEADLINE, what);
    assert_no_panic(&out, what);
    out
}

/// Waits for `child`, reading its piped output; kills it and fails the test after `limit`.
pub fn wait_with_deadline(mut child: Child, limit: Duration, what: &[&str]) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let reader = |pipe: Option<std::process::ChildStdout>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = std::io::Read::read_to_end(&mut p, &mut buf);
            }
            buf
        })
    };
    let out_thread = reader(stdout);
    let err_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = stderr {
            let _ = std::io::Read::read_to_end(&mut p, &mut buf);
        }
        buf
    });
    std::thread::spawn(move || {
        let status = child.wait();
        let _ = tx.send(status);
    });
    let status: ExitStatus = match rx.recv_timeout(limit) {
        Ok(status) => status.unwrap(),
        Err(_) => {
            // The pid is our unreaped child: it cannot be anyone else's yet.
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("kiln {what:?} hung for more than {limit:?}");
        }
    };
    Output {
        status,
        stdout: out_thread.join().unwrap(),
        stderr: err_thread.join().unwrap(),
    }
}

pub fn assert_no_panic(out: &Output, what: &[&str]) {
    let err = text(&out.stderr);
    assert!(!err.contains("panicked"), "kiln {what:?} panicked:\n{err}");
    // A panic aborts with 101; a signal (a stack overflow's SIGSEGV/SIGABRT) has no code.
    assert_ne!(out.status.code(), Some(101), "kiln {what:?}: {err}");
    assert!(
        out.status.code().is_some(),
        "kiln {what:?} died of a signal: {}\n{err}",
        out.status
    );
}

/// Mount points below `dir` in this mount namespace (`dir` itself may be one: a test's tmpfs).
pub fn mounts_below(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&format!("{dir}/")))
        .collect()
}

/// Fails (after detaching them, so that the temp dir can go) if anything is mounted below `dir`.
pub fn assert_no_mounts_below(dir: &Path) {
    let left = mounts_below(dir);
    for m in left.iter().rev() {
        let _ = Command::new("umount").arg("-l").arg(m).status();
    }
    assert!(left.is_empty(), "mounts left behind: {left:?}");
}

/// A small deterministic generator (xorshift64*), so that a failing run can be replayed from
/// its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Writes `size` bytes of pseudo-random (incompressible) data to `path`.
pub fn write_random(path: &Path, size: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len());
        rng.fill(&mut buf[..n]);
        file.write_all(&buf[..n]).unwrap();
        left -= n;
    }
    file.flush().unwrap();
}

/// The pids of every descendant of `pid` (children, their children, …), from /proc.
pub fn descendants(pid: u32) -> Vec<(u32, u64)> {
    let mut parent_of = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Some((ppid, start)) = stat_of(p) {
            parent_of.push((p, ppid, start));
        }
    }
    let mut found: Vec<(u32, u64)> = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(p, ppid, start) in &parent_of {
            if ppid == parent && !found.iter().any(|(q, _)| *q == p) {
                found.push((p, start));
                frontier.push(p);
            }
        }
    }
    found
}

/// (parent pid, start time) of a process, from `/proc/PID/stat`.
fn stat_of(pid: u32) -> Option<(u32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    Some((fields.get(1)?.parse().ok()?, fields.get(19)?.parse().ok()?))
}

/// Whether the process `pid` that started at `start` is still there (a zombie counts as gone).
pub fn alive(pid: u32, start: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(close) = stat.rfind(')') else {
        return false;
    };
    let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
    fields.first() != Some(&"Z") && fields.get(19).and_then(|s| s.parse().ok()) == Some(start)
}

/// Waits until every process of `procs` is gone; the ones left after `limit` are returned.
pub fn wait_gone(procs: &[(u32, u64)], limit: Duration) -> Vec<u32> {
    let deadline = Instant::now() + limit;
    loop {
        let left: Vec<u32> = procs
            .iter()
            .filter(|(p, s)| alive(*p, *s))
            .map(|(p, _)| *p)
            .collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
