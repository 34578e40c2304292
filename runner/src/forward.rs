//! Passing the caller's SIGINT/SIGTERM/SIGHUP/SIGQUIT on to a running sandbox.
//!
//! The helper shares the caller's process group, so a Ctrl-C typed at the terminal already
//! reaches it; only signals sent to the caller alone (`kill PID`) need forwarding. Those carry
//! `si_code <= 0` (SI_USER, SI_QUEUE, SI_TKILL), while terminal-generated ones carry SI_KERNEL:
//! forwarding only the former means one interrupt is never counted twice.

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use std::sync::atomic::{AtomicI32, Ordering};

use crate::error::{Error, Result};

const FORWARDED: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// The helper to forward to; 0 when none.
static TARGET: AtomicI32 = AtomicI32::new(0);

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
    let pid = TARGET.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Installed forwarding; dropping it restores the previous handlers.
#[derive(Debug)]
pub struct SignalForwarding {
    previous: Vec<(Signal, SigAction)>,
}

impl SignalForwarding {
    pub(crate) fn install(pid: i32) -> Result<SignalForwarding> {
        TARGET.store(pid, Ordering::Relaxed);
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
}

impl Drop for SignalForwarding {
    fn drop(&mut self) {
        for (sig, old) in self.previous.drain(..) {
            // SAFETY: restores the disposition that was in place before.
            let _ = unsafe { sigaction(sig, &old) };
        }
        TARGET.store(0, Ordering::Relaxed);
    }
}
