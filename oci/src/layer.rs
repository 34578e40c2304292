//! The layer writer: an uncompressed tar stream in, a committed, compressed blob out, with the
//! diff-id (sha256 of the tar) and the blob digest computed in the same pass. And the reverse: a
//! reader that decompresses a layer whatever its compression.
//!
//! Determinism: the compressed bytes depend only on the tar and the compression settings, never
//! on the thread count. gzip is chunk-parallel (content-defined chunks, each compressed on its
//! own, stretches that look incompressible stored, chunks an earlier layer of the store holds
//! copied from it: see [`crate::gzip`]), and zstd always runs its multi-threaded mode with at
//! least one worker, whose output does not depend on the number of workers (zero workers selects
//! the single-threaded code path, which writes different frames).

use crate::digest::{Digest, Hasher, HashingWriter};
use crate::error::{Error, IoContext, Result};
use crate::gzip::{ChunkMemo, Finished, GzipWriter};
use crate::store::Store;
use oci_spec::image::MediaType;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

/// How a layer is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// gzip at a level 0–9 (6 is Docker's default).
    Gzip(u32),
    /// zstd at a level 1–22 (3 is the library default).
    Zstd(i32),
    None,
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Gzip(6)
    }
}

impl Compression {
    /// Parses `gzip`, `zstd`, `none`/`uncompressed`, optionally with a level: `gzip:9`, `zstd:19`.
    pub fn parse(text: &str) -> Result<Compression> {
        let (name, level) = match text.split_once(':') {
            Some((n, l)) => (n, Some(l)),
            None => (text, None),
        };
        let bad = || {
            Error::Unsupported(format!(
                "unknown compression {text:?}: expected gzip[:0-9], zstd[:1-22] or none"
            ))
        };
        let parse_level = |default: i64, range: std::ops::RangeInclusive<i64>| -> Result<i64> {
            match level {
                None => Ok(default),
                Some(l) => l
                    .parse::<i64>()
                    .ok()
                    .filter(|l| range.contains(l))
                    .ok_or_else(bad),
            }
        };
        match name {
            "gzip" => Ok(Compression::Gzip(parse_level(6, 0..=9)? as u32)),
            "zstd" => Ok(Compression::Zstd(parse_level(3, 1..=22)? as i32)),
            "none" | "uncompressed" if level.is_none() => Ok(Compression::None),
            _ => Err(bad()),
        }
    }

