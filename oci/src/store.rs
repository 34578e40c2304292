//! The content store: a directory that is a valid OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/`) plus kiln's own `tmp/`, `snapshots/`, `cache/` and `lock`.
//!
//! Concurrency: several kiln processes may use one store at once.
//! * Blobs are streamed into a per-process directory under `tmp/`, hashed, fsynced and renamed
//!   into `blobs/sha256/` only after their digest is known (and checked, when it was expected).
//! * `lock` is taken *shared* around each blob commit and *exclusive* around every
//!   read-modify-write of `index.json` and around garbage collection, so a collector never runs
//!   between a blob being committed and being recorded, and two index updates never interleave.
//! * A blob that has been committed, or reused (`retain_blob`), but is not yet referenced from
//!   `index.json` is *pinned*: its digest goes into the process's pin file (before the rename,
//!   for a commit). The collector treats the pins of
//!   live processes as roots, so it cannot delete a layer a running build is about to reference.
//! * Liveness is an exclusive `flock` on `tmp/<proc>.lock`, which the kernel drops when the
//!   process dies (even by SIGKILL); `open` sweeps the tmp directories of dead processes only.

use crate::canonical::to_canonical_json;
use crate::digest::{Digest, Hasher};
use crate::error::{Error, IoContext, Result};
use oci_spec::image::ImageIndex;
use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// JSON documents (index.json, manifests, configs) are read whole; anything bigger than this is
/// not something a real image carries and is refused rather than allocated.
pub const MAX_JSON_SIZE: u64 = 64 << 20;

/// The default store: `/var/lib/kiln` for root, else `$XDG_DATA_HOME/kiln`, else
/// `~/.local/share/kiln`.
pub fn default_root() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        return PathBuf::from("/var/lib/kiln");
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("kiln");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/kiln"),
        None => PathBuf::from("/var/lib/kiln"),
    }
}

pub struct Store {
    root: PathBuf,
    blobs: PathBuf,
    proc_tmp: ProcessTmp,
    /// Digests committed by this process (also in the pin file); kept to avoid duplicate lines.
    pinned: Mutex<BTreeSet<Digest>>,
}

