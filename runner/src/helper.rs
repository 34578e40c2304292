//! The helper: the kiln binary re-executed with `__kiln-sandbox-init`, so that the `clone` into
//! new namespaces happens in a fresh single-threaded process whatever threads the caller has.
//!
//! It stays outside the sandbox for the whole run, as its monitor: it writes the id maps, places
//! the sandbox in its cgroups, relays the terminal, forwards SIGINT/SIGTERM (and kills after the
//! stop timeout, or at once on a second interrupt or when the caller goes away), reaps, removes
//! the cgroups and temporary files, and reports the outcome on fd 4.

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::clone;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, Uid, getpid, pipe2, read, write};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Instant;

use crate::cgroups::Cgroup;
use crate::container::{self, Context};
use crate::error::{Error, Result, SetupContext};
use crate::mounts::EtcFiles;
use crate::namespaces::{self, IdMapping};
use crate::protocol::{ChildMessage, ExitStatus, Failure, Outcome, REPORT_FD, Report, SPEC_FD};
use crate::seccomp::Filters;
use crate::spec::Spec;
use crate::tty::{self, Pty, RawMode};

/// Stack for the cloned process. Untouched pages cost nothing; setup code (mounts, JSON,
/// formatting) must never come near the end.
const STACK_SIZE: usize = 8 << 20;

/// Runs the helper and returns its exit status (the outcome itself goes to the report fd).
pub(crate) fn main() -> i32 {
    // Descriptors the caller's parents leaked (not close-on-exec) have no business here.
    crate::fds::close_all_except(&[SPEC_FD, REPORT_FD]);
    // SAFETY: the caller started this process with the report pipe on fd 4; nothing else in
    // this process owns it. A missing fd is caught by F_SETFD below.
    let report = unsafe { OwnedFd::from_raw_fd(REPORT_FD) };
    if fcntl(&report, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).is_err() {
        eprintln!("kiln: the sandbox helper is internal to kiln and is not run by hand");
        std::mem::forget(report);
        return 125;
    }
    let mut report = File::from(report);
    // Re-executed through /proc/self/exe the process would be listed as `exe`.
    let _ = nix::sys::prctl::set_name(c"kiln-sandbox");
    let result = monitor(report.as_fd());
    let code = match &result {
        Ok(outcome) => outcome.status.code(),
        Err(e) => i32::from(e.exit_code()),
    };
    let message = match result {
        Ok(outcome) => Report::Finished(outcome),
        Err(e) => Report::Failed(e.into()),
    };
    if let Ok(json) = serde_json::to_vec(&message) {
        // The caller may be gone; nothing is left to tell then.
        let _ = report.write_all(&json);
    }
    code.clamp(0, 255)
}

fn read_spec() -> Result<Spec> {
    // SAFETY: the caller passes the spec pipe on fd 3; this is its only owner.
    let fd = unsafe { OwnedFd::from_raw_fd(SPEC_FD) };
    let mut text = Vec::new();
    File::from(fd)
        .read_to_end(&mut text)
        .map_err(|e| Error::io("reading the sandbox spec", e))?;
    serde_json::from_slice(&text)
        .map_err(|e| Error::InvalidSpec(format!("malformed spec from the caller: {e}")))
}

/// Signals the helper handles, blocked and read through a signalfd so none slips between checks.
pub(crate) fn signal_set() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGWINCH,
    ] {
        set.add(s);
    }
    set
}

/// The runner's `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`, in a private temp dir
/// that is removed when the run ends (bind mounts keep the files alive inside meanwhile).
fn write_etc_files(spec: &Spec) -> Result<(tempfile::TempDir, EtcFiles)> {
    let dir = tempfile::Builder::new()
        .prefix("kiln-sandbox-")
        .tempdir()
        .map_err(|e| Error::io("creating a temporary directory", e))?;
    let write = |name: &str, contents: String| -> Result<PathBuf> {
        let path = dir.path().join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
            .and_then(|mut f| f.write_all(contents.as_bytes()))
            .map_err(|e| Error::path(&path, e))?;
        Ok(path)
    };
    let files = EtcFiles {
        hosts: write("hosts", spec.hosts_contents())?,
        resolv_conf: write("resolv.conf", spec.resolv_conf_contents())?,
        hostname: write("hostname", spec.hostname_file_contents())?,
    };
    Ok((dir, files))
}

