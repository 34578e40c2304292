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
use std::collections::HashMap;

/// Pushes `image` to `target` (a name with a tag; `latest` when it has none) and returns the
/// manifest's digest, which is also recorded among the image's RepoDigests. Blobs the registry
/// has are skipped; blobs that another repository of the same registry has (one an image in the
/// store is tagged from) are mounted rather than uploaded.
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
    let mut blobs: Vec<Digest> = image.layers()?.into_iter().map(|l| l.digest).collect();
    blobs.push(image.id.clone());
    let sources = mount_sources(store, &full)?;
    let no_sources = Vec::new();
    client.block_on(async {
        futures_util::stream::iter(blobs.iter().map(|digest| {
            let mount_from = sources.get(digest).unwrap_or(&no_sources);
            client.push_blob_async(&full, store, digest, mount_from, progress)
        }))
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
    let digest = client.put_manifest(&full, &bytes, &media_type)?;
    store.add_repo_digest(image, &full, &digest)?;
    Ok(digest)
}

/// For each blob, the other repositories of `target`'s registry that images in the store are
/// tagged from (and so, having been pulled from or pushed there, likely hold it).
fn mount_sources(store: &Store, target: &Reference) -> Result<HashMap<Digest, Vec<String>>> {
    let mut sources: HashMap<Digest, Vec<String>> = HashMap::new();
    for summary in store.list_images()? {
        let Some(tag) = summary.tag else { continue };
        let Ok(tag) = Reference::parse(&tag).map(|t| t.normalized()) else {
            continue;
        };
        if tag.registry() != target.registry() || tag.repository() == target.repository() {
            continue;
        }
        let Ok(image) = store.find_image(&tag.to_string()) else {
            continue;
        };
        let mut digests: Vec<Digest> = image.layers()?.into_iter().map(|l| l.digest).collect();
        digests.push(image.id.clone());
        for digest in digests {
            let repos = sources.entry(digest).or_default();
            if !repos.contains(&tag.repository()) {
                repos.push(tag.repository());
            }
        }
    }
    Ok(sources)
}
