//! The build context: the files a build may read, after `.dockerignore`, with their content digests.
//!
//! Digests are memoised by inode metadata (device, inode, size, mtime, ctime): a file whose
//! metadata did not change since the last build is not read again, so a no-op rebuild of a large
//! context only stats its files. Hashing of what did change runs on every core.

use crate::dockerignore::Matcher;
use crate::error::{Error, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What a context path is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    File,
    Dir,
    /// A symbolic link, with its target as written (never followed).
    Symlink(String),
    /// A FIFO, socket or device: listed so errors can name it, never copied as content.
    Special,
}

/// One path of the context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative to the context root, slash-separated, no leading `./`.
    pub path: String,
    pub kind: EntryKind,
    /// Permission and type bits as `st_mode` gives them.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
    /// `sha256:<hex>` of the content, for regular files once hashed.
    pub digest: Option<String>,
}

/// The context directory and its ignore rules.
#[derive(Debug)]
pub struct BuildContext {
    root: PathBuf,
    ignore: Matcher,
}

impl BuildContext {
    /// Open `root` with the ignore rules of `dockerfile`: `<Dockerfile>.dockerignore` beside it
    /// wins over `root/.dockerignore`, as BuildKit does.
    pub fn open(root: &Path, dockerfile: Option<&Path>) -> Result<BuildContext> {
        let meta = std::fs::metadata(root).map_err(|e| Error::io(root, e))?;
        if !meta.is_dir() {
            return Err(Error::ContextNotDir(root.to_path_buf()));
        }
        let specific = dockerfile.map(|f| {
            let mut name = f.as_os_str().to_owned();
            name.push(".dockerignore");
            PathBuf::from(name)
        });
        let candidates = specific
            .into_iter()
            .chain(std::iter::once(root.join(".dockerignore")));
        let mut ignore = Matcher::default();
        for candidate in candidates {
            match std::fs::read_to_string(&candidate) {
                Ok(text) => {
                    ignore = Matcher::from_text(&candidate.to_string_lossy(), &text)?;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&candidate, e)),
            }
        }
        Ok(BuildContext {
            root: root.to_path_buf(),
            ignore,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether `.dockerignore` excludes this context path (for "excluded by .dockerignore" hints).
    pub fn is_ignored(&self, path: &str) -> bool {
        self.ignore.is_excluded(path)
    }

    /// Every path the build may see, sorted by path, without content digests.
    pub fn walk(&self) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        let mut walker = walkdir::WalkDir::new(&self.root)
            .follow_links(false)
            .sort_by_file_name()
            .min_depth(1)
            .into_iter();
        while let Some(item) = walker.next() {
            let item = item.map_err(|e| {
                let path = e.path().unwrap_or(&self.root).to_path_buf();
                match e.into_io_error() {
                    Some(io) => Error::io(&path, io),
                    None => Error::ContextLoop(path),
                }
            })?;
            let rel = relative_slash_path(&self.root, item.path());
            let is_dir = item.file_type().is_dir();
            if self.ignore.is_excluded(&rel) {
                // With no `!` patterns nothing below an excluded directory can come back.
                if is_dir && !self.ignore.has_exclusions() {
                    walker.skip_current_dir();
                }
                continue;
            }
            let meta = item.metadata().map_err(|e| {
                Error::io(
                    item.path(),
                    e.into_io_error()
                        .unwrap_or_else(|| std::io::Error::other("metadata unavailable")),
                )
            })?;
            let ft = meta.file_type();
            let kind = if ft.is_file() {
                EntryKind::File
            } else if ft.is_dir() {
                EntryKind::Dir
            } else if ft.is_symlink() {
                let target =
                    std::fs::read_link(item.path()).map_err(|e| Error::io(item.path(), e))?;
                EntryKind::Symlink(target.to_string_lossy().into_owned())
            } else {
                EntryKind::Special
            };
            out.push(Entry {
                path: rel,
                kind,
                mode: meta.mode(),
                uid: meta.uid(),
                gid: meta.gid(),
                size: meta.size(),
                mtime: meta.mtime(),
                digest: None,
            });
        }
        Ok(out)
    }

    /// Fill in the digest of every regular file, reading only files the memo cannot vouch for.
    /// Returns how many files were actually read.
    pub fn hash(&self, entries: &mut [Entry], memo: &DigestMemo) -> Result<usize> {
        let root = &self.root;
        // Per file: its digest, and the memo record to add when it had to be read.
        type Hashed = Option<(String, Option<MemoKey>)>;
        let results: Vec<Result<Hashed>> = entries
            .par_iter()
            .map(|entry| {
                if entry.kind != EntryKind::File {
                    return Ok(None);
                }
                let path = root.join(&entry.path);
                let meta = std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
                let key = MemoKey::of(&meta);
                if let Some(digest) = memo.lookup(&key) {
                    return Ok(Some((digest, None)));
                }
                let digest = sha256_file(&path)?;
                // The file changed while it was read: its digest describes no single state of it.
                let after = std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
                if MemoKey::of(&after) != key {
                    return Err(Error::ContextFileChanged(path));
                }
                Ok(Some((digest, Some(key))))
            })
            .collect();
        let mut read = 0;
        for (entry, result) in entries.iter_mut().zip(results) {
            if let Some((digest, fresh)) = result? {
                if let Some(key) = fresh {
                    read += 1;
                    memo.record(key, digest.clone());
                }
                entry.digest = Some(digest);
            }
        }
        Ok(read)
    }
}

/// `path` relative to `root`, slash-separated.
fn relative_slash_path(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// `sha256:<hex>` of a file's content, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

/// What identifies one state of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemoKey {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl MemoKey {
    fn of(meta: &std::fs::Metadata) -> MemoKey {
        MemoKey {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoValue {
    pub digest: String,
}

/// Content digests of context files, keyed by inode metadata, kept between builds in one file.
///
/// Shared by the hashing threads, so it is behind a mutex; lookups are cheap next to a stat.
#[derive(Debug, Default)]
pub struct DigestMemo {
    entries: std::sync::Mutex<HashMap<MemoKey, MemoValue>>,
}

#[derive(Serialize, Deserialize)]
struct MemoRecord {
    key: MemoKey,
    value: MemoValue,
}

impl DigestMemo {
    /// Load the memo from `path`; a missing or unreadable memo is an empty one (it is only a
    /// cache: the worst case is reading files again).
    pub fn load(path: &Path) -> DigestMemo {
        let mut map = HashMap::new();
        if let Ok(text) = std::fs::read_to_string(path) {
            for line in text.lines() {
                if let Ok(record) = serde_json::from_str::<MemoRecord>(line) {
                    map.insert(record.key, record.value);
                }
            }
        }
        DigestMemo {
            entries: std::sync::Mutex::new(map),
        }
    }

    fn lookup(&self, key: &MemoKey) -> Option<String> {
        let map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).map(|v| v.digest.clone())
    }

    fn record(&self, key: MemoKey, digest: String) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(key, MemoValue { digest });
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Write the memo to `path` atomically (temp file + rename), keeping only `keep` entries
    /// (those of the current context), so it never grows without bound.
    pub fn save(&self, path: &Path, keep: &[Entry]) -> Result<()> {
        let wanted: std::collections::HashSet<&str> =
            keep.iter().filter_map(|e| e.digest.as_deref()).collect();
        let map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
        let mut out = std::io::BufWriter::new(tmp.as_file_mut());
        for (key, value) in map.iter() {
            if !wanted.contains(value.digest.as_str()) {
                continue;
            }
            let line = serde_json::to_string(&MemoRecord {
                key: *key,
                value: value.clone(),
            })
            .map_err(|e| Error::io(path, std::io::Error::other(e)))?;
            out.write_all(line.as_bytes())
                .and_then(|()| out.write_all(b"\n"))
                .map_err(|e| Error::io(path, e))?;
        }
        out.flush().map_err(|e| Error::io(path, e))?;
        drop(out);
        tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn context_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        for (path, content) in files {
            let p = dir.path().join(path);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{e}"));
            }
            std::fs::write(&p, content).unwrap_or_else(|e| panic!("{e}"));
        }
        dir
    }

    fn paths(entries: &[Entry]) -> Vec<&str> {
        entries.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn walk_is_sorted_and_honours_dockerignore() {
        let dir = context_with(&[
            ("b.txt", "b"),
            ("a/x.md", "x"),
            ("a/keep.md", "k"),
            ("node_modules/m/index.js", "m"),
            (".dockerignore", "node_modules\na/*.md\n!a/keep.md\n"),
        ]);
        symlink("../../etc/shadow", dir.path().join("link")).unwrap_or_else(|e| panic!("{e}"));
        let ctx = BuildContext::open(dir.path(), None).unwrap_or_else(|e| panic!("{e}"));
        let entries = ctx.walk().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            paths(&entries),
            vec![".dockerignore", "a", "a/keep.md", "b.txt", "link"]
        );
        let link = entries.iter().find(|e| e.path == "link");
        assert_eq!(
            link.map(|e| e.kind.clone()),
            Some(EntryKind::Symlink("../../etc/shadow".into()))
        );
        assert!(ctx.is_ignored("a/x.md"));
    }

    #[test]
    fn dockerfile_specific_ignore_file_wins() {
        let dir = context_with(&[
            ("a", "1"),
            ("b", "2"),
            (".dockerignore", "a\n"),
            ("build/Dockerfile", "FROM scratch\n"),
            ("build/Dockerfile.dockerignore", "b\n"),
        ]);
        let df = dir.path().join("build/Dockerfile");
        let ctx = BuildContext::open(dir.path(), Some(&df)).unwrap_or_else(|e| panic!("{e}"));
        assert!(ctx.is_ignored("b"));
        assert!(!ctx.is_ignored("a"));
    }

    #[test]
    fn hashing_reads_each_unchanged_file_once_across_builds() {
        let dir = context_with(&[("one", "1"), ("two", "22"), ("sub/three", "333")]);
        let state = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let memo_path = state.path().join("context-digests");
        let ctx = BuildContext::open(dir.path(), None).unwrap_or_else(|e| panic!("{e}"));

        let memo = DigestMemo::load(&memo_path);
        let mut entries = ctx.walk().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            ctx.hash(&mut entries, &memo)
                .unwrap_or_else(|e| panic!("{e}")),
            3
        );
        let one = entries
            .iter()
            .find(|e| e.path == "one")
            .and_then(|e| e.digest.clone());
        assert_eq!(
            one.as_deref(),
            Some("sha256:6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b")
        );
        memo.save(&memo_path, &entries)
            .unwrap_or_else(|e| panic!("{e}"));

        // A second build with a fresh memo loaded from disk reads nothing.
        let memo = DigestMemo::load(&memo_path);
        let mut again = ctx.walk().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            ctx.hash(&mut again, &memo)
                .unwrap_or_else(|e| panic!("{e}")),
            0
        );
        assert_eq!(entries, again);

        // Changing one file reads exactly that one.
        std::fs::write(dir.path().join("two"), "changed").unwrap_or_else(|e| panic!("{e}"));
        let mut third = ctx.walk().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            ctx.hash(&mut third, &memo)
                .unwrap_or_else(|e| panic!("{e}")),
            1
        );
    }

    #[test]
    fn a_file_as_context_is_refused() {
        let dir = context_with(&[("f", "x")]);
        match BuildContext::open(&dir.path().join("f"), None) {
            Err(Error::ContextNotDir(_)) => {}
            other => panic!("expected ContextNotDir, got {other:?}"),
        }
    }
}
