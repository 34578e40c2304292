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
