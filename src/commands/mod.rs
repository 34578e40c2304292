//! One module per subcommand: its clap arguments and the function that runs it.

pub mod build;
pub mod dockerfile;
pub mod parse;
pub mod plan;
pub mod sandbox;
pub mod store;

use crate::error::{CliError, CliResult};
use std::io::Write;

/// Write a command's result to stdout. A closed pipe (`kiln parse | head`) is not an error.
pub fn print_stdout(text: &str) -> CliResult<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::io("<stdout>", e)),
    }
}