/// Kills and reaps the sandbox if setup fails after the clone.
struct Reaper(Option<Pid>);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
    }
}

fn monitor(report: BorrowedFd<'_>) -> Result<Outcome> {
    let spec = read_spec()?;
    spec.validate()?;
    let rootless = !Uid::effective().is_root();
    let namespaced = spec.isolation.is_namespaced();
    // Without a user namespace there is nothing to map: ids are the host's.
    let mapping = (rootless && namespaced).then(IdMapping::for_caller);

    let signals = signal_set();
    signals.thread_block().step(|| "blocking signals".into())?;
    let sigfd = SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .step(|| "creating a signalfd".into())?;

    // Without isolation nothing is mounted over the root's own /etc files, and a temporary
    // directory made in the live root would show up in its diff.
    let (etc_dir, etc) = if spec.isolation == crate::isolation::Isolation::None {
        (None, EtcFiles::default())
    } else {
        let (dir, files) = write_etc_files(&spec)?;
        (Some(dir), files)
    };
    let filters = Filters::compile()?;
    let cgroup = Cgroup::create(&spec.limits, &format!("kiln-{}", getpid()))?;
    let pty = if spec.tty { Some(Pty::open()?) } else { None };
    let (sync_r, sync_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).step(|| "pipe".into())?;
    let (msg_r, msg_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).step(|| "pipe".into())?;

    let ctx = Context {
        spec: &spec,
        etc: &etc,
        sync: sync_r.as_raw_fd(),
        messages: msg_w.as_raw_fd(),
        console: pty.as_ref().map(|p| p.slave_path.as_path()),
        tty_slave: pty.as_ref().map(|p| p.slave.as_raw_fd()),
        rootless,
        allows_setgroups: mapping.as_ref().is_none_or(IdMapping::allows_setgroups)
            && (namespaced || !rootless),
        filters: &filters,
    };
    let mut stack = vec![0u8; STACK_SIZE];
    let flags = if namespaced {
        namespaces::clone_flags(&spec, rootless)
    } else {
        nix::sched::CloneFlags::empty()
    };
    // SAFETY: this process is single-threaded (a fresh exec of the kiln binary that started no
    // threads), so the child may run arbitrary code; it never returns into our stack frames.
    let pid = unsafe {
        clone(
            Box::new(|| container::main(&ctx)),
            &mut stack,
            flags,
            Some(libc::SIGCHLD),
        )
    }
    .map_err(|e| clone_error(e, rootless))?;
    let mut reaper = Reaper(Some(pid));
    drop(sync_r);
    drop(msg_w);
    let (master, slave) = match pty {
        Some(p) => (Some(p.master), Some(p.slave)),
        None => (None, None),
    };
    drop(slave);

    if let Some(m) = &mapping {
        m.apply(pid)?;
    }
    if let Some(cg) = &cgroup {
        cg.add(pid)?;
    }
    write(&sync_w, b"g").step(|| "starting the sandbox".into())?;
    drop(sync_w);

    let mut run = Running {
        pid,
        spec: &spec,
        etc_dir,
        sigfd,
        messages: Some(File::from(msg_r)),
        pending: Vec::new(),
        created: Vec::new(),
        failure: None,
        init_status: None,
        status: None,
        deadline: None,
        caller_gone: false,
        master,
        stdin_open: spec.tty && spec.stdin,
        _raw: if spec.tty { RawMode::enter() } else { None },
    };
    run.event_loop(report);
    reaper.0 = None;
    if !namespaced {
        // No PID namespace takes the command's leftovers with it: its process group goes now
        // (the sandbox started a session of its own, so the group is its alone).
        let _ = kill(Pid::from_raw(-pid.as_raw()), Signal::SIGKILL);
    }
    run.finish();

    if let Some(f) = run.failure {
        return Err(f.into());
    }
    let status = match (run.init_status, run.status) {
        (Some(s), _) | (None, Some(s)) => s,
        (None, None) => return Err(Error::Helper("lost track of the sandbox process".into())),
    };
    let oom_killed = cgroup.as_ref().is_some_and(Cgroup::oom_killed);
    Ok(Outcome {
        status,
        oom_killed,
        created_mountpoints: run.created,
    })
}

