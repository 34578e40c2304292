//! The chunk memo: where the store already holds a chunk compressed, so a layer that repeats
//! most of an earlier one (a COPY redone after one file changed) copies those bytes instead of
//! compressing them again.
//!
//! Each multi-chunk gzip blob gets a record file `gzip-chunks/<blob hex>` listing its chunks:
//! the BLAKE3 hash of the chunk's uncompressed bytes, their length and CRC-32, and where the
//! chunk's deflate bytes lie in the blob, with their own CRC-32, checked when they are copied
//! (a blob damaged on disk since then gives no hit). Blobs never change, so a record stays true for as long
//! as its blob exists; the collector removes records whose blob is gone. The records are a
//! cache: written without fsync, checked by a digest of their own on load, ignored when torn or
//! from another format or level, and a failure to read or write one only costs the compression
//! it would have saved. The output does not depend on the memo: a chunk compresses to the same
//! bytes whether it is copied or compressed afresh.

use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::digest::Digest;

/// Names the chunk format (cut points, run encoding, key): records of another version are
/// ignored. 2: cuts at tar block boundaries, 512-byte segments, BLAKE3 keys.
const FORMAT: &str = "kiln-gzip-chunks 2";
/// Where record files live, below the store root.
pub(crate) const DIR: &str = "gzip-chunks";
/// A record file larger than this is not one kiln wrote.
const RECORD_FILE_MAX: u64 = 16 << 20;

/// What a chunk is known by: the BLAKE3 hash of its uncompressed bytes. Every chunk of every
/// multi-chunk layer is hashed for it; BLAKE3 is a cryptographic hash like the sha256 of
/// digests (a collision would put another chunk's bytes in a layer) at a quarter of its cost
/// here.
pub(crate) fn chunk_key(data: &[u8]) -> [u8; 32] {
    blake3::hash(data).into()
}

/// One chunk of a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChunkRecord {
    /// [`chunk_key`] of the uncompressed chunk.
    pub key: [u8; 32],
    pub raw_len: u64,
    pub crc: u32,
    /// Where its deflate bytes start in the blob, how many there are, and their CRC-32 (which
    /// catches a blob damaged since it was written).
    pub offset: u64,
    pub len: u64,
    pub packed_crc: u32,
}

/// A chunk found in the memo: in which blob it lies.
#[derive(Debug, Clone)]
struct Place {
    blob: String,
    record: ChunkRecord,
}

/// The memo of one store, for one compression level; loaded on first use.
#[derive(Debug)]
pub(crate) struct ChunkMemo {
    dir: PathBuf,
    blobs: PathBuf,
    tmp: PathBuf,
    level: u32,
    places: OnceLock<HashMap<[u8; 32], Place>>,
}

impl ChunkMemo {
    pub(crate) fn new(root: &Path, blobs: &Path, tmp: &Path, level: u32) -> ChunkMemo {
        ChunkMemo {
            dir: root.join(DIR),
            blobs: blobs.to_path_buf(),
            tmp: tmp.to_path_buf(),
            level,
            places: OnceLock::new(),
        }
    }

    fn header(&self) -> String {
        format!("{FORMAT} level {}\n", self.level)
    }

    /// The compressed bytes of the chunk `key`, if a blob of the store holds them and its
    /// record agrees on the chunk's length and CRC.
    pub(crate) fn lookup(&self, key: &[u8; 32], raw_len: u64, crc: u32) -> Option<Vec<u8>> {
        let place = self.places.get_or_init(|| self.load()).get(key)?;
        let record = &place.record;
        // A chunk never deflates to much more than it holds: a larger record is not kiln's.
        if record.raw_len != raw_len || record.crc != crc || record.len > raw_len + raw_len / 8 + 64
        {
            return None;
        }
        let file = File::open(self.blobs.join(&place.blob)).ok()?;
        let size = file.metadata().ok()?.len();
        if record.offset.checked_add(record.len)? > size {
            return None;
        }
        let mut bytes = vec![0u8; usize::try_from(record.len).ok()?];
        file.read_exact_at(&mut bytes, record.offset).ok()?;
        (crc32fast::hash(&bytes) == record.packed_crc).then_some(bytes)
    }

