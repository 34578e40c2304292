//! The build context: the files a build may read, after `.dockerignore`, with their content digests.
//!
//! Digests are memoised by inode metadata (device, inode, size, mtime, ctime): a file whose
//! metadata did not change since the last build is not read again, so a no-op rebuild of a large
//! context only stats its files. Hashing of what did change runs on every core.

use crate::dockerignore::Matcher;
use crate::error::{Error, Result};
use crate::fxhash::FxBuildHasher;
use crate::path::join;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

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
        Ok(self.walk_stat()?.entries)
    }

    /// Every path the build may see, sorted by path, with the digest of every regular file,
    /// reading only files the memo cannot vouch for. Each path is stat-ed once. Returns the
    /// entries and how many files were actually read.
    pub fn walk_hashed(&self, memo: &DigestMemo) -> Result<(Vec<Entry>, usize)> {
        self.walk_stat()?.hash(memo)
    }

    /// Every path the build may see, sorted by path, with what identifies each regular file's
    /// content without reading it; [`Walked::hash`] then fills in the digests. Walks the tree
    /// with every core: the children of each directory are stat-ed (their links read) and
    /// descended into in parallel, and put back in walk order: children sorted by name, each
    /// directory followed by its contents.
    pub fn walk_stat(&self) -> Result<Walked> {
        let tree = self.scan_dir(&self.root, "", true)?;
        let (entries, files) = count(&tree);
        let mut walked = Walked {
            root: self.root.clone(),
            entries: Vec::with_capacity(entries),
            files: Vec::with_capacity(files),
        };
        walked.flatten(tree)?;
        Ok(walked)
    }

    /// The children of `dir` (`rel` from the root; `exact` when `rel` is its host path
    /// verbatim), in name order, each with what is below it.
    ///
    /// Each child is stat-ed relative to the open directory (`DirEntry::metadata`, an
    /// `statx(dirfd, name, AT_SYMLINK_NOFOLLOW)`, which gives what `symlink_metadata` of its full
    /// path gives) rather than by a path the kernel would resolve from the root again.
    fn scan_dir(&self, dir: &Path, rel: &str, exact: bool) -> Result<Vec<Result<Scanned>>> {
        let mut children = Vec::new();
        for item in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let item = item.map_err(|e| Error::io(dir, e))?;
            let is_dir = item
                .file_type()
                .map_err(|e| Error::io(&item.path(), e))?
                .is_dir();
            children.push((item.file_name(), is_dir, item));
        }
        children.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(children
            .into_par_iter()
            .map(|(name, is_dir, item)| {
                let exact = exact && name.to_str().is_some();
                let child = join(rel, &name.to_string_lossy());
                let excluded = self.ignore.is_excluded(&child);
                // With no `!` patterns nothing below an excluded directory can come back.
                let descend = is_dir && (!excluded || self.ignore.has_exclusions());
                let below = if descend {
                    self.scan_dir(&item.path(), &child, exact)?
                } else {
                    Vec::new()
                };
                let found = if excluded {
                    None
                } else {
                    Some(scan_one(child, &item, exact)?)
                };
                Ok(Scanned { found, below })
            })
            .collect())
    }
}

/// A regular file of a walk: its stat key, and its host path when that is not the root
/// joined with the entry's path (a name that is not UTF-8).
#[derive(Debug)]
struct FileKey {
    key: MemoKey,
    host: Option<PathBuf>,
}

/// A regular file of a walk, by the index of its entry.
#[derive(Debug)]
struct FileAt {
    at: usize,
    file: FileKey,
}

/// One path of a walk, stat-ed: its entry, and its key if it is a regular file.
type Stated = (Entry, Option<FileKey>);

/// One child of a directory as the walk found it: its entry (none when `.dockerignore`
/// excludes it), then what is below it.
struct Scanned {
    found: Option<Stated>,
    below: Vec<Result<Scanned>>,
}

