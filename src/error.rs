//! The errors the CLI reports, each rendered for a person and mapped to an exit code
//! (0 success, 1 the build or command failed, 2 usage errors).

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A Dockerfile was refused; rendered with file:line:col, the source line and a hint.
    #[error("{}", .0.error.message)]
    Dockerfile(Box<DockerfileError>),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The sandbox could not run the command (exit status as `docker run`: 125, 126 or 127).
    #[error(transparent)]
    Sandbox(#[from] kiln_runner::Error),
    /// The image store refused or failed an operation (the message names the blob, image or path).
    #[error(transparent)]
    Store(kiln_oci::Error),
    /// Something kiln does not do (yet, or on this machine): the message says what and why.
    #[error("{message}")]
    Unsupported {
        message: String,
        hint: Option<String>,
    },
    /// Reading or writing a layer's file tree failed (the message names the path).
    #[error(transparent)]
    Snapshot(#[from] kiln_snapshotter::Error),
    /// The build failed: a step, the Dockerfile (rendered with file:line:col) or the context.
    #[error(transparent)]
    Build(#[from] kiln_builder::Error),
    /// A container operation was refused or failed (no such container, a name in use, …).
    #[error("{message}")]
    Container {
        message: String,
        hint: Option<String>,
    },
    /// Bad command-line input that clap could not catch (a malformed `--build-arg`, …).
    #[error("{message}")]
    Usage {
        message: String,
        hint: Option<String>,
    },
}

/// A grammar error with the file it was found in, so it can show the offending line.
#[derive(Debug)]
pub struct DockerfileError {
    pub file: String,
    pub source_text: String,
    pub error: kiln_grammar::Error,
}

pub type CliResult<T> = Result<T, CliError>;

impl CliError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CliError::Io {
            path: path.into(),
            source,
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        CliError::Usage {
            message: message.into(),
            hint: None,
        }
    }

    pub fn render(&self) -> String {
        match self {
            CliError::Dockerfile(d) => {
                format!("error: {}", d.error.render(&d.file, &d.source_text))
            }
            CliError::Usage {
                message,
                hint: Some(hint),
            }
            | CliError::Unsupported {
                message,
                hint: Some(hint),
            }
            | CliError::Container {
                message,
                hint: Some(hint),
            } => format!("error: {message}\nhint: {hint}"),
            other => match other.registry_hint() {
                Some(hint) => format!("error: {other}\nhint: {hint}"),
                None => format!("error: {other}"),
            },
        }
    }

    /// What to do about a registry's refusal (log in, allow plain HTTP, choose a platform).
    fn registry_hint(&self) -> Option<String> {
        match self {
            CliError::Store(kiln_oci::Error::Registry(e))
            | CliError::Build(kiln_builder::Error::Store(kiln_oci::Error::Registry(e))) => e.hint(),
            _ => None,
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Usage { .. } | CliError::Unsupported { .. } => ExitCode::from(2),
            // The solver refusing a flag (its location names it, `--pull`) or a -t name is a
            // usage error; everything else it reports is the build failing.
            CliError::Build(kiln_builder::Error::Unsupported { location, .. })
                if location.starts_with("--") =>
            {
                ExitCode::from(2)
            }
            CliError::Build(kiln_builder::Error::InvalidTag { .. }) => ExitCode::from(2),
            CliError::Sandbox(e) => ExitCode::from(e.exit_code()),
            _ => ExitCode::from(1),
        }
    }
}