/// This process's scratch directory under `tmp/` and the lock that marks it alive.
struct ProcessTmp {
    dir: PathBuf,
    pin_file: PathBuf,
    /// Held exclusively for the life of the store handle; dropping it marks the directory debris.
    _alive: File,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// Opens (creating if needed) the store at `root` and sweeps tmp debris of dead processes.
    pub fn open(root: impl AsRef<Path>) -> Result<Store> {
        let root = root.as_ref().to_path_buf();
        let blobs = root.join("blobs").join("sha256");
        for dir in [
            &root,
            &blobs,
            &root.join("tmp"),
            &root.join("snapshots"),
            &root.join("cache"),
        ] {
            fs::create_dir_all(dir).at(dir)?;
        }
        let lock_path = root.join("lock");
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .at(&lock_path)?;
        let proc_tmp = ProcessTmp::create_retrying(&root.join("tmp"))?;
        let store = Store {
            root,
            blobs,
            proc_tmp,
            pinned: Mutex::new(BTreeSet::new()),
        };
        store.init_layout()?;
        store.sweep_tmp()?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the snapshotter keeps extracted layers.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// Where the builder keeps its cache records.
    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// This process's scratch directory (removed when the store is dropped, swept if the
    /// process dies).
    pub fn tmp_dir(&self) -> &Path {
        &self.proc_tmp.dir
    }

    /// A fresh, unused path inside this process's scratch directory.
    pub fn tmp_path(&self, what: &str) -> PathBuf {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        self.proc_tmp.dir.join(format!("{what}-{n}"))
    }

    pub fn blobs_dir(&self) -> &Path {
        &self.blobs
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    fn init_layout(&self) -> Result<()> {
        let layout = self.root.join("oci-layout");
        let index = self.root.join("index.json");
        if layout.is_file() && index.is_file() {
            return Ok(());
        }
        let _guard = self.lock_exclusive()?;
        if !layout.is_file() {
            write_atomic(&layout, OCI_LAYOUT, &self.proc_tmp.dir)?;
        }
        if !index.is_file() {
            let empty = empty_index();
            write_atomic(
                &index,
                &to_canonical_json(&empty, "index.json")?,
                &self.proc_tmp.dir,
            )?;
        }
        Ok(())
    }

    /// Removes the tmp directories of processes that are gone. A directory whose `.lock` we can
    /// lock exclusively has no live owner; one without a `.lock` never had a live owner (owners
    /// lock before they create the directory).
    fn sweep_tmp(&self) -> Result<()> {
        let tmp = self.root.join("tmp");
        let entries = fs::read_dir(&tmp).at(&tmp)?;
        for entry in entries {
            let entry = entry.at(&tmp)?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if path == self.proc_tmp.dir || path == self.proc_tmp.dir.with_extension("lock") {
                continue;
            }
            if let Some(stem) = name.strip_suffix(".lock") {
                let Ok(file) = File::open(&path) else {
                    continue;
                };
                if file.try_lock().is_ok() {
                    // Dead owner: remove its directory first, then the lock, while we hold it.
                    // A mount it left behind (a killed `run`) is detached first: removing
                    // through it would delete whatever it shows. If one cannot be detached,
                    // everything stays for a later sweep.
                    let dir = tmp.join(stem);
                    if mountinfo::detach_below(&dir) {
                        remove_any(&dir);
                        let _ = fs::remove_file(&path);
                    }
                }
            } else if !tmp.join(format!("{name}.lock")).exists() && mountinfo::detach_below(&path) {
                remove_any(&path);
            }
        }
        Ok(())
    }

    /// Whether another kiln process (or another handle in this one) has this store open: its
    /// tmp lock is held. What it is doing is unknown, so debris that cannot be told from work in
    /// progress (half-applied snapshots) is only swept when this is false.
    pub fn other_users_alive(&self) -> Result<bool> {
        let tmp = self.root.join("tmp");
        let ours = self.proc_tmp.dir.with_extension("lock");
        for entry in fs::read_dir(&tmp).at(&tmp)? {
            let path = entry.at(&tmp)?.path();
            if path == ours || path.extension().is_none_or(|e| e != "lock") {
                continue;
            }
            if File::open(&path).is_ok_and(|f| f.try_lock().is_err()) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Blocks until no other process holds `lock` exclusively; held around blob commits.
    pub fn lock_shared(&self) -> Result<StoreLock> {
        StoreLock::take(&self.root.join("lock"), false)
    }

    /// Blocks until this is the only holder of `lock`; held around index updates and collection.
    pub fn lock_exclusive(&self) -> Result<StoreLock> {
        StoreLock::take(&self.root.join("lock"), true)
    }

    /// Starts a blob: bytes written to it stream into this process's tmp directory.
    pub fn blob_writer(&self) -> Result<BlobWriter<'_>> {
        let path = self.tmp_path("blob");
        let file = File::create_new(&path).at(&path)?;
        Ok(BlobWriter {
            store: self,
            file: Some(BufWriter::with_capacity(1 << 20, file)),
            path,
            hasher: Hasher::new(),
        })
    }

    /// Stores `bytes` as a blob and returns its digest and size.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<(Digest, u64)> {
        let mut writer = self.blob_writer()?;
        writer.write_all(bytes).at(&writer.path)?;
        writer.commit(None)
    }

    /// Moves a finished file (fsynced by the caller or not; we fsync) into the store as the blob
    /// `digest`. The caller vouches for the digest: it hashed the bytes while writing them.
    pub(crate) fn commit_file(&self, tmp: &Path, digest: &Digest) -> Result<()> {
        File::open(tmp).and_then(|f| f.sync_all()).at(tmp)?;
        let _shared = self.lock_shared()?;
        self.pin(digest)?;
        let dest = self.blob_path(digest);
        fs::rename(tmp, &dest).at(&dest)?;
        sync_dir(&self.blobs)
    }

    /// Claims a blob that is already in the store for something this process is about to
    /// reference (a reused layer): pins it, so a collector running from now on keeps it.
    /// `Ok(false)` if the blob is not there (any more).
    pub fn retain_blob(&self, digest: &Digest) -> Result<bool> {
        // Under the shared lock no collection is running, so "exists" stays true once pinned.
        let _shared = self.lock_shared()?;
        if !self.has_blob(digest) {
            return Ok(false);
        }
        self.pin(digest)?;
        Ok(true)
    }

    /// Records `digest` in this process's pin file so a concurrent collector keeps it.
    fn pin(&self, digest: &Digest) -> Result<()> {
        let mut pinned = self.pinned.lock().unwrap_or_else(|p| p.into_inner());
        if pinned.contains(digest) {
            return Ok(());
        }
        let path = &self.proc_tmp.pin_file;
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .at(path)?;
        writeln!(file, "{digest}").at(path)?;
        pinned.insert(digest.clone());
        Ok(())
    }

    /// Leases `name` (a snapshot's chain id, say) for the life of this process: a collector
    /// that asks for [`live_leases`](Store::live_leases) keeps what it names. Taken under the
    /// shared lock, so once this returns no collection that could miss the lease is running:
    /// check that the leased thing still exists *after* leasing it.
    pub fn lease(&self, name: &str) -> Result<()> {
        let _shared = self.lock_shared()?;
        let path = self.proc_tmp.dir.join("leases");
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .at(&path)?;
        writeln!(file, "{}", name.trim()).at(&path)
    }

    /// What live kiln processes (including this one) have leased. Call with `lock` held
    /// exclusively so no lease can be added while the result is used.
    pub fn live_leases(&self) -> Result<BTreeSet<String>> {
        let mut leases = BTreeSet::new();
        self.for_each_live_file("leases", |text| {
            leases.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from),
            )
        })?;
        Ok(leases)
    }