    pub fn media_type(self) -> MediaType {
        match self {
            Compression::Gzip(_) => MediaType::ImageLayerGzip,
            Compression::Zstd(_) => MediaType::ImageLayerZstd,
            Compression::None => MediaType::ImageLayer,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerOptions {
    pub compression: Compression,
    /// Compression threads; 0 means one per available core.
    pub threads: usize,
}

/// A layer committed to the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    /// Digest of the compressed blob (what manifests reference).
    pub digest: Digest,
    /// Digest of the uncompressed tar (what `rootfs.diff_ids` lists).
    pub diff_id: Digest,
    /// Size of the compressed blob.
    pub size: u64,
    pub media_type: MediaType,
}

impl Layer {
    pub fn descriptor(&self) -> Result<oci_spec::image::Descriptor> {
        Ok(oci_spec::image::Descriptor::new(
            self.media_type.clone(),
            self.size,
            self.digest.to_oci()?,
        ))
    }
}

/// The end of the compression pipeline: a temp file that hashes what it is given.
type Sink = HashingWriter<BufWriter<File>>;

enum Encoder {
    Gzip(GzipWriter<Sink>),
    Zstd(zstd::stream::write::Encoder<'static, Sink>),
    None(Sink),
}

impl Encoder {
    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Encoder::Gzip(w) => w,
            Encoder::Zstd(w) => w,
            Encoder::None(w) => w,
        }
    }

    /// The sink, all written, and for gzip where its chunks lie.
    fn finish(self) -> Result<(Sink, Option<Finished>)> {
        match self {
            Encoder::Gzip(w) => w
                .finish()
                .map(|(sink, chunks)| (sink, Some(chunks)))
                .map_err(|e| Error::Compression(e.to_string())),
            Encoder::Zstd(w) => w
                .finish()
                .map(|sink| (sink, None))
                .map_err(|e| Error::Compression(e.to_string())),
            Encoder::None(w) => Ok((w, None)),
        }
    }
}

/// How much of the tar is handed to the encoder thread at a time.
const FEED_BUFFER: usize = 1 << 20;

/// What the encoder thread is handed.
enum Feed {
    /// More of the tar.
    Data(Vec<u8>),
    /// A request for the digest of the tar so far.
    DiffId(SyncSender<Digest>),
}

/// What the encoder thread hands back: the blob's sink, where its gzip chunks lie, and the
/// digest of the tar it was fed.
struct Encoded {
    sink: Sink,
    chunks: Option<Finished>,
    diff: Hasher,
}

/// The encoder on a thread of its own, fed whole buffers, so that making the tar (walking a
/// tree, reading files) on the caller's thread overlaps with hashing and compressing it
/// (cutting chunks, copying or compressing them, hashing and writing the blob).
struct EncoderThread {
    feed: Option<SyncSender<Feed>>,
    /// Buffers the thread is done with, to fill again.
    spares: Receiver<Vec<u8>>,
    buffer: Vec<u8>,
    /// Set when the layer is abandoned: the thread then stops without finishing the stream.
    abandoned: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Encoded>>>,
}

impl EncoderThread {
    fn start(mut encoder: Encoder) -> Result<EncoderThread> {
        let (feed, input) = mpsc::sync_channel::<Feed>(4);
        let (give_back, spares) = mpsc::channel();
        let abandoned = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&abandoned);
        let thread = std::thread::Builder::new()
            .name("layer".into())
            .spawn(move || {
                let mut diff = Hasher::new();
                // Ends when the writer drops its end of the channel.
                for feed in input {
                    match feed {
                        Feed::Data(mut buffer) => {
                            diff.update(&buffer);
                            encoder
                                .writer()
                                .write_all(&buffer)
                                .map_err(|e| Error::io("layer output", e))?;
                            buffer.clear();
                            let _ = give_back.send(buffer);
                        }
                        Feed::DiffId(reply) => {
                            let _ = reply.send(diff.clone().finish().0);
                        }
                    }
                }
                if stop.load(Ordering::SeqCst) {
                    return Err(Error::Compression("the layer was abandoned".into()));
                }
                let (sink, chunks) = encoder.finish()?;
                Ok(Encoded { sink, chunks, diff })
            })
            .map_err(|e| Error::io("starting the layer encoder", e))?;
        Ok(EncoderThread {
            feed: Some(feed),
            spares,
            buffer: Vec::with_capacity(FEED_BUFFER),
            abandoned,
            thread: Some(thread),
        })
    }

    fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = data.len().min(FEED_BUFFER - self.buffer.len());
            self.buffer.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buffer.len() == FEED_BUFFER {
                self.send()?;
            }
        }
        Ok(())
    }

    fn send(&mut self) -> io::Result<()> {
        let next = self
            .spares
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(FEED_BUFFER));
        let full = std::mem::replace(&mut self.buffer, next);
        self.post(Feed::Data(full))
    }

    fn post(&mut self, feed: Feed) -> io::Result<()> {
        let sent = match &self.feed {
            Some(channel) => channel.send(feed).is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The thread stopped early: its error says why.
        Err(match self.join() {
            Err(e) => io::Error::other(e.to_string()),
            Ok(_) => io::Error::other("the layer encoder stopped"),
        })
    }

    /// The digest of everything written so far, once the thread has hashed it.
    fn diff_id(&mut self) -> io::Result<Digest> {
        if !self.buffer.is_empty() {
            self.send()?;
        }
        let (reply, answer) = mpsc::sync_channel(1);
        self.post(Feed::DiffId(reply))?;
        answer
            .recv()
            .map_err(|_| io::Error::other("the layer encoder stopped"))
    }

    fn join(&mut self) -> Result<Encoded> {
        self.feed = None;
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(Error::Compression("the layer encoder panicked".into()))),
            None => Err(Error::Compression(
                "the layer encoder already stopped".into(),
            )),
        }
    }

    /// Hands over what is buffered and waits for the stream to be finished.
    fn finish(mut self) -> Result<Encoded> {
        if !self.buffer.is_empty() {
            self.send().map_err(|e| Error::io("layer output", e))?;
        }
        self.join()
    }
}