    /// Every record file of this format and level; unreadable or torn ones are skipped.
    fn load(&self) -> HashMap<[u8; 32], Place> {
        let mut places = HashMap::new();
        let Ok(dir) = fs::read_dir(&self.dir) else {
            return places;
        };
        let header = self.header();
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(blob) = name.to_str().filter(|n| is_hex_digest(n)) else {
                continue;
            };
            let Ok(text) = crate::store::read_limited(&entry.path(), RECORD_FILE_MAX) else {
                continue;
            };
            let Some(records) = parse(&text, &header) else {
                continue;
            };
            for record in records {
                places.insert(
                    record.key,
                    Place {
                        blob: blob.to_string(),
                        record,
                    },
                );
            }
        }
        places
    }

    /// Records the chunks of the committed blob `blob`. Best effort: the memo is a cache.
    pub(crate) fn save(&self, blob: &Digest, records: &[ChunkRecord]) {
        let _ = self.try_save(blob, records);
    }

    fn try_save(&self, blob: &Digest, records: &[ChunkRecord]) -> io::Result<()> {
        let mut text = self.header();
        for r in records {
            text.push_str(&format!(
                "{} {} {:08x} {} {} {:08x}\n",
                hex::encode(r.key),
                r.raw_len,
                r.crc,
                r.offset,
                r.len,
                r.packed_crc
            ));
        }
        let seal = hex::encode(Sha256::digest(text.as_bytes()));
        text.push_str(&format!("end {seal}\n"));
        fs::create_dir_all(&self.dir)?;
        let tmp = self.tmp.join(format!("gzip-chunks-{}", blob.hex()));
        let result = File::create(&tmp)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .and_then(|()| fs::rename(&tmp, self.dir.join(blob.hex())));
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

/// The records of a record file, if it is whole and of the format and level in `header`.
fn parse(bytes: &[u8], header: &str) -> Option<Vec<ChunkRecord>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let body_end = text.rfind("end ")?;
    let (body, seal) = text.split_at(body_end);
    let seal = seal.strip_prefix("end ")?.strip_suffix('\n')?;
    if !body.starts_with(header) || hex::encode(Sha256::digest(body.as_bytes())) != seal {
        return None;
    }
    body[header.len()..]
        .lines()
        .map(|line| {
            let mut fields = line.split(' ');
            let mut key = [0u8; 32];
            hex::decode_to_slice(fields.next()?, &mut key).ok()?;
            let record = ChunkRecord {
                key,
                raw_len: fields.next()?.parse().ok()?,
                crc: u32::from_str_radix(fields.next()?, 16).ok()?,
                offset: fields.next()?.parse().ok()?,
                len: fields.next()?.parse().ok()?,
                packed_crc: u32::from_str_radix(fields.next()?, 16).ok()?,
            };
            fields.next().is_none().then_some(record)
        })
        .collect()
}

