//! `--cache-from`: the records of exported caches, a second tier under the store's own cache.
//!
//! Every source is read before the build: its manifest and config only, no layer. A source
//! that is missing or unreadable is a warning and the build goes on without it, as in BuildKit.
//! When a step's key is not in the store but in a source (the first that has it, in the order
//! given), the layer the record names is fetched into the store, verified, and the record is
//! written to the store's cache; the step then reuses it like any local hit. A layer that
//! cannot be fetched or does not match its digest is a warning, and the step runs.

use super::format::{decode_config, decode_manifest};
use super::{CacheLocation, open_transport};
use crate::cache::{Cache, CacheRecord};
use crate::error::{Error, Result};
use crate::events::{Event, EventSink};
use crate::vertex::Vertex;
use kiln_oci::Store;
use kiln_oci::registry::RegistryConfig;
use kiln_oci::transport::{BlobDesc, CacheTransport, fetch_json_blob};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU32;

/// The records of every readable `--cache-from` source, in order.
#[derive(Default)]
pub struct RemoteCache {
    sources: Vec<Source>,
}

struct Source {
    transport: Box<dyn CacheTransport>,
    records: BTreeMap<String, CacheRecord>,
    layers: Vec<BlobDesc>,
}

impl RemoteCache {
    /// Reads every source, each shown as a step; those that cannot be read are warnings.
    pub fn load(
        locations: &[CacheLocation],
        registry: &RegistryConfig,
        events: &dyn EventSink,
        ids: &AtomicU32,
    ) -> RemoteCache {
        let mut cache = RemoteCache::default();
        for location in locations {
            let vertex = Vertex::start(
                events,
                ids,
                format!("importing cache manifest from {location}"),
                None,
            );
            let loaded = open_transport(location, registry)
                .and_then(|t| read_source(t, &location.to_string()));
            match loaded {
                Ok(Some(source)) => {
                    vertex.done();
                    cache.sources.push(source);
                }
                Ok(None) => {
                    vertex.done();
                    events.emit(Event::Warning {
                        message: format!("no build cache found at {location}; building without it"),
                    });
                }
                Err(e) => {
                    vertex.done();
                    events.emit(Event::Warning {
                        message: format!(
                            "cannot import build cache from {location}: {e}; building without it"
                        ),
                    });
                }
            }
        }
        cache
    }

    /// A cache of sources already opened (tests, and callers with transports of their own).
    pub fn from_transports(
        transports: Vec<Box<dyn CacheTransport>>,
        events: &dyn EventSink,
    ) -> RemoteCache {
        let mut cache = RemoteCache::default();
        for transport in transports {
            let name = transport.describe();
            match read_source(transport, &name) {
                Ok(Some(source)) => cache.sources.push(source),
                Ok(None) => {}
                Err(e) => events.emit(Event::Warning {
                    message: format!("cannot import build cache from {name}: {e}"),
                }),
            }
        }
        cache
    }