    /// The digests pinned by live kiln processes (including this one). Call with `lock` held
    /// exclusively so no pin can be added while the result is used.
    pub(crate) fn live_pins(&self) -> Result<BTreeSet<Digest>> {
        let mut pins = BTreeSet::new();
        self.for_each_live_file("pins", |text| {
            pins.extend(text.lines().filter_map(|l| Digest::parse(l.trim()).ok()))
        })?;
        Ok(pins)
    }

    /// Calls `each` with the text of the file `name` in the tmp directory of every live kiln
    /// process that has one.
    fn for_each_live_file(&self, name: &str, mut each: impl FnMut(&str)) -> Result<()> {
        let tmp = self.root.join("tmp");
        for entry in fs::read_dir(&tmp).at(&tmp)? {
            let entry = entry.at(&tmp)?;
            let dir = entry.path();
            if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let alive = dir == self.proc_tmp.dir
                || File::open(dir.with_extension("lock"))
                    .map(|f| f.try_lock().is_err())
                    .unwrap_or(false);
            if !alive {
                continue;
            }
            if let Ok(text) = fs::read_to_string(dir.join(name)) {
                each(&text);
            }
        }
        Ok(())
    }

    /// Opens a blob for reading; the reader checks size and digest as it reaches the end and
    /// fails the read that would return EOF if either is wrong.
    pub fn open_blob(&self, digest: &Digest, expected_size: Option<u64>) -> Result<BlobReader> {
        let path = self.blob_path(digest);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::BlobNotFound(digest.clone()));
            }
            Err(e) => return Err(Error::io(path, e)),
        };
        let actual = file.metadata().at(&path)?.len();
        if let Some(expected) = expected_size
            && expected != actual
        {
            return Err(Error::CorruptBlob {
                digest: digest.clone(),
                reason: format!("size is {actual} bytes, expected {expected}"),
            });
        }
        Ok(BlobReader {
            file,
            digest: digest.clone(),
            size: actual,
            hasher: Hasher::new(),
            verified: false,
        })
    }

    /// Reads a whole (small, JSON) blob, verified, refusing anything over `MAX_JSON_SIZE`.
    pub fn read_blob(&self, digest: &Digest, expected_size: Option<u64>) -> Result<Vec<u8>> {
        let mut reader = self.open_blob(digest, expected_size)?;
        if reader.size > MAX_JSON_SIZE {
            return Err(Error::TooLarge {
                what: format!("blob {digest}"),
                size: reader.size,
                limit: MAX_JSON_SIZE,
            });
        }
        let mut out = Vec::with_capacity(reader.size as usize);
        reader
            .read_to_end(&mut out)
            .map_err(|e| reader.explain(e))?;
        Ok(out)
    }

    /// Re-hashes a blob; `Ok(false)` if its content does not match its name.
    pub fn verify_blob(&self, digest: &Digest) -> Result<bool> {
        let path = self.blob_path(digest);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::BlobNotFound(digest.clone()));
            }
            Err(e) => return Err(Error::io(path, e)),
        };
        let mut hasher = Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).at(&path)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(hasher.finish().0 == *digest)
    }

    /// The store's index.json (tags live in its descriptors' annotations).
    pub fn read_index(&self) -> Result<ImageIndex> {
        let path = self.root.join("index.json");
        let bytes = read_limited(&path, MAX_JSON_SIZE)?;
        serde_json::from_slice(&bytes).map_err(|e| Error::json(path.display().to_string(), e))
    }

    /// Read-modify-write of index.json under the exclusive lock; written atomically.
    pub fn update_index<R>(&self, change: impl FnOnce(&mut ImageIndex) -> Result<R>) -> Result<R> {
        let guard = self.lock_exclusive()?;
        self.update_index_locked(&guard, change)
    }

    /// `update_index` for a caller that already holds `lock` exclusively (the collector, fsck).
    pub fn update_index_locked<R>(
        &self,
        _held: &StoreLock,
        change: impl FnOnce(&mut ImageIndex) -> Result<R>,
    ) -> Result<R> {
        let mut index = self.read_index()?;
        let result = change(&mut index)?;
        crate::image::forget_removed_repo_digests(&mut index);
        let bytes = to_canonical_json(&index, "index.json")?;
        write_atomic(&self.root.join("index.json"), &bytes, &self.proc_tmp.dir)?;
        Ok(result)
    }

    /// Every digest under `blobs/sha256/` (file names that are not digests are skipped).
    pub fn list_blobs(&self) -> Result<Vec<(Digest, u64)>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.blobs).at(&self.blobs)? {
            let entry = entry.at(&self.blobs)?;
            let name = entry.file_name();
            let Ok(digest) = Digest::from_hex(&name.to_string_lossy()) else {
                continue;
            };
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            out.push((digest, size));
        }
        out.sort();
        Ok(out)
    }

    /// Deletes a blob. Only the collector and `fsck --repair` call this, with `lock` exclusive.
    pub(crate) fn remove_blob(&self, digest: &Digest) -> Result<()> {
        let path = self.blob_path(digest);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(path, e)),
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Our pins die with us: everything we committed is referenced by now or is garbage.
        remove_any(&self.proc_tmp.dir);
        let _ = fs::remove_file(self.proc_tmp.dir.with_extension("lock"));
    }
}

