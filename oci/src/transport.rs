//! Moving content by digest between the store and another place that holds OCI content: an OCI
//! image layout directory ([`LayoutTransport`]) or a registry repository. Build cache export and
//! import use it; neither side needs to know which kind of place it talks to.
//!
//! A transport is bound to one place and one name in it (a layout directory and a tag in its
//! `index.json`, or a repository and a tag). It moves blobs by digest, streaming: a blob is never
//! held in memory whole. It does not need to verify what it fetches: [`fetch_blob_into_store`]
//! hashes every byte on its way into the store and refuses content that does not match.

use crate::canonical::to_canonical_json;
use crate::digest::{Digest, Hasher};
use crate::error::{Error, IoContext, Result};
use crate::image::REF_NAME;
use crate::store::{MAX_JSON_SIZE, Store, read_limited, sync_dir};
use oci_spec::image::{Descriptor, ImageIndex, MediaType};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// A blob as a manifest names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BlobDesc {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

/// A place that holds OCI content: manifests by the transport's name, blobs by digest.
///
/// Every method blocks until it is done. Implementations are shared between build threads.
pub trait CacheTransport: Send + Sync {
    /// How messages name the place (`local:/srv/cache`, `registry.example/app:cache`).
    fn describe(&self) -> String;

    /// The bytes of the manifest the transport's name points at; `None` when nothing has that
    /// name (an export that has not happened yet). A transport that can check the bytes
    /// against a digest it knows (a layout's index entry) does.
    fn fetch_manifest(&self) -> Result<Option<Vec<u8>>>;

    /// Stores `manifest` (of `media_type`) under the transport's name, replacing what the name
    /// pointed at before. Every blob it references has been put first.
    fn put_manifest(&self, media_type: &str, manifest: &[u8]) -> Result<()>;

    /// Whether the place already holds `blob`.
    fn blob_exists(&self, blob: &BlobDesc) -> Result<bool>;

    /// Streams the content of `blob` into `sink`, unverified.
    fn fetch_blob(&self, blob: &BlobDesc, sink: &mut dyn Write) -> Result<()>;

    /// Stores `blob`, whose content `source` yields (exactly `blob.size` bytes hashing to
    /// `blob.digest`).
    fn put_blob(&self, blob: &BlobDesc, source: &mut dyn Read) -> Result<()>;

    /// Fetches `blob` into the store, verified; nothing is fetched when the store has it
    /// already. See [`fetch_blob_into_store`].
    fn fetch_blob_into_store(&self, store: &Store, blob: &BlobDesc) -> Result<()> {
        fetch_blob_into_store(self, store, blob)
    }

    /// Sends a blob of the store unless the place holds it already; `true` when it was sent.
    /// See [`put_blob_from_store`]. A transport that can do better (upload from the file
    /// `store.blob_path(digest)` with retries, mount it from another repository) overrides it.
    fn put_blob_from_store(&self, store: &Store, blob: &BlobDesc) -> Result<bool> {
        put_blob_from_store(self, store, blob)
    }
}

/// Fetches `blob` into the store through [`CacheTransport::fetch_blob`], verified: a digest or
/// size that does not match leaves nothing in the store. Nothing is fetched when the store
/// has the blob already.
pub fn fetch_blob_into_store<T: CacheTransport + ?Sized>(
    transport: &T,
    store: &Store,
    blob: &BlobDesc,
) -> Result<()> {
    if store.retain_blob(&blob.digest)? {
        return Ok(());
    }
    let mut writer = store.blob_writer()?;
    transport.fetch_blob(
        blob,
        &mut Limited {
            inner: &mut writer,
            left: blob.size,
        },
    )?;
    if writer.len() != blob.size {
        return Err(Error::CorruptBlob {
            digest: blob.digest.clone(),
            reason: format!(
                "{} sent {} bytes, expected {}",
                transport.describe(),
                writer.len(),
                blob.size
            ),
        });
    }
    writer.commit(Some(&blob.digest))?;
    Ok(())
}

