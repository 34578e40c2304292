//! What the three processes of a run tell each other:
//! - the caller writes the [`Spec`](crate::Spec) as JSON to the helper (fd 3) and closes it;
//! - the process inside the sandbox sends [`ChildMessage`]s, one JSON document per line, over a
//!   close-on-exec pipe (so a successful `execve` is seen as end-of-file);
//! - the helper writes one [`Report`] as JSON to the caller (fd 4) just before it exits.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use crate::error::Error;
use crate::user::UserError;

/// `argv[1]` that turns the kiln binary into the sandbox helper.
pub const HELPER_ARG: &str = "__kiln-sandbox-init";
/// The fd the helper reads the spec from.
pub(crate) const SPEC_FD: i32 = 3;
/// The fd the helper writes its report to; the caller holding the read end is the helper's
/// lifeline: when it closes, the helper stops the sandbox.
pub(crate) const REPORT_FD: i32 = 4;

/// How the sandboxed process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

impl ExitStatus {
    /// The shell convention: the exit code, or 128 + the signal number.
    pub fn code(&self) -> i32 {
        match *self {
            ExitStatus::Exited(code) => code,
            ExitStatus::Signaled(sig) => 128 + sig,
        }
    }

    pub fn success(&self) -> bool {
        *self == ExitStatus::Exited(0)
    }

    pub(crate) fn from_wait(status: nix::sys::wait::WaitStatus) -> Option<Self> {
        use nix::sys::wait::WaitStatus as W;
        match status {
            W::Exited(_, code) => Some(ExitStatus::Exited(code)),
            W::Signaled(_, sig, _) => Some(ExitStatus::Signaled(sig as i32)),
            _ => None,
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            ExitStatus::Exited(code) => write!(f, "exit code {code}"),
            ExitStatus::Signaled(sig) => {
                let name = nix::sys::signal::Signal::try_from(sig)
                    .map(|s| s.as_str())
                    .unwrap_or("an unknown signal");
                write!(f, "killed by {name} (exit code {})", 128 + sig)
            }
        }
    }
}

/// What a finished run reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub status: ExitStatus,
    /// The memory limit was hit and the kernel killed a process of the sandbox.
    pub oom_killed: bool,
    /// Paths (inside the rootfs, absolute, parents first) the runner had to create as mount
    /// points: the caller removes them or leaves them out of a layer diff.
    #[serde(with = "paths_bytes")]
    pub created_mountpoints: Vec<PathBuf>,
}

/// A failure on the far side of a process boundary, rebuilt into an [`Error`] by the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Failure {
    InvalidSpec(String),
    User(UserError),
    Limit {
        limit: String,
        reason: String,
    },
    Exec {
        program: String,
        reason: String,
        not_found: bool,
    },
    Setup {
        step: String,
        reason: String,
    },
    Other(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidSpec(m) => Failure::InvalidSpec(m),
            Error::User(u) => Failure::User(u),
            Error::Limit { limit, reason } => Failure::Limit {
                limit: limit.to_string(),
                reason,
            },
            Error::Exec {
                program,
                reason,
                not_found,
            } => Failure::Exec {
                program,
                reason,
                not_found,
            },
            Error::Setup { step, reason } => Failure::Setup { step, reason },
            other => Failure::Other(other.to_string()),
        }
    }
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Self {
        match f {
            Failure::InvalidSpec(m) => Error::InvalidSpec(m),
            Failure::User(u) => Error::User(u),
            Failure::Limit { limit, reason } => Error::Limit {
                limit: crate::cgroups::limit_name(&limit),
                reason,
            },
            Failure::Exec {
                program,
                reason,
                not_found,
            } => Error::Exec {
                program,
                reason,
                not_found,
            },
            Failure::Setup { step, reason } => Error::Setup { step, reason },
            Failure::Other(m) => Error::Helper(m),
        }
    }
}

/// The helper's last word to the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Report {
    Finished(Outcome),
    Failed(Failure),
}

/// From the sandboxed process (or its init) to the helper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ChildMessage {
    /// Mount points created in the rootfs (absolute container paths).
    Created(#[serde(with = "paths_bytes")] Vec<PathBuf>),
    /// Setup or exec failed; the process exits right after.
    Failed(Failure),
    /// With an init in front: how the command ended (the init itself cannot die of a signal).
    Exited(ExitStatus),
}

impl ChildMessage {
    /// One line, written with a single `write` so messages of two processes never interleave
    /// (pipe writes up to PIPE_BUF are atomic; longer ones only come from the single writer
    /// that exists during setup).
    pub(crate) fn send(&self, out: &mut impl Write) {
        if let Ok(mut line) = serde_json::to_vec(self) {
            line.push(b'\n');
            // Nothing sensible is left to do if the helper is gone.
            let _ = out.write_all(&line);
        }
    }
}

mod paths_bytes {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(paths: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
        let raw: Vec<&[u8]> = paths.iter().map(|p| p.as_os_str().as_bytes()).collect();
        raw.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
        let raw = Vec::<Vec<u8>>::deserialize(d)?;
        Ok(raw
            .into_iter()
            .map(|b| PathBuf::from(std::ffi::OsString::from_vec(b)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_codes_follow_the_shell() {
        assert_eq!(ExitStatus::Exited(3).code(), 3);
        assert_eq!(ExitStatus::Signaled(9).code(), 137);
        assert!(ExitStatus::Exited(0).success());
        assert_eq!(
            ExitStatus::Signaled(15).to_string(),
            "killed by SIGTERM (exit code 143)"
        );
    }

    #[test]
    fn messages_round_trip_one_per_line() {
        let msgs = vec![
            ChildMessage::Created(vec!["/etc/hosts".into(), "/proc".into()]),
            ChildMessage::Failed(Failure::Exec {
                program: "nope".into(),
                reason: "executable file not found in $PATH".into(),
                not_found: true,
            }),
            ChildMessage::Exited(ExitStatus::Signaled(2)),
        ];
        let mut buf = Vec::new();
        for m in &msgs {
            m.send(&mut buf);
        }
        let back: Vec<ChildMessage> = buf
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).expect("message"))
            .collect();
        assert_eq!(back, msgs);
    }

    #[test]
    fn failures_map_back_to_errors() {
        let e: Error = Failure::Limit {
            limit: "pids".into(),
            reason: "no controller".into(),
        }
        .into();
        assert_eq!(e.to_string(), "cannot apply the pids limit: no controller");
        let e: Error = Failure::Exec {
            program: "x".into(),
            reason: "not found".into(),
            not_found: true,
        }
        .into();
        assert_eq!(e.exit_code(), 127);
    }
}
