//! What keeps a snapshot: the chains of tagged images, of live cache records and of containers,
//! and the lower layers of overlay mounts that are up right now. A chain keeps its whole lineage
//! (every lower layer it mounts), which [`super::snapshots`] adds.

use super::GcResult;
use super::records::read_records;
use crate::chain::{ChainId, chain_ids};
use kiln_oci::store::mountinfo;
use kiln_oci::{Image, Store};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// The chains each kind of user needs.
#[derive(Clone, Debug, Default)]
pub struct Roots {
    /// Every prefix of the layer stack of every image in index.json.
    pub images: BTreeSet<ChainId>,
    /// Chains named by cache records whose blobs are all present.
    pub records: BTreeSet<ChainId>,
    /// Chains of the images containers were created from, and chains they name themselves.
    pub containers: BTreeSet<ChainId>,
    /// Lower layers of overlay mounts visible in this mount namespace.
    pub mounted: BTreeSet<ChainId>,
    /// Chains that running kiln processes (builds) have leased: they are about to mount them.
    pub leased: BTreeSet<ChainId>,
}

impl Roots {
    /// Gathers every kind of root. Fails when an image in index.json cannot be read: its
    /// chains are unknown, and `kiln fsck` should look at it before anything is deleted.
    pub fn gather(store: &Store) -> GcResult<Roots> {
        let snapshots = store.snapshots_dir();
        Ok(Roots {
            images: image_chains(store)?,
            records: record_chains(store)?,
            containers: container_chains(store),
            mounted: mounted_chains(&snapshots),
            leased: leased_chains(store)?,
        })
    }

    /// Roots that nothing may remove, not even `prune --all` or a size cap: they are in use.
    pub fn in_use(&self) -> BTreeSet<ChainId> {
        let mut in_use: BTreeSet<ChainId> = self.containers.union(&self.mounted).cloned().collect();
        in_use.extend(self.leased.iter().cloned());
        in_use
    }

    /// Roots a plain prune keeps.
    pub fn all(&self) -> BTreeSet<ChainId> {
        let mut all = self.in_use();
        all.extend(self.images.iter().cloned());
        all.extend(self.records.iter().cloned());
        all
    }
}

/// The chains live kiln processes have leased (see [`kiln_oci::Store::lease`]).
fn leased_chains(store: &Store) -> GcResult<BTreeSet<ChainId>> {
    Ok(store
        .live_leases()?
        .iter()
        .filter_map(|name| crate::chain::parse(name).ok())
        .collect())
}

fn image_chain_ids(image: &Image) -> kiln_oci::Result<Vec<ChainId>> {
    let diff_ids = image
        .diff_ids()?
        .iter()
        .map(|d| crate::chain::parse(d.as_str()))
        .collect::<crate::Result<Vec<_>>>()
        .map_err(|e| kiln_oci::Error::InvalidImage {
            image: image.id.to_string(),
            reason: e.to_string(),
        })?;
    Ok(chain_ids(&diff_ids))
}

fn image_chains(store: &Store) -> GcResult<BTreeSet<ChainId>> {
    let index = store.read_index()?;
    let mut seen = BTreeSet::new();
    let mut out = BTreeSet::new();
    for desc in index.manifests() {
        if !seen.insert(desc.digest().to_string()) {
            continue;
        }
        let image = store
            .read_image(desc)
            .and_then(|image| image_chain_ids(&image))
            .map_err(|e| kiln_oci::Error::InvalidImage {
                // The tag a person knows it by, else its digest.
                image: desc
                    .annotations()
                    .as_ref()
                    .and_then(|a| a.get("org.opencontainers.image.ref.name"))
                    .cloned()
                    .unwrap_or_else(|| desc.digest().to_string()),
                reason: format!("{e}; run `kiln fsck` before pruning"),
            })?;
        out.extend(image);
    }
    Ok(out)
}

fn record_chains(store: &Store) -> GcResult<BTreeSet<ChainId>> {
    let mut out = BTreeSet::new();
    for record in read_records(&store.cache_dir())? {
        if record.is_live(store)
            && let Ok(refs) = record.refs
        {
            out.extend(refs.chains);
        }
    }
    Ok(out)
}

