//! A small, deterministic tar writer: USTAR headers, with PAX records only for what USTAR cannot
//! hold (long names, large sizes and ids, times before 1970, extended attributes). Every field is
//! a function of the entry alone — no user or group names, no access or change times — so the
//! same tree always gives the same bytes.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;

const BLOCK: usize = 512;
/// Largest value of an 8-byte octal field (7 digits and a NUL).
const MAX_OCTAL_8: u64 = 0o7777777;
/// Largest value of a 12-byte octal field (11 digits and a NUL).
const MAX_OCTAL_12: u64 = 0o77777777777;

/// The type-specific part of an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Regular { size: u64 },
    Directory,
    Symlink(Vec<u8>),
    HardLink(Vec<u8>),
    Char { major: u32, minor: u32 },
    Block { major: u32, minor: u32 },
    Fifo,
}

/// One entry's header. `name` has no trailing slash; directories get one here.
pub(crate) struct EntryHeader<'a> {
    pub name: &'a [u8],
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub xattrs: &'a [(OsString, Vec<u8>)],
}

pub(crate) struct TarWriter<W: Write> {
    out: W,
    /// Where file data passes through, kept between files.
    buf: Vec<u8>,
}

/// The most file data read at a time: most files in one read (`io::copy` reads 8 KiB at a time,
/// five reads for a 40 KiB file), and the writer is handed large pieces.
const READ_MAX: usize = 256 * 1024;

impl<W: Write> TarWriter<W> {
    pub(crate) fn new(out: W) -> Self {
        TarWriter {
            out,
            buf: Vec::new(),
        }
    }