    /// How many records the sources hold between them (a key in two counts twice).
    pub fn len(&self) -> usize {
        self.sources.iter().map(|s| s.records.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The record of `key` from the first source that has it and can deliver its layer, which
    /// is then in `store`; the record is kept in `cache` too, so the next build finds it
    /// locally.
    pub fn lookup(
        &self,
        store: &Store,
        cache: &Cache,
        key: &str,
        events: &dyn EventSink,
    ) -> Option<CacheRecord> {
        for source in &self.sources {
            let Some(record) = source.records.get(key) else {
                continue;
            };
            match source.materialize(store, record) {
                Ok(()) => {
                    // Only a shortcut for the next build: this one has what it needs.
                    let _ = cache.store(key, record);
                    return Some(record.clone());
                }
                Err(e) => events.emit(Event::Warning {
                    message: format!(
                        "build cache from {}: {e}; the step runs instead",
                        source.transport.describe()
                    ),
                }),
            }
        }
        None
    }
}

impl Source {
    /// Makes sure the record's layer blob is in the store.
    fn materialize(&self, store: &Store, record: &CacheRecord) -> Result<()> {
        let Some(layer) = record.layer.as_ref().and_then(|l| l.layer()) else {
            return Ok(());
        };
        let blob = self
            .layers
            .iter()
            .find(|b| b.digest == layer.digest)
            .ok_or_else(|| Error::CacheFormat {
                source_name: self.transport.describe(),
                reason: format!("layer {} is not listed in the manifest", layer.digest),
            })?;
        self.transport
            .fetch_blob_into_store(store, blob)
            .map_err(|e| Error::Layer {
                digest: layer.digest.to_string(),
                source: std::io::Error::other(e),
            })
    }
}

/// Reads a source's manifest and config; `None` when it holds no cache under its name.
fn read_source(transport: Box<dyn CacheTransport>, name: &str) -> Result<Option<Source>> {
    let Some(manifest) = transport.fetch_manifest()? else {
        return Ok(None);
    };
    let (config, layers) = decode_manifest(&manifest, name)?;
    let config = fetch_json_blob(transport.as_ref(), &config)?;
    let records = decode_config(&config, &layers, name)?;
    Ok(Some(Source {
        transport,
        records,
        layers,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::LayerRecord;
    use crate::events::Recorder;
    use crate::remote_cache::export;
    use kiln_oci::transport::LayoutTransport;

    fn key(n: u8) -> String {
        format!("sha256:{}", hex::encode([n; 32]))
    }

    #[test]
    fn a_hit_fetches_its_layer_and_a_tampered_layer_is_a_warned_miss() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let old = Store::open(dir.path().join("old")).unwrap_or_else(|e| panic!("{e}"));
        let (digest, size) = old.put_blob(b"a layer").unwrap_or_else(|e| panic!("{e}"));
        let record = |n: u8| CacheRecord {
            created: format!("2026-01-01T00:00:0{n}Z"),
            layer: Some(LayerRecord {
                digest: digest.to_string(),
                diff_id: key(n),
                size,
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                chain_id: key(n + 1),
            }),
        };
        let records: BTreeMap<String, CacheRecord> = [(key(1), record(1)), (key(2), record(2))]
            .into_iter()
            .collect();
        let layout = LayoutTransport::new(dir.path().join("cache"), "latest");
        export(&old, &layout, &records, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));

        let fresh = Store::open(dir.path().join("fresh")).unwrap_or_else(|e| panic!("{e}"));
        let local = Cache::new(&fresh);
        let events = Recorder::default();
        let remote = RemoteCache::from_transports(vec![Box::new(layout.clone())], &events);
        assert_eq!(remote.len(), 2);
        assert_eq!(remote.lookup(&fresh, &local, &key(9), &events), None);
        assert_eq!(
            remote.lookup(&fresh, &local, &key(1), &events),
            Some(record(1))
        );
        assert!(fresh.has_blob(&digest));
        assert_eq!(local.lookup(&fresh, &key(1)), Some(record(1)));
        assert!(events.events().is_empty(), "{:?}", events.events());

        // The same export with its layer blob damaged: no hit, a warning, nothing stored.
        std::fs::write(
            dir.path().join("cache/blobs/sha256").join(digest.hex()),
            b"b layer",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let other = Store::open(dir.path().join("other")).unwrap_or_else(|e| panic!("{e}"));
        let other_cache = Cache::new(&other);
        assert_eq!(remote.lookup(&other, &other_cache, &key(2), &events), None);
        assert!(!other.has_blob(&digest));
        let warnings = events.events();
        assert!(
            matches!(warnings.as_slice(), [Event::Warning { message }] if message.contains("does not match")),
            "{warnings:?}"
        );

        // A source that is not there is a warning, not an error.
        let events = Recorder::default();
        let missing = RemoteCache::from_transports(
            vec![Box::new(LayoutTransport::new(
                dir.path().join("nowhere"),
                "latest",
            ))],
            &events,
        );
        assert!(missing.is_empty());
        assert_eq!(events.events().len(), 1);
    }
}
