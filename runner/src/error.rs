//! The one error type of the runner. Errors raised inside the sandbox (after the fork) travel back
//! to the caller as a [`Failure`](crate::protocol::Failure) and are rebuilt here, so a caller sees
//! the same variants whichever process noticed the problem.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec was refused before anything was started.
    #[error("invalid sandbox spec: {0}")]
    InvalidSpec(String),

    /// `-u`/`USER` names a user or group the root filesystem does not define.
    #[error("{0}")]
    User(#[from] crate::user::UserError),

    /// A resource limit was asked for but this machine cannot enforce it.
    #[error("cannot apply the {limit} limit: {reason}")]
    Limit { limit: &'static str, reason: String },

    /// The command could not be started (not found, not executable, …).
    /// `docker run` exits 127 for a missing command and 126 for one that cannot be executed.
    #[error("exec {program:?}: {reason}")]
    Exec {
        program: String,
        reason: String,
        not_found: bool,
    },

    /// A step of the sandbox setup failed; `step` says which (e.g. "mount /proc").
    #[error("sandbox setup failed at {step}: {reason}")]
    Setup { step: String, reason: String },

    /// Starting or talking to the sandbox helper process failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// A file the runner needs could not be read or written.
    #[error("{path}: {source}")]
    Path {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Any other failure the helper reported (its message says what and where).
    #[error("{0}")]
    Helper(String),

    /// The helper process ended without reporting how the run went.
    #[error("the sandbox helper died unexpectedly ({0})")]
    HelperDied(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn setup(step: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Error::Setup {
            step: step.into(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn path(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Path {
            path: path.into(),
            source,
        }
    }

    /// The exit status `docker run` would give for this error: 127 when the command does not
    /// exist, 126 when it cannot be executed, 125 when the sandbox itself failed.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Exec {
                not_found: true, ..
            } => 127,
            Error::Exec { .. } => 126,
            _ => 125,
        }
    }
}

/// Shorthand for turning a `nix` error of one setup step into an [`Error::Setup`].
pub(crate) trait SetupContext<T> {
    fn step(self, step: impl FnOnce() -> String) -> Result<T>;
}

impl<T> SetupContext<T> for std::result::Result<T, nix::Error> {
    fn step(self, step: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::setup(step(), e.desc()))
    }
}

impl<T> SetupContext<T> for std::result::Result<T, std::io::Error> {
    fn step(self, step: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::setup(step(), e))
    }
}