/// How many entries and regular files a scanned tree holds (errors count as nothing).
fn count(tree: &[Result<Scanned>]) -> (usize, usize) {
    tree.iter()
        .flatten()
        .fold((0, 0), |(entries, files), scanned| {
            let (below_entries, below_files) = count(&scanned.below);
            let (entry, file) = match &scanned.found {
                Some((_, file)) => (1, usize::from(file.is_some())),
                None => (0, 0),
            };
            (entries + entry + below_entries, files + file + below_files)
        })
}

/// The entry of the context path `rel` from one lstat of its directory entry, and its link
/// target; with a regular file's stat key and, unless `exact`, its host path.
fn scan_one(rel: String, item: &std::fs::DirEntry, exact: bool) -> Result<Stated> {
    let meta = item.metadata().map_err(|e| Error::io(&item.path(), e))?;
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        EntryKind::File
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_symlink() {
        let path = item.path();
        let target = std::fs::read_link(&path).map_err(|e| Error::io(&path, e))?;
        EntryKind::Symlink(target.to_string_lossy().into_owned())
    } else {
        EntryKind::Special
    };
    let file = (kind == EntryKind::File).then(|| FileKey {
        key: MemoKey::of(&meta),
        host: (!exact).then(|| item.path()),
    });
    let entry = Entry {
        path: rel,
        kind,
        mode: meta.mode(),
        uid: meta.uid(),
        gid: meta.gid(),
        size: meta.size(),
        mtime: meta.mtime(),
        digest: None,
    };
    Ok((entry, file))
}

/// A walk of the context before hashing: the entries, and for each regular file its index,
/// stat key and host path. Lets the memo load while the tree is walked.
#[derive(Debug)]
pub struct Walked {
    root: PathBuf,
    entries: Vec<Entry>,
    files: Vec<FileAt>,
}

impl Walked {
    /// Appends a scanned tree in walk order: each entry, then what is below it. The first
    /// error in walk order is the walk's.
    fn flatten(&mut self, tree: Vec<Result<Scanned>>) -> Result<()> {
        for scanned in tree {
            let Scanned { found, below } = scanned?;
            if let Some((entry, file)) = found {
                if let Some(file) = file {
                    let at = self.entries.len();
                    self.files.push(FileAt { at, file });
                }
                self.entries.push(entry);
            }
            self.flatten(below)?;
        }
        Ok(())
    }

    /// Fills in the digest of every regular file on every core, reading only files the memo
    /// cannot vouch for. Returns the entries and how many files were actually read.
    pub fn hash(self, memo: &DigestMemo) -> Result<(Vec<Entry>, usize)> {
        let Walked {
            root,
            mut entries,
            files,
        } = self;
        let digests: Vec<Result<(String, bool)>> = files
            .par_iter()
            .map(|FileAt { at, file }| {
                if let Some(digest) = memo.lookup(&file.key) {
                    return Ok((digest, false));
                }
                let path = match &file.host {
                    Some(host) => host.clone(),
                    None => root.join(&entries[*at].path),
                };
                Ok((read_digest(&path, file.key)?, true))
            })
            .collect();
        let mut read = 0;
        for (FileAt { at, file }, result) in files.iter().zip(digests) {
            let (digest, fresh) = result?;
            if fresh {
                read += 1;
                memo.record(file.key, digest.clone());
            }
            if let Some(entry) = entries.get_mut(*at) {
                entry.digest = Some(digest);
            }
        }
        Ok((entries, read))
    }
}

/// The digest of the regular file at `path`, read, whose stat gave `key`.
fn read_digest(path: &Path, key: MemoKey) -> Result<String> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let digest = sha256_read(&mut file, Some(key.size), path)?;
    // The file changed while it was read: its digest describes no single state of it. Asked of
    // the descriptor read (no second lookup of the path): the digest is of the file it is.
    let after = file.metadata().map_err(|e| Error::io(path, e))?;
    if MemoKey::of(&after) != key {
        return Err(Error::ContextFileChanged(path.to_path_buf()));
    }
    Ok(digest)
}

/// `sha256:<hex>` of a file's content, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    sha256_read(&mut file, None, path)
}

