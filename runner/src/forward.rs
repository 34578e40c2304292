//! Passing the caller's SIGINT/SIGTERM/SIGHUP/SIGQUIT on to a running sandbox.
//!
//! The helper shares the caller's process group, so a Ctrl-C typed at the terminal already
//! reaches it; only signals sent to the caller alone (`kill PID`) need forwarding. Those carry
//! `si_code <= 0` (SI_USER, SI_QUEUE, SI_TKILL), while terminal-generated ones carry SI_KERNEL:
//! forwarding only the former means one interrupt is never counted twice.
//!
//! Forwarding is installed before the helper is started, so no window exists in which a
//! terminal's Ctrl-C would kill the caller with the default disposition while the sandbox lives
//! on. A signal sent to the caller before the helper's pid is known is held and delivered once
//! [`SignalForwarding::attach`] names it.

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use std::sync::atomic::{AtomicI32, Ordering};

use crate::error::{Error, Result};
use crate::launch::Sandbox;

const FORWARDED: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// The helper to forward to; 0 when none.
static TARGET: AtomicI32 = AtomicI32::new(0);
/// A signal that arrived before the helper was known; 0 when none.
static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler; null is checked anyway.
    let code = if info.is_null() {
        0
    } else {
        unsafe { (*info).si_code }
    };
    if code > 0 {
        return;
    }
    let pid = TARGET.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe.
        unsafe {
            libc::kill(pid, sig);
        }
    } else {
        PENDING.store(sig, Ordering::SeqCst);
    }
}

/// Installed forwarding; dropping it restores the previous handlers.
#[derive(Debug)]
pub struct SignalForwarding {
    previous: Vec<(Signal, SigAction)>,
}

impl SignalForwarding {
    /// Takes over SIGINT, SIGTERM, SIGHUP and SIGQUIT for this process until the guard is
    /// dropped. Process-wide: meant for a command-line front end that runs one sandbox at a
    /// time. Install it before spawning, then [`attach`](Self::attach) the sandbox.
    pub fn install() -> Result<SignalForwarding> {
        TARGET.store(0, Ordering::SeqCst);
        PENDING.store(0, Ordering::SeqCst);
        let action = SigAction::new(
            SigHandler::SigAction(forward),
            SaFlags::SA_SIGINFO | SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        let mut guard = SignalForwarding {
            previous: Vec::new(),
        };
        for sig in FORWARDED {
            // SAFETY: the handler only reads an atomic and calls kill(2), both
            // async-signal-safe.
            let old = unsafe { sigaction(sig, &action) }
                .map_err(|e| Error::io("installing signal forwarding", e.into()))?;
            guard.previous.push((sig, old));
        }
        Ok(guard)
    }

    /// Forwards to `sandbox` from now on, delivering a signal that arrived before it started.
    pub fn attach(&self, sandbox: &Sandbox) {
        let pid = sandbox.id() as i32;
        TARGET.store(pid, Ordering::SeqCst);
        // A signal the handler parked between its TARGET check and now is taken here; one
        // parked after the store above cannot happen, since the handler then sees the pid.
        let held = PENDING.swap(0, Ordering::SeqCst);
        if held != 0 && pid > 0 {
            // SAFETY: plain kill(2) of the helper this process started.
            unsafe {
                libc::kill(pid, held);
            }
        }
    }
}

impl Drop for SignalForwarding {
    fn drop(&mut self) {
        for (sig, old) in self.previous.drain(..) {
            // SAFETY: restores the disposition that was in place before.
            let _ = unsafe { sigaction(sig, &old) };
        }
        TARGET.store(0, Ordering::SeqCst);
        PENDING.store(0, Ordering::SeqCst);
    }
}
