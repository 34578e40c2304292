//! A registry repository and tag as a [`CacheTransport`]: where `--cache-to type=registry`
//! writes a build cache export and `--cache-from` reads it back.

use super::{Client, NoProgress, RegistryConfig, RegistryError};
use crate::error::{Error, Result};
use crate::reference::Reference;
use crate::store::Store;
use crate::transport::{BlobDesc, CacheTransport};
use std::io::{Read, Write};

/// The export's manifest lives under `reference`'s tag; its blobs in that repository.
pub struct RegistryTransport {
    client: Client,
    reference: Reference,
}

impl RegistryTransport {
    /// A transport for `reference` (a repository and a tag; `latest` when it has none).
    pub fn new(reference: &str, config: RegistryConfig) -> Result<RegistryTransport> {
        let reference = Reference::parse(reference)?;
        Ok(RegistryTransport {
            client: Client::new(config)?,
            reference,
        })
    }
}

impl CacheTransport for RegistryTransport {
    fn describe(&self) -> String {
        self.reference.to_string()
    }

    fn fetch_manifest(&self) -> Result<Option<Vec<u8>>> {
        match self.client.fetch_manifest(&self.reference) {
            Ok(manifest) => Ok(Some(manifest.bytes)),
            Err(Error::Registry(e)) if matches!(*e, RegistryError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn put_manifest(&self, media_type: &str, manifest: &[u8]) -> Result<()> {
        self.client
            .put_manifest(&self.reference, manifest, media_type)
            .map(|_| ())
    }

    fn blob_exists(&self, blob: &BlobDesc) -> Result<bool> {
        self.client.blob_exists(&self.reference, &blob.digest)
    }

    fn fetch_blob(&self, blob: &BlobDesc, sink: &mut dyn Write) -> Result<()> {
        self.client
            .fetch_blob_to(&self.reference, &blob.digest, blob.size, sink)
    }

    /// Reads the (small) blob into memory and uploads it in one request; layers go through
    /// [`put_blob_from_store`](CacheTransport::put_blob_from_store), which streams.
    fn put_blob(&self, blob: &BlobDesc, source: &mut dyn Read) -> Result<()> {
        let mut bytes = Vec::new();
        source
            .take(blob.size + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(format!("reading blob {}", blob.digest), e))?;
        if bytes.len() as u64 != blob.size {
            return Err(RegistryError::BadContent {
                registry: self.reference.registry().to_string(),
                what: format!("blob {}", blob.digest),
                reason: format!(
                    "{} bytes given where {} were announced",
                    bytes.len(),
                    blob.size
                ),
            }
            .into());
        }
        self.client
            .push_blob_bytes(&self.reference, &blob.digest, bytes)
    }

    fn fetch_blob_into_store(&self, store: &Store, blob: &BlobDesc) -> Result<()> {
        self.client
            .fetch_blob(&self.reference, &blob.digest, blob.size, store, &NoProgress)
            .map(|_| ())
    }

    fn put_blob_from_store(&self, store: &Store, blob: &BlobDesc) -> Result<bool> {
        let status =
            self.client
                .push_blob(&self.reference, store, &blob.digest, &[], &NoProgress)?;
        Ok(matches!(status, super::BlobStatus::Pushed))
    }
}