/// The most read at once.
const READ_CHUNK: u64 = 256 * 1024;

/// The buffer for a file whose stat says it is empty (if it has content after all, it is
/// short: such files are in `/proc`, not build contexts).
const SMALL_CHUNK: u64 = 8 * 1024;

/// `sha256:<hex>` of what `file` holds. With the `size` its stat gave, reading stops there
/// rather than with one more call to find the end, and the buffer is no larger than the file
/// (a context is mostly small files: zeroing a full chunk for each costs more than reading
/// them). A file that is longer or shorter than its stat said is the caller's to find by a
/// stat afterwards. A size of 0 is read to the end, as some files say 0 and have content.
fn sha256_read(file: &mut File, size: Option<u64>, path: &Path) -> Result<String> {
    let known = size.filter(|&s| s > 0);
    let cap = match size {
        None => READ_CHUNK,
        Some(0) => SMALL_CHUNK,
        Some(s) => s.min(READ_CHUNK),
    };
    let mut buf = vec![0u8; usize::try_from(cap).unwrap_or(8 * 1024)];
    let mut hasher = Sha256::new();
    let mut done = 0u64;
    while known.is_none_or(|s| done < s) {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(path, e)),
        };
        hasher.update(&buf[..n]);
        done += n as u64;
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

/// Content digests of context files, keyed by inode metadata, kept between builds in one file.
///
/// The file holds one line per file, `dev ino size mtime_ns ctime_ns sha256:<hex>`. A no-op
/// rebuild looks up every file of the context, so the memo is made cheap to load and to ask:
/// the text stays as read with the map pointing into it (no string per line), keys are hashed
/// with a fast hasher, and the hashing threads look up what was loaded without a lock; only
/// what this build records goes behind a mutex.
#[derive(Debug, Default)]
pub struct DigestMemo {
    /// The memo file as read.
    text: String,
    /// Each loaded key: where its digest starts in `text`, and whether this build looked it up.
    loaded: HashMap<MemoKey, (usize, AtomicBool), FxBuildHasher>,
    /// Digests this build read, of files the loaded memo could not vouch for.
    recorded: Mutex<HashMap<MemoKey, String, FxBuildHasher>>,
}

/// The length of `sha256:<hex>`.
const DIGEST_LEN: usize = 7 + 64;

/// One memo line, `dev ino size mtime_ns ctime_ns sha256:<hex>`: its key and its digest.
/// Numbers are read byte by byte (a no-op build of a large context parses a line per file);
/// what that does not take (a sign, a time past 2554) goes to `str::parse`.
fn parse_line(line: &str) -> Option<(MemoKey, &str)> {
    let split = line.len().checked_sub(DIGEST_LEN)?;
    let digest = line.get(split..)?;
    if !is_sha256(digest) {
        return None;
    }
    let key = line.get(..split)?.strip_suffix(' ')?;
    let mut fields = key.as_bytes().split(|&b| b == b' ');
    let key = MemoKey {
        dev: number(fields.next()?)?,
        ino: number(fields.next()?)?,
        size: number(fields.next()?)?,
        mtime_ns: number(fields.next()?)?,
        ctime_ns: number(fields.next()?)?,
    };
    fields.next().is_none().then_some((key, digest))
}

/// A decimal number.
fn number<T: TryFrom<u64> + std::str::FromStr>(text: &[u8]) -> Option<T> {
    let fast = (!text.is_empty()).then_some(text).and_then(|digits| {
        digits.iter().try_fold(0u64, |n, &b| {
            let digit = b.checked_sub(b'0').filter(|d| *d < 10)?;
            n.checked_mul(10)?.checked_add(u64::from(digit))
        })
    });
    match fast.map(T::try_from) {
        Some(Ok(n)) => Some(n),
        _ => std::str::from_utf8(text).ok()?.parse().ok(),
    }
}

