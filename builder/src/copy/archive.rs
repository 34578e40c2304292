//! ADD's local archives: recognised by their content (as BuildKit does: a known compression
//! magic or none, followed by a valid tar header), never by their name, and extracted with the
//! snapshotter's root-confined layer extraction.

use crate::error::{Error, Result};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

/// A compression format, told apart by its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

impl Compression {
    fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b, 0x08]) {
            Compression::Gzip
        } else if head.starts_with(b"BZh") {
            Compression::Bzip2
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Compression::Xz
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// The decompressed stream of `path`, whatever its compression.
pub(super) fn open_decompressed(path: &Path) -> Result<Box<dyn Read>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let kind = Compression::detect(reader.fill_buf().map_err(|e| Error::io(path, e))?);
    Ok(match kind {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(reader)),
        Compression::Xz => Box::new(lzma_rust2::XzReader::new(reader, true)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(reader).map_err(|e| Error::io(path, e))?,
        ),
    })
}

/// Whether `path` is a tar archive, possibly compressed: its first (decompressed) block must be
/// a tar header whose checksum is right. A file that does not decompress is not an archive.
pub(super) fn is_archive(path: &Path) -> Result<bool> {
    let mut reader = open_decompressed(path)?;
    let mut block = [0u8; 512];
    let mut filled = 0;
    while filled < block.len() {
        match reader.read(&mut block[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Bytes that look like a compression magic but do not decode: a plain file.
            Err(_) => return Ok(false),
        }
    }
    let header = tar::Header::from_byte_slice(&block);
    let Ok(sum) = header.cksum() else {
        return Ok(false);
    };
    let computed: u32 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                u32::from(b' ')
            } else {
                u32::from(*b)
            }
        })
        .sum();
    Ok(sum == computed && block.iter().any(|b| *b != 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("{e}"));
        f.write_all(bytes).unwrap_or_else(|e| panic!("{e}"));
        f
    }

    fn a_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "x", &b"hi"[..])
            .unwrap_or_else(|e| panic!("{e}"));
        b.into_inner().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn archives_are_recognised_by_content() {
        let gz = |data: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap_or_else(|e| panic!("{e}"));
            e.finish().unwrap_or_else(|e| panic!("{e}"))
        };
        let check =
            |bytes: &[u8]| is_archive(file_with(bytes).path()).unwrap_or_else(|e| panic!("{e}"));
        assert!(check(&a_tar()));
        assert!(check(&gz(&a_tar())));
        // Compressed text, a gzip magic on garbage, a short file, zeros: not archives.
        assert!(!check(&gz(b"just text")));
        assert!(!check(&[0x1f, 0x8b, 0x08, 0, 1, 2, 3]));
        assert!(!check(b"tiny"));
        assert!(!check(&[0u8; 1024]));
        // A tar header with a wrong checksum is not one.
        let mut broken = a_tar();
        broken[0] ^= 0x20;
        assert!(!check(&broken));
    }

    #[test]
    fn compression_magics() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 0x08]), Compression::Gzip);
        assert_eq!(Compression::detect(b"BZh91AY"), Compression::Bzip2);
        assert_eq!(
            Compression::detect(&[0xfd, b'7', b'z', b'X', b'Z', 0]),
            Compression::Xz
        );
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::detect(b"ustar"), Compression::None);
    }
}
