//! Temporary directories of one build (an unpacked stdin context, a flattened root filesystem),
//! inside the store's per-process tmp directory: on the store's filesystem, removed when
//! dropped, and swept by the next kiln if this one is killed.

use crate::error::{CliError, CliResult};
use kiln_oci::Store;
use std::path::{Path, PathBuf};

pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    pub fn new(store: &Store, prefix: &str) -> CliResult<Scratch> {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(store.tmp_dir())
            .map_err(|e| CliError::io(store.tmp_dir(), e))?;
        // Removal is ours: `remove_tree` also clears trees with read-only directories, which a
        // layer may well contain.
        Ok(Scratch { path: dir.keep() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = kiln_snapshotter::remove_tree(&self.path) {
            eprintln!("warning: cannot remove {}: {e}", self.path.display());
        }
    }
}
