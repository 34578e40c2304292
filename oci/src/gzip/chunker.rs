//! Content-defined cut points for the gzip writer: where a chunk ends depends on the bytes just
//! before the cut, not on its offset in the stream.
//!
//! So an edit early in a layer (one file grown by a few bytes) shifts every later byte, yet the
//! chunks after the edited one are cut at the same content as before and compress to the same
//! bytes, which the chunk memo then reuses. A Gear rolling hash (`h = (h << 1) + GEAR[byte]`,
//! as in FastCDC) costs one shift, one add and one table load per byte; its top bits depend on
//! the last 64 bytes only, so the test for a cut looks at those.

/// No chunk is shorter, except a stream's last: below this, fewer and larger chunks compress
/// better and cost less bookkeeping. Bytes before it are not even hashed.
pub(crate) const MIN_CHUNK: usize = 256 * 1024;
/// No chunk is longer: bounds the memory held per chunk in flight.
pub(crate) const MAX_CHUNK: usize = 4 * 1024 * 1024;
/// A cut where the hash's top 20 bits are zero: on average every MiB after `MIN_CHUNK`.
const CUT_BITS: u32 = 20;

/// 256 fixed pseudo-random words (splitmix64 from a fixed seed): part of the chunk format, so
/// changing them changes where every layer is cut.
const GEAR: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut state: u64 = 0x6b69_6c6e_2067_6561; // "kiln gea"
    let mut i = 0;
    while i < 256 {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        table[i] = z ^ (z >> 31);
        i += 1;
    }
    table
};

/// Finds cut points in a stream fed to it piece by piece.
#[derive(Debug, Default)]
pub(crate) struct Chunker {
    /// Bytes of the current chunk seen so far.
    len: usize,
    /// The rolling hash over the current chunk's bytes past the minimum.
    hash: u64,
}

impl Chunker {
    /// How many bytes of `input` belong to the current chunk, which ends there when the
    /// second value is true; otherwise all of `input` belongs to it and the chunk goes on.
    pub(crate) fn next_cut(&mut self, input: &[u8]) -> (usize, bool) {
        let mut at = 0;
        // The minimum is taken whole, unhashed: no cut can fall inside it.
        if self.len < MIN_CHUNK {
            at = (MIN_CHUNK - self.len).min(input.len());
            self.len += at;
        }
        let start = at;
        let end = input.len().min(at + (MAX_CHUNK - self.len));
        let mut hash = self.hash;
        while at < end {
            hash = (hash << 1).wrapping_add(GEAR[usize::from(input[at])]);
            at += 1;
            if hash >> (64 - CUT_BITS) == 0 {
                *self = Chunker::default();
                return (at, true);
            }
        }
        self.len += end - start;
        self.hash = hash;
        if self.len == MAX_CHUNK {
            *self = Chunker::default();
            return (end, true);
        }
        (end, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gzip::test_data::noise;

    /// The chunk lengths of `data` fed in pieces of `piece` bytes.
    fn chunks(data: &[u8], piece: usize) -> Vec<usize> {
        let mut chunker = Chunker::default();
        let mut out = Vec::new();
        let mut current = 0;
        for mut input in data.chunks(piece) {
            while !input.is_empty() {
                let (n, cut) = chunker.next_cut(input);
                current += n;
                input = &input[n..];
                if cut {
                    out.push(current);
                    current = 0;
                }
            }
        }
        if current > 0 {
            out.push(current);
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
                .all(|&n| (MIN_CHUNK..=MAX_CHUNK).contains(&n))
        );
    }

    #[test]
    fn an_insertion_early_on_leaves_later_cuts_at_the_same_content() {
        let data = noise(12 << 20, 9);
        let mut edited = data[..1000].to_vec();
        edited.extend_from_slice(b"a few more bytes");
        edited.extend_from_slice(&data[1000..]);
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
        let after = ends(chunks(&edited, 1 << 20), 16);
        // Every cut after the first chunk is where it was, in terms of the original bytes.
        assert_eq!(before[1..], after[1..]);
    }

    #[test]
    fn uniform_input_is_cut_at_the_maximum() {
        let data = vec![0u8; 9 << 20];
        let lengths = chunks(&data, 1 << 20);
        assert!(lengths[..2].iter().all(|&n| n == MAX_CHUNK), "{lengths:?}");
        assert_eq!(lengths.iter().sum::<usize>(), data.len());
    }
}
