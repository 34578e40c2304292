//! `kiln build`: accepts `docker buildx build`'s flags; for now it resolves the build plan and stops.

use crate::error::{CliError, CliResult};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The build context: a directory, or `-` for a tar on stdin.
    #[arg(value_name = "CONTEXT")]
    pub context: String,
    /// The Dockerfile (default: CONTEXT/Dockerfile; `-` reads it from stdin).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<String>,
}

pub fn run(_root: &Option<PathBuf>, _args: BuildArgs) -> CliResult<ExitCode> {
    Err(CliError::usage("kiln build is not available in this version"))
}
