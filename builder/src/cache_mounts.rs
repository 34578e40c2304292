//! The directories of `RUN --mount=type=cache` (`<store>/cache-mounts/`): seeding one from a
//! stage or an image (`from=`, `source=`), and removing them (`kiln prune`).
//!
//! A cache mount with `from=` is a cache of its own per source (its id and the source's
//! identity name it, as BuildKit keys such a cache by its base), filled with the source's
//! `source` path when it is created; after that it lives like any other cache mount.

use crate::copy::{self, CopySpec, SourceRoot};
use crate::error::{Error, Result};
use crate::stage::BuildCtx;
use crate::steps::SourceFs;
use kiln_oci::Store;
use std::path::Path;

/// The directory below `<store>/` that holds cache mounts.
pub const DIR: &str = crate::steps::mounts::CACHE_MOUNTS_DIR;

/// The part of a cache mount's name its `from=` source adds.
pub(crate) fn seed_name(fs: &SourceFs, source: &str) -> String {
    format!("\0from\0{}\0{source}", fs.identity)
}

/// Copies `source` of `fs` (a directory's contents, or a file) into the new cache directory
/// `dir`.
pub(crate) fn seed(build: &BuildCtx<'_>, fs: &SourceFs, source: &str, dir: &Path) -> Result<()> {
    let snapshot = build.snapshotter.prepare(fs.chain.as_ref())?;
    let spec = CopySpec {
        sources: vec![source.to_string()],
        dest: "/".to_string(),
        workdir: "/".to_string(),
        ..CopySpec::default()
    };
    let copied = copy::select(&spec, &SourceRoot::Dir(snapshot.mount_point()))
        .and_then(|selection| copy::apply(&selection, dir));
    snapshot.abort()?;
    copied.map(|_| ())
}

/// What [`prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub removed: usize,
    pub bytes: u64,
    /// Another kiln process has the store open: a build may be using the caches, so none
    /// were removed.
    pub busy: bool,
}

/// Removes every cache mount directory, unless another kiln process has the store open.
pub fn prune(store: &Store) -> Result<Pruned> {
    let root = store.root().join(DIR);
    if store.other_users_alive()? {
        return Ok(Pruned {
            busy: true,
            ..Pruned::default()
        });
    }
    let entries = match std::fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Pruned::default()),
        Err(e) => return Err(Error::io(&root, e)),
    };
    let mut pruned = Pruned::default();
    for entry in entries {
        let path = entry.map_err(|e| Error::io(&root, e))?.path();
        let is_dir = path.symlink_metadata().is_ok_and(|m| m.is_dir());
        if is_dir {
            pruned.bytes += walkdir::WalkDir::new(&path)
                .into_iter()
                .filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum::<u64>();
            std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
            pruned.removed += 1;
        } else {
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_empties_the_cache_mounts_of_an_idle_store() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(prune(&store).ok(), Some(Pruned::default()));
        let cache = dir.path().join(DIR).join("abc");
        std::fs::create_dir_all(cache.join("sub")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(cache.join("sub/f"), b"12345").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join(DIR).join("abc.lock"), b"")
            .unwrap_or_else(|e| panic!("{e}"));
        let pruned = prune(&store).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((pruned.removed, pruned.bytes, pruned.busy), (1, 5, false));
        let left = std::fs::read_dir(dir.path().join(DIR))
            .unwrap_or_else(|e| panic!("{e}"))
            .count();
        assert_eq!(left, 0);

        // Another user of the store: nothing is touched.
        std::fs::create_dir_all(&cache).unwrap_or_else(|e| panic!("{e}"));
        let other = Store::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert!(prune(&store).unwrap_or_else(|e| panic!("{e}")).busy);
        assert!(cache.exists());
        drop(other);
    }
}
