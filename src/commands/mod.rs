//! One module per subcommand: its clap arguments and the function that runs it.

pub mod build;
pub mod completion;
pub mod container;
pub mod dockerfile;
pub mod parse;
pub mod plan;
pub mod prompt;
pub mod registry;
pub mod run;
pub mod sandbox;
pub mod store;

use crate::error::{CliError, CliResult};
use kiln_oci::Store;
use std::io::Write;
use std::path::PathBuf;

/// Whether a command changes the store, and so first clears what killed kiln processes left
/// behind (stale snapshot directories and mounts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// The store at `--root` (or the default root), opened for `access`.
pub fn open_store(root: &Option<PathBuf>, access: Access) -> CliResult<Store> {
    let root = root.clone().unwrap_or_else(kiln_oci::default_root);
    let store = Store::open(&root)?;
    if access == Access::Write {
        kiln_snapshotter::gc::sweep_debris(&store)?;
    }
    Ok(store)
}

/// Write a command's result to stdout. A closed pipe (`kiln parse | head`) is not an error.
pub fn print_stdout(text: &str) -> CliResult<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::io("<stdout>", e)),
    }
}