fn clone_error(e: nix::Error, rootless: bool) -> Error {
    let hint = if rootless && e == nix::Error::EPERM {
        " (unprivileged user namespaces may be disabled: see sysctl kernel.unprivileged_userns_clone \
         or user.max_user_namespaces)"
    } else {
        ""
    };
    Error::setup("creating namespaces", format!("{}{hint}", e.desc()))
}

/// The state of a started sandbox, as the helper sees it.
struct Running<'a> {
    pid: Pid,
    spec: &'a Spec,
    /// The generated `/etc` files, removed as soon as the sandbox has bound them (the mounts
    /// keep them alive), so not even a killed helper leaves them behind.
    etc_dir: Option<tempfile::TempDir>,
    sigfd: SignalFd,
    messages: Option<File>,
    pending: Vec<u8>,
    created: Vec<PathBuf>,
    failure: Option<Failure>,
    init_status: Option<ExitStatus>,
    status: Option<ExitStatus>,
    /// When forwarded interrupts give way to SIGKILL.
    deadline: Option<Instant>,
    caller_gone: bool,
    master: Option<OwnedFd>,
    stdin_open: bool,
    _raw: Option<RawMode>,
}

impl Running<'_> {
    fn event_loop(&mut self, report: BorrowedFd<'_>) {
        while self.status.is_none() {
            let timeout = match self.deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
                }
                None => PollTimeout::NONE,
            };
            let stdin = tty::stdin_fd();
            let mut fds = vec![PollFd::new(self.sigfd.as_fd(), PollFlags::POLLIN)];
            // Polling the write end of the report pipe with no events still reports POLLERR
            // once the caller closes its end: the caller is gone.
            let report_idx = (!self.caller_gone).then(|| {
                fds.push(PollFd::new(report, PollFlags::empty()));
                fds.len() - 1
            });
            let msg_idx = self.messages.as_ref().map(|m| {
                fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
                fds.len() - 1
            });
            let master_idx = self.master.as_ref().map(|m| {
                fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
                fds.len() - 1
            });
            let stdin_idx = (self.stdin_open && self.master.is_some()).then(|| {
                fds.push(PollFd::new(stdin, PollFlags::POLLIN));
                fds.len() - 1
            });
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(_) => {
                    // Polling itself broke: stop the sandbox rather than spin.
                    let _ = kill(self.pid, Signal::SIGKILL);
                    self.wait_blocking();
                    return;
                }
            }
            let ready = |i: Option<usize>| {
                i.and_then(|i| fds.get(i))
                    .and_then(PollFd::revents)
                    .is_some_and(|r| !r.is_empty())
            };
            let (sig_ready, report_ready, msg_ready, master_ready, stdin_ready) = (
                ready(Some(0)),
                ready(report_idx),
                ready(msg_idx),
                ready(master_idx),
                ready(stdin_idx),
            );
            drop(fds);

            if report_ready {
                self.caller_gone = true;
                let _ = kill(self.pid, Signal::SIGKILL);
            }
            if msg_ready {
                self.read_messages();
            }
            if master_ready {
                self.pump_output();
            }
            if stdin_ready {
                self.pump_input();
            }
            if sig_ready {
                self.handle_signals();
            }
            if let Some(d) = self.deadline
                && Instant::now() >= d
            {
                let _ = kill(self.pid, Signal::SIGKILL);
                self.deadline = None;
            }
        }
    }

    fn handle_signals(&mut self) {
        while let Ok(Some(info)) = self.sigfd.read_signal() {
            let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            match sig {
                Signal::SIGCHLD => self.reap(),
                Signal::SIGWINCH => {
                    if let Some(m) = &self.master {
                        tty::follow_window_size(m.as_fd());
                    }
                }
                _ => {
                    // A second interrupt while the first one's grace period runs: stop now.
                    let repeat =
                        self.deadline.is_some() && matches!(sig, Signal::SIGINT | Signal::SIGTERM);
                    let _ = kill(self.pid, if repeat { Signal::SIGKILL } else { sig });
                    if self.deadline.is_none() {
                        self.deadline = Some(Instant::now() + self.spec.stop_timeout);
                    }
                }
            }
        }
    }

    fn reap(&mut self) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(ws) => {
                    if ws.pid() == Some(self.pid)
                        && let Some(s) = ExitStatus::from_wait(ws)
                    {
                        self.status = Some(s);
                    }
                }
            }
        }
    }

    fn wait_blocking(&mut self) {
        while self.status.is_none() {
            match waitpid(self.pid, None) {
                Ok(ws) => self.status = ExitStatus::from_wait(ws).or(self.status),
                Err(nix::Error::EINTR) => {}
                Err(_) => return,
            }
        }
    }

    /// Reads what is available; at end-of-file (every writer exec'd or exited) stops polling.
    fn read_messages(&mut self) {
        let Some(m) = self.messages.as_mut() else {
            return;
        };
        let mut buf = [0u8; 8192];
        match m.read(&mut buf) {
            Ok(0) | Err(_) => self.messages = None,
            Ok(n) => self.pending.extend_from_slice(&buf[..n]),
        }
        self.parse_messages();
    }

    fn parse_messages(&mut self) {
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            match serde_json::from_slice::<ChildMessage>(&line) {
                // Only absolute, `..`-free paths are taken: the caller deletes them from the
                // rootfs, so nothing that names a place outside it may come through.
                Ok(ChildMessage::Created(paths)) => {
                    self.etc_dir = None;
                    self.created.extend(paths.into_iter().filter(|p| {
                        p.is_absolute()
                            && p.components().all(|c| c != std::path::Component::ParentDir)
                    }))
                }
                // The first failure is the cause; later ones are consequences.
                Ok(ChildMessage::Failed(f)) => {
                    self.failure.get_or_insert(f);
                }
                Ok(ChildMessage::Exited(s)) => self.init_status = Some(s),
                Err(_) => {}
            }
        }
    }

    fn pump_output(&mut self) {
        let Some(master) = &self.master else { return };
        let mut buf = [0u8; 16384];
        loop {
            match read(master, &mut buf) {
                Ok(0) => {
                    self.master = None;
                    return;
                }
                Ok(n) => write_all_stdout(&buf[..n]),
                Err(nix::Error::EAGAIN) => return,
                Err(nix::Error::EINTR) => {}
                // EIO: every process holding the terminal is gone.
                Err(_) => {
                    self.master = None;
                    return;
                }
            }
        }
    }

    fn pump_input(&mut self) {
        let Some(master) = &self.master else { return };
        let mut buf = [0u8; 4096];
        match read(tty::stdin_fd(), &mut buf) {
            Ok(0) | Err(_) => {
                // End of input: send the terminal's end-of-file character, as typing Ctrl-D would.
                let _ = write(master, &[4u8]);
                self.stdin_open = false;
            }
            Ok(n) => {
                let mut rest = &buf[..n];
                while !rest.is_empty() {
                    match write(master, rest) {
                        Ok(w) => rest = &rest[w..],
                        Err(nix::Error::EINTR) => {}
                        Err(nix::Error::EAGAIN) => {
                            let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLOUT)];
                            let _ = poll(&mut fds, PollTimeout::from(100u16));
                        }
                        Err(_) => break,
                    }
                }
            }
        }
    }

    /// After the sandbox's PID 1 is reaped: collect the last messages and terminal output.
    fn finish(&mut self) {
        if let Some(mut m) = self.messages.take() {
            // Processes of the namespace are being killed by the kernel; their copies of the
            // pipe close as they die, so this reaches end-of-file promptly.
            let mut rest = Vec::new();
            let _ = m.read_to_end(&mut rest);
            self.pending.extend_from_slice(&rest);
            self.parse_messages();
        }
        self.pump_output();
    }
}

fn write_all_stdout(mut data: &[u8]) {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    while !data.is_empty() {
        match out.write(data) {
            Ok(0) => return,
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
    let _ = out.flush();
}
