//! Questions asked on the terminal, as `docker login` asks them: the prompt on stdout, the
//! answer a line read from stdin; a password read with the terminal's echo turned off.

use crate::error::{CliError, CliResult};
use nix::libc;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use nix::sys::termios::{LocalFlags, SetArg, Termios, tcgetattr, tcsetattr};
use std::io::BufRead;
use std::os::fd::AsFd;
use std::sync::OnceLock;

/// Prints `prompt` and reads a line from stdin, without its line ending. An empty string at
/// end of input.
pub fn ask(prompt: &str) -> CliResult<String> {
    super::print_stdout(prompt)?;
    read_line()
}

/// As [`ask`], with the terminal not echoing what is typed; a newline is printed after the
/// answer, since the one typed was not shown.
pub fn ask_hidden(prompt: &str) -> CliResult<String> {
    let answer = {
        let _echo_off = EchoOff::new()?;
        // The prompt comes after the echo is off, so whoever sees it can type safely.
        super::print_stdout(prompt)?;
        read_line()
    };
    super::print_stdout("\n")?;
    answer
}

fn read_line() -> CliResult<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::io("<stdin>", e))?;
    let line = line.strip_suffix('\n').unwrap_or(&line);
    Ok(line.strip_suffix('\r').unwrap_or(line).to_string())
}

/// The signals that would end kiln while the echo is off, leaving the user's shell without it.
const FATAL_SIGNALS: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// The terminal settings to restore from a signal handler, which can take no lock. Set once:
/// a process asks for at most one password, on one terminal.
static SAVED: OnceLock<libc::termios> = OnceLock::new();

/// stdin's terminal with its echo off, for as long as this lives: dropping it (on return,
/// error or unwinding) restores the settings, and so do the handlers it installs for
/// [`FATAL_SIGNALS`] before the signal ends the process as it would have.
struct EchoOff {
    saved: Termios,
    previous: Vec<(Signal, SigAction)>,
}

impl EchoOff {
    fn new() -> CliResult<EchoOff> {
        let stdin = std::io::stdin();
        let saved = tcgetattr(stdin.as_fd()).map_err(|e| CliError::io("<stdin>", e.into()))?;
        // Already set only if this process asked before: login asks for one password.
        let _ = SAVED.set(saved.clone().into());
        let mut guard = EchoOff {
            saved: saved.clone(),
            previous: Vec::new(),
        };
        let action = SigAction::new(
            SigHandler::Handler(restore_and_die),
            SaFlags::empty(),
            SigSet::empty(),
        );
        for signal in FATAL_SIGNALS {
            // SAFETY: the handler only calls async-signal-safe functions (tcsetattr, write,
            // signal, raise) and reads `SAVED`, which was set above and is never written again.
            let previous = unsafe { sigaction(signal, &action) }
                .map_err(|e| CliError::io("<signal handler>", e.into()))?;
            guard.previous.push((signal, previous));
            if matches!(previous.handler(), SigHandler::SigIgn) {
                // An ignored signal (`nohup`, a shell's `trap '' INT`) ends nothing: it stays
                // ignored rather than becoming fatal here.
                // SAFETY: puts back the disposition that was there.
                let _ = unsafe { sigaction(signal, &previous) };
            }
        }
        let mut quiet = saved;
        quiet.local_flags.remove(LocalFlags::ECHO);
        // TCSANOW, not TCSAFLUSH: what was typed ahead stays to be read.
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &quiet)
            .map_err(|e| CliError::io("<stdin>", e.into()))?;
        Ok(guard)
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // Nothing better to do if the terminal went away meanwhile.
        let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
        for (signal, previous) in self.previous.drain(..).rev() {
            // SAFETY: puts back the handler that was there before `new`.
            let _ = unsafe { sigaction(signal, &previous) };
        }
    }
}

/// Restores the terminal, ends the hidden line as docker does, and lets the signal take its
/// default course (the process ends as killed by it, as the user's shell expects).
extern "C" fn restore_and_die(signal: libc::c_int) {
    // SAFETY: all four calls are async-signal-safe; `saved` is a complete termios that
    // nothing writes after it was set.
    unsafe {
        if let Some(saved) = SAVED.get() {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved);
            libc::write(libc::STDOUT_FILENO, b"\n".as_ptr().cast(), 1);
        }
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}
