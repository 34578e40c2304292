//! The export format: one OCI image manifest, which every registry stores.
//!
//! ```text
//! manifest  application/vnd.oci.image.manifest.v1+json
//!   config  application/vnd.kiln.cache.config.v1+json   {"records":[{"key":…,"created":…,"layer":{…}},…]}
//!   layers  every layer blob a record names, sorted by digest (or, with none, the empty
//!           descriptor application/vnd.oci.empty.v1+json `{}`)
//! ```
//!
//! Records are those of `<store>/cache/` with their key, sorted by key; config and manifest are
//! canonical JSON, so the same records always encode to the same bytes and the same manifest
//! digest. The layers are listed so that a registry keeps them alive as long as the manifest.

use crate::cache::CacheRecord;
use crate::error::{Error, Result};
use kiln_oci::Digest;
use kiln_oci::canonical::to_canonical_json;
use kiln_oci::transport::BlobDesc;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.kiln.cache.config.v1+json";
/// The OCI empty descriptor: the only layer of a manifest whose records name no layer.
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
pub const EMPTY_JSON: &[u8] = b"{}";

#[derive(Debug, Serialize, Deserialize)]
struct CacheConfig {
    records: Vec<KeyedRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
struct KeyedRecord {
    key: String,
    #[serde(flatten)]
    record: CacheRecord,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    media_type: String,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
}

impl Descriptor {
    fn of(blob: &BlobDesc) -> Descriptor {
        Descriptor {
            media_type: blob.media_type.clone(),
            digest: blob.digest.to_string(),
            size: blob.size,
        }
    }

    fn blob(&self) -> Option<BlobDesc> {
        Some(BlobDesc {
            digest: Digest::parse(&self.digest).ok()?,
            size: self.size,
            media_type: self.media_type.clone(),
        })
    }
}

/// An export, encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub manifest: Vec<u8>,
    pub config: Vec<u8>,
    pub config_blob: BlobDesc,
    /// The blobs the manifest lists as layers (the empty descriptor when no record has a
    /// layer), sorted by digest.
    pub layers: Vec<BlobDesc>,
}

/// Encodes `records` (keyed by cache key).
pub fn encode(records: &BTreeMap<String, CacheRecord>) -> Result<Encoded> {
    let config = CacheConfig {
        records: records
            .iter()
            .map(|(key, record)| KeyedRecord {
                key: key.clone(),
                record: record.clone(),
            })
            .collect(),
    };
    let config = to_canonical_json(&config, "cache config")?;
    let config_blob = BlobDesc {
        digest: Digest::of(&config),
        size: config.len() as u64,
        media_type: CONFIG_MEDIA_TYPE.to_string(),
    };
    let mut layers: BTreeMap<Digest, BlobDesc> = BTreeMap::new();
    for record in records.values() {
        let Some(layer) = record.layer.as_ref().and_then(|l| l.layer()) else {
            continue;
        };
        layers.insert(
            layer.digest.clone(),
            BlobDesc {
                digest: layer.digest,
                size: layer.size,
                media_type: layer.media_type.to_string(),
            },
        );
    }
    let mut layers: Vec<BlobDesc> = layers.into_values().collect();
    if layers.is_empty() {
        layers.push(empty_blob());
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: MANIFEST_MEDIA_TYPE.to_string(),
        config: Descriptor::of(&config_blob),
        layers: layers.iter().map(Descriptor::of).collect(),
    };
    let manifest = to_canonical_json(&manifest, "cache manifest")?;
    Ok(Encoded {
        manifest,
        config,
        config_blob,
        layers,
    })
}

pub fn empty_blob() -> BlobDesc {
    BlobDesc {
        digest: Digest::of(EMPTY_JSON),
        size: EMPTY_JSON.len() as u64,
        media_type: EMPTY_MEDIA_TYPE.to_string(),
    }
}