impl ProcessTmp {
    /// Another process's sweep can unlink our lock file between its creation and our `flock`
    /// (to the sweeper it looks like a dead process's); `create` notices, and a fresh name on
    /// the next attempt gets past it. Errors that persist are reported after a few attempts.
    fn create_retrying(tmp: &Path) -> Result<ProcessTmp> {
        let mut attempt = 0;
        loop {
            match ProcessTmp::create(tmp) {
                Err(Error::Io { .. }) if attempt < 5 => attempt += 1,
                other => return other,
            }
        }
    }

    fn create(tmp: &Path) -> Result<ProcessTmp> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-{nanos}-{n}", std::process::id());
        let dir = tmp.join(&name);
        let lock_path = tmp.join(format!("{name}.lock"));
        let lock = File::create_new(&lock_path).at(&lock_path)?;
        lock.lock().at(&lock_path)?;
        // A sweeper may have unlinked our lock file between create and lock; if so the lock we
        // hold protects nothing, so fail rather than write into a directory others may delete.
        let held = lock.metadata().at(&lock_path)?;
        let on_disk = fs::metadata(&lock_path).at(&lock_path)?;
        if !same_file(&held, &on_disk) {
            // Someone else's file now has our name: leave it alone.
            return Err(Error::io(
                &lock_path,
                io::Error::other("tmp lock was removed while it was being taken; retry"),
            ));
        }
        fs::create_dir(&dir).at(&dir)?;
        Ok(ProcessTmp {
            pin_file: dir.join("pins"),
            dir,
            _alive: lock,
        })
    }
}

fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

fn empty_index() -> ImageIndex {
    let mut index = ImageIndex::default();
    index.set_media_type(Some(oci_spec::image::MediaType::ImageIndex));
    index.set_manifests(Vec::new());
    index
}

