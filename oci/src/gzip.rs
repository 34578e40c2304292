//! gzip for layers: gzp's block-parallel gzip, except that stretches of a block whose bytes
//! look incompressible are written as deflate stored blocks instead of being run through the
//! compressor.
//!
//! Compressing random-looking data (already compressed archives, media, encrypted files) costs
//! as much CPU as compressing text and saves nothing. Each 128 KiB block is cut into 4 KiB
//! segments judged by their byte histogram alone (integer arithmetic, no floating point);
//! consecutive segments of one kind form a run, compressed on its own or stored. So the output
//! stays a function of the tar and the level only, whatever the thread count or the machine,
//! and a block with nothing incompressible in it is compressed exactly as before. The
//! trade-offs: a compressed run does not reach back across a stored one for matches, and
//! evenly spread bytes that repeat themselves (the same random kilobytes twice within a block)
//! would have shrunk and are stored instead.

use bytes::Bytes;
use flate2::Compression;
use gzp::check::Crc32;
use gzp::deflate::Gzip;
use gzp::{FormatSpec, GzpError};

/// The largest payload of one deflate stored block.
const STORED_MAX: usize = 65_535;
/// The unit a block is judged in.
const SEGMENT: usize = 4096;
/// Shorter segments (a block's tail) are always compressed: their histogram says little.
const SEGMENT_MIN: usize = 1024;

/// gzip whose incompressible blocks are stored. Same header, footer and check as gzp's `Gzip`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LayerGzip(Gzip);

impl FormatSpec for LayerGzip {
    type C = Crc32;
    type Compressor = <Gzip as FormatSpec>::Compressor;

    fn new() -> Self {
        LayerGzip(Gzip::new())
    }

    fn needs_dict(&self) -> bool {
        self.0.needs_dict()
    }

    fn create_compressor(&self, level: Compression) -> Result<Self::Compressor, GzpError> {
        self.0.create_compressor(level)
    }

    fn encode(
        &self,
        input: &[u8],
        encoder: &mut Self::Compressor,
        level: Compression,
        dict: Option<&Bytes>,
        is_last: bool,
    ) -> Result<Vec<u8>, GzpError> {
        let runs = if level.level() > 0 {
            runs(input)
        } else {
            Vec::new()
        };
        if runs.len() <= 1 && !runs.first().is_some_and(|r| r.stored) {
            return self.0.encode(input, encoder, level, dict, is_last);
        }
        let mut out = Vec::with_capacity(input.len() + 1024);
        let count = runs.len();
        for (i, run) in runs.into_iter().enumerate() {
            let bytes = &input[run.start..run.end];
            let last = is_last && i + 1 == count;
            if run.stored {
                out.extend_from_slice(&stored(bytes, last));
            } else {
                // `encode` resets the compressor after each run.
                let dict = if i == 0 { dict } else { None };
                out.extend_from_slice(&self.0.encode(bytes, encoder, level, dict, last)?);
            }
        }
        Ok(out)
    }

    fn header(&self, level: Compression) -> Vec<u8> {
        self.0.header(level)
    }

    fn footer(&self, check: &Self::C) -> Vec<u8> {
        self.0.footer(check)
    }
}

/// A stretch of a block, stored or compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    start: usize,
    end: usize,
    stored: bool,
}

/// `input` cut into runs of segments of one kind, in order.
fn runs(input: &[u8]) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::new();
    for (i, segment) in input.chunks(SEGMENT).enumerate() {
        let start = i * SEGMENT;
        let stored = looks_incompressible(segment);
        match out.last_mut() {
            Some(run) if run.stored == stored => run.end = start + segment.len(),
            _ => out.push(Run {
                start,
                end: start + segment.len(),
                stored,
            }),
        }
    }
    out
}

