//! Images in the store: writing config + manifest, tags in index.json, lookup by tag or id,
//! untagging and removal, and `import` of a root filesystem tar.
//!
//! index.json holds one descriptor per tag (annotated `org.opencontainers.image.ref.name` =
//! `name:tag`) plus one unannotated descriptor for each *dangling* image, one whose last tag was
//! moved to another image (Docker's `<none>:<none>`), until `rmi` or `prune` removes it.
//!
//! Docker's RepoDigests (`repository@sha256:…` for each repository an image was pulled from or
//! pushed to) are kept in one annotation of index.json itself, [`REPO_DIGESTS`]: a JSON object
//! from each image's index digest to its entries. Living in index.json, they are written under
//! the same lock and atomically with the tags, and an image's entries go when its last
//! descriptor leaves the index (`rmi`, `prune`, `fsck`).

use crate::canonical::to_canonical_json;
use crate::config::{History, ImageConfig, host_platform, rfc3339};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::layer::{Layer, LayerOptions, LayerWriter};
use crate::reference::Reference;
use crate::store::Store;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, ImageManifestBuilder, MediaType};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Read, Write};

pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// How containerd and Docker name an image in an OCI archive whose ref.name is only a tag.
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The index.json annotation holding every image's RepoDigests (see the module comment). Not a
/// descriptor annotation: descriptors are per tag, and a digest outlives the tags.
pub const REPO_DIGESTS: &str = "dev.kiln.repo-digests";

/// An image read from the store, verified.
#[derive(Debug, Clone)]
pub struct Image {
    pub manifest_digest: Digest,
    pub manifest_size: u64,
    pub manifest: ImageManifest,
    /// The image id (the config digest), as Docker defines it.
    pub id: Digest,
    pub config_size: u64,
    pub config: ImageConfig,
    /// The `name:tag`s pointing at this image, sorted.
    pub tags: Vec<String>,
    /// `name@sha256:…` for each repository the image was pulled from or pushed to (docker's
    /// RepoDigests), sorted.
    pub repo_digests: Vec<String>,
}

/// One line of `kiln images`.
#[derive(Debug, Clone)]
pub struct ImageSummary {
    /// `name:tag`, or `None` for a dangling image.
    pub tag: Option<String>,
    pub manifest_digest: Digest,
    /// The image id; `None` when the image could not be read (see `problem`).
    pub id: Option<Digest>,
    pub created: Option<String>,
    pub size: u64,
    /// Why the image could not be read (missing or corrupt content).
    pub problem: Option<String>,
}

/// A layer as a manifest lists it.
#[derive(Debug, Clone)]
pub struct LayerRef {
    pub digest: Digest,
    pub size: u64,
    pub media_type: MediaType,
}

impl Image {
    pub fn layers(&self) -> Result<Vec<LayerRef>> {
        self.manifest
            .layers()
            .iter()
            .map(|d| {
                Ok(LayerRef {
                    digest: Digest::from_oci(d.digest())?,
                    size: d.size(),
                    media_type: d.media_type().clone(),
                })
            })
            .collect()
    }

    /// Content size: the config plus the (compressed) layers, each counted once.
    pub fn size(&self) -> u64 {
        let mut seen = BTreeSet::new();
        let layers: u64 = self
            .manifest
            .layers()
            .iter()
            .filter(|d| seen.insert(d.digest().to_string()))
            .map(|d| d.size())
            .sum();
        layers + self.config_size
    }

    /// The diff-ids, parsed; an image whose config does not match its manifest is refused.
    pub fn diff_ids(&self) -> Result<Vec<Digest>> {
        let ids = &self.config.rootfs.diff_ids;
        if ids.len() != self.manifest.layers().len() {
            return Err(Error::InvalidImage {
                image: self.id.to_string(),
                reason: format!(
                    "the config lists {} diff_ids but the manifest has {} layers",
                    ids.len(),
                    self.manifest.layers().len()
                ),
            });
        }
        ids.iter().map(|d| Digest::parse(d)).collect()
    }

    pub fn descriptor(&self) -> Result<Descriptor> {
        // Keep the manifest's own media type: a Docker v2 manifest loaded from an archive must
        // not be described as an OCI one.
        let media_type = self
            .manifest
            .media_type()
            .clone()
            .unwrap_or(MediaType::ImageManifest);
        Ok(Descriptor::new(
            media_type,
            self.manifest_size,
            self.manifest_digest.to_oci()?,
        ))
    }
}

/// oci-spec gives no `&mut` access to an index's manifests; this guard edits a copy and puts
/// it back when dropped, so callers can write `index.manifests_mut().retain(…)`.
pub(crate) trait IndexExt {
    fn manifests_mut(&mut self) -> ManifestsGuard<'_>;
}

impl IndexExt for ImageIndex {
    fn manifests_mut(&mut self) -> ManifestsGuard<'_> {
        let list = self.manifests().clone();
        ManifestsGuard { index: self, list }
    }
}

