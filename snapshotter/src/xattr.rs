//! Extended attributes of paths, never following a final symlink.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::XattrFlags;
use rustix::io::Errno;

/// Whether an attribute belongs to overlayfs itself (opaque markers, whiteouts, copy-up origin,
/// redirects…). Such attributes are never copied into a layer and never taken from one: a layer
/// that carried them could forge overlay state the mount options deliberately turn off.
pub fn is_overlay_internal(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

/// All attributes of `path` (sorted by name), the final component not followed. Filesystems
/// without xattr support simply have none.
pub fn list(path: &Path) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    list_using(
        |buf| rustix::fs::llistxattr(path, buf),
        |name, buf| rustix::fs::lgetxattr(path, name, buf),
    )
}

/// All attributes of the open file `fd` (sorted by name), as [`list`] gives those of a path:
/// for a file already open, without looking its path up twice more.
pub fn list_fd(fd: BorrowedFd<'_>) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    list_using(
        |buf| rustix::fs::flistxattr(fd, buf),
        |name, buf| rustix::fs::fgetxattr(fd, name, buf),
    )
}

/// The attributes `names` lists, each read with `value`; one removed in between is left out.
fn list_using(
    mut names: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>,
    mut value: impl FnMut(&OsStr, &mut [u8]) -> rustix::io::Result<usize>,
) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    let names = match read_sized(&mut names) {
        Ok(n) => n,
        Err(Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = OsStr::from_bytes(name);
        match read_sized(|buf| value(name, buf)) {
            Ok(v) => out.push((name.to_owned(), v)),
            Err(Errno::NODATA | Errno::NOTSUP) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    out.sort();
    Ok(out)
}

pub fn set(path: &Path, name: &OsStr, value: &[u8]) -> io::Result<()> {
    rustix::fs::lsetxattr(path, name, value, XattrFlags::empty()).map_err(io::Error::from)
}

/// Calls a size-returning xattr function with a growing buffer until the value fits (values can
/// change between a size query and the read, so ERANGE is retried rather than trusted once).
fn read_sized(
    mut f: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>,
) -> rustix::io::Result<Vec<u8>> {
    let mut cap = 256;
    loop {
        let mut buf = vec![0u8; cap];
        match f(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            // XATTR_SIZE_MAX is 64 KiB; values or name lists beyond that cannot exist.
            Err(Errno::RANGE) if cap < (1 << 20) => cap *= 4,
            Err(e) => return Err(e),
        }
    }
}

/// Where overlayfs keeps its own attributes: `trusted.overlay.*` for a mount made with real root
/// privileges, `user.overlay.*` for one made with `userxattr` (rootless, inside a user namespace).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XattrNamespace {
    Trusted,
    User,
}

impl XattrNamespace {
    /// The attribute that marks a directory opaque (its lower namesakes are hidden).
    pub fn opaque(self) -> &'static str {
        match self {
            XattrNamespace::Trusted => "trusted.overlay.opaque",
            XattrNamespace::User => "user.overlay.opaque",
        }
    }
}

/// Whether `path` carries an overlay whiteout attribute (the "xattr whiteout" form: an empty
/// regular file with `*.overlay.whiteout`, which overlayfs creates where it cannot `mknod`).
pub(crate) fn is_xattr_whiteout(xattrs: &[(OsString, Vec<u8>)]) -> bool {
    xattrs.iter().any(|(n, _)| {
        n == OsStr::new("trusted.overlay.whiteout") || n == OsStr::new("user.overlay.whiteout")
    })
}

/// Whether the directory's attributes mark it opaque ("y"; "x" only flags a directory holding
/// xattr whiteouts and hides nothing).
pub(crate) fn is_opaque(xattrs: &[(OsString, Vec<u8>)]) -> bool {
    xattrs.iter().any(|(n, v)| {
        (n == OsStr::new("trusted.overlay.opaque") || n == OsStr::new("user.overlay.opaque"))
            && v.as_slice() == b"y"
    })
}
