//! `--cache-to`: writes records and the layers they name through a transport. Blobs the
//! destination already holds are not sent again; the manifest goes last, so a reader never
//! finds a manifest whose blobs are not all there.

use super::format::{EMPTY_JSON, encode};
use crate::cache::CacheRecord;
use crate::error::Result;
use kiln_oci::Store;
use kiln_oci::transport::CacheTransport;
use std::collections::BTreeMap;

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportReport {
    pub records: usize,
    /// Layer blobs sent, and those the destination had already.
    pub layers_written: usize,
    pub layers_present: usize,
    /// `sha256:` + the digest of the cache manifest.
    pub manifest_digest: String,
}

/// Exports `records`, whose layers are all in `store`. `log` receives one line per thing
/// written (BuildKit's `writing layer sha256:… done`).
pub fn export(
    store: &Store,
    transport: &dyn CacheTransport,
    records: &BTreeMap<String, CacheRecord>,
    log: &mut dyn FnMut(String),
) -> Result<ExportReport> {
    let encoded = encode(records)?;
    let mut report = ExportReport {
        records: records.len(),
        layers_written: 0,
        layers_present: 0,
        manifest_digest: kiln_oci::Digest::of(&encoded.manifest).to_string(),
    };
    for layer in &encoded.layers {
        let written = if layer.digest == kiln_oci::Digest::of(EMPTY_JSON) {
            let absent = !transport.blob_exists(layer)?;
            if absent {
                transport.put_blob(layer, &mut &EMPTY_JSON[..])?;
            }
            absent
        } else {
            transport.put_blob_from_store(store, layer)?
        };
        if written {
            report.layers_written += 1;
            log(format!("writing layer {} done", layer.digest));
        } else {
            report.layers_present += 1;
            log(format!("layer {} already there", layer.digest));
        }
    }
    if !transport.blob_exists(&encoded.config_blob)? {
        transport.put_blob(&encoded.config_blob, &mut &encoded.config[..])?;
    }
    log(format!(
        "writing config {} ({} records) done",
        encoded.config_blob.digest, report.records
    ));
    transport.put_manifest(super::format::MANIFEST_MEDIA_TYPE, &encoded.manifest)?;
    log(format!(
        "writing cache manifest {} done",
        report.manifest_digest
    ));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Recorder;
    use crate::remote_cache::RemoteCache;
    use kiln_oci::transport::LayoutTransport;

    #[test]
    fn config_only_records_export_with_the_empty_blob_and_read_back() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open(dir.path().join("store")).unwrap_or_else(|e| panic!("{e}"));
        let key = format!("sha256:{}", "ab".repeat(32));
        let records: BTreeMap<String, CacheRecord> = [(
            key.clone(),
            CacheRecord {
                created: "2026-01-01T00:00:00Z".into(),
                layer: None,
            },
        )]
        .into_iter()
        .collect();
        let layout = LayoutTransport::new(dir.path().join("cache"), "latest");
        let mut lines = Vec::new();
        let report = export(&store, &layout, &records, &mut |l| lines.push(l))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((report.records, report.layers_written), (1, 1));
        let empty = dir
            .path()
            .join("cache/blobs/sha256")
            .join(kiln_oci::Digest::of(EMPTY_JSON).hex());
        assert_eq!(std::fs::read(empty).ok(), Some(EMPTY_JSON.to_vec()));
        // Exporting again writes no blob twice and the same manifest.
        let again =
            export(&store, &layout, &records, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((again.layers_written, again.layers_present), (0, 1));
        assert_eq!(again.manifest_digest, report.manifest_digest);

        let events = Recorder::default();
        let remote = RemoteCache::from_transports(vec![Box::new(layout)], &events);
        let fresh = Store::open(dir.path().join("fresh")).unwrap_or_else(|e| panic!("{e}"));
        let cache = crate::cache::Cache::new(&fresh);
        assert_eq!(
            remote.lookup(&fresh, &cache, &key, &events),
            records.get(&key).cloned()
        );
    }
}
