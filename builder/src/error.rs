//! The one error type of `kiln-builder`.

/// What went wrong while preparing or running a build.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `.dockerignore` pattern Docker would also refuse.
    #[error("{file}:{line}: invalid pattern {pattern:?}: {reason}")]
    IgnorePattern {
        file: String,
        line: usize,
        pattern: String,
        reason: String,
    },
    #[error(transparent)]
    Store(#[from] kiln_oci::Error),
    #[error(transparent)]
    Snapshot(#[from] kiln_snapshotter::Error),
    #[error("layer {digest}: {source}")]
    Layer {
        digest: String,
        source: std::io::Error,
    },
    #[error("{}: {source}", .path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("build context {} is not a directory", .0.display())]
    ContextNotDir(std::path::PathBuf),
    #[error("build context: a symlink loop at {}", .0.display())]
    ContextLoop(std::path::PathBuf),
    /// A context file changed while it was being hashed, so no consistent digest exists.
    #[error("{} changed while kiln was reading it; build again once it is stable", .0.display())]
    ContextFileChanged(std::path::PathBuf),
    /// A COPY/ADD source that does not exist where it was looked for.
    #[error("failed to compute cache key: {source_path:?} not found{hint}")]
    CopySourceNotFound { source_path: String, hint: String },
    /// A COPY/ADD source that climbs out of the build context with `..`.
    #[error("forbidden path outside the build context: {0}")]
    CopyOutsideContext(String),
    /// Several sources (or a wildcard) copied onto something that is not a directory.
    #[error(
        "When using {0} with more than one source file, the destination must be a directory and end with a /"
    )]
    CopyDestNotDir(&'static str),
    /// A COPY/ADD whose sources all came to nothing.
    #[error("no source files were specified")]
    CopyNoSources,
    /// A COPY/ADD that cannot be carried out as written (bad --chown/--chmod, a pattern Go would
    /// refuse, an unsupported source, a directory where a file must go).
    #[error("{instruction}: {reason}")]
    CopyInvalid {
        instruction: &'static str,
        reason: String,
    },
    /// The Dockerfile was refused (syntax, instruction, expansion or plan), rendered with its
    /// file name, line and column.
    #[error("{0}")]
    Dockerfile(String),
    /// A base or `--from` image that is not in the store.
    #[error(
        "image {0:?} is not in the store (an image id is never pulled): import it with kiln import or kiln load"
    )]
    ImageNotInStore(String),
    /// A `-t` name that is not a valid reference.
    #[error("invalid tag {tag:?}: {source}")]
    InvalidTag {
        tag: String,
        source: kiln_oci::Error,
    },
    /// A RUN exited with a non-zero status; `output` holds its last lines.
    #[error(
        "{location}: {instruction}\nprocess {command:?} did not complete successfully: exit code: {code}{}",
        output_tail(.output)
    )]
    StepFailed {
        /// `Dockerfile:LINE`.
        location: String,
        instruction: String,
        command: String,
        code: i32,
        output: Vec<String>,
    },
    /// The sandbox of a RUN could not be started or failed on its own.
    #[error("{location}: {instruction}: {source}")]
    Sandbox {
        location: String,
        instruction: String,
        source: kiln_runner::Error,
    },
    /// A USER that the root filesystem does not define (or that is malformed).
    #[error("{location}: {source}")]
    User {
        location: String,
        source: kiln_runner::user::UserError,
    },
    /// A secret or SSH agent mount the build cannot give the step (required but not given,
    /// unreadable). Names the id, never a value.
    #[error("{location}: {message}")]
    MountSource { location: String, message: String },
    /// An ONBUILD trigger of the stage's base image (or stage) that could not be parsed or
    /// failed; `location` is the stage's FROM.
    #[error("{location}: ONBUILD trigger {trigger:?} from the base's ONBUILD: {source}")]
    Trigger {
        location: String,
        trigger: String,
        source: Box<Error>,
    },
    /// Something a Dockerfile asks for that kiln cannot do (yet), with where it was asked.
    #[error("{location}: {message}")]
    Unsupported { location: String, message: String },
    /// An error of the step at `location` (`Dockerfile:LINE`).
    #[error("{location}: {source}")]
    At {
        location: String,
        source: Box<Error>,
    },
    /// An ADD source fetched from a URL or a git repository that could not be fetched or did
    /// not verify (`--checksum`).
    #[error("ADD {url}: {message}")]
    Remote { url: String, message: String },
    /// Another stage of the build failed first; this one stopped.
    #[error("build cancelled: another stage failed")]
    Cancelled,
    /// An exported build cache that kiln cannot read.
    #[error("build cache {source_name}: {reason}")]
    CacheFormat { source_name: String, reason: String },
    /// A worker thread of the build died.
    #[error("internal error: the {0} thread panicked")]
    Thread(&'static str),
}

/// The last lines of a failed step's output, indented under its message.
fn output_tail(lines: &[String]) -> String {
    let mut out = String::new();
    if !lines.is_empty() {
        out.push_str("\noutput (last lines):");
        for line in lines {
            out.push_str("\n  ");
            out.push_str(line);
        }
    }
    out
}

impl Error {
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
