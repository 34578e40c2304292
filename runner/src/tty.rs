//! `Spec::tty`: the process gets a pseudo-terminal of its own (its controlling terminal, also
//! bound on `/dev/console`), and the helper relays between it and the caller's stdin/stdout,
//! with the caller's terminal in raw mode meanwhile and window size changes passed on.

use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::pty::{Winsize, openpty};
use nix::sys::termios::{SetArg, Termios, cfmakeraw, tcgetattr, tcsetattr};
use nix::unistd::{dup2_stderr, dup2_stdin, dup2_stdout, getpid, getsid, isatty, setsid, ttyname};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use crate::error::{Result, SetupContext};

pub(crate) struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
    pub slave_path: PathBuf,
}

impl Pty {
    /// Opens a pty pair sized like the caller's terminal (when stdin is one).
    pub(crate) fn open() -> Result<Pty> {
        let size = caller_window_size();
        let pair = openpty(size.as_ref(), None).step(|| "opening a pseudo-terminal".into())?;
        for fd in [&pair.master, &pair.slave] {
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
                .step(|| "setting close-on-exec on the pseudo-terminal".into())?;
        }
        // The relay loop polls the master and must never block on it.
        fcntl(&pair.master, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
            .step(|| "making the pseudo-terminal non-blocking".into())?;
        let slave_path = ttyname(&pair.slave).step(|| "naming the pseudo-terminal".into())?;
        Ok(Pty {
            master: pair.master,
            slave: pair.slave,
            slave_path,
        })
    }
}

/// The size of the caller's terminal: stdin's, or stdout's when input is not connected.
fn caller_window_size() -> Option<Winsize> {
    window_size(stdin_fd()).or_else(|| window_size(stdout_fd()))
}

/// Gives the pty the caller's current window size (after SIGWINCH).
pub(crate) fn follow_window_size(master: BorrowedFd<'_>) {
    if let Some(size) = caller_window_size() {
        // SAFETY: TIOCSWINSZ reads a winsize that outlives the call.
        unsafe {
            libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size);
        }
    }
}

/// The process's stdin.
pub(crate) fn stdin_fd() -> BorrowedFd<'static> {
    // SAFETY: fd 0 is never closed by the runner; at worst it is not open and calls on it fail
    // with EBADF, which every user handles.
    unsafe { BorrowedFd::borrow_raw(libc::STDIN_FILENO) }
}

fn stdout_fd() -> BorrowedFd<'static> {
    // SAFETY: as for stdin: fd 1 is never closed by the runner.
    unsafe { BorrowedFd::borrow_raw(libc::STDOUT_FILENO) }
}

fn window_size(fd: BorrowedFd<'_>) -> Option<Winsize> {
    if !isatty(fd).unwrap_or(false) {
        return None;
    }
    let mut size = Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize into memory we own.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    (rc == 0).then_some(size)
}

/// In the sandboxed process: a new session whose controlling terminal is the pty, on fds 0-2.
pub(crate) fn attach(slave: BorrowedFd<'_>) -> Result<()> {
    // The sandbox's first process already leads a session; a command forked under an init
    // starts its own, so the terminal becomes the controlling terminal of the command's session.
    if getsid(None).step(|| "getsid".into())? != getpid() {
        setsid().step(|| "starting a session".into())?;
    }
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal another session's tty).
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
        return Err(crate::error::Error::setup(
            "setting the controlling terminal",
            nix::Error::last().desc(),
        ));
    }
    dup2_stdin(slave).step(|| "connecting the terminal to stdin".into())?;
    dup2_stdout(slave).step(|| "connecting the terminal to stdout".into())?;
    dup2_stderr(slave).step(|| "connecting the terminal to stderr".into())
}

/// The caller's terminal in raw mode for as long as this lives, so keys (Ctrl-C included) reach
/// the sandbox's terminal unchanged.
pub(crate) struct RawMode {
    fd: BorrowedFd<'static>,
    saved: Termios,
}

impl RawMode {
    /// `None` when stdin is not a terminal.
    pub(crate) fn enter() -> Option<RawMode> {
        let fd = stdin_fd();
        let saved = tcgetattr(fd).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(fd, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(self.fd, SetArg::TCSANOW, &self.saved);
    }
}
