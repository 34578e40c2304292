//! Shared test helpers: a byte-level tar writer for crafting hostile archives, a tree
//! fingerprint for roundtrip comparisons, and prerequisite checks that fail under `CI=true`.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A tar archive built header by header, with no validation at all: names may contain `..`,
/// sizes may lie, data may be missing.
#[derive(Default)]
pub struct RawTar {
    pub buf: Vec<u8>,
}

pub struct Raw<'a> {
    pub name: &'a [u8],
    pub typeflag: u8,
    pub size: u64,
    pub link: &'a [u8],
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub major: u32,
    pub minor: u32,
}

impl<'a> Raw<'a> {
    pub fn new(name: &'a [u8], typeflag: u8) -> Self {
        Raw {
            name,
            typeflag,
            size: 0,
            link: b"",
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
            major: 0,
            minor: 0,
        }
    }
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{:0w$o}", v, w = field.len() - 1);
    let b = s.as_bytes();
    let n = b.len().min(field.len() - 1);
    field[..n].copy_from_slice(&b[b.len() - n..]);
}

impl RawTar {
    pub fn header(&mut self, h: &Raw<'_>) {
        let mut b = [0u8; 512];
        let n = h.name.len().min(100);
        b[..n].copy_from_slice(&h.name[..n]);
        octal(&mut b[100..108], u64::from(h.mode));
        octal(&mut b[108..116], h.uid);
        octal(&mut b[116..124], h.gid);
        octal(&mut b[124..136], h.size);
        octal(&mut b[136..148], h.mtime);
        b[156] = h.typeflag;
        let n = h.link.len().min(100);
        b[157..157 + n].copy_from_slice(&h.link[..n]);
        b[257..263].copy_from_slice(b"ustar\0");
        b[263..265].copy_from_slice(b"00");
        octal(&mut b[329..337], u64::from(h.major));
        octal(&mut b[337..345], u64::from(h.minor));
        b[148..156].fill(b' ');
        let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
        b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        self.buf.extend_from_slice(&b);
    }

    pub fn data(&mut self, d: &[u8]) {
        self.buf.extend_from_slice(d);
        let pad = (512 - d.len() % 512) % 512;
        self.buf.extend(std::iter::repeat_n(0u8, pad));
    }

    pub fn file(&mut self, name: &str, content: &[u8]) {
        self.header(&Raw {
            size: content.len() as u64,
            ..Raw::new(name.as_bytes(), b'0')
        });
        self.data(content);
    }

    pub fn dir(&mut self, name: &str) {
        self.header(&Raw {
            mode: 0o755,
            ..Raw::new(name.as_bytes(), b'5')
        });
    }

    pub fn symlink(&mut self, name: &str, target: &str) {
        self.header(&Raw {
            link: target.as_bytes(),
            mode: 0o777,
            ..Raw::new(name.as_bytes(), b'2')
        });
    }

    pub fn hardlink(&mut self, name: &str, target: &str) {
        self.header(&Raw {
            link: target.as_bytes(),
            ..Raw::new(name.as_bytes(), b'1')
        });
    }

    /// A PAX extended header applying to the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) {
        let mut body = Vec::new();
        for (k, v) in records {
            let rest = k.len() + v.len() + 3;
            let mut len = rest + rest.to_string().len();
            if len.to_string().len() != rest.to_string().len() {
                len = rest + len.to_string().len();
            }
            body.extend_from_slice(format!("{len} {k}=").as_bytes());
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        self.header(&Raw {
            size: body.len() as u64,
            ..Raw::new(b"PaxHeaders/x", b'x')
        });
        self.data(&body);
    }

    /// A GNU long-name header applying to the next entry.
    pub fn gnu_long_name(&mut self, name: &[u8]) {
        let mut body = name.to_vec();
        body.push(0);
        self.header(&Raw {
            size: body.len() as u64,
            ..Raw::new(b"././@LongLink", b'L')
        });
        self.data(&body);
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&[0u8; 1024]);
        self.buf
    }
}

/// Everything a layer records about one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub rdev: u64,
    pub content: Vec<u8>,
    pub link: Vec<u8>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// For multiply-linked files: the first path (in sorted order) sharing this inode.
    pub hardlink_group: Option<String>,
}