    /// Writes the header (and its PAX record, if any). For regular files the caller then writes
    /// exactly `size` bytes with [`TarWriter::write_data`].
    pub(crate) fn write_header(&mut self, h: &EntryHeader<'_>) -> io::Result<()> {
        let mut name = h.name.to_vec();
        if h.kind == Kind::Directory {
            name.push(b'/');
        }
        let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        if name.len() > 100 {
            pax.push((b"path".to_vec(), name.clone()));
        }
        let (typeflag, size, link, dev) = match &h.kind {
            Kind::Regular { size } => (b'0', *size, None, None),
            Kind::Directory => (b'5', 0, None, None),
            Kind::Symlink(t) => (b'2', 0, Some(t), None),
            Kind::HardLink(t) => (b'1', 0, Some(t), None),
            Kind::Char { major, minor } => (b'3', 0, None, Some((*major, *minor))),
            Kind::Block { major, minor } => (b'4', 0, None, Some((*major, *minor))),
            Kind::Fifo => (b'6', 0, None, None),
        };
        if let Some(link) = link.filter(|l| l.len() > 100) {
            pax.push((b"linkpath".to_vec(), link.clone()));
        }
        if size > MAX_OCTAL_12 {
            pax.push((b"size".to_vec(), size.to_string().into_bytes()));
        }
        if h.uid > MAX_OCTAL_8 {
            pax.push((b"uid".to_vec(), h.uid.to_string().into_bytes()));
        }
        if h.gid > MAX_OCTAL_8 {
            pax.push((b"gid".to_vec(), h.gid.to_string().into_bytes()));
        }
        let mtime_fits = h.mtime >= 0 && (h.mtime as u64) <= MAX_OCTAL_12;
        if !mtime_fits {
            pax.push((b"mtime".to_vec(), h.mtime.to_string().into_bytes()));
        }
        for (k, v) in h.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k.as_bytes());
            pax.push((key, v.clone()));
        }
        if !pax.is_empty() {
            pax.sort();
            self.write_pax(&name, &pax)?;
        }

        let mut b = [0u8; BLOCK];
        put_bytes(&mut b[0..100], &name);
        put_octal(&mut b[100..108], u64::from(h.mode & 0o7777));
        put_octal(
            &mut b[108..116],
            if h.uid > MAX_OCTAL_8 { 0 } else { h.uid },
        );
        put_octal(
            &mut b[116..124],
            if h.gid > MAX_OCTAL_8 { 0 } else { h.gid },
        );
        put_octal(&mut b[124..136], if size > MAX_OCTAL_12 { 0 } else { size });
        put_octal(
            &mut b[136..148],
            if mtime_fits { h.mtime as u64 } else { 0 },
        );
        b[156] = typeflag;
        if let Some(link) = link {
            put_bytes(&mut b[157..257], link);
        }
        b[257..263].copy_from_slice(b"ustar\0");
        b[263..265].copy_from_slice(b"00");
        if let Some((major, minor)) = dev {
            put_octal(&mut b[329..337], u64::from(major));
            put_octal(&mut b[337..345], u64::from(minor));
        }
        finish_checksum(&mut b);
        self.out.write_all(&b)
    }

    /// Writes exactly `size` bytes of entry data from `data`, then the padding. A source that
    /// ends early (a file shrinking while it is read) is an error rather than a corrupt tar.
    pub(crate) fn write_data(&mut self, mut data: impl Read, size: u64) -> io::Result<()> {
        // Never more than the file's size: a small file does not cost a large buffer.
        let want = usize::try_from(size).unwrap_or(usize::MAX).min(READ_MAX);
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        let mut copied = 0u64;
        while copied < size {
            let n = usize::try_from(size - copied)
                .unwrap_or(usize::MAX)
                .min(self.buf.len());
            let read = match data.read(&mut self.buf[..n]) {
                Ok(0) => break,
                Ok(read) => read,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.out.write_all(&self.buf[..read])?;
            copied += read as u64;
        }
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("file shrank while being read: {copied} of {size} bytes"),
            ));
        }
        self.pad(size)
    }

    /// Writes the end-of-archive marker and returns the writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; BLOCK * 2])?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn write_pax(&mut self, name: &[u8], records: &[(Vec<u8>, Vec<u8>)]) -> io::Result<()> {
        let mut body = Vec::new();
        for (k, v) in records {
            body.extend_from_slice(&pax_record(k, v));
        }
        // The extension header's own name is informational; Go's `PaxHeaders.0/<base>` form,
        // shortened to fit, keeps other tools' listings readable.
        let base = name
            .rsplit(|&c| c == b'/')
            .find(|s| !s.is_empty())
            .unwrap_or(b"");
        let mut pax_name = b"PaxHeaders.0/".to_vec();
        pax_name.extend_from_slice(&base[..base.len().min(100 - pax_name.len())]);
        let mut b = [0u8; BLOCK];
        put_bytes(&mut b[0..100], &pax_name);
        put_octal(&mut b[100..108], 0o644);
        put_octal(&mut b[108..116], 0);
        put_octal(&mut b[116..124], 0);
        put_octal(&mut b[124..136], body.len() as u64);
        put_octal(&mut b[136..148], 0);
        b[156] = b'x';
        b[257..263].copy_from_slice(b"ustar\0");
        b[263..265].copy_from_slice(b"00");
        finish_checksum(&mut b);
        self.out.write_all(&b)?;
        self.out.write_all(&body)?;
        self.pad(body.len() as u64)
    }

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let rem = (size % BLOCK as u64) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }
}

/// `"<len> <key>=<value>\n"`, where `<len>` counts the whole record including its own digits.
fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + digits(rest);
    if digits(len) != digits(rest) {
        len = rest + digits(len);
    }
    let mut r = format!("{len} ").into_bytes();
    r.extend_from_slice(key);
    r.push(b'=');
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

fn digits(n: usize) -> usize {
    n.to_string().len()
}

/// Copies as much of `v` as fits; a name field cut short is covered by a PAX record.
fn put_bytes(field: &mut [u8], v: &[u8]) {
    let n = v.len().min(field.len());
    field[..n].copy_from_slice(&v[..n]);
}

