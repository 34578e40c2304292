//! What kiln's end-to-end tests share: the binary under test, prerequisites that skip locally but
//! fail under `CI=true`, and the offline busybox fixture.
// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

pub mod registry;

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The `kiln` binary built for these tests.
pub const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// `kiln --root ROOT ARGS…` with no kiln setting inherited from the caller's environment
/// (`KILN_ROOT`, `BUILDKIT_PROGRESS`) and stdin closed; callers add what their tests need.
pub fn kiln_command(root: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(KILN);
    command
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("KILN_ROOT")
        .env_remove("BUILDKIT_PROGRESS")
        .stdin(Stdio::null());
    command
}

/// Runs `command` with `input` on its stdin (then closed) and captures stdout and stderr.
pub fn output_with_stdin(command: &mut Command, input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin
        .write_all(input)
        .unwrap_or_else(|e| panic!("writing to {command:?}: {e}"));
    drop(stdin);
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {command:?}: {e}"))
}

/// Waits for `child` until `deadline`; past it, kills and reaps it and fails the test with
/// `what_hung()` (a hung kiln must not hang the test run).
pub fn wait_until(
    child: &mut Child,
    deadline: Instant,
    what_hung: impl Fn() -> String,
) -> ExitStatus {
    loop {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{}", what_hung());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Whether a prerequisite is there. Missing, it fails the test under `CI=true` (a skipped test
/// there would hide a missing feature) and skips it, saying why, otherwise.
pub fn require(present: bool, what: &str) -> bool {
    if !present {
        assert!(!in_ci(), "prerequisite missing under CI=true: {what}");
        eprintln!("skipping: {what}");
    }
    present
}

pub fn is_root() -> bool {
    effective_uid() == Some(0)
}

/// The effective uid, as `/proc/self/status` gives it.
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

pub fn have_tool(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `testdata/busybox-rootfs.sh` with `args`; false (after [`require`]) when it fails.
fn busybox_fixture(args: &[&std::ffi::OsStr]) -> bool {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/busybox-rootfs.sh");
    let out = Command::new("bash").arg(&script).args(args).output();
    let (ok, why) = match out {
        Ok(out) => (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ),
        Err(e) => (false, e.to_string()),
    };
    require(
        ok,
        &format!("the busybox fixture (apt-get install busybox-static): {why}"),
    )
}

/// Writes the offline busybox root filesystem as a tar at `tar`.
pub fn busybox_tar(tar: &Path) -> bool {
    busybox_fixture(&["--tar".as_ref(), tar.as_os_str()])
}

/// Writes the offline busybox root filesystem as a directory at `dir`.
pub fn busybox_rootfs(dir: &Path) -> bool {
    busybox_fixture(&[dir.as_os_str()])
}