pub(crate) struct ManifestsGuard<'a> {
    index: &'a mut ImageIndex,
    list: Vec<Descriptor>,
}

impl std::ops::Deref for ManifestsGuard<'_> {
    type Target = Vec<Descriptor>;
    fn deref(&self) -> &Vec<Descriptor> {
        &self.list
    }
}

impl std::ops::DerefMut for ManifestsGuard<'_> {
    fn deref_mut(&mut self) -> &mut Vec<Descriptor> {
        &mut self.list
    }
}

impl Drop for ManifestsGuard<'_> {
    fn drop(&mut self) {
        self.index.set_manifests(std::mem::take(&mut self.list));
    }
}

pub(crate) fn ref_name(desc: &Descriptor) -> Option<&str> {
    desc.annotations()
        .as_ref()?
        .get(REF_NAME)
        .map(String::as_str)
}

fn tagged(desc: &Descriptor, tag: &str) -> Descriptor {
    let mut desc = desc.clone();
    desc.set_annotations(Some(HashMap::from([(
        REF_NAME.to_string(),
        tag.to_string(),
    )])));
    desc.set_platform(None);
    desc
}

fn untagged(desc: &Descriptor) -> Descriptor {
    let mut desc = desc.clone();
    desc.set_annotations(None);
    desc
}

fn is_manifest_type(media: &MediaType) -> bool {
    match media {
        MediaType::ImageManifest => true,
        MediaType::Other(s) => s == "application/vnd.docker.distribution.manifest.v2+json",
        _ => false,
    }
}

pub(crate) fn is_index_type(media: &MediaType) -> bool {
    match media {
        MediaType::ImageIndex => true,
        MediaType::Other(s) => s == "application/vnd.docker.distribution.manifest.list.v2+json",
        _ => false,
    }
}

/// Puts `tag` on `desc`: the tag moves off any other image (which becomes dangling if it has no
/// tag left), and `desc`'s dangling entry, if any, goes away.
pub(crate) fn set_tag(index: &mut ImageIndex, desc: &Descriptor, tag: &str) {
    let digest = desc.digest().to_string();
    let mut manifests = index.manifests_mut();
    let mut orphaned = None;
    manifests.retain(|d| {
        if ref_name(d) == Some(tag) {
            if d.digest().to_string() != digest {
                orphaned = Some(d.clone());
            }
            return false;
        }
        true
    });
    if let Some(old) = orphaned {
        let old_digest = old.digest().to_string();
        if !manifests
            .iter()
            .any(|d| d.digest().to_string() == old_digest)
        {
            manifests.push(untagged(&old));
        }
    }
    manifests.retain(|d| !(d.digest().to_string() == digest && ref_name(d).is_none()));
    manifests.push(tagged(desc, tag));
    drop(manifests);
    sort_index(index);
}

/// Records `desc` as a dangling image unless something already refers to it.
pub(crate) fn keep_untagged(index: &mut ImageIndex, desc: &Descriptor) {
    let digest = desc.digest().to_string();
    if !index
        .manifests()
        .iter()
        .any(|d| d.digest().to_string() == digest)
    {
        index.manifests_mut().push(untagged(desc));
        sort_index(index);
    }
}

/// Tagged entries by name, then dangling ones by digest: a stable order keeps index.json's bytes
/// a function of its content.
fn sort_index(index: &mut ImageIndex) {
    index.manifests_mut().sort_by(|a, b| {
        let key = |d: &Descriptor| {
            (
                ref_name(d).is_none(),
                ref_name(d).map(str::to_string),
                d.digest().to_string(),
            )
        };
        key(a).cmp(&key(b))
    });
}

type RepoDigestMap = BTreeMap<String, Vec<String>>;

/// The annotation's map; a missing or malformed annotation is an empty map (the digests are a
/// convenience for display, never worth failing a command over).
fn repo_digest_map(index: &ImageIndex) -> RepoDigestMap {
    index
        .annotations()
        .as_ref()
        .and_then(|a| a.get(REPO_DIGESTS))
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default()
}

fn set_repo_digest_map(index: &mut ImageIndex, map: &RepoDigestMap) {
    let mut annotations = index.annotations().clone().unwrap_or_default();
    match serde_json::to_string(map) {
        Ok(text) if !map.is_empty() => {
            annotations.insert(REPO_DIGESTS.to_string(), text);
        }
        _ => {
            annotations.remove(REPO_DIGESTS);
        }
    }
    index.set_annotations((!annotations.is_empty()).then_some(annotations));
}

/// The repository of a `name@sha256:…` entry; `None` for one that is not such a reference.
fn repo_digest_name(entry: &str) -> Option<String> {
    let reference = Reference::parse(entry).ok()?;
    (reference.digest().is_some() && reference.tag().is_none()).then(|| reference.name())
}