/// A held `flock` on the store's `lock` file; released on drop.
pub struct StoreLock {
    _file: File,
}

impl StoreLock {
    fn take(path: &Path, exclusive: bool) -> Result<StoreLock> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .at(path)?;
        if exclusive {
            file.lock().at(path)?;
        } else {
            file.lock_shared().at(path)?;
        }
        Ok(StoreLock { _file: file })
    }
}

/// A blob being written. Drop without `commit` discards it.
pub struct BlobWriter<'s> {
    store: &'s Store,
    file: Option<BufWriter<File>>,
    path: PathBuf,
    hasher: Hasher,
}

impl BlobWriter<'_> {
    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.hasher.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hasher.is_empty()
    }

    /// Verifies (if `expected` is given) and moves the blob into the store.
    pub fn commit(mut self, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        let Some(file) = self.file.take() else {
            return Err(Error::io(
                &self.path,
                io::Error::other("blob already committed"),
            ));
        };
        let hasher = std::mem::take(&mut self.hasher);
        let result = self.seal(file, hasher, expected);
        if result.is_err() {
            // The file handle is gone, so Drop will not clean up: do it here.
            let _ = fs::remove_file(&self.path);
        }
        result
    }

    fn seal(
        &self,
        file: BufWriter<File>,
        hasher: Hasher,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64)> {
        let file = file
            .into_inner()
            .map_err(|e| Error::io(&self.path, e.into_error()))?;
        file.sync_all().at(&self.path)?;
        drop(file);
        let (digest, size) = hasher.finish();
        if let Some(expected) = expected
            && *expected != digest
        {
            return Err(Error::DigestMismatch {
                expected: expected.clone(),
                actual: digest,
            });
        }
        self.store.commit_file(&self.path, &digest)?;
        Ok((digest, size))
    }
}

impl Write for BlobWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("blob already committed"))?;
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter<'_> {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Reads a blob and checks its digest at the end. Callers that may stop before EOF (a tar
/// reader stops at the end-of-archive marker) call `finish` to drain and verify the rest.
pub struct BlobReader {
    file: File,
    digest: Digest,
    size: u64,
    hasher: Hasher,
    verified: bool,
}

impl BlobReader {
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Reads what is left and verifies the digest.
    pub fn finish(mut self) -> Result<()> {
        io::copy(&mut self, &mut io::sink()).map_err(|e| self.explain(e))?;
        Ok(())
    }

    /// Turns an I/O error from `read` into the store error it stands for.
    pub fn explain(&self, err: io::Error) -> Error {
        if err.kind() == io::ErrorKind::InvalidData {
            Error::CorruptBlob {
                digest: self.digest.clone(),
                reason: err.to_string(),
            }
        } else {
            Error::io(format!("blob {}", self.digest), err)
        }
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        self.hasher.update(&buf[..n]);
        if n == 0 && !buf.is_empty() && !self.verified {
            let (digest, len) = std::mem::take(&mut self.hasher).finish();
            if len != self.size || digest != self.digest {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "blob {} is corrupt: its content hashes to {digest}",
                        self.digest
                    ),
                ));
            }
            self.verified = true;
        }
        Ok(n)
    }
}

/// Reads a whole file, refusing anything larger than `limit`.
pub(crate) fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let file = File::open(path).at(path)?;
    let size = file.metadata().at(path)?.len();
    if size > limit {
        return Err(Error::TooLarge {
            what: path.display().to_string(),
            size,
            limit,
        });
    }
    let mut out = Vec::with_capacity(size as usize);
    file.take(limit + 1).read_to_end(&mut out).at(path)?;
    Ok(out)
}

