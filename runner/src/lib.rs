//! `kiln-runner`: runs one process tree in an isolated sandbox over a root filesystem it is given,
//! and reports how it ended. Knows nothing of images or layers.
//!
//! ```text
//! caller (any thread) ──spawn──▶ helper: /proc/self/exe __kiln-sandbox-init   (single-threaded)
//!                                   │ clone(NEWNS|NEWPID|NEWUTS|NEWIPC[|NEWNET][|NEWUSER])
//!                                   ▼
//!                                sandbox PID 1: mounts, pivot_root, user, caps, seccomp, execve
//! ```
//!
//! The binary that uses this crate must call [`helper_main_if_requested`] first thing in `main`:
//! the sandbox is started by re-executing that binary, so that the fork into new namespaces
//! happens in a fresh single-threaded process, never in a thread pool.

mod capabilities;
mod cgroups;
mod container;
mod error;
mod fds;
mod forward;
mod helper;
mod init;
mod isolation;
mod launch;
mod mounts;
mod namespaces;
mod network;
mod process;
mod protocol;
mod seccomp;
mod spec;
mod tty;
pub mod user;

pub use capabilities::{DEFAULT_CAPABILITIES, default_mask as default_capability_mask};
pub use error::{Error, Result};
pub use forward::SignalForwarding;
pub use isolation::Isolation;
pub use launch::{
    Sandbox, Stdio, Streams, helper_main_if_requested, run, run_with_helper, spawn,
    spawn_with_helper,
};
pub use nix::sys::signal::Signal;
pub use protocol::{ExitStatus, HELPER_ARG, Outcome};
pub use seccomp::Filters as SeccompFilters;
pub use spec::{BindMount, DEFAULT_PATH, DEFAULT_STOP_TIMEOUT, Limits, Network, Spec, TmpfsMount};