/// Zero-padded octal with a trailing NUL, the form GNU tar and Go write.
fn put_octal(field: &mut [u8], v: u64) {
    let s = format!("{:0width$o}", v, width = field.len() - 1);
    let bytes = s.as_bytes();
    let n = bytes.len().min(field.len() - 1);
    field[..n].copy_from_slice(&bytes[bytes.len() - n..]);
    field[field.len() - 1] = 0;
}

fn finish_checksum(b: &mut [u8; BLOCK]) {
    b[148..156].fill(b' ');
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    let s = format!("{sum:06o}\0 ");
    b[148..156].copy_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        for n in [0usize, 1, 5, 80, 90, 95, 96, 97, 990, 995, 996, 1000] {
            let r = pax_record(b"path", &vec![b'a'; n]);
            let (len, _) = r.split_at(r.iter().position(|&c| c == b' ').unwrap());
            let len: usize = std::str::from_utf8(len).unwrap().parse().unwrap();
            assert_eq!(len, r.len(), "value length {n}");
        }
    }

    #[test]
    fn sizes_beyond_ustar_go_to_pax() {
        let mut w = TarWriter::new(Vec::new());
        let size = 9 << 30;
        w.write_header(&EntryHeader {
            name: b"huge",
            kind: Kind::Regular { size },
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: &[],
        })
        .unwrap();
        let bytes = w.out;
        let mut a = tar::Archive::new(&bytes[..]);
        let e = a.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(e.size(), size);
        assert_eq!(&*e.path_bytes(), b"huge");
    }

    #[test]
    fn the_tar_crate_reads_what_we_write() {
        let long = "d/".repeat(80) + "file";
        let x = [(OsString::from("user.k"), b"v\0bin".to_vec())];
        let mut w = TarWriter::new(Vec::new());
        w.write_header(&EntryHeader {
            name: long.as_bytes(),
            kind: Kind::Regular { size: 3 },
            mode: 0o4755,
            uid: 5_000_000,
            gid: 7,
            mtime: -5,
            xattrs: &x,
        })
        .unwrap();
        w.write_data(&b"abc"[..], 3).unwrap();
        let bytes = w.finish().unwrap();
        let mut a = tar::Archive::new(&bytes[..]);
        let mut entries = a.entries().unwrap();
        let mut e = entries.next().unwrap().unwrap();
        assert_eq!(&*e.path_bytes(), long.as_bytes());
        assert_eq!(e.header().uid().unwrap(), 5_000_000);
        assert_eq!(e.header().mode().unwrap(), 0o4755);
        let exts: Vec<_> = e
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|x| x.unwrap().key().unwrap().to_owned())
            .collect();
        assert!(exts.contains(&"SCHILY.xattr.user.k".to_owned()));
        assert!(exts.contains(&"mtime".to_owned()));
        let mut s = String::new();
        e.read_to_string(&mut s).unwrap();
        assert_eq!(s, "abc");
        assert!(entries.next().is_none());
    }

    #[test]
    fn data_is_copied_to_its_size_exactly_and_a_short_file_is_an_error() {
        // Larger than one read, not a multiple of it.
        let big: Vec<u8> = (0..READ_MAX * 2 + 777).map(|i| (i % 251) as u8).collect();
        let mut w = TarWriter::new(Vec::new());
        w.write_data(&big[..], big.len() as u64).unwrap();
        // A file that grew after it was stat-ed: its stat-ed size only.
        w.write_data(&b"abcdef"[..], 3).unwrap();
        let out = w.out;
        let padded = big.len().div_ceil(BLOCK) * BLOCK;
        assert!(out[..big.len()] == big[..]);
        assert!(out[big.len()..padded].iter().all(|&b| b == 0));
        assert_eq!(&out[padded..padded + 3], b"abc");
        assert_eq!(out.len(), padded + BLOCK);

        // One that shrank: an error, not a short entry.
        let mut w = TarWriter::new(Vec::new());
        let e = w.write_data(&b"ab"[..], 3).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
