//! gzip for layers: one standard gzip member, compressed on every core, cut into chunks at
//! content-defined points, each chunk compressed on its own and its bytes remembered so a later
//! layer holding the same chunk copies them instead of compressing again.
//!
//! The stream is cut where a hash of the block before says so ([`chunker`]), so a chunk's
//! bytes do not depend on what came before it in the layer. Each chunk becomes byte-aligned,
//! non-final deflate blocks ([`deflate`]) on a worker thread; the writer puts them in order
//! between a gzip header and an empty final block, and combines the chunks' CRC-32s for the
//! trailer. The output is a function of the tar and the level alone: not of the thread count,
//! nor of whether a chunk came from the memo ([`memo`]) or the compressor.
//!
//! A layer of one chunk (under 256 KiB, most RUN steps) is compressed on the calling thread
//! and no worker is started.

mod chunker;
mod deflate;
pub(crate) mod memo;

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use chunker::MIN_CHUNK;
use deflate::{ChunkEncoder, FINAL_BLOCK};
pub(crate) use memo::{ChunkMemo, ChunkRecord};

/// A chunk handed to a worker.
struct Job {
    index: usize,
    data: Vec<u8>,
}

/// A chunk compressed (or found in the memo), with what the trailer and the memo need.
struct Encoded {
    index: usize,
    /// The chunk's input buffer, emptied, for reuse.
    spare: Vec<u8>,
    bytes: Vec<u8>,
    crc: crc32fast::Hasher,
    raw_len: u64,
    /// BLAKE3 of the chunk ([`memo::chunk_key`]); absent for a layer's only chunk, which the
    /// memo does not keep.
    key: Option<[u8; 32]>,
    /// Whether the bytes came from the memo.
    #[cfg_attr(not(test), allow(dead_code))]
    reused: bool,
}

/// The worker threads and their channels, started at the first cut.
struct Workers {
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Result<Encoded, String>>,
    handles: Vec<JoinHandle<()>>,
}

impl Workers {
    fn start(threads: usize, level: u32, memo: Option<Arc<ChunkMemo>>) -> io::Result<Workers> {
        let (jobs, queue) = mpsc::sync_channel::<Job>(threads);
        let queue = Arc::new(Mutex::new(queue));
        let (report, done) = mpsc::channel();
        let mut handles = Vec::with_capacity(threads);
        for n in 0..threads {
            let queue = Arc::clone(&queue);
            let report: Sender<Result<Encoded, String>> = report.clone();
            let memo = memo.clone();
            let handle = std::thread::Builder::new()
                .name(format!("gzip-{n}"))
                .spawn(move || {
                    let mut encoder = ChunkEncoder::new(level);
                    loop {
                        // The lock is held only to take the next job.
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        // A panic must come back as an error: the writer waits for every chunk.
                        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                            encode(&mut encoder, job, true, memo.as_deref())
                        }))
                        .unwrap_or_else(|_| Err("a compression worker panicked".into()));
                        if report.send(result).is_err() {
                            return;
                        }
                    }
                })?;
            handles.push(handle);
        }
        Ok(Workers {
            jobs: Some(jobs),
            done,
            handles,
        })
    }

    /// Stops the workers once the jobs sent are done, and waits for them.
    fn stop(&mut self) {
        self.jobs = None;
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

/// Compresses one chunk, or copies it from the memo. `keyed`: the chunk is one of several, so
/// it is looked up and remembered.
fn encode(
    encoder: &mut ChunkEncoder,
    job: Job,
    keyed: bool,
    memo: Option<&ChunkMemo>,
) -> Result<Encoded, String> {
    let Job { index, mut data } = job;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&data);
    let raw_len = data.len() as u64;
    let key = keyed.then(|| memo::chunk_key(&data));
    let found = match (key, memo) {
        (Some(key), Some(memo)) => memo.lookup(&key, raw_len, crc.clone().finalize()),
        _ => None,
    };
    let reused = found.is_some();
    let bytes = match found {
        Some(bytes) => bytes,
        None => {
            let mut out = Vec::with_capacity(data.len() / 2 + 1024);
            encoder.encode(&data, &mut out)?;
            out
        }
    };
    data.clear();
    Ok(Encoded {
        index,
        spare: data,
        bytes,
        crc,
        raw_len,
        key,
        reused,
    })
}