/// Whether the bytes are spread so evenly that deflate would hardly shrink them: their
/// collision entropy (−log2 Σ p²) is at least 7.9 bits per byte. With the sampling bias of a
/// short segment taken out (for n uniform bytes, 256 · E[Σ count²] = n² + 255 n), that is
/// 256 · Σ count² − 255 n ≤ 2^0.1 · n² (2^0.1 ≈ 1.0718, taken as 1072/1000).
fn looks_incompressible(input: &[u8]) -> bool {
    if input.len() < SEGMENT_MIN {
        return false;
    }
    let mut counts = [0u32; 256];
    for &b in input {
        counts[usize::from(b)] += 1;
    }
    let squares: u128 = counts.iter().map(|&c| u128::from(c) * u128::from(c)).sum();
    let n = input.len() as u128;
    (squares * 256).saturating_sub(255 * n) * 1000 <= n * n * 1072
}

/// `input` as deflate stored blocks, the last one final when `is_last`. Byte-aligned like the
/// sync-flushed output of the compressor, so it follows and precedes compressed blocks as is.
fn stored(input: &[u8], is_last: bool) -> Vec<u8> {
    let blocks = input.len().div_ceil(STORED_MAX).max(1);
    let mut out = Vec::with_capacity(input.len() + 5 * blocks);
    // An empty input still needs its (empty) final block.
    let empty: &[u8] = &[];
    let mut chunks: Vec<&[u8]> = input.chunks(STORED_MAX).collect();
    if chunks.is_empty() {
        chunks.push(empty);
    }
    let count = chunks.len();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let last = is_last && i + 1 == count;
        out.push(u8::from(last));
        // Fits: chunks are at most STORED_MAX long.
        let len = chunk.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn noise(len: usize, mut state: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            out.extend_from_slice(&state.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    #[test]
    fn noise_is_incompressible_and_text_is_not() {
        assert!(looks_incompressible(&noise(128 * 1024, 7)));
        assert!(looks_incompressible(&noise(SEGMENT, 7)));
        let text: Vec<u8> = (0..20_000)
            .flat_map(|i| format!("line {i} of a text file\n").into_bytes())
            .collect();
        assert!(!looks_incompressible(&text));
        assert!(!looks_incompressible(&[0u8; 100_000]));
        assert!(!looks_incompressible(&noise(1000, 7)));
    }

    #[test]
    fn runs_split_text_from_noise_at_segment_bounds() {
        let text: Vec<u8> = (0..2_000)
            .flat_map(|i| format!("line {i} of a text file\n").into_bytes())
            .collect();
        let mut block = text[..3 * SEGMENT].to_vec();
        block.extend_from_slice(&noise(2 * SEGMENT, 5));
        block.extend_from_slice(&text[..SEGMENT + 100]);
        let kinds: Vec<(usize, usize, bool)> = runs(&block)
            .iter()
            .map(|r| (r.start, r.end, r.stored))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (0, 3 * SEGMENT, false),
                (3 * SEGMENT, 5 * SEGMENT, true),
                (5 * SEGMENT, block.len(), false)
            ]
        );
        // The block as gzp would encode it, whole and final: deflate reads it back.
        let format = LayerGzip::new();
        let level = Compression::new(6);
        let mut compressor = format
            .create_compressor(level)
            .unwrap_or_else(|e| panic!("{e}"));
        let encoded = format
            .encode(&block, &mut compressor, level, None, true)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(&encoded[..])
            .read_to_end(&mut out)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(out == block);
        assert!(encoded.len() < block.len());
    }

    #[test]
    fn stored_blocks_inflate_back() {
        for len in [0, 1, STORED_MAX, STORED_MAX + 1, 3 * STORED_MAX + 17] {
            let data = noise(len, 99);
            let mut out = Vec::new();
            flate2::read::DeflateDecoder::new(&stored(&data, true)[..])
                .read_to_end(&mut out)
                .unwrap_or_else(|e| panic!("{len}: {e}"));
            assert!(out == data, "{len} bytes");
        }
    }
}