impl Drop for EncoderThread {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.abandoned.store(true, Ordering::SeqCst);
            let _ = self.join();
        }
    }
}

/// Write an uncompressed tar into it; `finish` commits the compressed blob.
/// Dropping it unfinished discards the partial blob.
pub struct LayerWriter<'s> {
    store: &'s Store,
    path: PathBuf,
    encoder: Option<EncoderThread>,
    compression: Compression,
}

impl<'s> LayerWriter<'s> {
    pub fn new(store: &'s Store, options: LayerOptions) -> Result<LayerWriter<'s>> {
        let threads = if options.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            options.threads
        };
        let path = store.tmp_path("layer");
        let file = File::create_new(&path).at(&path)?;
        let sink = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
        let encoder = match options.compression {
            Compression::Gzip(level) => {
                let memo = ChunkMemo::new(store.root(), store.blobs_dir(), store.tmp_dir(), level);
                let writer = GzipWriter::new(sink, level, threads, Some(memo))
                    .map_err(|e| Error::io(&path, e))?;
                Encoder::Gzip(writer)
            }
            Compression::Zstd(level) => {
                let mut enc = zstd::stream::write::Encoder::new(sink, level)
                    .map_err(|e| Error::Compression(e.to_string()))?;
                enc.multithread(u32::try_from(threads).unwrap_or(u32::MAX).max(1))
                    .map_err(|e| Error::Compression(e.to_string()))?;
                Encoder::Zstd(enc)
            }
            Compression::None => Encoder::None(sink),
        };
        Ok(LayerWriter {
            store,
            path,
            encoder: Some(EncoderThread::start(encoder)?),
            compression: options.compression,
        })
    }

    /// The diff-id of the tar written so far (the digest of the uncompressed stream).
    pub fn diff_id(&mut self) -> Result<Digest> {
        self.encoder
            .as_mut()
            .ok_or_else(|| Error::Compression("layer writer already finished".into()))?
            .diff_id()
            .map_err(|e| Error::io("layer output", e))
    }

    /// Flushes the compressor, verifies nothing is lost, and commits the blob.
    pub fn finish(mut self) -> Result<Layer> {
        let Some(encoder) = self.encoder.take() else {
            return Err(Error::Compression("layer writer already finished".into()));
        };
        let result = self.seal(encoder);
        if result.is_err() {
            // The encoder is gone, so Drop will not clean up: do it here.
            let _ = fs::remove_file(&self.path);
        }
        result
    }

    fn seal(&self, encoder: EncoderThread) -> Result<Layer> {
        let Encoded { sink, chunks, diff } = encoder.finish()?;
        let (buffered, digest, size) = sink.finish();
        let file = buffered
            .into_inner()
            .map_err(|e| Error::io(&self.path, e.into_error()))?;
        file.sync_all().at(&self.path)?;
        drop(file);
        let (diff_id, _) = diff.finish();
        self.store.commit_file(&self.path, &digest)?;
        if let Some(chunks) = chunks {
            chunks.remember(&digest);
        }
        Ok(Layer {
            digest,
            diff_id,
            size,
            media_type: self.compression.media_type(),
        })
    }
}

impl Write for LayerWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let encoder = self
            .encoder
            .as_mut()
            .ok_or_else(|| io::Error::other("layer writer already finished"))?;
        encoder.write(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // The blob is only ever read once finished; nothing is gained by pushing bytes early.
        Ok(())
    }
}

