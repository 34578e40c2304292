//! oci-archive: an OCI image layout in a tar (`oci-layout`, `index.json`, `blobs/sha256/…`),
//! as `skopeo copy … oci-archive:` and `docker save` (25+) write it. Blobs keep their bytes and
//! digests: nothing is recompressed.

use super::{ArchiveFormat, Loaded, LoadedImage, SaveItem, Staging, append_bytes, append_reader};
use crate::canonical::to_canonical_json;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::{CONTAINERD_NAME, REF_NAME, is_index_type, pick_platform};
use crate::reference::Reference;
use crate::store::Store;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;

pub(super) fn load(store: &Store, staged: &Staging) -> Result<Loaded> {
    let layout = staged.read_json("oci-layout")?;
    let layout: serde_json::Value =
        serde_json::from_slice(&layout).map_err(|e| Error::json("oci-layout", e))?;
    if layout.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
        return Err(Error::archive(
            "oci-layout: unsupported imageLayoutVersion (expected 1.0.0)",
        ));
    }
    let bytes = staged.read_json("index.json")?;
    let index: ImageIndex =
        serde_json::from_slice(&bytes).map_err(|e| Error::json("index.json", e))?;
    if index.manifests().is_empty() {
        return Err(Error::archive("index.json lists no images"));
    }
    let mut images = Vec::new();
    for entry in index.manifests() {
        let manifest_desc = resolve_manifest(staged, entry)?;
        let manifest_digest = Digest::from_oci(manifest_desc.digest())?;
        let manifest_bytes = staged.read_json(&blob_name(&manifest_digest))?;
        let manifest: ImageManifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| Error::json(format!("manifest {manifest_digest}"), e))?;
        // Check everything before moving anything into the store.
        let mut needed = vec![(manifest_digest.clone(), manifest_desc.size())];
        for desc in std::iter::once(manifest.config()).chain(manifest.layers()) {
            let digest = Digest::from_oci(desc.digest())?;
            staged.blob(&digest, desc.size())?;
            needed.push((digest, desc.size()));
        }
        for (digest, size) in &needed {
            if !store.retain_blob(digest)? {
                let file = staged.blob(digest, *size)?;
                store.commit_file(&file.path, digest)?;
            }
        }
        let tags: Vec<Reference> = entry_name(entry).into_iter().collect();
        let mut desc = Descriptor::new(
            manifest
                .media_type()
                .clone()
                .unwrap_or(MediaType::ImageManifest),
            manifest_desc.size(),
            manifest_digest.to_oci()?,
        );
        desc.set_annotations(None);
        store.record_image(&desc, &tags)?;
        images.push(LoadedImage {
            image: store.read_image(&desc)?,
            tags: tags.iter().map(Reference::store_tag).collect(),
        });
    }
    Ok(Loaded {
        format: ArchiveFormat::Oci,
        images,
    })
}

/// The image manifest an index.json entry stands for: itself, or the manifest for this machine
/// when the entry is a multi-platform index.
fn resolve_manifest(staged: &Staging, entry: &Descriptor) -> Result<Descriptor> {
    let mut desc = entry.clone();
    for _ in 0..4 {
        let digest = Digest::from_oci(desc.digest())?;
        staged.blob(&digest, desc.size())?;
        if !is_index_type(desc.media_type()) {
            return Ok(desc);
        }
        let bytes = staged.read_json(&blob_name(&digest))?;
        let index: ImageIndex = serde_json::from_slice(&bytes)
            .map_err(|e| Error::json(format!("image index {digest}"), e))?;
        desc = pick_platform(&index).ok_or_else(|| {
            Error::archive(format!(
                "image index {digest} has no manifest for linux/{}",
                crate::config::host_platform().0
            ))
        })?;
    }
    Err(Error::archive("image indexes are nested too deeply"))
}

/// The name to tag an entry with: containerd's full name if present, else ref.name when it is
/// a whole reference (`app:1`, as kiln and skopeo write it). A bare ref.name (`1.0`,
/// `latest`) is, by the OCI convention, only a tag without a repository: such an image is
/// loaded untagged, as docker does.
fn entry_name(entry: &Descriptor) -> Option<Reference> {
    let annotations = entry.annotations().as_ref()?;
    let containerd = annotations.get(CONTAINERD_NAME);
    let ref_name = annotations
        .get(REF_NAME)
        .filter(|name| name.contains(':') || name.contains('/'));
    containerd
        .into_iter()
        .chain(ref_name)
        .find_map(|name| Reference::parse(name).ok())
        .map(Reference::with_default_tag)
}

fn blob_name(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

pub(super) fn save<W: Write>(
    store: &Store,
    items: &[SaveItem],
    builder: &mut tar::Builder<W>,
) -> Result<()> {
    append_bytes(builder, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut blobs: BTreeMap<Digest, u64> = BTreeMap::new();
    let mut entries: Vec<Descriptor> = Vec::new();
    let mut seen_entries: BTreeSet<(String, Option<String>)> = BTreeSet::new();
    for item in items {
        let image = &item.image;
        blobs.insert(image.manifest_digest.clone(), image.manifest_size);
        blobs.insert(image.id.clone(), image.config_size);
        for layer in image.layers()? {
            blobs.insert(layer.digest, layer.size);
        }
        let names: Vec<Option<String>> = if item.tags.is_empty() {
            vec![None]
        } else {
            item.tags.iter().map(|t| Some(t.store_tag())).collect()
        };
        for name in names {
            if !seen_entries.insert((image.manifest_digest.to_string(), name.clone())) {
                continue;
            }
            let mut desc = image.descriptor()?;
            if let Some(name) = name {
                desc.set_annotations(Some(HashMap::from([(REF_NAME.to_string(), name)])));
            }
            entries.push(desc);
        }
    }
    for (digest, size) in &blobs {
        let mut reader = store.open_blob(digest, Some(*size))?;
        append_reader(builder, &blob_name(digest), *size, &mut reader).map_err(|e| match e {
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::InvalidData => {
                Error::CorruptBlob {
                    digest: digest.clone(),
                    reason: source.to_string(),
                }
            }
            other => other,
        })?;
    }
    let mut index = ImageIndex::default();
    index.set_media_type(Some(MediaType::ImageIndex));
    index.set_manifests(entries);
    append_bytes(
        builder,
        "index.json",
        &to_canonical_json(&index, "index.json")?,
    )
}