impl DigestMemo {
    /// Load the memo from `path`; a missing or unreadable memo is an empty one, and unreadable
    /// lines are skipped (it is only a cache: the worst case is reading files again).
    pub fn load(path: &Path) -> DigestMemo {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        // About 130 bytes a line.
        let mut loaded = HashMap::with_capacity_and_hasher(text.len() / 128, Default::default());
        for (key, digest) in text.lines().filter_map(parse_line) {
            // `digest` is a slice of `text`: its offset there.
            let at = digest.as_ptr() as usize - text.as_ptr() as usize;
            loaded.insert(key, (at, AtomicBool::new(false)));
        }
        DigestMemo {
            text,
            loaded,
            recorded: Mutex::default(),
        }
    }

    fn lookup(&self, key: &MemoKey) -> Option<String> {
        if let Some((at, used)) = self.loaded.get(key) {
            used.store(true, Ordering::Relaxed);
            return self.text.get(*at..at + DIGEST_LEN).map(str::to_string);
        }
        self.recorded().get(key).cloned()
    }

    fn record(&self, key: MemoKey, digest: String) {
        self.recorded().insert(key, digest);
    }

    fn recorded(&self) -> std::sync::MutexGuard<'_, HashMap<MemoKey, String, FxBuildHasher>> {
        self.recorded.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.loaded.len() + self.recorded().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Write the memo to `path` atomically (temp file + rename), keeping only the entries this
    /// build looked up or recorded (the current context), so it never grows without bound. A
    /// memo that recorded nothing and has nothing to drop is left as it is on disk. Returns
    /// whether the file was written.
    pub fn save(&self, path: &Path) -> Result<bool> {
        let recorded = self.recorded();
        let stale = self
            .loaded
            .values()
            .any(|(_, used)| !used.load(Ordering::Relaxed));
        if recorded.is_empty() && !stale && path.exists() {
            return Ok(false);
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
        let mut out = std::io::BufWriter::new(tmp.as_file_mut());
        let looked_up = self.loaded.iter().filter_map(|(key, (at, used))| {
            let digest = self.text.get(*at..at + DIGEST_LEN)?;
            used.load(Ordering::Relaxed).then_some((key, digest))
        });
        let read = recorded.iter().map(|(key, digest)| (key, digest.as_str()));
        for (key, digest) in looked_up.chain(read) {
            writeln!(
                out,
                "{} {} {} {} {} {digest}",
                key.dev, key.ino, key.size, key.mtime_ns, key.ctime_ns
            )
            .map_err(|e| Error::io(path, e))?;
        }
        out.flush().map_err(|e| Error::io(path, e))?;
        drop(out);
        tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
        Ok(true)
    }
}

/// Whether `text` is `sha256:` and 64 lowercase hex digits.
fn is_sha256(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
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
        let hashed = |memo: &DigestMemo| ctx.walk_hashed(memo).unwrap_or_else(|e| panic!("{e}"));

        let memo = DigestMemo::load(&memo_path);
        let (entries, read) = hashed(&memo);
        assert_eq!(read, 3);
        let one = entries
            .iter()
            .find(|e| e.path == "one")
            .and_then(|e| e.digest.clone());
        assert_eq!(
            one.as_deref(),
            Some("sha256:6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b")
        );
        let walked = ctx.walk().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(paths(&walked), paths(&entries));
        assert!(walked.iter().all(|e| e.digest.is_none()));
        assert_eq!(memo.save(&memo_path).ok(), Some(true));

        // A second build with a fresh memo loaded from disk reads nothing.
        let memo = DigestMemo::load(&memo_path);
        let (again, read) = hashed(&memo);
        assert_eq!(read, 0);
        assert_eq!(entries, again);
        // Nothing was read and nothing is stale: the memo on disk is left as it is.
        assert_eq!(memo.save(&memo_path).ok(), Some(false));

        // Changing one file reads exactly that one, and the memo is written again.
        std::fs::write(dir.path().join("two"), "changed").unwrap_or_else(|e| panic!("{e}"));
        let (_, read) = hashed(&memo);
        assert_eq!(read, 1);
        assert_eq!(memo.save(&memo_path).ok(), Some(true));
        // Removing a file leaves its record stale: that too rewrites the memo, without it.
        std::fs::remove_file(dir.path().join("one")).unwrap_or_else(|e| panic!("{e}"));
        let memo = DigestMemo::load(&memo_path);
        let (_, read) = hashed(&memo);
        assert_eq!(read, 0);
        assert_eq!(memo.save(&memo_path).ok(), Some(true));
        assert_eq!(DigestMemo::load(&memo_path).len(), 2);
    }

