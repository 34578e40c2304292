//! Content-defined cut points for the gzip writer: where a chunk ends depends on the bytes just
//! before the cut, not on its offset in the stream.
//!
//! So an edit early in a layer (one file grown by a few blocks) shifts every later byte, yet the
//! chunks after the edited one are cut at the same content as before and compress to the same
//! bytes, which the chunk memo then reuses. A layer is a tar stream, made of 512-byte blocks,
//! and whatever a file gains or loses moves what follows by whole blocks; so a chunk may end
//! only at a block boundary, where the hash of the block before it says so. Testing once per
//! block costs a few instructions per 8 bytes, and chunks made of whole blocks keep the
//! encoder's 512-byte segments ([`super::deflate`]) on tar's own: a file's data starts at a
//! segment.

/// The unit chunks are cut in: a tar block.
pub(crate) const BLOCK: usize = 512;
/// No chunk is shorter, except a stream's last: below this, fewer and larger chunks compress
/// better and cost less bookkeeping. Blocks before it are not even hashed.
pub(crate) const MIN_CHUNK: usize = 256 * 1024;
/// No chunk is longer: bounds the memory held per chunk in flight.
pub(crate) const MAX_CHUNK: usize = 4 * 1024 * 1024;
/// A cut after a block whose hash has its top 11 bits zero: on average every 2^11 blocks (1 MiB)
/// after `MIN_CHUNK`.
const CUT_BITS: u32 = 11;

// Whole blocks fit in both bounds: every cut is at a block boundary.
const _: () = assert!(MIN_CHUNK.is_multiple_of(BLOCK) && MAX_CHUNK.is_multiple_of(BLOCK));

/// How many more bytes a chunk of `len` bytes takes before its end is tested again: up to the
/// minimum, then up to the next block boundary.
pub(crate) fn room(len: usize) -> usize {
    if len < MIN_CHUNK {
        MIN_CHUNK - len
    } else {
        BLOCK - len % BLOCK
    }
}

/// Whether `chunk` ends where it stands: at a block boundary, at least `MIN_CHUNK` long, and
/// either `MAX_CHUNK` long or after a block whose hash says cut.
pub(crate) fn ends_here(chunk: &[u8]) -> bool {
    let len = chunk.len();
    len >= MIN_CHUNK
        && len.is_multiple_of(BLOCK)
        && (len >= MAX_CHUNK || block_hash(&chunk[len - BLOCK..]) >> (64 - CUT_BITS) == 0)
}

/// A hash of one block, read as 64 little-endian words: part of the chunk format, so changing
/// it changes where every layer is cut. Every byte counts, so the blocks of a tar stream that
/// end alike (zero padding, the empty tail of every header) still hash apart by their start.
fn block_hash(block: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h: u64 = 0x6b69_6c6e_2063_7574; // "kiln cut"
    for word in block.chunks_exact(8) {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        h = (h.rotate_left(23) ^ u64::from_le_bytes(bytes)).wrapping_mul(K);
    }
    // splitmix64's finaliser: the top bits depend on every word.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gzip::test_data::noise;

    /// The chunk lengths of `data` fed in pieces of `piece` bytes, the way the writer feeds it.
    fn chunks(data: &[u8], piece: usize) -> Vec<usize> {
        let mut current = Vec::new();
        let mut out = Vec::new();
        for mut input in data.chunks(piece) {
            while !input.is_empty() {
                let n = room(current.len()).min(input.len());
                current.extend_from_slice(&input[..n]);
                input = &input[n..];
                if ends_here(&current) {
                    out.push(current.len());
                    current.clear();
                }
            }
        }
        if !current.is_empty() {
            out.push(current.len());
        }
        out
    }

    #[test]
    fn cuts_do_not_depend_on_how_the_stream_is_fed() {
        let data = noise(12 << 20, 3);
        let whole = chunks(&data, data.len());
        assert!(whole.len() > 3, "{whole:?}");
        assert_eq!(whole.iter().sum::<usize>(), data.len());
        for piece in [1 << 20, 65_536, 4097, 100] {
            assert_eq!(chunks(&data, piece), whole, "fed in {piece}-byte pieces");
        }
        let all_but_last = &whole[..whole.len() - 1];
        assert!(
            all_but_last
                .iter()
                .all(|&n| (MIN_CHUNK..=MAX_CHUNK).contains(&n) && n.is_multiple_of(BLOCK))
        );
    }

    #[test]
    fn blocks_inserted_early_on_leave_later_cuts_at_the_same_content() {
        let data = noise(12 << 20, 9);
        // What a tar stream gains when a file grows: whole blocks.
        let inserted = noise(3 * BLOCK, 1);
        let mut edited = data[..4 * BLOCK].to_vec();
        edited.extend_from_slice(&inserted);
        edited.extend_from_slice(&data[4 * BLOCK..]);
        let ends = |lengths: Vec<usize>, shift: usize| -> Vec<usize> {
            let mut at = 0;
            lengths
                .iter()
                .map(|n| {
                    at += n;
                    at - shift
                })
                .collect()
        };
        let before = ends(chunks(&data, 1 << 20), 0);
        let after = ends(chunks(&edited, 1 << 20), inserted.len());
        // Every cut after the first chunk is where it was, in terms of the original bytes.
        assert_eq!(before[1..], after[1..]);
    }

    #[test]
    fn uniform_input_is_cut_at_the_maximum() {
        // A block of zeros (tar padding, an empty file's end) is never a cut: were it one, every
        // run of padding would end a chunk at the minimum.
        assert_ne!(block_hash(&[0; BLOCK]) >> (64 - CUT_BITS), 0);
        let data = vec![0u8; 9 << 20];
        let lengths = chunks(&data, 1 << 20);
        assert!(lengths[..2].iter().all(|&n| n == MAX_CHUNK), "{lengths:?}");
        assert_eq!(lengths.iter().sum::<usize>(), data.len());
    }

    #[test]
    fn blocks_that_end_alike_hash_apart() {
        // Tar headers: a name at the start, zeros at the end.
        let header = |name: &str| {
            let mut block = [0u8; BLOCK];
            block[..name.len()].copy_from_slice(name.as_bytes());
            block
        };
        assert_ne!(block_hash(&header("a.txt")), block_hash(&header("b.txt")));
        // Each of the 64 words counts.
        let base = noise(BLOCK, 4);
        for word in 0..BLOCK / 8 {
            let mut changed = base.clone();
            changed[word * 8] ^= 1;
            assert_ne!(block_hash(&changed), block_hash(&base), "word {word}");
        }
    }
}