impl Drop for LayerWriter<'_> {
    fn drop(&mut self) {
        if let Some(encoder) = self.encoder.take() {
            // Stops the encoder thread and its compression workers, which then write no more.
            drop(encoder);
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Writes a whole tar stream from `tar` as a layer.
pub fn write_layer(store: &Store, options: LayerOptions, tar: &mut dyn Read) -> Result<Layer> {
    let mut writer = LayerWriter::new(store, options)?;
    copy_stream(tar, &mut writer)?;
    writer.finish()
}

/// `io::copy` with the error attributed to the right side.
fn copy_stream(from: &mut dyn Read, to: &mut dyn Write) -> Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("layer input", e)),
        };
        to.write_all(&buf[..n])
            .map_err(|e| Error::io("layer output", e))?;
        total += n as u64;
    }
    Ok(total)
}

/// What a layer stream turned out to be compressed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    Gzip,
    Zstd,
    Plain,
}

/// Decompresses a layer, recognising gzip and zstd by their magic bytes; anything else is
/// passed through as a plain tar.
pub fn open_layer<R: Read + Send + 'static>(mut reader: R) -> Result<Box<dyn Read + Send>> {
    // Read the magic with a loop: a pipe may hand over fewer bytes than asked for.
    let mut head = [0u8; 4];
    let mut got = 0;
    while got < head.len() {
        match reader.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("layer", e)),
        }
    }
    let kind = detect(&head[..got]);
    let stream = BufReader::with_capacity(
        1 << 20,
        io::Cursor::new(head).take(got as u64).chain(reader),
    );
    Ok(match kind {
        Detected::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(stream)),
        Detected::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(stream)
                .map_err(|e| Error::Compression(e.to_string()))?,
        ),
        Detected::Plain => Box::new(stream),
    })
}

/// Like `open_layer` for a borrowed reader: decompresses gzip or zstd, passes anything else
/// through. Used for inputs a person hands us (an import tar, a `docker save | gzip` archive).
pub fn decompress<'a>(input: &'a mut dyn Read) -> Result<Box<dyn Read + 'a>> {
    let mut head = [0u8; 4];
    let got = crate::image::read_full(input, &mut head).map_err(|e| Error::io("input", e))?;
    let kind = detect(&head[..got]);
    let stream = io::Cursor::new(head).take(got as u64).chain(input);
    Ok(match kind {
        Detected::Gzip => Box::new(flate2::read::MultiGzDecoder::new(stream)),
        Detected::Zstd => Box::new(
            zstd::stream::read::Decoder::new(stream)
                .map_err(|e| Error::Compression(e.to_string()))?,
        ),
        Detected::Plain => Box::new(stream),
    })
}

/// Recognises a compression format from the first bytes of a stream.
pub fn detect(head: &[u8]) -> Detected {
    if head.starts_with(&[0x1f, 0x8b]) {
        Detected::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Detected::Zstd
    } else {
        Detected::Plain
    }
}

