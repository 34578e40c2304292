//! Image archives: `docker save` archives (docker-archive) and OCI image layouts in a tar
//! (oci-archive), read by `kiln load` and written by `kiln save`.
//!
//! Loading treats the archive as hostile: every entry is streamed into this process's tmp
//! directory while it is hashed (a tar is sequential and `manifest.json` may come last), paths
//! that leave the archive (`..`, absolute) are refused, JSON documents are size-limited, and
//! every blob is checked against the digest that refers to it before it enters the store.

mod docker;
mod oci;

use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, IoContext, Result};
use crate::image::Image;
use crate::layer::LayerOptions;
use crate::reference::Reference;
use crate::store::{MAX_JSON_SIZE, Store, read_limited};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;

/// More entries than this is not an image archive but an attempt to exhaust something.
const MAX_ENTRIES: usize = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// `docker save`'s format: manifest.json, repositories, `<id>.json`, `<id>/layer.tar`.
    Docker,
    /// An OCI image layout in a tar: oci-layout, index.json, blobs/sha256/….
    Oci,
}

impl ArchiveFormat {
    pub fn parse(text: &str) -> Result<ArchiveFormat> {
        match text {
            "docker" | "docker-archive" => Ok(ArchiveFormat::Docker),
            "oci" | "oci-archive" => Ok(ArchiveFormat::Oci),
            other => Err(Error::Unsupported(format!(
                "unknown archive format {other:?}: expected docker or oci"
            ))),
        }
    }
}

/// What `load` brought into the store.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub format: ArchiveFormat,
    pub images: Vec<LoadedImage>,
}

#[derive(Debug, Clone)]
pub struct LoadedImage {
    pub image: Image,
    /// The tags the archive named for it (`name:tag`); empty if it came untagged.
    pub tags: Vec<String>,
}

/// An image to save and the tags to record for it in the archive.
#[derive(Debug, Clone)]
pub struct SaveItem {
    pub image: Image,
    pub tags: Vec<Reference>,
}

/// Reads a docker-archive or oci-archive (optionally gzip/zstd-compressed) into the store.
pub fn load(store: &Store, input: &mut dyn Read, options: LayerOptions) -> Result<Loaded> {
    let mut input = crate::layer::decompress(input)?;
    let staged = Staging::read(store, &mut input)?;
    if staged.contains("manifest.json") {
        docker::load(store, &staged, options)
    } else if staged.contains("index.json") && staged.contains("oci-layout") {
        oci::load(store, &staged)
    } else {
        Err(Error::archive(
            "not an image archive: it has neither manifest.json (docker-archive) nor \
             oci-layout and index.json (oci-archive)",
        ))
    }
}

/// Writes `items` as an archive of `format` to `out`.
pub fn save(
    store: &Store,
    items: &[SaveItem],
    format: ArchiveFormat,
    out: &mut dyn Write,
) -> Result<()> {
    let mut builder = tar::Builder::new(out);
    builder.mode(tar::HeaderMode::Deterministic);
    match format {
        ArchiveFormat::Docker => docker::save(store, items, &mut builder)?,
        ArchiveFormat::Oci => oci::save(store, items, &mut builder)?,
    }
    builder
        .into_inner()
        .and_then(|w| w.flush())
        .map_err(|e| Error::io("archive output", e))
}

/// One regular file of the archive, in this process's tmp directory.
struct StagedFile {
    path: PathBuf,
    digest: Digest,
    size: u64,
}

/// The archive's files by their cleaned path, plus its links (resolved on lookup).
struct Staging {
    files: BTreeMap<String, StagedFile>,
    links: BTreeMap<String, String>,
}