/// Takes an uncompressed stream, writes it gzip-compressed to `W`. See the module comment.
pub(crate) struct GzipWriter<W: Write> {
    sink: W,
    level: u32,
    threads: usize,
    memo: Option<Arc<ChunkMemo>>,
    /// The chunk being filled.
    current: Vec<u8>,
    /// Emptied chunk buffers, to fill again.
    spares: Vec<Vec<u8>>,
    workers: Option<Workers>,
    /// Chunks handed out so far; the next one gets this index.
    sent: usize,
    /// Chunks finished out of order, waiting for their turn.
    waiting: BTreeMap<usize, Encoded>,
    /// Chunks written to the sink so far.
    written: usize,
    /// Bytes written to the sink so far.
    offset: u64,
    crc: crc32fast::Hasher,
    total: u64,
    records: Vec<ChunkRecord>,
    #[cfg(test)]
    reused: usize,
}

/// What a finished writer leaves beside its sink: the chunk records for the memo.
pub(crate) struct Finished {
    records: Vec<ChunkRecord>,
    memo: Option<Arc<ChunkMemo>>,
    /// How many chunks came from the memo (the tests' window on it).
    #[cfg(test)]
    reused: usize,
}

impl Finished {
    /// Records where this stream's chunks lie, once it is committed as the blob `blob`.
    pub(crate) fn remember(&self, blob: &crate::digest::Digest) {
        if let Some(memo) = &self.memo
            && !self.records.is_empty()
        {
            memo.save(blob, &self.records);
        }
    }
}

impl<W: Write> GzipWriter<W> {
    /// `threads`: compression workers (at least one is used); `memo`: where chunks are looked
    /// up, if anywhere.
    pub(crate) fn new(
        mut sink: W,
        level: u32,
        threads: usize,
        memo: Option<ChunkMemo>,
    ) -> io::Result<GzipWriter<W>> {
        let level = level.min(9);
        let header = gzip_header(level);
        sink.write_all(&header)?;
        Ok(GzipWriter {
            sink,
            level,
            threads: threads.max(1),
            memo: memo.map(Arc::new),
            current: Vec::new(),
            spares: Vec::new(),
            workers: None,
            sent: 0,
            waiting: BTreeMap::new(),
            written: 0,
            offset: header.len() as u64,
            crc: crc32fast::Hasher::new(),
            total: 0,
            records: Vec::new(),
            #[cfg(test)]
            reused: 0,
        })
    }

    /// Hands the current chunk to a worker, starting them at the first cut.
    fn dispatch(&mut self) -> io::Result<()> {
        if self.workers.is_none() {
            self.workers = Some(Workers::start(self.threads, self.level, self.memo.clone())?);
        }
        // Bound the chunks in flight: each holds up to MAX_CHUNK bytes.
        while self.sent - self.written >= 2 * self.threads {
            self.receive()?;
        }
        let next = self.spares.pop().unwrap_or_default();
        let data = std::mem::replace(&mut self.current, next);
        let job = Job {
            index: self.sent,
            data,
        };
        let jobs = self
            .workers
            .as_ref()
            .and_then(|w| w.jobs.as_ref())
            .ok_or_else(|| io::Error::other("the compression workers are gone"))?;
        jobs.send(job)
            .map_err(|_| io::Error::other("a compression worker stopped"))?;
        self.sent += 1;
        Ok(())
    }

