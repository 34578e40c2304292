//! Cache records: `<store>/cache/<key hex>`, one JSON file per step, written atomically.
//!
//! A record holds what a step produced: the layer (blob digest, diff-id, size, media type) and
//! the chain it makes, for steps that change the filesystem; and, for every step, the time its
//! history entry was created, so that a rebuild answered from the cache writes the same config
//! and therefore the same image id.

use crate::error::{Error, Result};
use kiln_oci::{Digest, Layer, Store};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write as _;
use std::path::PathBuf;

/// What one step produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRecord {
    /// The `created` time of the step's history entry.
    pub created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<LayerRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
    pub media_type: String,
    /// The snapshot chain of the step's result.
    pub chain_id: String,
}

impl LayerRecord {
    pub fn new(layer: &Layer, chain_id: &str) -> Self {
        LayerRecord {
            digest: layer.digest.to_string(),
            diff_id: layer.diff_id.to_string(),
            size: layer.size,
            media_type: layer.media_type.to_string(),
            chain_id: chain_id.to_string(),
        }
    }

    /// The layer, or `None` when the record does not parse.
    pub fn layer(&self) -> Option<Layer> {
        Some(Layer {
            digest: Digest::parse(&self.digest).ok()?,
            diff_id: Digest::parse(&self.diff_id).ok()?,
            size: self.size,
            media_type: self.media_type.as_str().into(),
        })
    }
}

/// The cache records of one store.
pub struct Cache {
    dir: PathBuf,
    tmp: PathBuf,
}

impl Cache {
    pub fn new(store: &Store) -> Self {
        Cache {
            dir: store.cache_dir(),
            tmp: store.tmp_dir().to_path_buf(),
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(key.strip_prefix("sha256:").unwrap_or(key))
    }

    /// The record of `key`. A record that is missing, unreadable or refers to a blob that is
    /// no longer in the store is a miss, never an error: the step simply runs again.
    pub fn lookup(&self, store: &Store, key: &str) -> Option<CacheRecord> {
        let bytes = fs::read(self.path(key)).ok()?;
        let record: CacheRecord = serde_json::from_slice(&bytes).ok()?;
        if let Some(layer) = &record.layer {
            let digest = Digest::parse(&layer.digest).ok()?;
            if !store.has_blob(&digest) {
                return None;
            }
        }
        Some(record)
    }

    /// Writes the record of `key`: to a temp file, then renamed into place.
    pub fn store(&self, key: &str, record: &CacheRecord) -> Result<()> {
        let path = self.path(key);
        let bytes = serde_json::to_vec(record).map_err(|e| Error::io(&path, e.into()))?;
        let mut tmp =
            tempfile::NamedTempFile::new_in(&self.tmp).map_err(|e| Error::io(&self.tmp, e))?;
        tmp.write_all(&bytes)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| Error::io(tmp.path(), e))?;
        tmp.persist(&path).map_err(|e| Error::io(&path, e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_missing_blob_is_a_miss() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let cache = Cache::new(&store);
        let key = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(cache.lookup(&store, &key), None);

        let meta = CacheRecord {
            created: "2026-01-01T00:00:00Z".into(),
            layer: None,
        };
        cache.store(&key, &meta).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cache.lookup(&store, &key), Some(meta));

        let (digest, size) = store.put_blob(b"layer").unwrap_or_else(|e| panic!("{e}"));
        let with_layer = CacheRecord {
            created: "2026-01-01T00:00:00Z".into(),
            layer: Some(LayerRecord {
                digest: digest.to_string(),
                diff_id: digest.to_string(),
                size,
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                chain_id: digest.to_string(),
            }),
        };
        cache
            .store(&key, &with_layer)
            .unwrap_or_else(|e| panic!("{e}"));
        let found = cache
            .lookup(&store, &key)
            .unwrap_or_else(|| panic!("a hit"));
        let layer = found
            .layer
            .as_ref()
            .and_then(LayerRecord::layer)
            .unwrap_or_else(|| panic!("a layer"));
        assert_eq!(layer.digest, digest);

        let other = format!("sha256:{}", "cd".repeat(32));
        let gone = CacheRecord {
            layer: Some(LayerRecord {
                digest: format!("sha256:{}", "ef".repeat(32)),
                ..with_layer.layer.clone().unwrap_or_else(|| panic!("layer"))
            }),
            ..with_layer
        };
        cache.store(&other, &gone).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cache.lookup(&store, &other), None);
    }
}
