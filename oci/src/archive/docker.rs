//! docker-archive: what `docker save` writes and `docker load` / `podman load` read.
//!
//! ```text
//! manifest.json          [{"Config": "<id>.json", "RepoTags": ["app:1"], "Layers": ["<diff-id>/layer.tar", …]}]
//! repositories           {"app": {"1": "<top layer id>"}}   (legacy; read by old tools)
//! <config-hex>.json      the image config, byte for byte (so the image id survives)
//! <diff-id-hex>/layer.tar  each layer uncompressed (its sha256 is its diff-id)
//! ```

use super::{ArchiveFormat, Loaded, LoadedImage, SaveItem, Staging, append_bytes, append_reader};
use crate::config::ImageConfig;
use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, IoContext, Result};
use crate::layer::{LayerOptions, LayerWriter, open_layer_blob};
use crate::reference::Reference;
use crate::store::Store;
use oci_spec::image::Descriptor;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, BufWriter, Write};

#[derive(Debug, Serialize, Deserialize)]
struct ManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

pub(super) fn load(store: &Store, staged: &Staging, options: LayerOptions) -> Result<Loaded> {
    let bytes = staged.read_json("manifest.json")?;
    let entries: Vec<ManifestEntry> =
        serde_json::from_slice(&bytes).map_err(|e| Error::json("manifest.json", e))?;
    if entries.is_empty() {
        return Err(Error::archive("manifest.json lists no images"));
    }
    // The same layer file is compressed once even if several images share it, and not at all
    // if the store already holds a layer with its diff-id.
    let mut done: HashMap<String, Descriptor> = HashMap::new();
    let known = store.layers_by_diff_id()?;
    let mut images = Vec::new();
    for entry in &entries {
        let config_bytes = staged.read_json(&entry.config)?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| Error::json(format!("image config {}", entry.config), e))?;
        let diff_ids = &config.rootfs.diff_ids;
        if diff_ids.len() != entry.layers.len() {
            return Err(Error::archive(format!(
                "{}: the config lists {} diff_ids but manifest.json lists {} layers",
                entry.config,
                diff_ids.len(),
                entry.layers.len()
            )));
        }
        let tags = entry
            .repo_tags
            .iter()
            .flatten()
            .map(|t| Reference::parse(t))
            .collect::<Result<Vec<_>>>()?;
        let mut descriptors = Vec::new();
        for (layer_path, want) in entry.layers.iter().zip(diff_ids) {
            let want = Digest::parse(want)?;
            let descriptor = match done.get(layer_path) {
                Some(descriptor) => descriptor.clone(),
                None => {
                    let descriptor =
                        store_layer(store, staged, layer_path, &want, &known, options)?;
                    done.insert(layer_path.clone(), descriptor.clone());
                    descriptor
                }
            };
            descriptors.push(descriptor);
        }
        images.push(LoadedImage {
            image: store.write_image_raw(&config_bytes, descriptors, &tags)?,
            tags: tags.iter().map(Reference::store_tag).collect(),
        });
    }
    Ok(Loaded {
        format: ArchiveFormat::Docker,
        images,
    })
}

/// Puts one layer file of the archive into the store and checks it is the layer the config
/// names (`want`, its diff-id).
fn store_layer(
    store: &Store,
    staged: &Staging,
    layer_path: &str,
    want: &Digest,
    known: &HashMap<Digest, Descriptor>,
    options: LayerOptions,
) -> Result<Descriptor> {
    let file = staged.get(layer_path)?;
    // An uncompressed layer hashes to its diff-id; if the store has that layer already, the
    // staged hash proves the content is the same and nothing needs compressing.
    if file.digest == *want
        && let Some(existing) = known.get(want)
    {
        return Ok(existing.clone());
    }
    let source = File::open(&file.path).at(&file.path)?;
    let mut tar = crate::layer::open_layer(source)?;
    let mut writer = LayerWriter::new(store, options)?;
    io::copy(&mut tar, &mut writer)
        .map_err(|e| Error::archive(format!("layer {layer_path}: {e}")))?;
    let layer = writer.finish()?;
    if layer.diff_id != *want {
        return Err(Error::archive(format!(
            "layer {layer_path} does not match the config: its diff-id is {} but the config \
             expects {want}",
            layer.diff_id
        )));
    }
    layer.descriptor()
}