/// A fingerprint of the tree below `root` (the root itself excluded), by relative path.
pub fn fingerprint(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<u64, String> = HashMap::new();
    walk(root, root, &mut out, &mut inodes);
    out
}

fn walk(
    root: &Path,
    dir: &Path,
    out: &mut BTreeMap<String, Node>,
    inodes: &mut HashMap<u64, String>,
) {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for n in names {
        let p = dir.join(&n);
        let md = fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let ft = md.file_type();
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_file() {
            "file"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "other"
        };
        let hardlink_group = if !ft.is_dir() && md.nlink() > 1 {
            Some(
                inodes
                    .entry(md.ino())
                    .or_insert_with(|| rel.clone())
                    .clone(),
            )
        } else {
            None
        };
        out.insert(
            rel,
            Node {
                kind: kind.into(),
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                mtime: md.mtime(),
                rdev: if ft.is_char_device() || ft.is_block_device() {
                    md.rdev()
                } else {
                    0
                },
                content: if ft.is_file() {
                    fs::read(&p).unwrap()
                } else {
                    Vec::new()
                },
                link: if ft.is_symlink() {
                    fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec()
                } else {
                    Vec::new()
                },
                xattrs: xattrs(&p),
                hardlink_group,
            },
        );
        if ft.is_dir() {
            walk(root, &p, out, inodes);
        }
    }
}

/// The node's attributes (overlay's own left out).
pub fn xattrs(p: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 65536];
    // SAFETY: buffer and length match; the path is NUL-terminated.
    let n = unsafe { libc_llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return Vec::new();
    }
    names.truncate(n as usize);
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.") {
            continue;
        }
        let cn = CString::new(name).unwrap();
        let mut v = vec![0u8; 65536];
        // SAFETY: as above.
        let k = unsafe { libc_lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        if k >= 0 {
            v.truncate(k as usize);
            out.push((name.to_vec(), v));
        }
    }
    out.sort();
    out
}

unsafe extern "C" {
    #[link_name = "llistxattr"]
    fn libc_llistxattr(
        path: *const std::ffi::c_char,
        list: *mut std::ffi::c_char,
        size: usize,
    ) -> isize;
    #[link_name = "lgetxattr"]
    fn libc_lgetxattr(
        path: *const std::ffi::c_char,
        name: *const std::ffi::c_char,
        value: *mut std::ffi::c_void,
        size: usize,
    ) -> isize;
    #[link_name = "lsetxattr"]
    fn libc_lsetxattr(
        path: *const std::ffi::c_char,
        name: *const std::ffi::c_char,
        value: *const std::ffi::c_void,
        size: usize,
        flags: i32,
    ) -> i32;
}

pub fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: pointers and lengths match.
    let r = unsafe {
        libc_lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "setxattr {name} on {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { geteuid() == 0 }
}

unsafe extern "C" {
    fn geteuid() -> u32;
}

/// Whether a test whose prerequisite is missing should run: panics under `CI=true` (a missing
/// prerequisite is a failure there), prints why and returns false otherwise.
pub fn prerequisite(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("prerequisite missing under CI=true: {what}");
    }
    eprintln!("skipping: {what}");
    false
}

/// Every path (and its content/metadata) under `dir`, for "nothing outside changed" checks.
pub fn host_state(dir: &Path) -> BTreeMap<String, Node> {
    fingerprint(dir)
}

/// Sets a node's access and modification times (not following a final symlink).
pub fn set_mtime(p: &Path, secs: i64) {
    let t = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        p,
        &t,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// Every path below `dir`, children before their directory.
pub fn walk_paths(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            out.extend(walk_paths(&p));
        }
        out.push(p);
    }
    out
}

/// The diff-id of an uncompressed layer.
pub fn diff_id(tar: &[u8]) -> kiln_snapshotter::DiffId {
    kiln_snapshotter::Digest::of(tar)
}

/// The entry names of a tar, in order.
pub fn entry_names(tar: &[u8]) -> Vec<String> {
    tar::Archive::new(tar)
        .entries()
        .unwrap()
        .map(|e| String::from_utf8(e.unwrap().path_bytes().into_owned()).unwrap())
        .collect()
}
