//! One chunk of a layer as raw deflate: stretches whose bytes look incompressible are written
//! as stored blocks instead of being run through the compressor.
//!
//! Compressing random-looking data (already compressed archives, media, encrypted files) costs
//! as much CPU as compressing text and saves nothing. A chunk is judged in 512-byte segments, the
//! blocks of the tar stream (chunks start at block boundaries, see [`super::chunker`]), so a
//! file's data and the header before it are judged apart: judged in larger segments, the small
//! files of a tree that mixes text and binaries would be compressed whole. Consecutive segments
//! of one kind form a run, compressed on its own or stored. A segment is judged by a sample of
//! its bytes, integers only, so the output stays a function of the chunk and the level, whatever
//! the thread count or the machine. The trade-offs: a compressed run does not reach back across
//! a stored one for matches, and evenly spread bytes that repeat themselves (the same random
//! kilobytes twice within a chunk) would have shrunk and are stored instead.
//!
//! Every chunk ends byte-aligned with no final block, like zlib's sync flush, so encoded chunks
//! placed one after another form one deflate stream; the writer closes it with an empty final
//! block.

use flate2::{Compress, Compression, FlushCompress, Status};

use super::chunker::BLOCK;

/// The largest payload of one deflate stored block.
const STORED_MAX: usize = 65_535;
/// The unit a chunk is judged in; a shorter tail is always compressed.
const SEGMENT: usize = BLOCK;
/// Every `SAMPLE_STEP`th byte of a segment is looked at: 128 of them.
const SAMPLE_STEP: usize = 4;
/// A segment whose sample holds at most this many pairs of equal bytes is stored. Uniform bytes
/// give 128·127/2/256 ≈ 32 pairs (standard deviation ≈ 5.6), so random data passes all but
/// never; text gives hundreds. 56 pairs of 8128 is a collision entropy of 7.2 bits per byte:
/// data spread more evenly than that would gain a few percent at most from deflate.
const STORED_MAX_PAIRS: u32 = 56;

/// An empty final block (fixed Huffman codes, end-of-block only): ends a deflate stream made of
/// sync-flushed pieces.
pub(crate) const FINAL_BLOCK: [u8; 2] = [0x03, 0x00];

/// Encodes chunks at one level, keeping its compressor between them.
pub(crate) struct ChunkEncoder {
    level: u32,
    compress: Compress,
}

impl ChunkEncoder {
    pub(crate) fn new(level: u32) -> ChunkEncoder {
        let level = level.min(9);
        ChunkEncoder {
            level,
            // Raw deflate: the gzip header and trailer are the writer's.
            compress: Compress::new(Compression::new(level), false),
        }
    }

    /// Appends `input` as non-final, byte-aligned deflate blocks to `out`.
    pub(crate) fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        if self.level == 0 {
            stored(input, out);
            return Ok(());
        }
        for run in runs(input) {
            let bytes = &input[run.start..run.end];
            if run.stored {
                stored(bytes, out);
            } else {
                self.compress_run(bytes, out)?;
            }
        }
        Ok(())
    }

    /// `input` compressed on its own (no window from earlier runs) and sync-flushed.
    fn compress_run(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        self.compress.reset();
        let start_in = self.compress.total_in();
        loop {
            // deflate's worst case is a few bytes per 16 KiB over the input; the flush adds a
            // few more. When that is not enough the loop comes round with more room.
            out.reserve(input.len() / 8 + 1024);
            let done = (self.compress.total_in() - start_in) as usize;
            let status = self
                .compress
                .compress_vec(&input[done..], out, FlushCompress::Sync)
                .map_err(|e| format!("deflate: {e}"))?;
            let consumed = (self.compress.total_in() - start_in) as usize;
            // Finished when all input is in and the flush left spare room in `out`.
            if consumed == input.len() && out.len() < out.capacity() {
                return Ok(());
            }
            if status == Status::BufError && consumed == done && out.len() < out.capacity() {
                return Err("deflate made no progress".into());
            }
        }
    }
}

/// A stretch of a chunk, stored or compressed.
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

