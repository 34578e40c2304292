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