/// Opens a layer blob of the store, decompressed. The blob's digest is checked when the
/// compressed stream reaches its end, and the read that hits a mismatch fails with
/// `InvalidData`. A tar reader stops at the end-of-archive marker, before that point: after
/// extracting, drain the rest (`io::copy(&mut layer, &mut io::sink())`) to have it checked.
pub fn open_layer_blob(store: &Store, digest: &Digest) -> Result<Box<dyn Read + Send>> {
    open_layer(store.open_blob(digest, None)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A few MB of tar with text-like and random-ish content so that gzip cuts it into several chunks.
    fn sample_tar() -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut state = 0x1234_5678_u64;
        for i in 0..24 {
            let mut data = Vec::with_capacity(200_000);
            while data.len() < 200_000 {
                crate::gzip::test_data::next(&mut state);
                if i % 2 == 0 {
                    data.extend_from_slice(
                        format!("line {} of file {i}\n", state % 1000).as_bytes(),
                    );
                } else {
                    data.extend_from_slice(&state.to_le_bytes());
                }
            }
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_cksum();
            builder
                .append_data(&mut header, format!("dir/file{i}"), &data[..])
                .unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn write_with(store: &Store, tar: &[u8], compression: Compression, threads: usize) -> Layer {
        let options = LayerOptions {
            compression,
            threads,
        };
        write_layer(store, options, &mut &tar[..]).unwrap()
    }

    #[test]
    fn thread_count_does_not_change_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tar = sample_tar();
        for compression in [Compression::Gzip(6), Compression::Zstd(3)] {
            let layers: Vec<Layer> = [1, 2, 4]
                .iter()
                .map(|&t| write_with(&store, &tar, compression, t))
                .collect();
            assert_eq!(layers[0], layers[1], "{compression:?}: 1 vs 2 threads");
            assert_eq!(layers[0], layers[2], "{compression:?}: 1 vs 4 threads");
            assert_eq!(layers[0].diff_id, Digest::of(&tar));
            assert!(layers[0].size < tar.len() as u64);
        }
    }

    #[test]
    fn decompress_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tar = sample_tar();
        for (compression, media) in [
            (Compression::Gzip(1), MediaType::ImageLayerGzip),
            (Compression::Zstd(1), MediaType::ImageLayerZstd),
            (Compression::None, MediaType::ImageLayer),
        ] {
            let layer = write_with(&store, &tar, compression, 2);
            assert_eq!(layer.media_type, media);
            assert_eq!(layer.diff_id, Digest::of(&tar));
            assert_eq!(store.verify_blob(&layer.digest).ok(), Some(true));
            let mut out = Vec::new();
            open_layer_blob(&store, &layer.digest)
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert!(out == tar, "{compression:?} roundtrip");
        }
    }

    #[test]
    fn gzip_output_is_standard_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tar = sample_tar();
        let layer = write_with(&store, &tar, Compression::Gzip(6), 2);
        let blob = fs::read(store.blob_path(&layer.digest)).unwrap();
        // The single-member decoder (not Multi) must read it whole: one gzip member, as docker
        // and containerd expect.
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&blob[..])
            .read_to_end(&mut out)
            .unwrap();
        assert!(out == tar);
    }

    #[test]
    fn diff_id_is_of_everything_written_so_far() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tar = sample_tar();
        let mut writer = LayerWriter::new(&store, LayerOptions::default()).unwrap();
        // Less than one buffer, then several.
        writer.write_all(&tar[..1000]).unwrap();
        assert_eq!(writer.diff_id().unwrap(), Digest::of(&tar[..1000]));
        writer.write_all(&tar[1000..]).unwrap();
        assert_eq!(writer.diff_id().unwrap(), Digest::of(&tar));
        let layer = writer.finish().unwrap();
        assert_eq!(layer.diff_id, Digest::of(&tar));
        assert_eq!(store.verify_blob(&layer.digest).ok(), Some(true));
    }

    #[test]
    fn dropped_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut writer = LayerWriter::new(&store, LayerOptions::default()).unwrap();
        writer.write_all(&sample_tar()[..100_000]).unwrap();
        drop(writer);
        assert!(store.list_blobs().unwrap().is_empty());
        let leftovers: Vec<_> = fs::read_dir(store.tmp_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != "pins")
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn writers_cross_threads() {
        fn send<T: Send>() {}
        fn sync<T: Sync>() {}
        sync::<Store>();
        send::<LayerWriter<'static>>();
        send::<Box<dyn Read + Send>>();
    }

    #[test]
    fn compression_names() {
        assert_eq!(Compression::parse("gzip").unwrap(), Compression::Gzip(6));
        assert_eq!(
            Compression::parse("zstd:19").unwrap(),
            Compression::Zstd(19)
        );
        assert_eq!(Compression::parse("none").unwrap(), Compression::None);
        assert!(Compression::parse("gzip:10").is_err());
        assert!(Compression::parse("lz4").is_err());
    }

    #[test]
    fn detects_plain_tar_and_short_input() {
        let mut out = Vec::new();
        open_layer(&b"ab"[..])
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"ab");
        let mut out = Vec::new();
        open_layer(&b""[..]).unwrap().read_to_end(&mut out).unwrap();
        assert!(out.is_empty());
    }
}