/// Fetches a small (JSON) blob into memory, verified.
pub fn fetch_json_blob<T: CacheTransport + ?Sized>(
    transport: &T,
    blob: &BlobDesc,
) -> Result<Vec<u8>> {
    if blob.size > MAX_JSON_SIZE {
        return Err(Error::TooLarge {
            what: format!("blob {}", blob.digest),
            size: blob.size,
            limit: MAX_JSON_SIZE,
        });
    }
    let mut out = Vec::with_capacity(blob.size as usize);
    transport.fetch_blob(
        blob,
        &mut Limited {
            inner: &mut out,
            left: blob.size,
        },
    )?;
    let actual = Digest::of(&out);
    if actual != blob.digest || out.len() as u64 != blob.size {
        return Err(Error::DigestMismatch {
            expected: blob.digest.clone(),
            actual,
        });
    }
    Ok(out)
}

/// Sends a blob of the store through [`CacheTransport::put_blob`] unless the transport holds
/// it already; `true` when it was sent. The store's copy is verified as it is read.
pub fn put_blob_from_store<T: CacheTransport + ?Sized>(
    transport: &T,
    store: &Store,
    blob: &BlobDesc,
) -> Result<bool> {
    if transport.blob_exists(blob)? {
        return Ok(false);
    }
    let mut reader = store.open_blob(&blob.digest, Some(blob.size))?;
    transport.put_blob(blob, &mut reader)?;
    // A transport may stop at `size` bytes without reading to the end, where the digest is
    // checked: what is left is read here.
    reader.finish()?;
    Ok(true)
}

/// A writer that refuses more bytes than the blob's descriptor announced, so a source sending
/// endless content fills no disk.
struct Limited<W> {
    inner: W,
    left: u64,
}

