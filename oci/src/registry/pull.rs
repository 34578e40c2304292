//! `pull`: a manifest (through an index, to one platform), its config and layers into the store,
//! every blob verified before it is committed and blobs already present not fetched again.

use super::client::{Client, RemoteManifest};
use super::{Progress, RegistryError};
use crate::config::host_platform;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::Image;
use crate::reference::Reference;
use crate::store::Store;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};

/// How to pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// `os/arch[/variant]` to choose from a multi-platform image; the machine's own when unset.
    pub platform: Option<String>,
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The image, as recorded in the store.
    pub image: Image,
    /// The name it is tagged under (Docker's full form: `docker.io/library/alpine:latest`).
    pub reference: Reference,
    /// The digest the registry resolved the reference to (the index's, for a multi-platform
    /// image), as `docker pull` prints it.
    pub digest: Digest,
    /// Blobs downloaded (0: the store had everything).
    pub downloaded: usize,
}

/// Pulls `reference` into `store` and tags it under its normalised name. Docker Hub's mirrors
/// (from the config) are tried first.
pub fn pull(
    client: &Client,
    store: &Store,
    reference: &Reference,
    options: &PullOptions,
    progress: &dyn Progress,
) -> Result<Pulled> {
    let full = reference.normalized();
    let wanted = Wanted::parse(options.platform.as_deref())?;
    let hosts = client.pull_hosts(&full);
    let mut last = None;
    for host in &hosts {
        match client.block_on(pull_from(client, store, &full, host, &wanted, progress)) {
            Ok(pulled) => return Ok(pulled),
            // A mirror that fails is skipped; the registry itself has the last word.
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::ImageNotFound(reference.to_string())))
}

async fn pull_from(
    client: &Client,
    store: &Store,
    full: &Reference,
    host: &str,
    wanted: &Wanted,
    progress: &dyn Progress,
) -> Result<Pulled> {
    let top = client.fetch_manifest_from(full, host).await?;
    let resolved = top.digest.clone();
    let manifest = if is_index(&top) {
        let index: ImageIndex = serde_json::from_slice(&top.bytes).map_err(|e| invalid(full, e))?;
        let chosen = wanted.choose(full, &index)?;
        let digest = Digest::from_oci(chosen.digest())?;
        let child = client
            .fetch_manifest_from(&full.with_digest(digest), host)
            .await?;
        if child.bytes.len() as u64 != chosen.size() {
            return Err(RegistryError::BadContent {
                registry: host.to_string(),
                what: format!("manifest {}", child.digest),
                reason: format!(
                    "it is {} bytes, not the {} the index says",
                    child.bytes.len(),
                    chosen.size()
                ),
            }
            .into());
        }
        if is_index(&child) {
            return Err(RegistryError::InvalidManifest {
                reference: full.to_string(),
                reason: "an image index inside an image index is not supported".into(),
            }
            .into());
        }
        child
    } else {
        top
    };
    let parsed: ImageManifest =
        serde_json::from_slice(&manifest.bytes).map_err(|e| invalid(full, e))?;
    // The config first: a single-platform image is checked against an explicit --platform
    // before its layers are fetched.
    let config = (
        Digest::from_oci(parsed.config().digest())?,
        parsed.config().size(),
    );
    client
        .fetch_blobs(full, host, std::slice::from_ref(&config), store, progress)
        .await?;
    if wanted.explicit {
        let bytes = store.read_blob(&config.0, Some(config.1))?;
        let image: crate::config::ImageConfig = serde_json::from_slice(&bytes)
            .map_err(|e| Error::json(format!("image config {}", config.0), e))?;
        let found = Wanted {
            os: image.os.clone(),
            architecture: image.architecture.clone(),
            variant: image.variant.clone(),
            explicit: true,
        };
        if !wanted.matches(&found.os, &found.architecture, found.variant.as_deref()) {
            return Err(RegistryError::NoMatchingPlatform {
                reference: full.to_string(),
                wanted: wanted.to_string(),
                available: found.to_string(),
            }
            .into());
        }
    }
    let mut blobs = vec![config];
    for layer in parsed.layers() {
        blobs.push((Digest::from_oci(layer.digest())?, layer.size()));
    }
    let statuses = client
        .fetch_blobs(full, host, &blobs, store, progress)
        .await?;
    let downloaded = statuses
        .iter()
        .filter(|s| **s == super::BlobStatus::Pulled)
        .count();
    let (digest, size) = store.put_blob(&manifest.bytes)?;
    let desc = Descriptor::new(
        MediaType::from(manifest.media_type.as_str()),
        size,
        digest.to_oci()?,
    );
    let tags: Vec<Reference> = match full.tag() {
        Some(tag) => vec![Reference::parse(&full.name())?.with_tag(tag)?],
        None => Vec::new(),
    };
    store.record_image(&desc, &tags)?;
    // RepoDigests name what the reference resolved to: for a multi-platform image the index,
    // which is what a later `pull name@digest` has to ask for.
    let recorded = store.read_image(&desc)?;
    store.add_repo_digest(&recorded, full, &resolved)?;
    let image = store.read_image(&desc)?;
    Ok(Pulled {
        image,
        reference: full.clone(),
        digest: resolved,
        downloaded,
    })
}

