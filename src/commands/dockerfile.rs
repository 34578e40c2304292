//! Reading a Dockerfile from a path or stdin, and parsing it with errors that name the file.

use crate::error::{CliError, CliResult, DockerfileError};
use kiln_grammar::ast::{Dockerfile, Warning};
use std::io::Read;
use std::path::Path;

/// `-f FILE`, for commands that read a Dockerfile without a build context.
#[derive(Debug, clap::Args)]
pub struct FileArg {
    /// The Dockerfile to read (`-` for stdin).
    #[arg(
        short = 'f',
        long = "file",
        default_value = "Dockerfile",
        value_name = "FILE"
    )]
    pub file: String,
}

impl FileArg {
    pub fn read(&self) -> CliResult<Source> {
        read(&self.file)
    }
}

/// A Dockerfile's text and the name to show in messages (`Dockerfile`, `build/Dockerfile.dev`, `-`).
pub struct Source {
    pub name: String,
    pub text: String,
}

/// Read `path` (`-` for stdin). Invalid UTF-8 is refused: BuildKit reads Dockerfiles as UTF-8 too.
pub fn read(path: &str) -> CliResult<Source> {
    let bytes = if path == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| CliError::io("<stdin>", e))?;
        buf
    } else {
        std::fs::read(Path::new(path)).map_err(|e| CliError::io(path, e))?
    };
    let text = String::from_utf8(bytes).map_err(|e| CliError::Usage {
        message: format!(
            "{path}: the Dockerfile is not valid UTF-8 (byte {})",
            e.utf8_error().valid_up_to()
        ),
        hint: Some("save the file as UTF-8".into()),
    })?;
    Ok(Source {
        name: path.to_string(),
        text,
    })
}

impl Source {
    pub fn parse(&self) -> CliResult<Dockerfile> {
        kiln_grammar::parse(&self.text).map_err(|error| self.error(error))
    }

    /// Print non-fatal findings to stderr, each with its place in this file.
    pub fn warn(&self, warnings: &[Warning]) {
        for w in warnings {
            eprintln!(
                "warning: {}:{}:{}: {}",
                self.name, w.span.start_line, w.span.start_col, w.message
            );
        }
    }

    /// Wrap a grammar error so it renders against this file.
    pub fn error(&self, error: kiln_grammar::Error) -> CliError {
        CliError::Dockerfile(Box::new(DockerfileError {
            file: self.name.clone(),
            source_text: self.text.clone(),
            error,
        }))
    }
}