    /// Waits for one chunk to come back and writes out all that are next in order.
    fn receive(&mut self) -> io::Result<()> {
        let done = self
            .workers
            .as_ref()
            .ok_or_else(|| io::Error::other("no compression workers"))?
            .done
            .recv()
            .map_err(|_| io::Error::other("a compression worker stopped"))?
            .map_err(io::Error::other)?;
        self.waiting.insert(done.index, done);
        while let Some(next) = self.waiting.remove(&self.written) {
            self.emit(next)?;
        }
        Ok(())
    }

    fn emit(&mut self, chunk: Encoded) -> io::Result<()> {
        self.sink.write_all(&chunk.bytes)?;
        if let Some(key) = chunk.key {
            self.records.push(ChunkRecord {
                key,
                raw_len: chunk.raw_len,
                crc: chunk.crc.clone().finalize(),
                offset: self.offset,
                len: chunk.bytes.len() as u64,
                packed_crc: crc32fast::hash(&chunk.bytes),
            });
        }
        #[cfg(test)]
        {
            self.reused += usize::from(chunk.reused);
        }
        self.offset += chunk.bytes.len() as u64;
        self.crc.combine(&chunk.crc);
        self.total += chunk.raw_len;
        self.written += 1;
        // Buffers a long chunk grew are let go: kept, they would hold memory for nothing.
        if self.spares.len() < self.threads && chunk.spare.capacity() <= 2 * MIN_CHUNK * 4 {
            self.spares.push(chunk.spare);
        }
        Ok(())
    }

    /// Compresses what is left and writes the end of the stream.
    pub(crate) fn finish(mut self) -> io::Result<(W, Finished)> {
        if self.sent == 0 {
            // One chunk in all: compressed here, not remembered.
            let data = std::mem::take(&mut self.current);
            let job = Job { index: 0, data };
            let mut encoder = ChunkEncoder::new(self.level);
            let chunk = encode(&mut encoder, job, false, None).map_err(io::Error::other)?;
            self.emit(chunk)?;
        } else {
            if !self.current.is_empty() {
                self.dispatch()?;
            }
            while self.written < self.sent {
                self.receive()?;
            }
        }
        // Every chunk is in: let the workers go.
        self.workers = None;
        self.sink.write_all(&FINAL_BLOCK)?;
        self.sink
            .write_all(&self.crc.clone().finalize().to_le_bytes())?;
        // ISIZE: the length modulo 2^32, as RFC 1952 has it.
        self.sink.write_all(&(self.total as u32).to_le_bytes())?;
        self.sink.flush()?;
        let records = if self.records.len() > 1 {
            std::mem::take(&mut self.records)
        } else {
            Vec::new()
        };
        let finished = Finished {
            #[cfg(test)]
            reused: self.reused,
            records,
            memo: self.memo.take(),
        };
        Ok((self.sink, finished))
    }
}

impl<W: Write> Write for GzipWriter<W> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let len = buf.len();
        while !buf.is_empty() {
            if self.current.capacity() == 0 {
                self.current.reserve(2 * MIN_CHUNK);
            }
            let n = chunker::room(self.current.len()).min(buf.len());
            self.current.extend_from_slice(&buf[..n]);
            buf = &buf[n..];
            if chunker::ends_here(&self.current) {
                self.dispatch()?;
            }
        }
        Ok(len)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Chunks are cut by content; a flush cannot end one early without changing the bytes.
        Ok(())
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The 10-byte gzip header: no name, no mtime (so the bytes do not depend on when), the
/// extra-flags byte saying fastest or best for levels 1 and 9, OS unknown.
fn gzip_header(level: u32) -> [u8; 10] {
    let xfl = match level {
        1 => 4,
        9 => 2,
        _ => 0,
    };
    [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 0xff]
}

