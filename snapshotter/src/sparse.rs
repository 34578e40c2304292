//! Writing file data with holes: plain entries whose blocks are all zero, and PAX sparse
//! entries (GNU sparse format 1.0, what GNU tar writes with `--sparse --format=pax`; the tar
//! crate reads only the older GNU header form itself).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

/// Where a copy failed: reading the archive or writing the file.
pub(crate) enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// The PAX records describing a format-1.0 sparse file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PaxSparse {
    /// The file's real name (the header's own is a `GNUSparseFile.<pid>/…` placeholder).
    pub name: Option<Vec<u8>>,
    pub real_size: Option<u64>,
    pub major: Option<Vec<u8>>,
    pub minor: Option<Vec<u8>>,
    /// Records of the 0.x formats, which kiln does not read.
    pub old_format: bool,
}

impl PaxSparse {
    /// Takes one PAX record; false if it is not a sparse record.
    pub(crate) fn take(&mut self, key: &[u8], value: &[u8]) -> bool {
        match key {
            b"GNU.sparse.name" => self.name = Some(value.to_vec()),
            b"GNU.sparse.realsize" | b"GNU.sparse.size" => {
                self.real_size = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok())
            }
            b"GNU.sparse.major" => self.major = Some(value.to_vec()),
            b"GNU.sparse.minor" => self.minor = Some(value.to_vec()),
            b"GNU.sparse.map"
            | b"GNU.sparse.offset"
            | b"GNU.sparse.numbytes"
            | b"GNU.sparse.numblocks" => self.old_format = true,
            _ => return false,
        }
        true
    }

    pub(crate) fn is_sparse(&self) -> bool {
        self.major.is_some() || self.old_format
    }

    /// The real size of a format-1.0 entry, or why it cannot be read.
    pub(crate) fn v1_size(&self) -> Result<u64, String> {
        if self.old_format
            || self.major.as_deref() != Some(b"1")
            || self.minor.as_deref() != Some(b"0")
        {
            return Err(
                "sparse file in a GNU sparse format other than 1.0; repack it with \
                        `tar --format=gnu` or without --sparse"
                    .into(),
            );
        }
        self.real_size
            .ok_or_else(|| "sparse file without GNU.sparse.realsize".into())
    }
}

/// Copies entry data, leaving holes where whole blocks are zero. A sparse entry (or a hostile
/// one declaring terabytes of zeros) then costs no disk space for its holes.
pub(crate) fn copy_with_holes(from: &mut impl Read, to: &mut File) -> Result<u64, CopyError> {
    const CHUNK: usize = 64 * 1024;
    // Compared as slices, which is one memcmp: a sparse entry can claim gigabytes of zeros, and
    // a byte-by-byte scan of them costs minutes in an unoptimised build.
    static ZEROS: [u8; CHUNK] = [0; CHUNK];
    let mut buf = vec![0u8; CHUNK];
    let mut total: u64 = 0;
    let mut pending_hole = false;
    loop {
        let n = read_full(from, &mut buf).map_err(CopyError::Read)?;
        if n == 0 {
            break;
        }
        if buf[..n] == ZEROS[..n] {
            to.seek(SeekFrom::Current(n as i64))
                .map_err(CopyError::Write)?;
            pending_hole = true;
        } else {
            to.write_all(&buf[..n]).map_err(CopyError::Write)?;
            pending_hole = false;
        }
        total += n as u64;
        if n < CHUNK {
            break;
        }
    }
    if pending_hole {
        // A trailing hole needs the length set explicitly; seeking alone does not extend.
        to.set_len(total).map_err(CopyError::Write)?;
    }
    Ok(total)
}

/// Writes a format-1.0 sparse entry: its data starts with a map (decimal lines: the number of
/// regions, then offset and length of each), padded to a 512-byte block, followed by the
/// regions' bytes. Returns the real size written.
pub(crate) fn copy_sparse_v1(
    from: &mut impl Read,
    to: &mut File,
    real_size: u64,
) -> Result<u64, CopyError> {
    let bad = |m: &str| {
        CopyError::Read(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("sparse map: {m}"),
        ))
    };
    let mut consumed: u64 = 0;
    let count = read_number(from, &mut consumed).map_err(CopyError::Read)?;
    let mut regions = Vec::new();
    let mut end: u64 = 0;
    for _ in 0..count {
        let offset = read_number(from, &mut consumed).map_err(CopyError::Read)?;
        let len = read_number(from, &mut consumed).map_err(CopyError::Read)?;
        let region_end = offset
            .checked_add(len)
            .ok_or_else(|| bad("region overflows"))?;
        if offset < end || region_end > real_size {
            return Err(bad(
                "regions overlap, are out of order or exceed the file size",
            ));
        }
        end = region_end;
        regions.push((offset, len));
    }
    let pad = (512 - consumed % 512) % 512;
    let skipped = io::copy(&mut from.take(pad), &mut io::sink()).map_err(CopyError::Read)?;
    if skipped != pad {
        return Err(CopyError::Read(io::ErrorKind::UnexpectedEof.into()));
    }
    for (offset, len) in regions {
        to.seek(SeekFrom::Start(offset)).map_err(CopyError::Write)?;
        let n = copy_with_holes(&mut from.take(len), to)?;
        if n != len {
            return Err(CopyError::Read(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("archive ends inside a sparse region ({n} of {len} bytes)"),
            )));
        }
    }
    to.set_len(real_size).map_err(CopyError::Write)?;
    Ok(real_size)
}

/// One newline-terminated decimal number of a sparse map (at most 20 digits: a u64).
fn read_number(from: &mut impl Read, consumed: &mut u64) -> io::Result<u64> {
    let mut digits = Vec::new();
    let mut b = [0u8; 1];
    loop {
        if from.read(&mut b)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        *consumed += 1;
        match b[0] {
            b'\n' => break,
            d @ b'0'..=b'9' if digits.len() < 20 => digits.push(d),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "sparse map: malformed number",
                ));
            }
        }
    }
    std::str::from_utf8(&digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "sparse map: malformed number"))
}

/// Reads until `buf` is full or the input ends; returns how much was read.
pub(crate) fn read_full(from: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match from.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_map_with_holes() {
        let tmp = tempfile::tempfile().unwrap();
        let mut f = tmp;
        let mut data = b"2\n0\n3\n10\n2\n".to_vec();
        data.resize(512, 0);
        data.extend_from_slice(b"abcXY");
        let n = copy_sparse_v1(&mut &data[..], &mut f, 16).ok().unwrap();
        assert_eq!(n, 16);
        let mut out = Vec::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abc\0\0\0\0\0\0\0XY\0\0\0\0");
    }

    #[test]
    fn v1_map_lies_are_errors() {
        for map in [
            &b"1\n0\n99\n"[..],
            b"2\n5\n1\n0\n1\n",
            b"1\nx\n",
            b"99999999999999999999999\n",
        ] {
            let mut data = map.to_vec();
            data.resize(512, 0);
            let mut f = tempfile::tempfile().unwrap();
            assert!(
                copy_sparse_v1(&mut &data[..], &mut f, 16).is_err(),
                "{map:?}"
            );
        }
    }
}