/// The RepoDigests of the image whose index descriptor has digest `key`, sorted; entries that
/// do not parse are skipped.
pub(crate) fn repo_digests_of(index: &ImageIndex, key: &str) -> Vec<String> {
    let mut out: Vec<String> = repo_digest_map(index)
        .remove(key)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| repo_digest_name(e).is_some())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Adds `entry` (`name@sha256:…`) to the image `key`, replacing the entry it had for the same
/// repository: docker keeps one digest per repository, the latest pulled or pushed.
pub(crate) fn add_repo_digest(index: &mut ImageIndex, key: &str, entry: &Reference) {
    let Some(name) = entry.digest().map(|_| entry.name()) else {
        return;
    };
    if !index
        .manifests()
        .iter()
        .any(|d| d.digest().to_string() == key)
    {
        return;
    }
    let mut map = repo_digest_map(index);
    let list = map.entry(key.to_string()).or_default();
    list.retain(|e| repo_digest_name(e).is_some_and(|n| n != name));
    list.push(entry.to_string());
    list.sort();
    set_repo_digest_map(index, &map);
}

/// Drops the RepoDigests of images no longer in the index, so they go with the image whatever
/// removed it. Left untouched when there is nothing to drop, keeping the file's bytes.
pub(crate) fn forget_removed_repo_digests(index: &mut ImageIndex) {
    let has_annotation = index
        .annotations()
        .as_ref()
        .is_some_and(|a| a.contains_key(REPO_DIGESTS));
    if !has_annotation {
        return;
    }
    let present: BTreeSet<String> = index
        .manifests()
        .iter()
        .map(|d| d.digest().to_string())
        .collect();
    let mut map = repo_digest_map(index);
    let before = map.len();
    map.retain(|key, _| present.contains(key));
    // A malformed annotation reads as empty and so is removed here rather than kept forever.
    if map.len() != before || map.is_empty() {
        set_repo_digest_map(index, &map);
    }
}

impl Store {
    /// Records that `repository` (a name; any tag is ignored) holds `image` as `digest`, as
    /// docker does after a pull or a push. Nothing is recorded if the image has left the store
    /// meanwhile.
    pub fn add_repo_digest(
        &self,
        image: &Image,
        repository: &Reference,
        digest: &Digest,
    ) -> Result<()> {
        let entry = Reference::parse(&repository.name())?.with_digest(digest.clone());
        let manifest = image.manifest_digest.to_string();
        self.update_index(|index| {
            // The image's key is its descriptor in the index: the manifest itself, or for an
            // image recorded by an index (a loaded archive), the index leading to it.
            let mut key = index
                .manifests()
                .iter()
                .find(|d| d.digest().to_string() == manifest)
                .map(|d| d.digest().to_string());
            if key.is_none() {
                key = index
                    .manifests()
                    .iter()
                    .find(|d| {
                        self.read_manifest(d)
                            .is_ok_and(|(found, _, _)| found == image.manifest_digest)
                    })
                    .map(|d| d.digest().to_string());
            }
            if let Some(key) = key {
                add_repo_digest(index, &key, &entry);
            }
            Ok(())
        })
    }

    /// Writes config and manifest for `layers` (the config's `rootfs.diff_ids` are set from
    /// them) and points `tags` at the result. With no tags the image is kept as dangling.
    pub fn write_image(
        &self,
        config: &ImageConfig,
        layers: &[Layer],
        tags: &[Reference],
    ) -> Result<Image> {
        let mut config = config.clone();
        config.rootfs.kind = "layers".to_string();
        config.rootfs.diff_ids = layers.iter().map(|l| l.diff_id.to_string()).collect();
        let config_bytes = to_canonical_json(&config, "image config")?;
        let descriptors = layers
            .iter()
            .map(Layer::descriptor)
            .collect::<Result<Vec<_>>>()?;
        self.write_image_raw(&config_bytes, descriptors, tags)
    }

    /// Like `write_image` with the config's bytes kept exactly as given (a loaded image keeps
    /// its id). The layer blobs must already be in the store.
    pub fn write_image_raw(
        &self,
        config_bytes: &[u8],
        layers: Vec<Descriptor>,
        tags: &[Reference],
    ) -> Result<Image> {
        let config: ImageConfig =
            serde_json::from_slice(config_bytes).map_err(|e| Error::json("image config", e))?;
        for layer in &layers {
            // Layers may come from elsewhere (the build cache, another image): pin them so a
            // concurrent prune cannot remove them before the new manifest refers to them.
            let digest = Digest::from_oci(layer.digest())?;
            if !self.retain_blob(&digest)? {
                return Err(Error::BlobNotFound(digest));
            }
        }
        let (config_digest, config_size) = self.put_blob(config_bytes)?;
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(Descriptor::new(
                MediaType::ImageConfig,
                config_size,
                config_digest.to_oci()?,
            ))
            .layers(layers)
            .build()
            .map_err(|e| Error::InvalidImage {
                image: config_digest.to_string(),
                reason: e.to_string(),
            })?;
        let manifest_bytes = to_canonical_json(&manifest, "image manifest")?;
        let (manifest_digest, manifest_size) = self.put_blob(&manifest_bytes)?;
        let image = Image {
            manifest_digest,
            manifest_size,
            manifest,
            id: config_digest,
            config_size,
            config,
            tags: tags.iter().map(Reference::store_tag).collect(),
            repo_digests: Vec::new(),
        };
        self.record_image(&image.descriptor()?, tags)?;
        Ok(image)
    }