    #[test]
    fn a_name_that_is_not_utf8_is_read_from_its_own_path() {
        use std::os::unix::ffi::OsStrExt;
        let dir = context_with(&[("ok", "1")]);
        let odd = dir.path().join(std::ffi::OsStr::from_bytes(b"d\xff"));
        std::fs::create_dir(&odd).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(odd.join("f"), "x").unwrap_or_else(|e| panic!("{e}"));
        let ctx = BuildContext::open(dir.path(), None).unwrap_or_else(|e| panic!("{e}"));
        let (entries, read) = ctx
            .walk_hashed(&DigestMemo::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read, 2);
        assert_eq!(paths(&entries), vec!["d\u{fffd}", "d\u{fffd}/f", "ok"]);
        assert!(entries[1].digest.is_some());
    }

    #[test]
    fn memo_lines_parse_as_written_and_odd_ones_are_skipped() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let key = MemoKey {
            dev: 2049,
            ino: u64::MAX,
            size: 0,
            mtime_ns: -1_500_000_000,
            ctime_ns: i128::from(u64::MAX) * 1000,
        };
        let line = format!(
            "{} {} {} {} {} {digest}",
            key.dev, key.ino, key.size, key.mtime_ns, key.ctime_ns
        );
        assert_eq!(parse_line(&line), Some((key, digest.as_str())));
        assert_eq!(
            parse_line(&format!("+1 2 3 4 5 {digest}")).map(|(k, _)| k.dev),
            Some(1)
        );
        for bad in [
            format!("1 2 3 4 {digest}"),
            format!("1 2 3 4 5 6 {digest}"),
            format!("1 2 3 4 x {digest}"),
            format!("1 2  3 4 5 {digest}"),
            format!("1 2 3 4 5{digest}"),
            format!("1 2 3 4 5 {}", digest.to_uppercase()),
            "1 2 3 4 5 sha256:ab".to_string(),
            String::new(),
        ] {
            assert_eq!(parse_line(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn reading_stops_at_the_stat_size_and_a_change_is_caught() {
        let dir = context_with(&[("f", "hello"), ("e", "")]);
        let path = dir.path().join("f");
        let digest_of = |size: Option<u64>| {
            let mut file = File::open(&path).unwrap_or_else(|e| panic!("{e}"));
            sha256_read(&mut file, size, &path).unwrap_or_else(|e| panic!("{e}"))
        };
        let bytes = |b: &[u8]| format!("sha256:{}", hex::encode(Sha256::digest(b)));
        assert_eq!(digest_of(Some(5)), bytes(b"hello"));
        assert_eq!(digest_of(None), bytes(b"hello"));
        // Grew since its stat: what the stat said is read (the stat after tells).
        assert_eq!(digest_of(Some(3)), bytes(b"hel"));
        // Shrank since its stat: read to its end.
        assert_eq!(digest_of(Some(500_000)), bytes(b"hello"));
        // A size of 0 says nothing: read to its end.
        assert_eq!(digest_of(Some(0)), bytes(b"hello"));

        let key = |p: &Path| MemoKey::of(&std::fs::metadata(p).unwrap_or_else(|e| panic!("{e}")));
        let before = key(&path);
        assert_eq!(read_digest(&path, before).ok(), Some(bytes(b"hello")));
        let empty = dir.path().join("e");
        assert_eq!(read_digest(&empty, key(&empty)).ok(), Some(bytes(b"")));
        std::fs::write(&path, "hello, world").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            read_digest(&path, before),
            Err(Error::ContextFileChanged(_))
        ));
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