/// The config and the layers a cache manifest names. A manifest of another kind (an image, a
/// cache written by another tool) is refused.
pub fn decode_manifest(bytes: &[u8], source: &str) -> Result<(BlobDesc, Vec<BlobDesc>)> {
    let invalid = |reason: String| Error::CacheFormat {
        source_name: source.to_string(),
        reason,
    };
    let manifest: Manifest = serde_json::from_slice(bytes)
        .map_err(|e| invalid(format!("the manifest is not an OCI image manifest: {e}")))?;
    if manifest.schema_version != 2 || manifest.media_type != MANIFEST_MEDIA_TYPE {
        return Err(invalid(format!(
            "the manifest is {:?}, not an OCI image manifest",
            manifest.media_type
        )));
    }
    if manifest.config.media_type != CONFIG_MEDIA_TYPE {
        return Err(invalid(format!(
            "the manifest's config is {:?}, not kiln build cache ({CONFIG_MEDIA_TYPE})",
            manifest.config.media_type
        )));
    }
    let config = manifest.config.blob().ok_or_else(|| {
        invalid(format!(
            "invalid config digest {:?}",
            manifest.config.digest
        ))
    })?;
    let layers = manifest
        .layers
        .iter()
        .map(|d| {
            d.blob()
                .ok_or_else(|| invalid(format!("invalid layer digest {:?}", d.digest)))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((config, layers))
}

/// The records of a cache config. Records whose key is no digest, or whose layer the manifest
/// does not list with the same size and media type, cannot be used and are left out.
pub fn decode_config(
    bytes: &[u8],
    layers: &[BlobDesc],
    source: &str,
) -> Result<BTreeMap<String, CacheRecord>> {
    let config: CacheConfig = serde_json::from_slice(bytes).map_err(|e| Error::CacheFormat {
        source_name: source.to_string(),
        reason: format!("the cache config does not parse: {e}"),
    })?;
    let listed: BTreeMap<&Digest, &BlobDesc> = layers.iter().map(|b| (&b.digest, b)).collect();
    Ok(config
        .records
        .into_iter()
        .filter(|r| Digest::parse(&r.key).is_ok())
        .filter(|r| match &r.record.layer {
            None => true,
            Some(record) => record.layer().is_some_and(|layer| {
                listed.get(&layer.digest).is_some_and(|blob| {
                    blob.size == layer.size && blob.media_type == layer.media_type.to_string()
                })
            }),
        })
        .map(|r| (r.key, r.record))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::LayerRecord;

    fn key(n: u8) -> String {
        format!("sha256:{}", hex::encode([n; 32]))
    }

    fn records() -> BTreeMap<String, CacheRecord> {
        let layer = |n: u8| LayerRecord {
            digest: key(n),
            diff_id: key(n + 100),
            size: u64::from(n) * 10,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            chain_id: key(n + 50),
        };
        [
            (
                key(3),
                CacheRecord {
                    created: "2026-01-01T00:00:03Z".into(),
                    layer: Some(layer(9)),
                },
            ),
            (
                key(1),
                CacheRecord {
                    created: "2026-01-01T00:00:01Z".into(),
                    layer: Some(layer(7)),
                },
            ),
            (
                key(2),
                CacheRecord {
                    created: "2026-01-01T00:00:02Z".into(),
                    layer: None,
                },
            ),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn records_encode_to_the_same_bytes_and_decode_back() {
        let encoded = encode(&records()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(encode(&records()).ok(), Some(encoded.clone()));
        let text = String::from_utf8_lossy(&encoded.manifest).into_owned();
        assert!(
            text.starts_with(r#"{"config":{"digest":"sha256:"#),
            "{text}"
        );
        assert!(text.contains(r#""mediaType":"application/vnd.kiln.cache.config.v1+json""#));
        assert_eq!(
            encoded
                .layers
                .iter()
                .map(|l| l.digest.to_string())
                .collect::<Vec<_>>(),
            [key(7), key(9)]
        );

        let (config, layers) =
            decode_manifest(&encoded.manifest, "test").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config, encoded.config_blob);
        let decoded =
            decode_config(&encoded.config, &layers, "test").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(decoded, records());

        // A record whose layer the manifest does not list is left out.
        let fewer =
            decode_config(&encoded.config, &layers[..1], "test").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(fewer.keys().cloned().collect::<Vec<_>>(), [key(1), key(2)]);
    }

    #[test]
    fn config_only_records_list_the_empty_descriptor_and_images_are_refused() {
        let only_config: BTreeMap<String, CacheRecord> = records()
            .into_iter()
            .filter(|(_, r)| r.layer.is_none())
            .collect();
        let encoded = encode(&only_config).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(encoded.layers, [empty_blob()]);

        let image = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:aa","size":1},"layers":[]}"#;
        let err = decode_manifest(image, "x").err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("not kiln build cache")),
            "{err:?}"
        );
        assert!(decode_manifest(b"[]", "x").is_err());
    }

    #[test]
    fn keys_that_are_not_digests_are_left_out() {
        // A key names a file under `<store>/cache/`: nothing but a digest may get there.
        let config = br#"{"records":[
            {"key":"../../etc/passwd","created":"x"},
            {"key":"sha256:abc","created":"x"},
            {"key":"sha256:0101010101010101010101010101010101010101010101010101010101010101","created":"x"}]}"#;
        let records = decode_config(config, &[], "x").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(records.keys().cloned().collect::<Vec<_>>(), [key(1)]);
        assert!(decode_config(b"{\"records\":7}", &[], "x").is_err());
    }
}
