//! `kiln fsck` for snapshots and cache records. A snapshot must be what its name says: its
//! `diffid` and `parent` files parse, its parent is in the store, `chain(parent, diffid)` is its
//! name, and its tree is there. A record must name only blobs the store has. File contents of
//! a tree are not re-hashed: that would mean diffing every layer again.

use super::GcResult;
use super::records::read_records;
use super::roots::mounted_chains;
use super::snapshots::{parent_of, read_quietly, remove_snapshot, scan};
use crate::chain::ChainId;
use kiln_oci::Store;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// One thing wrong with one item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// `snapshot sha256:…` or `cache record <key>`.
    pub item: String,
    pub problem: String,
}

#[derive(Debug, Default)]
pub struct FsckReport {
    pub snapshots_checked: usize,
    pub records_checked: usize,
    /// Damage: broken snapshots (and those stacked on them) and records naming missing blobs.
    pub broken: Vec<Finding>,
    /// Oddities that are left alone: records of an unknown format, stray directories.
    pub warnings: Vec<Finding>,
    /// What `repair` removed.
    pub repaired: Vec<String>,
}

impl FsckReport {
    pub fn is_clean(&self) -> bool {
        self.broken.is_empty()
    }
}

/// Checks every snapshot and cache record; with `repair` (under the store's lock, held
/// exclusively) removes broken snapshots with everything stacked on them, and records whose
/// blobs are gone. A snapshot mounted right now is reported but not removed.
pub fn fsck(store: &Store, repair: bool) -> GcResult<FsckReport> {
    let _lock = if repair {
        Some(store.lock_exclusive()?)
    } else {
        None
    };
    let mut report = FsckReport::default();
    check_snapshots(store, repair, &mut report)?;
    check_records(store, repair, &mut report)?;
    Ok(report)
}

fn snapshot_item(chain: &ChainId) -> String {
    format!("snapshot {chain}")
}

fn check_snapshots(store: &Store, repair: bool, report: &mut FsckReport) -> GcResult<()> {
    let (snapshots, strangers) = scan(&store.snapshots_dir())?;
    report.snapshots_checked = snapshots.len();
    for path in strangers {
        report.warnings.push(Finding {
            item: path.display().to_string(),
            problem: "not a snapshot: its name is not a chain id (left alone)".into(),
        });
    }
    let mut broken: BTreeMap<ChainId, String> = BTreeMap::new();
    for (chain, dir) in &snapshots {
        if let Err(problem) = check_one(chain, dir, &snapshots) {
            broken.insert(chain.clone(), problem);
        }
    }
    // Everything stacked on a broken snapshot mounts it as a lower layer: broken too.
    loop {
        let more: Vec<(ChainId, String)> = snapshots
            .iter()
            .filter(|(chain, _)| !broken.contains_key(*chain))
            .filter_map(|(chain, dir)| {
                let parent = parent_of(dir)?;
                broken.contains_key(&parent).then(|| {
                    (
                        chain.clone(),
                        format!("stacked on broken snapshot {parent}"),
                    )
                })
            })
            .collect();
        if more.is_empty() {
            break;
        }
        broken.extend(more);
    }
    let mounted = if repair && !broken.is_empty() {
        mounted_chains(&store.snapshots_dir())
    } else {
        BTreeSet::new()
    };
    for (chain, problem) in broken {
        report.broken.push(Finding {
            item: snapshot_item(&chain),
            problem,
        });
        if !repair {
            continue;
        }
        if mounted.contains(&chain) {
            report.warnings.push(Finding {
                item: snapshot_item(&chain),
                problem: "mounted right now; not removed".into(),
            });
            continue;
        }
        if let Some(dir) = snapshots.get(&chain) {
            remove_snapshot(dir)?;
            report
                .repaired
                .push(format!("removed broken {}", snapshot_item(&chain)));
        }
    }
    Ok(())
}

/// What is wrong with one snapshot, judged on its own files and its parent's presence.
fn check_one(
    chain: &ChainId,
    dir: &Path,
    snapshots: &BTreeMap<ChainId, std::path::PathBuf>,
) -> Result<(), String> {
    let read = |name: &str| {
        read_quietly(&dir.join(name)).map_err(|e| format!("its {name} file is unreadable: {e}"))
    };
    let diff_text = read("diffid")?;
    let diff_id = crate::chain::parse(diff_text.trim())
        .map_err(|_| format!("its diffid file holds {:?}, not a digest", diff_text.trim()))?;
    let parent_text = read("parent")?;
    let parent = match parent_text.trim() {
        "" => None,
        text => Some(
            crate::chain::parse(text)
                .map_err(|_| format!("its parent file holds {text:?}, not a chain id"))?,
        ),
    };
    if let Some(parent) = &parent
        && !snapshots.contains_key(parent)
    {
        return Err(format!("its parent snapshot {parent} is missing"));
    }
    let expected = crate::chain::chain_id(parent.as_ref(), &diff_id);
    if &expected != chain {
        return Err(format!(
            "its parent and diffid give chain id {expected}, not its name (diffid {diff_id})"
        ));
    }
    if !dir.join("fs").is_dir() && !dir.join("flat").is_dir() {
        return Err("it has no tree (neither fs nor flat)".into());
    }
    Ok(())
}

fn check_records(store: &Store, repair: bool, report: &mut FsckReport) -> GcResult<()> {
    let records = read_records(&store.cache_dir())?;
    report.records_checked = records.len();
    for record in records {
        let item = format!("cache record {}", record.name);
        if let Err(problem) = &record.refs {
            // Possibly a record of another kiln version: `kiln prune` drops it, fsck keeps it.
            report.warnings.push(Finding {
                item,
                problem: format!("unreadable ({problem}); kept, `kiln prune` removes it"),
            });
            continue;
        }
        let missing = record.missing_blobs(store);
        if missing.is_empty() {
            continue;
        }
        let names: Vec<&str> = missing.iter().map(|d| d.as_str()).collect();
        report.broken.push(Finding {
            item: item.clone(),
            problem: format!("names missing blob {}", names.join(", ")),
        });
        if repair {
            record.remove()?;
            report.repaired.push(format!("removed {item}"));
        }
    }
    Ok(())
}