fn is_hex_digest(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Removes the records of blobs the store no longer has. Called by the collector, with the
/// store locked exclusively.
pub(crate) fn prune(root: &Path, blobs: &Path) -> crate::error::Result<()> {
    let dir = root.join(DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(crate::error::Error::io(dir, e)),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let keep = name
            .to_str()
            .is_some_and(|n| is_hex_digest(n) && blobs.join(n).exists());
        if !keep {
            let path = entry.path();
            fs::remove_file(&path).map_err(|e| crate::error::Error::io(path, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOB: &[u8] = b"0123456789abcdefghijklmnopqrst";

    /// A record of the 10 bytes at `offset` in `BLOB` (as far as there are any).
    fn record(n: u8, offset: u64) -> ChunkRecord {
        let start = (offset as usize).min(BLOB.len());
        let end = (start + 10).min(BLOB.len());
        ChunkRecord {
            key: [n; 32],
            raw_len: 1000 + u64::from(n),
            crc: 0xdead_0000 | u32::from(n),
            offset,
            len: 10,
            packed_crc: crc32fast::hash(&BLOB[start..end]),
        }
    }

    #[test]
    fn records_come_back_and_point_into_their_blob() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let blobs = root.path().join("blobs");
        fs::create_dir(&blobs).unwrap_or_else(|e| panic!("{e}"));
        let blob = Digest::of(b"a blob");
        fs::write(blobs.join(blob.hex()), BLOB).unwrap_or_else(|e| panic!("{e}"));
        let memo = ChunkMemo::new(root.path(), &blobs, root.path(), 6);
        memo.save(&blob, &[record(1, 0), record(2, 10), record(3, 25)]);

        let memo = ChunkMemo::new(root.path(), &blobs, root.path(), 6);
        let r = record(2, 10);
        assert_eq!(
            memo.lookup(&r.key, r.raw_len, r.crc).as_deref(),
            Some(&b"abcdefghij"[..])
        );
        // A record that disagrees on the chunk, or runs past the blob's end, is no hit.
        assert_eq!(memo.lookup(&r.key, r.raw_len + 1, r.crc), None);
        let past_end = record(3, 25);
        assert_eq!(
            memo.lookup(&past_end.key, past_end.raw_len, past_end.crc),
            None
        );
        assert_eq!(memo.lookup(&[9; 32], 1, 1), None);
        // Another level does not see them.
        let other = ChunkMemo::new(root.path(), &blobs, root.path(), 9);
        assert_eq!(other.lookup(&r.key, r.raw_len, r.crc), None);
        // Nor does anyone once the blob's bytes are damaged.
        let mut damaged = BLOB.to_vec();
        damaged[12] ^= 1;
        fs::write(blobs.join(blob.hex()), damaged).unwrap_or_else(|e| panic!("{e}"));
        let memo = ChunkMemo::new(root.path(), &blobs, root.path(), 6);
        assert_eq!(memo.lookup(&r.key, r.raw_len, r.crc), None);
        let first = record(1, 0);
        assert!(memo.lookup(&first.key, first.raw_len, first.crc).is_some());
    }

    #[test]
    fn torn_records_are_ignored_and_pruned_with_their_blob() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let blobs = root.path().join("blobs");
        fs::create_dir(&blobs).unwrap_or_else(|e| panic!("{e}"));
        let blob = Digest::of(b"a blob");
        fs::write(blobs.join(blob.hex()), [7u8; 100]).unwrap_or_else(|e| panic!("{e}"));
        let memo = ChunkMemo::new(root.path(), &blobs, root.path(), 6);
        memo.save(&blob, &[record(1, 0)]);
        let path = root.path().join(DIR).join(blob.hex());
        let whole = fs::read(&path).unwrap_or_else(|e| panic!("{e}"));
        fs::write(&path, &whole[..whole.len() - 20]).unwrap_or_else(|e| panic!("{e}"));
        let r = record(1, 0);
        let memo = ChunkMemo::new(root.path(), &blobs, root.path(), 6);
        assert_eq!(memo.lookup(&r.key, r.raw_len, r.crc), None);

        fs::write(&path, &whole).unwrap_or_else(|e| panic!("{e}"));
        fs::write(root.path().join(DIR).join("stray"), b"x").unwrap_or_else(|e| panic!("{e}"));
        prune(root.path(), &blobs).unwrap_or_else(|e| panic!("{e}"));
        assert!(path.exists(), "the blob is there: its record stays");
        fs::remove_file(blobs.join(blob.hex())).unwrap_or_else(|e| panic!("{e}"));
        prune(root.path(), &blobs).unwrap_or_else(|e| panic!("{e}"));
        let left: Vec<_> = fs::read_dir(root.path().join(DIR))
            .unwrap_or_else(|e| panic!("{e}"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