impl<W: Write> Write for Limited<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() as u64 > self.left {
            return Err(io::Error::other(
                "the blob is larger than its descriptor says",
            ));
        }
        let n = self.inner.write(buf)?;
        self.left -= n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/`) and a tag in
/// it: `index.json` names the manifest with an `org.opencontainers.image.ref.name` annotation.
/// Writing creates the layout when needed, writes only the blobs it lacks (each to a temp file,
/// renamed into place once its digest is checked) and replaces `index.json` atomically, so
/// readers never see half a layout. Other tags in the index are kept.
#[derive(Debug, Clone)]
pub struct LayoutTransport {
    dir: PathBuf,
    tag: String,
}

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

impl LayoutTransport {
    pub fn new(dir: impl Into<PathBuf>, tag: impl Into<String>) -> LayoutTransport {
        LayoutTransport {
            dir: dir.into(),
            tag: tag.into(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn blobs(&self) -> PathBuf {
        self.dir.join("blobs").join("sha256")
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs().join(digest.hex())
    }

    fn index_path(&self) -> PathBuf {
        self.dir.join("index.json")
    }

    /// The layout's index; `None` when the directory holds no layout.
    fn read_index(&self) -> Result<Option<ImageIndex>> {
        let layout = self.dir.join("oci-layout");
        let text = match fs::read(&layout) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(layout, e)),
        };
        let version: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| Error::json(layout.display().to_string(), e))?;
        if version.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
            return Err(Error::InvalidLayout(
                self.dir.clone(),
                "oci-layout does not say imageLayoutVersion 1.0.0".into(),
            ));
        }
        let path = self.index_path();
        let bytes = read_limited(&path, MAX_JSON_SIZE)?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::json(path.display().to_string(), e))
    }

    /// Creates the layout's skeleton if it is not there; called with the lock held.
    fn init(&self) -> Result<()> {
        let layout = self.dir.join("oci-layout");
        if !layout.exists() {
            self.write_atomic(&layout, OCI_LAYOUT)?;
        }
        let index = self.index_path();
        if !index.exists() {
            let mut empty = ImageIndex::default();
            empty.set_media_type(Some(MediaType::ImageIndex));
            empty.set_manifests(Vec::new());
            self.write_atomic(&index, &to_canonical_json(&empty, "index.json")?)?;
        }
        Ok(())
    }

    /// Writes a file through a temp file in the same directory and a rename.
    fn write_atomic(&self, dest: &Path, bytes: &[u8]) -> Result<()> {
        let dir = dest.parent().unwrap_or(&self.dir);
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(dir)
            .at(dir)?;
        tmp.write_all(bytes)
            .and_then(|()| tmp.as_file().sync_all())
            .at(tmp.path())?;
        tmp.persist(dest).map_err(|e| Error::io(dest, e.error))?;
        sync_dir(dir)
    }

    /// Held around index.json updates, so two exports to one directory do not lose a tag.
    fn lock(&self) -> Result<File> {
        let dir = File::open(&self.dir).at(&self.dir)?;
        dir.lock().at(&self.dir)?;
        Ok(dir)
    }
}

impl CacheTransport for LayoutTransport {
    fn describe(&self) -> String {
        format!("local:{}", self.dir.display())
    }

    fn fetch_manifest(&self) -> Result<Option<Vec<u8>>> {
        let Some(index) = self.read_index()? else {
            if self.dir.is_dir() {
                return Err(Error::InvalidLayout(
                    self.dir.clone(),
                    "it has no oci-layout file".into(),
                ));
            }
            return Err(Error::io(
                &self.dir,
                io::Error::new(io::ErrorKind::NotFound, "no such directory"),
            ));
        };
        let Some(entry) = index.manifests().iter().find(|d| {
            d.annotations()
                .as_ref()
                .and_then(|a| a.get(REF_NAME))
                .is_some_and(|name| *name == self.tag)
        }) else {
            return Ok(None);
        };
        let digest = Digest::from_oci(entry.digest())?;
        let blob = BlobDesc {
            digest,
            size: entry.size(),
            media_type: entry.media_type().to_string(),
        };
        fetch_json_blob(self, &blob).map(Some)
    }

    fn put_manifest(&self, media_type: &str, manifest: &[u8]) -> Result<()> {
        let digest = Digest::of(manifest);
        let blob = BlobDesc {
            digest: digest.clone(),
            size: manifest.len() as u64,
            media_type: media_type.to_string(),
        };
        if !self.blob_exists(&blob)? {
            self.put_blob(&blob, &mut &manifest[..])?;
        }
        let _lock = self.lock()?;
        self.init()?;
        let mut index = self.read_index()?.ok_or_else(|| {
            Error::InvalidLayout(self.dir.clone(), "its oci-layout file went away".into())
        })?;
        let mut entry = Descriptor::new(MediaType::from(media_type), blob.size, digest.to_oci()?);
        entry.set_annotations(Some(
            [(REF_NAME.to_string(), self.tag.clone())]
                .into_iter()
                .collect(),
        ));
        let mut manifests: Vec<Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| {
                d.annotations()
                    .as_ref()
                    .and_then(|a| a.get(REF_NAME))
                    .is_none_or(|name| *name != self.tag)
            })
            .cloned()
            .collect();
        manifests.push(entry);
        index.set_manifests(manifests);
        let bytes = to_canonical_json(&index, "index.json")?;
        self.write_atomic(&self.index_path(), &bytes)
    }

    fn blob_exists(&self, blob: &BlobDesc) -> Result<bool> {
        match fs::metadata(self.blob_path(&blob.digest)) {
            Ok(meta) => Ok(meta.is_file() && meta.len() == blob.size),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(self.blob_path(&blob.digest), e)),
        }
    }

    fn fetch_blob(&self, blob: &BlobDesc, sink: &mut dyn Write) -> Result<()> {
        let path = self.blob_path(&blob.digest);
        let mut file = File::open(&path).at(&path)?;
        io::copy(&mut file, sink).at(&path)?;
        Ok(())
    }

    fn put_blob(&self, blob: &BlobDesc, source: &mut dyn Read) -> Result<()> {
        let blobs = self.blobs();
        fs::create_dir_all(&blobs).at(&blobs)?;
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&blobs)
            .at(&blobs)?;
        let mut hasher = Hasher::new();
        let mut out = io::BufWriter::with_capacity(1 << 20, tmp.as_file());
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = source.read(&mut buf).at(tmp.path())?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).at(tmp.path())?;
        }
        out.flush().at(tmp.path())?;
        drop(out);
        let (actual, size) = hasher.finish();
        if actual != blob.digest || size != blob.size {
            return Err(Error::DigestMismatch {
                expected: blob.digest.clone(),
                actual,
            });
        }
        tmp.as_file().sync_all().at(tmp.path())?;
        let dest = self.blob_path(&blob.digest);
        tmp.persist(&dest).map_err(|e| Error::io(&dest, e.error))?;
        sync_dir(&blobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob_of(bytes: &[u8]) -> BlobDesc {
        BlobDesc {
            digest: Digest::of(bytes),
            size: bytes.len() as u64,
            media_type: "application/octet-stream".into(),
        }
    }

    #[test]
    fn a_layout_round_trips_blobs_and_a_tagged_manifest() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open(dir.path().join("store")).unwrap_or_else(|e| panic!("{e}"));
        let (digest, size) = store
            .put_blob(b"layer bytes")
            .unwrap_or_else(|e| panic!("{e}"));
        let layer = BlobDesc {
            digest,
            size,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        };
        let out = LayoutTransport::new(dir.path().join("cache"), "latest");
        assert!(put_blob_from_store(&out, &store, &layer).unwrap_or_else(|e| panic!("{e}")));
        assert!(!put_blob_from_store(&out, &store, &layer).unwrap_or_else(|e| panic!("{e}")));
        out.put_manifest("application/vnd.oci.image.manifest.v1+json", b"{\"a\":1}")
            .unwrap_or_else(|e| panic!("{e}"));
        out.put_manifest("application/vnd.oci.image.manifest.v1+json", b"{\"a\":2}")
            .unwrap_or_else(|e| panic!("{e}"));
        let other = LayoutTransport::new(dir.path().join("cache"), "other");
        other
            .put_manifest("application/vnd.oci.image.manifest.v1+json", b"{\"b\":1}")
            .unwrap_or_else(|e| panic!("{e}"));

        let index: serde_json::Value = serde_json::from_slice(
            &fs::read(dir.path().join("cache/index.json")).unwrap_or_default(),
        )
        .unwrap_or_default();
        assert_eq!(index["manifests"].as_array().map(Vec::len), Some(2));
        assert_eq!(
            out.fetch_manifest().unwrap_or_else(|e| panic!("{e}")),
            Some(b"{\"a\":2}".to_vec())
        );
        let none = LayoutTransport::new(dir.path().join("cache"), "nothing");
        assert_eq!(
            none.fetch_manifest().unwrap_or_else(|e| panic!("{e}")),
            None
        );

        let fresh = Store::open(dir.path().join("fresh")).unwrap_or_else(|e| panic!("{e}"));
        fetch_blob_into_store(&out, &fresh, &layer).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            fresh.read_blob(&layer.digest, Some(layer.size)).ok(),
            Some(b"layer bytes".to_vec())
        );
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("cache/blobs/sha256"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            leftovers
                .iter()
                .all(|n| !n.to_string_lossy().starts_with('.')),
            "{leftovers:?}"
        );
    }

    #[test]
    fn tampered_or_missing_content_is_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let layout = LayoutTransport::new(dir.path().join("cache"), "latest");
        let good = blob_of(b"good");
        layout
            .put_blob(&good, &mut &b"good"[..])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            layout.put_blob(&good, &mut &b"evil"[..]),
            Err(Error::DigestMismatch { .. })
        ));
        fs::write(layout.blob_path(&good.digest), b"evil").unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open(dir.path().join("store")).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            fetch_blob_into_store(&layout, &store, &good),
            Err(Error::DigestMismatch { .. })
        ));
        assert!(!store.has_blob(&good.digest));
        assert!(fetch_json_blob(&layout, &good).is_err());

        let missing = LayoutTransport::new(dir.path().join("nowhere"), "latest");
        assert!(missing.fetch_manifest().is_err());
        assert!(fetch_blob_into_store(&missing, &store, &blob_of(b"x")).is_err());
    }
}