    /// Points `tags` at a manifest already in the store (dangling if `tags` is empty).
    pub fn record_image(&self, desc: &Descriptor, tags: &[Reference]) -> Result<()> {
        self.update_index(|index| {
            if tags.is_empty() {
                keep_untagged(index, desc);
            }
            for tag in tags {
                set_tag(index, desc, &tag.store_tag());
            }
            Ok(())
        })
    }

    /// Reads an image manifest (following an image index to the manifest for this machine),
    /// verified against the descriptor's digest and size.
    pub fn read_manifest(&self, desc: &Descriptor) -> Result<(Digest, u64, ImageManifest)> {
        let mut desc = desc.clone();
        // Bounded: an index pointing at an index pointing … is refused after a few hops.
        for _ in 0..4 {
            let digest = Digest::from_oci(desc.digest())?;
            let bytes = self.read_blob(&digest, Some(desc.size()))?;
            if is_index_type(desc.media_type()) || looks_like_index(&bytes) {
                let index: ImageIndex = serde_json::from_slice(&bytes)
                    .map_err(|e| Error::json(format!("image index {digest}"), e))?;
                desc = pick_platform(&index).ok_or_else(|| Error::InvalidImage {
                    image: digest.to_string(),
                    reason: format!(
                        "the image index has no manifest for linux/{}",
                        host_platform().0
                    ),
                })?;
                continue;
            }
            let manifest: ImageManifest = serde_json::from_slice(&bytes)
                .map_err(|e| Error::json(format!("image manifest {digest}"), e))?;
            return Ok((digest, desc.size(), manifest));
        }
        Err(Error::InvalidImage {
            image: desc.digest().to_string(),
            reason: "image indexes are nested too deeply".into(),
        })
    }

    /// Reads the image a manifest descriptor points at (manifest and config verified).
    pub fn read_image(&self, desc: &Descriptor) -> Result<Image> {
        let (manifest_digest, manifest_size, manifest) = self.read_manifest(desc)?;
        let config_desc = manifest.config().clone();
        let id = Digest::from_oci(config_desc.digest())?;
        let bytes = self.read_blob(&id, Some(config_desc.size()))?;
        let config: ImageConfig = serde_json::from_slice(&bytes)
            .map_err(|e| Error::json(format!("image config {id}"), e))?;
        let index = self.read_index()?;
        let mut tags: Vec<String> = index
            .manifests()
            .iter()
            .filter(|d| d.digest() == desc.digest())
            .filter_map(|d| ref_name(d).map(str::to_string))
            .collect();
        tags.sort();
        let repo_digests = repo_digests_of(&index, desc.digest().as_ref());
        Ok(Image {
            manifest_digest,
            manifest_size,
            manifest,
            id,
            config_size: config_desc.size(),
            config,
            tags,
            repo_digests,
        })
    }

    /// Finds an image by `name[:tag]`, `name@digest`, id (`sha256:…` or a hex prefix, as Docker
    /// accepts) or manifest digest.
    pub fn find_image(&self, wanted: &str) -> Result<Image> {
        let index = self.read_index()?;
        let desc = self.find_descriptor(&index, wanted)?;
        self.read_image(&desc)
    }