/// Deterministic test bytes for the gzip and layer tests.
#[cfg(test)]
pub(crate) mod test_data {
    /// One xorshift64 step: the next state of a non-zero `state`.
    pub(crate) fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// `len` pseudo-random bytes from a non-zero `seed`.
    pub(crate) fn noise(len: usize, mut seed: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&next(&mut seed).to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use std::io::Read;

    /// Tar-like test data: text and noise in stretches of assorted lengths.
    fn sample(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed | 1;
        let mut next = move || test_data::next(&mut state);
        let mut out = Vec::with_capacity(len + 70_000);
        while out.len() < len {
            let stretch = (next() % 60_000) as usize + 100;
            if next() % 2 == 0 {
                while out.len() < len && stretch > 0 {
                    out.extend_from_slice(format!("word{} ", next() % 3000).as_bytes());
                    if out.len() % stretch < 8 {
                        break;
                    }
                }
            } else {
                for _ in 0..stretch / 8 {
                    out.extend_from_slice(&next().to_le_bytes());
                }
            }
        }
        out.truncate(len);
        out
    }

    fn compress(
        data: &[u8],
        level: u32,
        threads: usize,
        memo: Option<ChunkMemo>,
    ) -> (Vec<u8>, Finished) {
        let mut writer =
            GzipWriter::new(Vec::new(), level, threads, memo).unwrap_or_else(|e| panic!("{e}"));
        // Fed in uneven pieces, as a tar writer would.
        for piece in data.chunks(100_003) {
            writer.write_all(piece).unwrap_or_else(|e| panic!("{e}"));
        }
        writer.finish().unwrap_or_else(|e| panic!("{e}"))
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        // The single-member decoder: the output must be one gzip member, as docker and
        // containerd expect.
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut out)
            .unwrap_or_else(|e| panic!("{e}"));
        out
    }

    #[test]
    fn streams_of_every_size_are_one_gzip_member_whatever_the_threads() {
        for len in [0, 1, 1000, MIN_CHUNK, MIN_CHUNK + 1, 9 << 20] {
            let data = sample(len, len as u64 + 7);
            let (one, _) = compress(&data, 6, 1, None);
            assert!(gunzip(&one) == data, "{len} bytes");
            for threads in [2, 4] {
                let (gz, _) = compress(&data, 6, threads, None);
                assert!(gz == one, "{len} bytes, {threads} threads");
            }
        }
        let data = sample(3 << 20, 5);
        for level in [0, 1, 9] {
            let (gz, _) = compress(&data, level, 2, None);
            assert!(gunzip(&gz) == data, "level {level}");
        }
    }

    #[test]
    fn a_layer_like_an_earlier_one_reuses_its_chunks_and_gets_the_same_bytes() {
        let store = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let blobs = store.path().join("blobs");
        std::fs::create_dir(&blobs).unwrap_or_else(|e| panic!("{e}"));
        let memo = || Some(ChunkMemo::new(store.path(), &blobs, store.path(), 6));

        let first = sample(16 << 20, 11);
        let (gz, finished) = compress(&first, 6, 2, memo());
        assert_eq!(finished.reused, 0);
        let blob = Digest::of(&gz);
        std::fs::write(blobs.join(blob.hex()), &gz).unwrap_or_else(|e| panic!("{e}"));
        finished.remember(&blob);

        // The same stream with a block added near its start, as a tar stream grows when a file
        // does.
        let mut second = first[..10 * 512].to_vec();
        second.extend_from_slice(&[b'+'; 512]);
        second.extend_from_slice(&first[10 * 512..]);
        let (fresh, _) = compress(&second, 6, 2, None);
        let (reusing, finished) = compress(&second, 6, 2, memo());
        assert!(
            reusing == fresh,
            "copied chunks give the bytes compressing gives"
        );
        assert!(gunzip(&reusing) == second);
        let chunks = finished.records.len();
        assert!(chunks >= 8, "{chunks} chunks");
        assert!(
            finished.reused >= chunks - 2,
            "{} of {chunks} reused",
            finished.reused
        );

        // Without the blob the records point nowhere: everything is compressed again.
        std::fs::remove_file(blobs.join(blob.hex())).unwrap_or_else(|e| panic!("{e}"));
        let (again, finished) = compress(&second, 6, 2, memo());
        assert_eq!(finished.reused, 0);
        assert!(again == fresh);
    }
}