/// `containers/<id>/container.json`: a container names the chain its writable layer sits on
/// (`parent_chain`) and the image it was created from (`image_id`, the config digest; `image`,
/// the name the user gave, for records that lack the id). Both keep their chains: a stopped
/// container is diffed against its parent chain by `commit`, and started again on it.
fn container_chains(store: &Store) -> BTreeSet<ChainId> {
    let mut out = BTreeSet::new();
    let Ok(containers) = fs::read_dir(store.root().join("containers")) else {
        return out;
    };
    for container in containers.flatten() {
        let path = container.path().join("container.json");
        let Some(record) = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        else {
            continue;
        };
        let image = ["image_id", "image"]
            .iter()
            .filter_map(|field| record.get(field).and_then(|v| v.as_str()))
            .find_map(|name| store.find_image(name).ok());
        if let Some(chains) = image.and_then(|image| image_chain_ids(&image).ok()) {
            out.extend(chains);
        }
        if let Ok(refs) = super::RecordRefs::parse(record.to_string().as_bytes()) {
            out.extend(refs.chains);
        }
    }
    out
}

/// The snapshots mounted as overlay lower layers in this mount namespace, whoever mounted
/// them. Lower layers given as short relative names (a long chain mounted through a directory
/// of symlinks, `links/0` …) are resolved through the `links` directory beside the mount point.
pub fn mounted_chains(snapshots_dir: &Path) -> BTreeSet<ChainId> {
    let snapshots = fs::canonicalize(snapshots_dir).unwrap_or_else(|_| snapshots_dir.to_owned());
    let mut out = BTreeSet::new();
    for mount in mountinfo::read() {
        if mount.fs_type != "overlay" {
            continue;
        }
        for lower in overlay_lowers(&mount.super_options) {
            let path = resolve_lower(&mount.mount_point, &lower);
            if let Some(chain) = snapshot_of(&snapshots, &path) {
                out.insert(chain);
            }
        }
    }
    out
}

/// The lower directories in overlay's super options: `lowerdir=a:b:c` (`::` marks data-only
/// layers) or repeated `lowerdir+=a`. Values are unescaped after splitting, since separators
/// inside paths appear as `\ooo`.
fn overlay_lowers(options: &str) -> Vec<String> {
    let mut out = Vec::new();
    for option in options.split(',') {
        if let Some(list) = option.strip_prefix("lowerdir=") {
            out.extend(
                list.split(':')
                    .filter(|p| !p.is_empty())
                    .map(mountinfo::unescape),
            );
        } else if let Some(one) = option.strip_prefix("lowerdir+=") {
            out.push(mountinfo::unescape(one));
        }
    }
    out
}

fn resolve_lower(mount_point: &Path, lower: &str) -> PathBuf {
    let lower = Path::new(lower);
    if lower.is_absolute() {
        return fs::canonicalize(lower).unwrap_or_else(|_| lower.to_owned());
    }
    if let Some(dir) = mount_point.parent() {
        let link = dir.join("links").join(lower);
        if let Ok(target) = fs::canonicalize(&link) {
            return target;
        }
    }
    lower.to_owned()
}

/// `<snapshots>/<chain hex>/fs` (or `flat`) → the chain.
fn snapshot_of(snapshots: &Path, path: &Path) -> Option<ChainId> {
    let rest = path.strip_prefix(snapshots).ok()?;
    let mut parts = rest.components();
    let hex = parts.next()?.as_os_str().to_str()?;
    crate::chain::parse(&format!("sha256:{hex}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowers_are_split_and_unescaped() {
        let opts = r"rw,lowerdir=/s/a/fs:/s/b\072c/fs::/data,upperdir=/u,workdir=/w";
        assert_eq!(overlay_lowers(opts), vec!["/s/a/fs", "/s/b:c/fs", "/data"]);
        assert_eq!(
            overlay_lowers("lowerdir+=/x/fs,lowerdir+=/y\\054z/fs,upperdir=/u"),
            vec!["/x/fs", "/y,z/fs"]
        );
    }

    #[test]
    fn snapshot_paths_name_their_chain() {
        let hex = "a".repeat(64);
        let s = Path::new("/store/snapshots");
        assert_eq!(snapshot_of(s, &s.join(&hex).join("fs")).unwrap().hex(), hex);
        assert!(snapshot_of(s, Path::new("/elsewhere/fs")).is_none());
        assert!(snapshot_of(s, &s.join(".active-x/merged")).is_none());
    }
}