    fn find_descriptor(&self, index: &ImageIndex, wanted: &str) -> Result<Descriptor> {
        // A name as written (`alpine`) also finds the image under Docker's full name
        // (`docker.io/library/alpine:latest`), which is how pulled images are tagged.
        let references = Reference::parse(wanted)
            .map(|r| vec![r.clone(), r.normalized()])
            .unwrap_or_default();
        for reference in references {
            let found = match reference.digest() {
                Some(digest) => index
                    .manifests()
                    .iter()
                    .find(|d| d.digest().to_string() == digest.as_str()),
                None => {
                    let tag = reference.store_tag();
                    index
                        .manifests()
                        .iter()
                        .find(|d| ref_name(d) == Some(tag.as_str()))
                }
            };
            if let Some(desc) = found {
                return Ok(desc.clone());
            }
        }
        let hex = wanted.strip_prefix(Digest::PREFIX).unwrap_or(wanted);
        let is_hex = !hex.is_empty()
            && hex.len() <= 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !is_hex {
            return Err(Error::ImageNotFound(wanted.to_string()));
        }
        // Ids are config digests, so every distinct manifest has to be read to match one. Two
        // manifests with one config (the same image, compressed differently after a save and
        // load) are one image: the prefix is ambiguous only between different ids.
        let full = format!("{}{hex}", Digest::PREFIX);
        if let Some(desc) = index
            .manifests()
            .iter()
            .find(|d| d.digest().to_string() == full)
        {
            return Ok(desc.clone());
        }
        let mut matches: BTreeMap<String, Descriptor> = BTreeMap::new();
        let mut read: std::collections::HashSet<String> = std::collections::HashSet::new();
        for desc in index.manifests() {
            if !read.insert(desc.digest().to_string()) {
                continue;
            }
            if let Ok((_, _, manifest)) = self.read_manifest(desc)
                && let Ok(id) = Digest::from_oci(manifest.config().digest())
                && id.hex().starts_with(hex)
            {
                matches
                    .entry(id.to_string())
                    .or_insert_with(|| desc.clone());
            }
        }
        let mut found = matches.into_values();
        match (found.next(), found.next()) {
            (Some(desc), None) => Ok(desc),
            (Some(_), Some(_)) => Err(Error::AmbiguousImageId(wanted.to_string())),
            (None, _) => Err(Error::ImageNotFound(wanted.to_string())),
        }
    }

    /// Every tag and every dangling image, as `kiln images` lists them. Images whose content is
    /// damaged are listed with the problem rather than hidden.
    pub fn list_images(&self) -> Result<Vec<ImageSummary>> {
        let index = self.read_index()?;
        let mut cache: HashMap<String, std::result::Result<Image, String>> = HashMap::new();
        let mut out = Vec::new();
        for desc in index.manifests() {
            let key = desc.digest().to_string();
            let image = cache
                .entry(key)
                .or_insert_with(|| self.read_image(desc).map_err(|e| e.to_string()));
            let manifest_digest = Digest::from_oci(desc.digest())?;
            let tag = ref_name(desc).map(str::to_string);
            out.push(match image {
                Ok(image) => ImageSummary {
                    tag,
                    manifest_digest,
                    id: Some(image.id.clone()),
                    created: image.config.created.clone(),
                    size: image.size(),
                    problem: None,
                },
                Err(problem) => ImageSummary {
                    tag,
                    manifest_digest,
                    id: None,
                    created: None,
                    size: 0,
                    problem: Some(problem.clone()),
                },
            });
        }
        Ok(out)
    }

    /// The layers of the images in index.json by diff-id, so content that arrives again (a
    /// `load` of an image we already have) can reuse the blob instead of being recompressed.
    pub fn layers_by_diff_id(&self) -> Result<HashMap<Digest, Descriptor>> {
        let index = self.read_index()?;
        let mut seen = BTreeSet::new();
        let mut out = HashMap::new();
        for desc in index.manifests() {
            if !seen.insert(desc.digest().to_string()) {
                continue;
            }
            // A damaged image just contributes nothing; fsck is where it gets reported.
            let Ok(image) = self.read_image(desc) else {
                continue;
            };
            let (Ok(diff_ids), Ok(layers)) = (image.diff_ids(), image.layers()) else {
                continue;
            };
            for (diff_id, (layer, desc)) in diff_ids
                .into_iter()
                .zip(layers.iter().zip(image.manifest.layers()))
            {
                if self.has_blob(&layer.digest) {
                    out.entry(diff_id).or_insert_with(|| desc.clone());
                }
            }
        }
        Ok(out)
    }

    /// Adds the tag `target` to the image `source` (a name or id).
    pub fn tag_image(&self, source: &str, target: &Reference) -> Result<Image> {
        let image = self.find_image(source)?;
        let desc = image.descriptor()?;
        self.update_index(|index| {
            set_tag(index, &desc, &target.store_tag());
            Ok(())
        })?;
        self.find_image(&target.store_tag())
    }