fn is_index(manifest: &RemoteManifest) -> bool {
    manifest.media_type.contains("index") || manifest.media_type.contains("manifest.list")
}

fn invalid(reference: &Reference, e: serde_json::Error) -> Error {
    RegistryError::InvalidManifest {
        reference: reference.to_string(),
        reason: format!("invalid JSON: {e}"),
    }
    .into()
}

/// The platform wanted from an index.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Wanted {
    os: String,
    architecture: String,
    variant: Option<String>,
    /// Given with --platform (not the machine's own).
    explicit: bool,
}

impl std::fmt::Display for Wanted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl Wanted {
    fn parse(spec: Option<&str>) -> Result<Wanted> {
        let Some(spec) = spec.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(Wanted {
                os: "linux".into(),
                architecture: host_platform().0.into(),
                variant: None,
                explicit: false,
            });
        };
        let parts: Vec<&str> = spec.split('/').collect();
        match parts.as_slice() {
            [os, arch] | [os, arch, _] if !os.is_empty() && !arch.is_empty() => Ok(Wanted {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: parts.get(2).map(|v| v.to_string()),
                explicit: true,
            }),
            _ => Err(Error::Unsupported(format!(
                "invalid platform {spec:?}: write os/arch[/variant], as linux/arm64/v8"
            ))),
        }
    }

    /// A variant is only compared when one was asked for.
    fn matches(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        os == self.os
            && architecture == self.architecture
            && (self.variant.is_none() || variant == self.variant.as_deref())
    }

    fn choose(&self, reference: &Reference, index: &ImageIndex) -> Result<Descriptor> {
        let found = index.manifests().iter().find(|d| {
            d.platform().as_ref().is_some_and(|p| {
                self.matches(
                    &p.os().to_string(),
                    &p.architecture().to_string(),
                    p.variant().as_deref(),
                )
            })
        });
        if let Some(found) = found {
            return Ok(found.clone());
        }
        let available: Vec<String> = index
            .manifests()
            .iter()
            .filter_map(|d| d.platform().as_ref())
            .filter(|p| p.os().to_string() != "unknown")
            .map(|p| {
                Wanted {
                    os: p.os().to_string(),
                    architecture: p.architecture().to_string(),
                    variant: p.variant().clone(),
                    explicit: true,
                }
                .to_string()
            })
            .collect();
        Err(RegistryError::NoMatchingPlatform {
            reference: reference.to_string(),
            wanted: self.to_string(),
            available: if available.is_empty() {
                "no platforms listed".into()
            } else {
                available.join(", ")
            },
        }
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> ImageIndex {
        serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1,
                 "digest": format!("sha256:{}", "a".repeat(64)),
                 "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 2,
                 "digest": format!("sha256:{}", "b".repeat(64)),
                 "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 3,
                 "digest": format!("sha256:{}", "c".repeat(64)),
                 "platform": {"os": "unknown", "architecture": "unknown"}}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn chooses_the_platform_asked_for() {
        let r = Reference::parse("x").unwrap();
        let arm = Wanted::parse(Some("linux/arm64"))
            .unwrap()
            .choose(&r, &index());
        assert_eq!(arm.unwrap().size(), 2);
        let v8 = Wanted::parse(Some("linux/arm64/v8"))
            .unwrap()
            .choose(&r, &index());
        assert_eq!(v8.unwrap().size(), 2);
        let err = Wanted::parse(Some("linux/s390x"))
            .unwrap()
            .choose(&r, &index())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("linux/s390x") && err.contains("linux/amd64, linux/arm64/v8"),
            "{err}"
        );
        assert!(!err.contains("unknown"), "{err}");
        assert!(Wanted::parse(Some("linux")).is_err());
    }
}
