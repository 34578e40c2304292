//! Build cache records: `cache/<key hex>`, one JSON object per cached instruction, written by the
//! builder. Housekeeping needs only what they point at, so a record is read as any JSON object
//! and its `sha256:` strings are sorted by the name of the field holding them:
//!
//! - a name containing `chain` holds a chain id (its snapshot stays while the record lives);
//! - a name containing `diff` holds a diff-id;
//! - a name containing `layer`, `blob`, `digest` or `manifest` holds a blob in `blobs/sha256/`.
//!
//! Other fields (the cache key itself, the parent key, the config change) are not references.
//! Reading the fields by name rather than through the builder's struct keeps records of other
//! kiln versions collectable: an unknown field is ignored, not an error.

use super::{GcError, GcResult};
use crate::chain::{ChainId, DiffId};
use kiln_oci::gc::{GcParticipant, reachable};
use kiln_oci::{Digest as BlobDigest, Store};
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A record bigger than this is not one the builder wrote; it is treated as unreadable.
const MAX_RECORD_SIZE: u64 = 1 << 20;

/// What a record points at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordRefs {
    pub blobs: BTreeSet<BlobDigest>,
    pub chains: BTreeSet<ChainId>,
    pub diff_ids: BTreeSet<DiffId>,
}

impl RecordRefs {
    /// The references in a record's JSON; `Err` says why it is not a record.
    pub fn parse(bytes: &[u8]) -> Result<RecordRefs, String> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        if !value.is_object() {
            return Err("not a JSON object".into());
        }
        let mut refs = RecordRefs::default();
        refs.collect(None, &value)?;
        Ok(refs)
    }

    fn collect(&mut self, field: Option<&str>, value: &Value) -> Result<(), String> {
        match value {
            Value::Object(map) => {
                for (name, v) in map {
                    self.collect(Some(name), v)?;
                }
            }
            // A list inherits its field's name (`"layers": ["sha256:…", …]`).
            Value::Array(items) => {
                for v in items {
                    self.collect(field, v)?;
                }
            }
            Value::String(text) if text.starts_with(BlobDigest::PREFIX) => {
                let Some(field) = field.map(str::to_ascii_lowercase) else {
                    return Ok(());
                };
                let bad = |e: &dyn std::fmt::Display| format!("field {field:?}: {e}");
                if field.contains("chain") {
                    self.chains
                        .insert(crate::chain::parse(text).map_err(|e| bad(&e))?);
                } else if field.contains("diff") {
                    self.diff_ids
                        .insert(crate::chain::parse(text).map_err(|e| bad(&e))?);
                } else if ["layer", "blob", "digest", "manifest"]
                    .iter()
                    .any(|k| field.contains(k))
                {
                    self.blobs
                        .insert(BlobDigest::parse(text).map_err(|e| bad(&e))?);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// One file in `cache/`.
#[derive(Clone, Debug)]
pub struct Record {
    /// The file name (the cache key's hex).
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    /// When a build last read or wrote it (access time, which the kernel updates at most
    /// daily with `relatime`: a day's resolution is enough to pick what to evict).
    pub last_used: SystemTime,
    /// Its references, or why it could not be read.
    pub refs: Result<RecordRefs, String>,
}

impl Record {
    /// A record is usable while every blob it names is in the store.
    pub fn missing_blobs(&self, store: &Store) -> Vec<BlobDigest> {
        match &self.refs {
            Ok(refs) => refs
                .blobs
                .iter()
                .filter(|d| !store.has_blob(d))
                .cloned()
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Readable and complete.
    pub fn is_live(&self, store: &Store) -> bool {
        self.refs.is_ok() && self.missing_blobs(store).is_empty()
    }

    /// Deletes the record; one already gone is not an error.
    pub fn remove(&self) -> GcResult<()> {
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(GcError::io("removing cache record", &self.path, e)),
        }
    }
}

/// Every record in `cache_dir`. Hidden files (a writer's temporary) and directories are not
/// records.
pub fn read_records(cache_dir: &Path) -> GcResult<Vec<Record>> {
    let entries = match fs::read_dir(cache_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(GcError::io("listing", cache_dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| GcError::io("listing", cache_dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue; // removed meanwhile
        };
        if name.starts_with('.') || !meta.is_file() {
            continue;
        }
        let last_used = meta
            .accessed()
            .ok()
            .into_iter()
            .chain(meta.modified().ok())
            .max()
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let refs = read_limited(&path).and_then(|bytes| RecordRefs::parse(&bytes));
        out.push(Record {
            name,
            path,
            size: meta.len(),
            last_used,
            refs,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn read_limited(path: &Path) -> Result<Vec<u8>, String> {
    let file = fs::File::open(path).map_err(|e| format!("unreadable: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_RECORD_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("unreadable: {e}"))?;
    if bytes.len() as u64 > MAX_RECORD_SIZE {
        return Err(format!("larger than {MAX_RECORD_SIZE} bytes"));
    }
    Ok(bytes)
}

/// The build cache as a participant of `kiln prune`. Its roots are the blobs of its records;
/// `reclaim` drops records that are unreadable or whose blobs are gone, all of them with
/// `all`, and least recently used ones to meet a size cap.
pub struct CacheRecords<'s> {
    store: &'s Store,
}

impl<'s> CacheRecords<'s> {
    pub fn new(store: &'s Store) -> Self {
        CacheRecords { store }
    }

    fn records(&self) -> GcResult<Vec<Record>> {
        read_records(&self.store.cache_dir())
    }

    /// Evicts least recently used records until what they alone kept (their own bytes and the
    /// blobs nothing else references) reaches `want`. Returns the records' bytes.
    fn evict(&self, mut records: Vec<Record>, want: u64) -> GcResult<u64> {
        let index = self.store.read_index()?;
        let images = reachable(self.store, &index)?;
        records.sort_by_key(|r| r.last_used);
        let mut estimate = 0;
        let mut freed = 0;
        for i in 0..records.len() {
            if estimate >= want {
                break;
            }
            let record = &records[i];
            record.remove()?;
            freed += record.size;
            estimate += record.size;
            let Ok(refs) = &record.refs else { continue };
            let still_used = |blob: &BlobDigest| {
                images.contains(blob)
                    || records[i + 1..]
                        .iter()
                        .any(|r| r.refs.as_ref().is_ok_and(|o| o.blobs.contains(blob)))
            };
            for blob in refs.blobs.iter().filter(|b| !still_used(b)) {
                estimate += fs::metadata(self.store.blob_path(blob)).map_or(0, |m| m.len());
            }
        }
        Ok(freed)
    }
}

impl GcParticipant for CacheRecords<'_> {
    fn name(&self) -> &str {
        "build cache"
    }

    fn roots(&self) -> kiln_oci::Result<Vec<BlobDigest>> {
        let mut roots = BTreeSet::new();
        for record in self.records()? {
            if let Ok(refs) = record.refs {
                roots.extend(refs.blobs);
            }
        }
        Ok(roots.into_iter().collect())
    }

    fn usage(&self) -> kiln_oci::Result<u64> {
        Ok(self.records()?.iter().map(|r| r.size).sum())
    }

    fn reclaim(&mut self, all: bool, want: u64) -> kiln_oci::Result<u64> {
        let mut freed = 0;
        let mut kept = Vec::new();
        for record in self.records()? {
            if all || !record.is_live(self.store) {
                record.remove()?;
                freed += record.size;
            } else {
                kept.push(record);
            }
        }
        if want > freed {
            freed += self.evict(kept, want - freed)?;
        }
        Ok(freed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn fields_are_sorted_by_name() {
        let text = serde_json::json!({
            "key": digest('1'),
            "parent_key": digest('2'),
            "layer": {"digest": digest('a'), "size": 3},
            "diff_id": digest('b'),
            "chain_id": digest('c'),
            "config": {"Env": ["A=sha256:x"]},
            "extra_layers": [digest('d')],
        });
        let refs = RecordRefs::parse(text.to_string().as_bytes()).unwrap();
        let blobs: Vec<&str> = refs.blobs.iter().map(|d| d.as_str()).collect();
        assert_eq!(blobs, vec![digest('a'), digest('d')]);
        assert_eq!(refs.diff_ids.len(), 1);
        assert_eq!(refs.chains.iter().next().unwrap().as_str(), digest('c'));
    }

    #[test]
    fn non_records_are_refused() {
        assert!(RecordRefs::parse(b"[1]").is_err());
        assert!(RecordRefs::parse(b"{").is_err());
        assert!(RecordRefs::parse(br#"{"layer":"sha256:zz"}"#).is_err());
        assert_eq!(RecordRefs::parse(b"{}").unwrap(), RecordRefs::default());
    }
}