    /// `rmi`: a tag is removed; an image left without tags (or named by id) is removed from the
    /// index, its blobs left to `prune`. Naming by id an image that has several tags needs
    /// `force`, as in Docker. Returns what happened, line by line, in Docker's words.
    pub fn remove_image(&self, wanted: &str, force: bool) -> Result<Vec<String>> {
        self.update_index(|index| {
            let desc = self.find_descriptor(index, wanted)?;
            let digest = desc.digest().to_string();
            let mut report = Vec::new();
            let by_tag = Reference::parse(wanted)
                .ok()
                .filter(|r| r.digest().is_none())
                .map(|r| r.store_tag())
                .filter(|t| ref_name(&desc) == Some(t.as_str()));
            let tags_of = |index: &ImageIndex| -> Vec<String> {
                index
                    .manifests()
                    .iter()
                    .filter(|d| d.digest().to_string() == digest)
                    .filter_map(|d| ref_name(d).map(str::to_string))
                    .collect()
            };
            match by_tag {
                Some(tag) => {
                    index
                        .manifests_mut()
                        .retain(|d| ref_name(d) != Some(tag.as_str()));
                    report.push(format!("Untagged: {tag}"));
                }
                None => {
                    let tags = tags_of(index);
                    if tags.len() > 1 && !force {
                        return Err(Error::Unsupported(format!(
                            "image {wanted} is referenced by several tags ({}); remove them one \
                             by one or use --force",
                            tags.join(", ")
                        )));
                    }
                    for tag in tags {
                        report.push(format!("Untagged: {tag}"));
                    }
                    index
                        .manifests_mut()
                        .retain(|d| d.digest().to_string() != digest);
                }
            }
            if tags_of(index).is_empty() {
                index
                    .manifests_mut()
                    .retain(|d| d.digest().to_string() != digest);
                // Docker reports the image id; a manifest we cannot read is named by its digest.
                let id = self
                    .read_manifest(&desc)
                    .ok()
                    .and_then(|(_, _, m)| Digest::from_oci(m.config().digest()).ok())
                    .map_or(digest.clone(), |id| id.to_string());
                report.push(format!("Deleted: {id}"));
            }
            Ok(report)
        })
    }
}

fn looks_like_index(bytes: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe {
        manifests: Option<serde_json::Value>,
        layers: Option<serde_json::Value>,
    }
    matches!(
        serde_json::from_slice::<Probe>(bytes),
        Ok(Probe {
            manifests: Some(_),
            layers: None
        })
    )
}

/// The manifest of an image index for linux on this architecture; a single-entry index without
/// platform information is taken as it is.
pub(crate) fn pick_platform(index: &ImageIndex) -> Option<Descriptor> {
    let (arch, _) = host_platform();
    let manifests: Vec<&Descriptor> = index
        .manifests()
        .iter()
        .filter(|d| is_manifest_type(d.media_type()) || is_index_type(d.media_type()))
        .collect();
    let matching = manifests.iter().find(|d| {
        d.platform()
            .as_ref()
            .is_some_and(|p| p.os().to_string() == "linux" && p.architecture().to_string() == arch)
    });
    match (matching, manifests.as_slice()) {
        (Some(d), _) => Some((*d).clone()),
        (None, [only]) if only.platform().is_none() => Some((*only).clone()),
        _ => None,
    }
}

/// The time to stamp on a new image: `SOURCE_DATE_EPOCH` when set (reproducible builds), else now.
pub fn creation_time() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        });
    rfc3339(secs)
}

/// `kiln import`: a root filesystem tar (plain, gzip or zstd) becomes a one-layer image, as
/// `docker import` makes one. The history records `message`, or else where the tar came from
/// (`source`, `-` for stdin).
pub fn import_rootfs(
    store: &Store,
    input: &mut dyn Read,
    source: &str,
    tags: &[Reference],
    options: LayerOptions,
    message: Option<&str>,
) -> Result<Image> {
    let mut stream = crate::layer::decompress(input)?;
    let mut writer = LayerWriter::new(store, options)?;
    copy_checked(&mut stream, &mut writer, source)?;
    let layer = writer.finish()?;
    import_layer(store, layer, source, tags, message)
}

/// Write a single-layer image of `layer` (already in the store) for `host`'s platform, as
/// `docker import` does: one history entry naming the source, no other config.
pub fn import_layer(
    store: &Store,
    layer: Layer,
    source: &str,
    tags: &[Reference],
    message: Option<&str>,
) -> Result<Image> {
    let created = creation_time();
    let mut config = ImageConfig::for_host();
    config.created = Some(created.clone());
    config.history = vec![History {
        created: Some(created),
        comment: Some(message.map_or_else(|| format!("Imported from {source}"), str::to_string)),
        ..History::default()
    }];
    store.write_image(&config, &[layer], tags)
}

/// Copies a tar stream, refusing input whose first block is not a tar header.
fn copy_checked(input: &mut dyn Read, out: &mut dyn Write, source: &str) -> Result<()> {
    let mut first = [0u8; 512];
    let got = read_full(input, &mut first).map_err(|e| Error::io(source, e))?;
    if got < 512 || !is_tar_header(&first) {
        return Err(Error::Unsupported(format!(
            "{source} is not a tar archive (kiln import takes a root filesystem as a tar, \
             optionally gzip- or zstd-compressed)"
        )));
    }
    out.write_all(&first).map_err(|e| Error::io("layer", e))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(source, e)),
        };
        out.write_all(&buf[..n])
            .map_err(|e| Error::io("layer", e))?;
    }
    Ok(())
}