/// Writes `bytes` to `dest` via a temp file in `tmp_dir` (same filesystem) and a rename, with
/// the file and the destination directory fsynced.
pub(crate) fn write_atomic(dest: &Path, bytes: &[u8], tmp_dir: &Path) -> Result<()> {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = tmp_dir.join(format!("atomic-{n}"));
    let result = (|| {
        let mut file = File::create_new(&tmp).at(&tmp)?;
        file.write_all(bytes).at(&tmp)?;
        file.sync_all().at(&tmp)?;
        fs::rename(&tmp, dest).at(dest)?;
        sync_dir(dest.parent().unwrap_or(Path::new(".")))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

fn remove_any(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {
            let _ = fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = fs::remove_file(path);
        }
        Err(_) => {}
    }
}

/// The mount table of this process's mount namespace, for the sweeps: a killed process can leave
/// mounts in the store that must be detached before their directories are removed, and the
/// collector must see which snapshots are mounted.
pub mod mountinfo {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::path::{Path, PathBuf};

    /// One line of `/proc/self/mountinfo`.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Mount {
        pub mount_point: PathBuf,
        pub fs_type: String,
        /// Filesystem-specific options (overlay: `lowerdir=…,upperdir=…`), still escaped: values
        /// may contain separators only in their `\ooo` form.
        pub super_options: String,
    }

    /// This namespace's mounts; an unreadable table (no /proc) reads as empty.
    pub fn read() -> Vec<Mount> {
        std::fs::read_to_string("/proc/self/mountinfo")
            .map(|text| parse(&text))
            .unwrap_or_default()
    }

    /// Parses mountinfo text: `id parent dev root mount-point options [tags…] - type source
    /// super-options`. Malformed lines are skipped.
    pub fn parse(text: &str) -> Vec<Mount> {
        text.lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                let mount_point = fields.get(4)?;
                let dash = fields.iter().position(|f| *f == "-")?;
                Some(Mount {
                    mount_point: PathBuf::from(unescape(mount_point)),
                    fs_type: fields.get(dash + 1)?.to_string(),
                    super_options: fields.get(dash + 3).unwrap_or(&"").to_string(),
                })
            })
            .collect()
    }

    /// The kernel writes separators and blanks inside names as `\ooo` (octal).
    pub fn unescape(text: &str) -> String {
        let b = text.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'\\'
                && i + 3 < b.len()
                && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
            {
                let value = b[i + 1..i + 4]
                    .iter()
                    .fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                // Three octal digits can exceed a byte (\777); the kernel never writes those.
                out.push(value as u8);
                i += 4;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Lazily detaches every mount at or below `dir`, deepest first. True when none is left
    /// (so the directory can be removed without reaching through a mount).
    pub fn detach_below(dir: &Path) -> bool {
        let Ok(dir) = std::fs::canonicalize(dir) else {
            // Gone already, or unreachable: nothing can be mounted on it through this path.
            return true;
        };
        let below = |m: &Mount| m.mount_point.starts_with(&dir);
        let mut points: Vec<PathBuf> = read()
            .into_iter()
            .filter(below)
            .map(|m| m.mount_point)
            .collect();
        if points.is_empty() {
            return true;
        }
        points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for point in &points {
            let Ok(c) = CString::new(point.as_os_str().as_bytes()) else {
                continue;
            };
            // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
            unsafe {
                libc::umount2(c.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW);
            }
        }
        !read().iter().any(below)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::IndexExt;

    #[test]
    fn open_creates_a_layout() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for p in [
            "oci-layout",
            "index.json",
            "blobs/sha256",
            "tmp",
            "snapshots",
            "cache",
            "lock",
        ] {
            assert!(dir.path().join(p).exists(), "{p}");
        }
        assert_eq!(
            fs::read(dir.path().join("oci-layout")).unwrap(),
            br#"{"imageLayoutVersion":"1.0.0"}"#
        );
        assert!(store.read_index().unwrap().manifests().is_empty());
    }

    #[test]
    fn blobs_roundtrip_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (digest, size) = store.put_blob(b"hello world").unwrap();
        assert_eq!(digest, Digest::of(b"hello world"));
        assert_eq!(size, 11);
        assert_eq!(store.read_blob(&digest, Some(11)).unwrap(), b"hello world");
        assert!(store.verify_blob(&digest).unwrap());
        // A tmp file never lingers after a commit.
        assert_eq!(
            fs::read_dir(store.tmp_dir())
                .unwrap()
                .filter(|e| {
                    !e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with("pins")
                })
                .count(),
            0
        );
    }

    #[test]
    fn expected_digest_is_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut w = store.blob_writer().unwrap();
        w.write_all(b"abc").unwrap();
        let wrong = Digest::of(b"abd");
        assert!(matches!(
            w.commit(Some(&wrong)),
            Err(Error::DigestMismatch { .. })
        ));
        assert!(!store.has_blob(&wrong));
        assert!(!store.has_blob(&Digest::of(b"abc")));
    }

    #[test]
    fn corruption_is_detected_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (digest, _) = store.put_blob(b"precious bytes").unwrap();
        fs::write(store.blob_path(&digest), b"precious bytez").unwrap();
        assert!(matches!(
            store.read_blob(&digest, None),
            Err(Error::CorruptBlob { .. })
        ));
        assert!(matches!(
            store.read_blob(&digest, Some(3)),
            Err(Error::CorruptBlob { .. })
        ));
        assert!(!store.verify_blob(&digest).unwrap());
        let missing = Digest::of(b"nope");
        assert!(matches!(
            store.read_blob(&missing, None),
            Err(Error::BlobNotFound(_))
        ));
    }

    #[test]
    fn sweep_spares_live_processes_and_removes_dead_ones() {
        let dir = tempfile::tempdir().unwrap();
        let first = Store::open(dir.path()).unwrap();
        let live = first.tmp_path("partial");
        fs::write(&live, b"in progress").unwrap();
        // Debris of a dead process: a directory whose lock nobody holds, and one with no lock.
        let tmp = dir.path().join("tmp");
        fs::create_dir(tmp.join("1-2-3")).unwrap();
        fs::write(tmp.join("1-2-3/blob-0"), b"x").unwrap();
        fs::write(tmp.join("1-2-3.lock"), b"").unwrap();
        fs::create_dir(tmp.join("4-5-6")).unwrap();
        let second = Store::open(dir.path()).unwrap();
        assert!(
            live.exists(),
            "a live process's tmp must survive another open"
        );
        assert!(!tmp.join("1-2-3").exists());
        assert!(!tmp.join("1-2-3.lock").exists());
        assert!(!tmp.join("4-5-6").exists());
        drop(second);
        drop(first);
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
    }

    #[test]
    fn mountinfo_lines_are_parsed_and_unescaped() {
        let text = "36 35 98:0 / /mnt/a\\040b rw,noatime master:1 - overlay overlay rw,lowerdir=/l\\054x:/m,upperdir=/u\n\
                    garbage\n";
        let mounts = mountinfo::parse(text);
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].mount_point, Path::new("/mnt/a b"));
        assert_eq!(mounts[0].fs_type, "overlay");
        assert_eq!(
            mounts[0].super_options,
            "rw,lowerdir=/l\\054x:/m,upperdir=/u"
        );
        assert_eq!(mountinfo::unescape("/l\\054x"), "/l,x");
        // Nothing is mounted below a fresh directory: nothing to detach, safe to remove.
        let dir = tempfile::tempdir().unwrap();
        assert!(mountinfo::detach_below(dir.path()));
    }

    #[test]
    fn other_users_are_seen_while_their_handle_lives() {
        let dir = tempfile::tempdir().unwrap();
        let a = Store::open(dir.path()).unwrap();
        assert!(!a.other_users_alive().unwrap());
        let b = Store::open(dir.path()).unwrap();
        assert!(a.other_users_alive().unwrap());
        drop(b);
        assert!(!a.other_users_alive().unwrap());
    }

    #[test]
    fn pins_are_visible_while_alive() {
        let dir = tempfile::tempdir().unwrap();
        let a = Store::open(dir.path()).unwrap();
        let (digest, _) = a.put_blob(b"pinned").unwrap();
        let b = Store::open(dir.path()).unwrap();
        assert!(b.live_pins().unwrap().contains(&digest));
        drop(a);
        assert!(!b.live_pins().unwrap().contains(&digest));
    }

    #[test]
    fn index_updates_are_atomic_and_serialised() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        std::thread::scope(|s| {
            for i in 0..4u64 {
                let store = &store;
                s.spawn(move || {
                    store
                        .update_index(|index| {
                            let desc = oci_spec::image::Descriptor::new(
                                oci_spec::image::MediaType::ImageManifest,
                                i,
                                Digest::of(&i.to_le_bytes()).to_oci()?,
                            );
                            index.manifests_mut().push(desc);
                            Ok(())
                        })
                        .unwrap();
                });
            }
        });
        assert_eq!(store.read_index().unwrap().manifests().len(), 4);
    }
}
