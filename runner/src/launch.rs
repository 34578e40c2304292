//! The caller's side: starting the helper with the spec on fd 3 and the report pipe on fd 4,
//! and turning its report into an [`Outcome`] or an [`Error`].

use nix::fcntl::{FcntlArg, fcntl};
use nix::unistd::pipe2;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};

use crate::error::{Error, Result};
use crate::helper;
use crate::protocol::{HELPER_ARG, Outcome, REPORT_FD, Report, SPEC_FD};
use crate::spec::Spec;
use nix::sys::signal::Signal;

/// Where one standard stream of the sandboxed process goes.
#[derive(Debug, Default)]
pub enum Stdio {
    /// The caller's own stream.
    #[default]
    Inherit,
    /// `/dev/null`.
    Null,
    /// A descriptor the caller supplies, e.g. the write end of a pipe whose lines a build
    /// prefixes or captures.
    Fd(OwnedFd),
}

impl From<Stdio> for std::process::Stdio {
    fn from(s: Stdio) -> Self {
        match s {
            Stdio::Inherit => std::process::Stdio::inherit(),
            Stdio::Null => std::process::Stdio::null(),
            Stdio::Fd(fd) => std::process::Stdio::from(fd),
        }
    }
}

/// The three standard streams of a run. With `Spec::tty`, stdin and stdout are those the
/// terminal is relayed to. A caller that passes pipes must drain them while the sandbox runs
/// (from another thread than the one in [`Sandbox::wait`]), or a chatty process blocks on a
/// full pipe.
#[derive(Debug, Default)]
pub struct Streams {
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
}

/// If this process was started as the sandbox helper, runs it and exits; otherwise returns at
/// once. Call it first thing in `main`, before any thread is started.
pub fn helper_main_if_requested() {
    if std::env::args_os().nth(1).as_deref() == Some(OsStr::new(HELPER_ARG)) {
        let code = helper::main();
        std::process::exit(code);
    }
}

/// A started sandbox. Dropping it without [`wait`](Sandbox::wait) kills the sandbox (its helper
/// sees the report pipe close) and reaps the helper.
#[derive(Debug)]
pub struct Sandbox {
    child: Option<Child>,
    report: Option<File>,
}

/// Runs `spec` to completion.
pub fn run(spec: &Spec, streams: Streams) -> Result<Outcome> {
    spawn(spec, streams)?.wait()
}

/// [`run`] with the helper started from `helper` (see [`spawn_with_helper`]).
pub fn run_with_helper(helper: &Path, spec: &Spec, streams: Streams) -> Result<Outcome> {
    spawn_with_helper(helper, spec, streams)?.wait()
}

/// Starts `spec` and returns without waiting for it.
pub fn spawn(spec: &Spec, streams: Streams) -> Result<Sandbox> {
    spawn_with_helper(Path::new("/proc/self/exe"), spec, streams)
}

/// Like [`spawn`], with the helper started from `helper`, a binary whose `main` calls
/// [`helper_main_if_requested`]. For programs that embed the runner without being that binary
/// themselves, such as test harnesses.
pub fn spawn_with_helper(helper: &Path, spec: &Spec, streams: Streams) -> Result<Sandbox> {
    spec.validate()?;
    if !spec.rootfs.is_dir() {
        return Err(Error::InvalidSpec(format!(
            "the root filesystem {} is not a directory",
            spec.rootfs.display()
        )));
    }
    let json = serde_json::to_vec(spec)
        .map_err(|e| Error::InvalidSpec(format!("cannot serialise the spec: {e}")))?;
    let pipe = || pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::io("pipe", e.into()));
    let (spec_r, spec_w) = pipe()?;
    let (report_r, report_w) = pipe()?;
    // Moved above the low numbers first, so that placing them on 3 and 4 in the child cannot
    // overwrite one with the other. All stay close-on-exec here: another thread spawning a
    // process at the same time must not inherit them.
    let spec_high = dup_high(&spec_r)?;
    let report_high = dup_high(&report_w)?;
    drop((spec_r, report_w));
    let (spec_raw, report_raw) = (spec_high.as_raw_fd(), report_high.as_raw_fd());

    let stdin = if spec.stdin {
        streams.stdin
    } else {
        Stdio::Null
    };
    let helper_signals = crate::helper::signal_set();
    let mut cmd = Command::new(helper);
    cmd.arg0("kiln")
        .arg(HELPER_ARG)
        .stdin(stdin)
        .stdout(streams.stdout)
        .stderr(streams.stderr);
    // SAFETY: the closure runs between fork and exec and only calls dup2 and pthread_sigmask,
    // both async-signal-safe; dup2 onto a different number clears close-on-exec on the copy.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(spec_raw, SPEC_FD) < 0 || libc::dup2(report_raw, REPORT_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The helper starts with the signals it reads through its signalfd already blocked:
            // a Ctrl-C typed while it is still reading the spec is then held for the sandbox
            // instead of killing the helper with the default disposition.
            let rc = libc::pthread_sigmask(
                libc::SIG_BLOCK,
                helper_signals.as_ref(),
                std::ptr::null_mut(),
            );
            if rc != 0 {
                return Err(std::io::Error::from_raw_os_error(rc));
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| Error::io("starting the sandbox helper", e))?;
    drop((spec_high, report_high));

    // A helper that died early closes its end: the write fails and `wait` reports why.
    let _ = File::from(spec_w).write_all(&json);
    Ok(Sandbox {
        child: Some(child),
        report: Some(File::from(report_r)),
    })
}

fn dup_high(fd: &OwnedFd) -> Result<OwnedFd> {
    let raw = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(10))
        .map_err(|e| Error::io("duplicating a descriptor", e.into()))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
}

impl Sandbox {
    fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// The process id of the helper that supervises the sandbox.
    pub fn id(&self) -> u32 {
        self.pid() as u32
    }

    /// Sends a signal to the sandbox through its helper: SIGINT, SIGTERM, SIGHUP and SIGQUIT
    /// are forwarded to the process, followed by SIGKILL after the spec's stop timeout;
    /// SIGKILL kills the helper, whose sandbox then dies with it.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        let pid = nix::unistd::Pid::from_raw(self.pid());
        nix::sys::signal::kill(pid, signal)
            .map_err(|e| Error::io("signalling the sandbox", e.into()))
    }

    /// Waits for the sandbox to end and returns how it ended.
    pub fn wait(mut self) -> Result<Outcome> {
        let (Some(mut child), Some(mut report)) = (self.child.take(), self.report.take()) else {
            return Err(Error::Helper("the sandbox was already waited for".into()));
        };
        let mut text = Vec::new();
        let read = report.read_to_end(&mut text);
        let status = child
            .wait()
            .map_err(|e| Error::io("waiting for the sandbox helper", e))?;
        read.map_err(|e| Error::io("reading the sandbox report", e))?;
        if text.is_empty() {
            return Err(Error::HelperDied(status.to_string()));
        }
        match serde_json::from_slice::<Report>(&text) {
            Ok(Report::Finished(outcome)) => Ok(outcome),
            Ok(Report::Failed(failure)) => Err(failure.into()),
            Err(e) => Err(Error::HelperDied(format!("unreadable report: {e}"))),
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Closing the report pipe tells the helper nobody is waiting: it kills the sandbox,
        // cleans up and exits, so this wait is short.
        drop(self.report.take());
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }
}
