//! The small init that `Spec::init` puts in front of the command, as PID 1 of the sandbox: it
//! reaps every orphan (so zombies never pile up), forwards the signals it gets to the command,
//! and ends when the command ends, reporting how it ended.

use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::fs::File;

use crate::protocol::{ChildMessage, ExitStatus};

/// Signals passed on to the command.
const FORWARDED: [Signal; 8] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCONT,
];

/// Blocks what the init will read through its signalfd. Called before forking the command, so
/// nothing arrives before the signalfd exists; the command unblocks them before `execve`.
pub(crate) fn block_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    for s in FORWARDED {
        set.add(s);
    }
    let _ = set.thread_block();
    set
}

/// Runs the init loop until `command` exits; never returns.
pub(crate) fn run(command: Pid, signals: SigSet, messages: &mut File) -> ! {
    let status = supervise(command, signals);
    ChildMessage::Exited(status).send(messages);
    // The init itself cannot die of a signal inside its namespace, so a signal death of the
    // command is told through the message above and mirrored in the exit code.
    // SAFETY: _exit ends the process without running anything else.
    unsafe { libc::_exit(status.code().clamp(0, 255)) }
}

fn supervise(command: Pid, signals: SigSet) -> ExitStatus {
    let Ok(sfd) = SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC) else {
        // Without a signalfd, still reap: block on waitpid and report.
        return wait_blocking(command);
    };
    loop {
        let info = match sfd.read_signal() {
            Ok(Some(info)) => info,
            Ok(None) => continue,
            Err(nix::Error::EINTR) => continue,
            Err(_) => return wait_blocking(command),
        };
        let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
            continue;
        };
        if sig == Signal::SIGCHLD {
            if let Some(status) = reap(command) {
                return status;
            }
        } else {
            let _ = kill(command, sig);
        }
    }
}

/// Reaps every exited child; returns the command's status once it is among them.
fn reap(command: Pid) -> Option<ExitStatus> {
    let mut result = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return result,
            Ok(status) => {
                if status.pid() == Some(command)
                    && let Some(s) = ExitStatus::from_wait(status)
                {
                    result = Some(s);
                }
            }
        }
    }
}

fn wait_blocking(command: Pid) -> ExitStatus {
    loop {
        match waitpid(None, None) {
            Ok(status) if status.pid() == Some(command) => {
                if let Some(s) = ExitStatus::from_wait(status) {
                    return s;
                }
            }
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(_) => return ExitStatus::Exited(255),
        }
    }
}