impl Staging {
    fn read(store: &Store, input: &mut dyn Read) -> Result<Staging> {
        let mut archive = tar::Archive::new(input);
        let mut staging = Staging {
            files: BTreeMap::new(),
            links: BTreeMap::new(),
        };
        let entries = archive.entries().map_err(truncated)?;
        for (n, entry) in entries.enumerate() {
            if n >= MAX_ENTRIES {
                return Err(Error::archive(format!("more than {MAX_ENTRIES} entries")));
            }
            let mut entry = entry.map_err(truncated)?;
            let raw = entry
                .path()
                .map_err(truncated)?
                .to_string_lossy()
                .into_owned();
            let name = clean_path(&raw)?;
            let kind = entry.header().entry_type();
            if kind.is_file() || kind == tar::EntryType::Continuous {
                let path = store.tmp_path("load");
                let file = File::create_new(&path).at(&path)?;
                let mut sink = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
                io::copy(&mut entry, &mut sink).map_err(truncated)?;
                let (mut buffered, digest, size) = sink.finish();
                buffered.flush().at(&path)?;
                staging
                    .files
                    .insert(name, StagedFile { path, digest, size });
            } else if kind.is_symlink() || kind.is_hard_link() {
                let target = entry
                    .link_name()
                    .map_err(truncated)?
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default();
                // Symlinks are relative to the link's directory, hard links to the archive root.
                let joined = if kind.is_symlink() && !target.starts_with('/') {
                    match name.rsplit_once('/') {
                        Some((dir, _)) => format!("{dir}/{target}"),
                        None => target,
                    }
                } else {
                    target
                };
                staging.links.insert(name, clean_path(&joined)?);
            }
        }
        Ok(staging)
    }

    fn contains(&self, name: &str) -> bool {
        self.get(name).is_ok()
    }

    /// The file at `name` (a path from inside the archive: cleaned and confined here).
    fn get(&self, name: &str) -> Result<&StagedFile> {
        let mut name = clean_path(name)?;
        for _ in 0..16 {
            if let Some(file) = self.files.get(&name) {
                return Ok(file);
            }
            match self.links.get(&name) {
                Some(target) => name = target.clone(),
                None => break,
            }
        }
        Err(Error::archive(format!("the archive has no file {name:?}")))
    }

    fn read_json(&self, name: &str) -> Result<Vec<u8>> {
        let file = self.get(name)?;
        if file.size > MAX_JSON_SIZE {
            return Err(Error::TooLarge {
                what: name.to_string(),
                size: file.size,
                limit: MAX_JSON_SIZE,
            });
        }
        read_limited(&file.path, MAX_JSON_SIZE)
    }

    /// The blob `digest` from `blobs/sha256/`, checked against the digest and size that refer to it.
    fn blob(&self, digest: &Digest, size: u64) -> Result<&StagedFile> {
        let file = self.get(&format!("blobs/sha256/{}", digest.hex()))?;
        if file.digest != *digest {
            return Err(Error::archive(format!(
                "blob {digest} does not match its digest (its content hashes to {})",
                file.digest
            )));
        }
        if file.size != size {
            return Err(Error::archive(format!(
                "blob {digest} is {} bytes but is described as {size}",
                file.size
            )));
        }
        Ok(file)
    }
}

fn truncated(e: io::Error) -> Error {
    Error::archive(format!(
        "cannot read the archive (truncated or not a tar?): {e}"
    ))
}

/// A path inside the archive, resolved lexically: `./` and empty components dropped, `..`
/// applied (skopeo links `<id>/layer.tar` to `../<digest>.tar`). Absolute paths and paths
/// that climb above the archive's root are refused, so nothing named by the archive can point
/// outside it.
pub(crate) fn clean_path(raw: &str) -> Result<String> {
    if raw.starts_with('/') {
        return Err(Error::archive(format!(
            "{raw:?} is an absolute path; archive paths must be relative"
        )));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(Error::archive(format!(
                        "{raw:?} climbs out of the archive with '..'; archive paths must stay \
                         inside it"
                    )));
                }
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// A tar header for a regular file with fixed metadata, so saved archives are reproducible.
fn file_header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    header
}

fn append_bytes<W: Write>(builder: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> Result<()> {
    let mut header = file_header(bytes.len() as u64);
    builder
        .append_data(&mut header, name, bytes)
        .map_err(|e| Error::io(format!("archive entry {name}"), e))
}

fn append_reader<W: Write>(
    builder: &mut tar::Builder<W>,
    name: &str,
    size: u64,
    reader: &mut dyn Read,
) -> Result<()> {
    let mut header = file_header(size);
    builder
        .append_data(&mut header, name, reader)
        .map_err(|e| Error::io(format!("archive entry {name}"), e))
}

#[cfg(test)]
mod tests;