pub(super) fn save<W: Write>(
    store: &Store,
    items: &[SaveItem],
    builder: &mut tar::Builder<W>,
) -> Result<()> {
    // One manifest entry per image id, with the tags asked for, in the order first asked for.
    let mut order: Vec<&SaveItem> = Vec::new();
    let mut tags: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for item in items {
        let key = item.image.id.to_string();
        if !tags.contains_key(&key) {
            order.push(item);
        }
        tags.entry(key)
            .or_default()
            .extend(item.tags.iter().map(Reference::store_tag));
    }
    let mut manifest = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut written: BTreeSet<String> = BTreeSet::new();
    for item in order {
        let image = &item.image;
        let config_name = format!("{}.json", image.id.hex());
        if written.insert(config_name.clone()) {
            let bytes = store.read_blob(&image.id, Some(image.config_size))?;
            append_bytes(builder, &config_name, &bytes)?;
        }
        let diff_ids = image.diff_ids()?;
        let mut layer_names = Vec::new();
        for (layer, diff_id) in image.layers()?.iter().zip(&diff_ids) {
            let dir = diff_id.hex().to_string();
            let name = format!("{dir}/layer.tar");
            if written.insert(name.clone()) {
                append_uncompressed_layer(store, &layer.digest, diff_id, &name, builder)?;
            }
            layer_names.push(name);
        }
        let repo_tags: Vec<String> = tags
            .get(image.id.as_str())
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default();
        if let Some(top) = diff_ids.last() {
            for tag in &repo_tags {
                if let Ok(reference) = Reference::parse(tag) {
                    repositories.entry(reference.name()).or_default().insert(
                        reference.tag().unwrap_or("latest").to_string(),
                        top.hex().to_string(),
                    );
                }
            }
        }
        manifest.push(ManifestEntry {
            config: config_name,
            repo_tags: if repo_tags.is_empty() {
                None
            } else {
                Some(repo_tags)
            },
            layers: layer_names,
        });
    }
    let manifest_bytes =
        serde_json::to_vec(&manifest).map_err(|e| Error::json("manifest.json", e))?;
    append_bytes(builder, "manifest.json", &manifest_bytes)?;
    let repositories_bytes =
        serde_json::to_vec(&repositories).map_err(|e| Error::json("repositories", e))?;
    append_bytes(builder, "repositories", &repositories_bytes)
}

/// docker-archive layers are plain tars whose sha256 is the diff-id; the header needs the size
/// first, so the layer is decompressed into a tmp file (and its diff-id checked) on the way.
fn append_uncompressed_layer<W: Write>(
    store: &Store,
    digest: &Digest,
    diff_id: &Digest,
    name: &str,
    builder: &mut tar::Builder<W>,
) -> Result<()> {
    let path = store.tmp_path("save-layer");
    let result = (|| {
        let file = File::create_new(&path).at(&path)?;
        let mut out = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
        let mut layer = open_layer_blob(store, digest)?;
        io::copy(&mut layer, &mut out).map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData => Error::CorruptBlob {
                digest: digest.clone(),
                reason: e.to_string(),
            },
            _ => Error::io(&path, e),
        })?;
        let (writer, actual, size) = out.finish();
        writer
            .into_inner()
            .map_err(|e| Error::io(&path, e.into_error()))?;
        if actual != *diff_id {
            return Err(Error::CorruptBlob {
                digest: digest.clone(),
                reason: format!("it decompresses to {actual}, not the diff-id {diff_id}"),
            });
        }
        let mut file = File::open(&path).at(&path)?;
        append_reader(builder, name, size, &mut file)
    })();
    let _ = std::fs::remove_file(&path);
    result
}
