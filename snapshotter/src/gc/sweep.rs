//! Sweeping at start: a killed kiln leaves half-applied layers (`snapshots/.tmp-*`), overlay
//! probes and prepared snapshots (`.active-*`, possibly still mounted). Nothing tells them from
//! another process's work in progress, so they are swept only under the store's lock held
//! exclusively (no build holds its shared lock, so none has a snapshot prepared) and only when
//! no other kiln process has the store open (none is applying a layer).
//!
//! Mounts a dead process left under the store's `tmp/` are detached by `Store::open` itself,
//! before it removes that process's directory.

use super::GcResult;
use crate::snapshotter::{Snapshotter, SnapshotterOptions};
use kiln_oci::Store;
use std::fs;

/// What [`sweep_debris`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sweep {
    /// Debris (if any) was removed.
    Swept,
    /// Another kiln process has the store open; its work in progress was left alone.
    Busy,
}

/// Removes what killed kiln processes left in `snapshots/`. Call it after opening the store for
/// writing, without holding the store's lock (it takes it exclusively).
pub fn sweep_debris(store: &Store) -> GcResult<Sweep> {
    // Checked before waiting for the lock, so that a command run beside a long build (which
    // holds the lock shared throughout) does not wait for it to finish just to skip the sweep;
    // and again under the lock, for a process that started meanwhile.
    if store.other_users_alive()? {
        return Ok(Sweep::Busy);
    }
    let _lock = store.lock_exclusive()?;
    if store.other_users_alive()? {
        return Ok(Sweep::Busy);
    }
    let dir = store.snapshots_dir();
    let debris = fs::read_dir(&dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            [".tmp-", ".probe-", ".active-"]
                .iter()
                .any(|p| name.starts_with(p))
        })
    });
    if !debris {
        return Ok(Sweep::Swept);
    }
    // The copy backend needs no probe mount; sweeping unmounts with the kernel either way.
    let options = SnapshotterOptions {
        force_copy: true,
        ..SnapshotterOptions::default()
    };
    Snapshotter::with_options(store.root(), options)?.sweep()?;
    Ok(Sweep::Swept)
}