/// A tar header block: all zeros (an empty archive) or a block whose checksum adds up.
pub(crate) fn is_tar_header(block: &[u8; 512]) -> bool {
    if block.iter().all(|&b| b == 0) {
        return true;
    }
    let field = &block[148..156];
    let text: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    let Ok(stored) = u32::from_str_radix(text.trim(), 8) else {
        return false;
    };
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                b' ' as u32
            } else {
                b as u32
            }
        })
        .sum();
    sum == stored
}

pub(crate) fn read_full(input: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::Compression;

    fn small_tar(content: &[u8]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        builder
            .append_data(&mut header, "etc/hello", content)
            .unwrap();
        builder.into_inner().unwrap()
    }

    fn options() -> LayerOptions {
        LayerOptions {
            compression: Compression::Gzip(6),
            threads: 2,
        }
    }

    fn import(store: &Store, content: &[u8], tag: &str) -> Image {
        let tar = small_tar(content);
        let tags = [Reference::parse(tag).unwrap()];
        import_rootfs(store, &mut &tar[..], "test", &tags, options(), None).unwrap()
    }

    #[test]
    fn same_image_twice_gives_the_same_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tar = small_tar(b"hi");
        let layer = crate::layer::write_layer(&store, options(), &mut &tar[..]).unwrap();
        let mut config = ImageConfig::for_host();
        config.created = Some(rfc3339(0));
        let mut labels = BTreeMap::new();
        for i in 0..20 {
            labels.insert(format!("label{i}"), i.to_string());
        }
        config.config = Some(crate::config::ContainerConfig {
            labels: Some(labels),
            env: Some(vec!["A=1".into()]),
            ..Default::default()
        });
        let a = store
            .write_image(&config, std::slice::from_ref(&layer), &[])
            .unwrap();
        let b = store.write_image(&config, &[layer], &[]).unwrap();
        assert_eq!(a.id, b.id);
        assert_eq!(a.manifest_digest, b.manifest_digest);
        // index.json has a single dangling entry for it.
        assert_eq!(store.read_index().unwrap().manifests().len(), 1);
    }

    #[test]
    fn tags_move_and_leave_dangling_images() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let first = import(&store, b"one", "app");
        assert_eq!(first.tags, vec!["app:latest"]);
        assert_eq!(store.find_image("app:latest").unwrap().id, first.id);
        assert_eq!(store.find_image(first.id.short()).unwrap().id, first.id);
        assert_eq!(store.find_image(first.id.as_str()).unwrap().id, first.id);
        assert_eq!(
            store.find_image(first.manifest_digest.as_str()).unwrap().id,
            first.id
        );

        let second = import(&store, b"two", "app:latest");
        assert_ne!(first.id, second.id);
        let images = store.list_images().unwrap();
        assert_eq!(images.len(), 2);
        assert!(
            images
                .iter()
                .any(|i| i.tag.is_none() && i.id.as_ref() == Some(&first.id))
        );

        store
            .tag_image("app", &Reference::parse("other:1").unwrap())
            .unwrap();
        assert_eq!(store.find_image("other:1").unwrap().id, second.id);
        assert!(matches!(
            store.find_image("nope"),
            Err(Error::ImageNotFound(_))
        ));

        // By id with two tags: refused without force.
        assert!(store.remove_image(second.id.short(), false).is_err());
        let report = store.remove_image("other:1", false).unwrap();
        assert_eq!(report, vec!["Untagged: other:1"]);
        let report = store.remove_image("app", false).unwrap();
        assert_eq!(report[0], "Untagged: app:latest");
        assert!(report[1].starts_with("Deleted: "));
        store.remove_image(first.id.short(), false).unwrap();
        assert!(store.read_index().unwrap().manifests().is_empty());
    }

    #[test]
    fn one_image_under_two_manifests_is_found_by_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tar = small_tar(b"same");
        let gzip = crate::layer::write_layer(&store, options(), &mut &tar[..]).unwrap();
        let zstd_options = LayerOptions {
            compression: Compression::Zstd(3),
            threads: 1,
        };
        let zstd = crate::layer::write_layer(&store, zstd_options, &mut &tar[..]).unwrap();
        let mut config = ImageConfig::for_host();
        config.created = Some(rfc3339(0));
        let a = store.write_image(&config, &[gzip], &[]).unwrap();
        let b = store.write_image(&config, &[zstd], &[]).unwrap();
        assert_eq!(a.id, b.id);
        assert_ne!(a.manifest_digest, b.manifest_digest);
        assert_eq!(store.find_image(a.id.short()).unwrap().id, a.id);
        assert_eq!(store.find_image(a.id.as_str()).unwrap().id, a.id);
        // Naming a manifest still picks that one.
        let found = store.find_image(b.manifest_digest.as_str()).unwrap();
        assert_eq!(found.manifest_digest, b.manifest_digest);
    }

    #[test]
    fn import_refuses_non_tar_input() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let junk = vec![b'x'; 4096];
        let err = import_rootfs(&store, &mut &junk[..], "junk", &[], options(), None).unwrap_err();
        assert!(err.to_string().contains("not a tar archive"), "{err}");
        assert!(store.list_blobs().unwrap().is_empty());
    }

    #[test]
    fn import_accepts_compressed_tar() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tar = small_tar(b"zipped");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let image = import_rootfs(
            &store,
            &mut &gz[..],
            "x.tar.gz",
            &[],
            options(),
            Some("from gz"),
        )
        .unwrap();
        assert_eq!(image.diff_ids().unwrap(), vec![Digest::of(&tar)]);
        assert_eq!(image.config.history[0].comment.as_deref(), Some("from gz"));
    }

    fn digest_of(text: &str) -> Digest {
        Digest::of(text.as_bytes())
    }

    #[test]
    fn repo_digests_are_one_per_repository_and_go_with_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let image = import(&store, b"one", "app:1");
        assert!(image.repo_digests.is_empty());
        let repo = Reference::parse("localhost:5000/app:1").unwrap();
        let (first, second) = (digest_of("first"), digest_of("second"));
        store.add_repo_digest(&image, &repo, &first).unwrap();
        let other = Reference::parse("docker.io/library/app").unwrap();
        store.add_repo_digest(&image, &other, &first).unwrap();
        let read = store.find_image("app:1").unwrap();
        assert_eq!(
            read.repo_digests,
            vec![
                format!("docker.io/library/app@{first}"),
                format!("localhost:5000/app@{first}"),
            ]
        );
        // The same repository again: its entry is replaced, the other kept.
        store.add_repo_digest(&image, &repo, &second).unwrap();
        assert_eq!(
            store.find_image("app:1").unwrap().repo_digests,
            vec![
                format!("docker.io/library/app@{first}"),
                format!("localhost:5000/app@{second}"),
            ]
        );
        // A tag removed while another stays keeps the digests; the image removed drops them.
        store
            .tag_image("app:1", &Reference::parse("app:2").unwrap())
            .unwrap();
        store.remove_image("app:1", false).unwrap();
        assert_eq!(store.find_image("app:2").unwrap().repo_digests.len(), 2);
        store.remove_image("app:2", false).unwrap();
        let index = store.read_index().unwrap();
        assert!(index.annotations().is_none(), "{:?}", index.annotations());
        // Recorded for an image no longer in the store: nothing happens.
        store.add_repo_digest(&image, &repo, &first).unwrap();
        assert!(store.read_index().unwrap().annotations().is_none());
    }

    #[test]
    fn repo_digests_leave_ids_and_digests_alone_and_pruning_drops_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let image = import(&store, b"one", "app:1");
        let repo = Reference::parse("localhost:5000/app").unwrap();
        store
            .add_repo_digest(&image, &repo, &digest_of("x"))
            .unwrap();
        let read = store.find_image("app:1").unwrap();
        assert_eq!(
            (read.id, read.manifest_digest),
            (image.id.clone(), image.manifest_digest)
        );
        // The tag moves on: the dangling image keeps its digest until prune removes it.
        import(&store, b"two", "app:1");
        assert_eq!(
            store
                .find_image(image.id.as_str())
                .unwrap()
                .repo_digests
                .len(),
            1
        );
        crate::gc::prune(&store, crate::gc::PruneOptions::default(), &mut []).unwrap();
        assert!(store.read_index().unwrap().annotations().is_none());
    }

    #[test]
    fn malformed_repo_digests_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let image = import(&store, b"one", "app:1");
        let key = image.manifest_digest.to_string();
        for bad in [
            "not json".to_string(),
            "[1, 2]".to_string(),
            format!(r#"{{"{key}": [7, "x"]}}"#),
        ] {
            store
                .update_index(|index| {
                    index.set_annotations(Some(HashMap::from([(REPO_DIGESTS.to_string(), bad)])));
                    Ok(())
                })
                .unwrap();
            assert!(store.find_image("app:1").unwrap().repo_digests.is_empty());
            assert_eq!(store.list_images().unwrap().len(), 1);
        }
        // Entries that are not `name@digest` are skipped, the good ones still shown.
        let good = format!("localhost:5000/app@{}", digest_of("x"));
        let value = serde_json::json!({ key.clone(): ["app:1", "@@", good] }).to_string();
        store
            .update_index(|index| {
                index.set_annotations(Some(HashMap::from([(REPO_DIGESTS.to_string(), value)])));
                Ok(())
            })
            .unwrap();
        assert_eq!(store.find_image("app:1").unwrap().repo_digests, vec![good]);
        // Adding rewrites the record cleanly.
        let repo = Reference::parse("localhost:5000/app").unwrap();
        store
            .add_repo_digest(&image, &repo, &digest_of("y"))
            .unwrap();
        assert_eq!(
            store.find_image("app:1").unwrap().repo_digests,
            vec![format!("localhost:5000/app@{}", digest_of("y"))]
        );
    }
}
