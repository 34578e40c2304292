//! `push`: an image's layers and config, then its manifest (the store's exact bytes, so the
//! digest is the same on both sides) under a tag.

use super::client::{Client, MANIFEST_TYPES};
use super::{Progress, RegistryError};
use crate::digest::Digest;
use crate::error::Result;
use crate::image::Image;
use crate::reference::Reference;
use crate::store::Store;
use futures_util::{StreamExt, TryStreamExt};

/// Pushes `image` to `target` (a name with a tag; `latest` when it has none) and returns the
/// manifest's digest. Blobs the registry has are skipped; blobs that another repository of the
/// same registry has (one the image is tagged from) are mounted rather than uploaded.
pub fn push(
    client: &Client,
    store: &Store,
    image: &Image,
    target: &Reference,
    progress: &dyn Progress,
) -> Result<Digest> {
    if target.digest().is_some() {
        return Err(RegistryError::InvalidManifest {
            reference: target.to_string(),
            reason: "an image is pushed to a tag, not a digest".into(),
        }
        .into());
    }
    let full = target.normalized();
    let mount_from: Vec<String> = image
        .tags
        .iter()
        .filter_map(|t| Reference::parse(t).ok())
        .map(|t| t.normalized())
        .filter(|t| t.registry() == full.registry() && t.repository() != full.repository())
        .map(|t| t.repository())
        .collect();
    let mut blobs: Vec<Digest> = image.layers()?.into_iter().map(|l| l.digest).collect();
    blobs.push(image.id.clone());
    client.block_on(async {
        futures_util::stream::iter(
            blobs
                .iter()
                .map(|digest| client.push_blob_async(&full, store, digest, &mount_from, progress)),
        )
        .buffered(3)
        .try_collect::<Vec<_>>()
        .await
    })?;
    let bytes = store.read_blob(&image.manifest_digest, Some(image.manifest_size))?;
    let media_type = image
        .manifest
        .media_type()
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_else(|| MANIFEST_TYPES[1].to_string());
    client.put_manifest(&full, &bytes, &media_type)
}