/// Whether a segment's bytes are spread so evenly that deflate would hardly shrink them, judged
/// by the pairs of equal bytes in a sample (see [`STORED_MAX_PAIRS`]). Short segments are not.
fn looks_incompressible(segment: &[u8]) -> bool {
    if segment.len() < SEGMENT {
        return false;
    }
    let mut counts = [0u8; 256];
    let mut pairs = 0u32;
    for &b in segment[..SEGMENT].iter().step_by(SAMPLE_STEP) {
        let count = &mut counts[usize::from(b)];
        pairs += u32::from(*count);
        *count += 1;
    }
    pairs <= STORED_MAX_PAIRS
}

/// Appends `input` as non-final deflate stored blocks: byte-aligned like the sync-flushed
/// output of the compressor, so it follows and precedes compressed runs as is.
fn stored(input: &[u8], out: &mut Vec<u8>) {
    out.reserve(input.len() + 5 * input.len().div_ceil(STORED_MAX));
    for piece in input.chunks(STORED_MAX) {
        out.push(0);
        // Fits: pieces are at most STORED_MAX long.
        let len = piece.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(piece);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gzip::test_data::noise;
    use std::io::Read;

    #[test]
    fn noise_is_incompressible_and_text_is_not() {
        // Random segments are stored, bar a rare unlucky sample.
        let noise = noise(1000 * SEGMENT, 7);
        let stored = noise
            .chunks(SEGMENT)
            .filter(|s| looks_incompressible(s))
            .count();
        assert!(stored >= 995, "{stored} of 1000 random segments stored");
        let text: Vec<u8> = (0..20_000)
            .flat_map(|i| format!("line {i} of a text file\n").into_bytes())
            .collect();
        assert!(!text.chunks(SEGMENT).any(looks_incompressible));
        assert!(!looks_incompressible(&[0u8; SEGMENT]));
        // Base64 (64 symbols) still shrinks by a quarter: compressed.
        let base64: Vec<u8> = noise[..SEGMENT]
            .iter()
            .map(|b| {
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
                    [usize::from(b % 64)]
            })
            .collect();
        assert!(!looks_incompressible(&base64));
        // A short tail says too little: compressed.
        assert!(!looks_incompressible(&noise[..SEGMENT - 1]));
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
        // Encoded and closed with the final block, deflate reads it back.
        let encoded = encode(&block, 6);
        assert!(inflate(&encoded) == block);
        assert!(encoded.len() < block.len());
    }

    fn encode(input: &[u8], level: u32) -> Vec<u8> {
        let mut out = Vec::new();
        ChunkEncoder::new(level)
            .encode(input, &mut out)
            .unwrap_or_else(|e| panic!("{e}"));
        out
    }

    fn inflate(encoded: &[u8]) -> Vec<u8> {
        let mut stream = encoded.to_vec();
        stream.extend_from_slice(&FINAL_BLOCK);
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(&stream[..])
            .read_to_end(&mut out)
            .unwrap_or_else(|e| panic!("{e}"));
        out
    }

    #[test]
    fn chunks_of_every_kind_and_level_inflate_back() {
        let text: Vec<u8> = (0..40_000)
            .flat_map(|i| format!("line {i} of a text file\n").into_bytes())
            .collect();
        let mut mixed = text.clone();
        mixed.extend_from_slice(&noise(300_000, 5));
        mixed.extend_from_slice(&text[..70_000]);
        let inputs: [&[u8]; 6] = [
            &[],
            b"x",
            &text,
            &noise(3 * STORED_MAX + 17, 99),
            &mixed,
            &[0u8; 200_000],
        ];
        for level in [0, 1, 6, 9] {
            for input in inputs {
                let encoded = encode(input, level);
                assert!(
                    inflate(&encoded) == input,
                    "level {level}, {} bytes",
                    input.len()
                );
            }
        }
    }

    #[test]
    fn chunks_placed_one_after_another_form_one_stream() {
        let a: Vec<u8> = (0..5_000)
            .flat_map(|i| format!("a{i}\n").into_bytes())
            .collect();
        let b = noise(50_000, 1);
        let mut encoder = ChunkEncoder::new(6);
        let mut stream = Vec::new();
        for part in [&a[..], &b, &a] {
            encoder
                .encode(part, &mut stream)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(inflate(&stream) == [&a[..], &b, &a].concat());
        // The encoder's state does not leak from one chunk into the next.
        assert_eq!(encode(&a, 6), {
            let mut again = Vec::new();
            encoder
                .encode(&a, &mut again)
                .unwrap_or_else(|e| panic!("{e}"));
            again
        });
    }
}
