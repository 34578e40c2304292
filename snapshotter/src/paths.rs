//! Root-confined path resolution. Every directory kiln creates or changes while applying a layer
//! is reached through `openat2(RESOLVE_IN_ROOT)` from a descriptor of the target root, so `..`,
//! absolute symlinks and symlinks planted by earlier entries all resolve inside the root — the
//! kernel enforces it, not string checks. The final component of an entry is then always acted on
//! with `*at` calls relative to its resolved parent and without following it.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Linux `NAME_MAX`: the longest single path component.
const NAME_MAX: usize = 255;
/// Linux `PATH_MAX`: the longest path the kernel resolves in one call.
const PATH_MAX: usize = 4096;

/// A cleaned, root-relative entry name: no empty, `.` or `..` components; each component a valid
/// file name. The empty list is the root itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelPath(Vec<OsString>);

impl RelPath {
    /// Cleans a tar entry name the way docker does (leading `/` and `./` dropped, `a/../b` is
    /// `b`), but refuses names whose `..` climb above the root: such an entry can only be an
    /// attack, and silently clamping it would write somewhere the archive did not say.
    pub fn parse(name: &[u8]) -> Result<Self, String> {
        if name.len() > PATH_MAX {
            return Err(format!(
                "name is {} bytes long; Linux paths are at most {PATH_MAX}",
                name.len()
            ));
        }
        let mut comps: Vec<OsString> = Vec::new();
        for c in name.split(|&b| b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => {
                    if comps.pop().is_none() {
                        return Err("name climbs above the layer root with `..`".into());
                    }
                }
                c if c.len() > NAME_MAX => {
                    return Err(format!(
                        "a path component is {} bytes long; Linux allows {NAME_MAX}",
                        c.len()
                    ));
                }
                c if c.contains(&0) => return Err("name contains a NUL byte".into()),
                c => comps.push(OsStr::from_bytes(c).to_owned()),
            }
        }
        Ok(RelPath(comps))
    }

    pub fn root() -> Self {
        RelPath(Vec::new())
    }

    /// Splits into parent and final component; None for the root.
    pub fn split_last(&self) -> Option<(RelPath, &OsStr)> {
        let (last, parent) = self.0.split_last()?;
        Some((RelPath(parent.to_vec()), last.as_os_str()))
    }

    pub fn join(&self, name: &OsStr) -> RelPath {
        let mut v = self.0.clone();
        v.push(name.to_owned());
        RelPath(v)
    }

    /// A relative path (`.` for the root), suitable for `openat2` and messages.
    pub fn to_path(&self) -> PathBuf {
        if self.0.is_empty() {
            PathBuf::from(".")
        } else {
            self.0.iter().collect()
        }
    }

    pub fn components(&self) -> &[OsString] {
        &self.0
    }
}

/// An open directory that every resolution is confined to.
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

impl Root {
    pub fn open(path: &Path) -> io::Result<Root> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root {
            fd,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the directory `rel` (symlinks followed, but only ever inside the root).
    pub fn open_dir(&self, rel: &RelPath) -> io::Result<OwnedFd> {
        self.open_in_root(&rel.to_path(), OFlags::PATH | OFlags::DIRECTORY)
    }

    /// Opens `rel` for reading entries (a directory descriptor that `Dir` can list).
    pub fn open_dir_readable(&self, rel: &RelPath) -> io::Result<OwnedFd> {
        self.open_in_root(&rel.to_path(), OFlags::RDONLY | OFlags::DIRECTORY)
    }

    /// Opens `path` (relative to the root) with `flags`, following symlinks only inside the root.
    pub fn open_in_root(&self, path: &Path, flags: OFlags) -> io::Result<OwnedFd> {
        // EAGAIN means a concurrent rename raced the lookup; the kernel asks us to retry.
        let mut tries = 0;
        loop {
            match rustix::fs::openat2(
                &self.fd,
                path,
                flags | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
            ) {
                Err(Errno::AGAIN) if tries < 16 => tries += 1,
                r => return r.map_err(io::Error::from),
            }
        }
    }

    /// Opens directory `rel`, creating missing components (mode 0755, as docker does for parents
    /// a layer does not list). Each missing component is created with `mkdirat` on the resolved
    /// descriptor of its parent, so creation is confined exactly like lookup.
    pub fn make_dirs(&self, rel: &RelPath) -> io::Result<OwnedFd> {
        self.make_dirs_owned(rel, None)
    }

    /// As [`Root::make_dirs`], giving each directory it creates to `owner` (uid, gid); those
    /// that exist are left as they are. Without root the owner cannot be given away, and the
    /// directories stay the caller's (what a rootless build maps the image's root to).
    pub fn make_dirs_owned(&self, rel: &RelPath, owner: Option<(u32, u32)>) -> io::Result<OwnedFd> {
        match self.open_dir(rel) {
            Err(e) if Errno::from_io_error(&e) == Some(Errno::NOENT) => {}
            r => return r,
        }
        let mut fd = self.open_dir(&RelPath::root())?;
        for i in 0..rel.0.len() {
            let prefix = RelPath(rel.0[..=i].to_vec());
            fd = match self.open_dir(&prefix) {
                Ok(fd) => fd,
                Err(e) if Errno::from_io_error(&e) == Some(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&fd, &rel.0[i], Mode::from_raw_mode(0o755)) {
                        Ok(()) => {
                            if let Some((uid, gid)) = owner {
                                chown_created(&fd, &rel.0[i], uid, gid)?;
                            }
                        }
                        Err(Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    self.open_dir(&prefix)?
                }
                Err(e) => return Err(e),
            };
        }
        Ok(fd)
    }
}

fn chown_created(dir: &OwnedFd, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
    match rustix::fs::chownat(
        dir,
        name,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    ) {
        Ok(()) => Ok(()),
        Err(Errno::PERM) if !rustix::process::geteuid().is_root() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The file type of `name` in `dir`, without following it; None when it does not exist.
pub fn type_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<FileType>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes `name` in `dir` and, if it is a directory, everything below it. Never follows
/// symlinks; a missing `name` is not an error.
pub fn remove_all_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match type_at(dir, name)? {
        None => Ok(()),
        Some(FileType::Directory) => {
            let sub = open_subdir_for_listing(dir, name)?;
            clear_dir(sub.as_fd(), &mut |_| false)?;
            ignore_missing(rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR))
        }
        Some(_) => ignore_missing(rustix::fs::unlinkat(dir, name, AtFlags::empty())),
    }
}

/// Removes every entry of the (readable) directory `dir` for which `keep` says false.
pub(crate) fn clear_dir(
    dir: BorrowedFd<'_>,
    keep: &mut dyn FnMut(&OsStr) -> bool,
) -> io::Result<()> {
    for name in list_dir(dir)? {
        if !keep(&name) {
            remove_all_at(dir, &name)?;
        }
    }
    Ok(())
}

/// Opens a child directory for emptying without following a symlink in its place. Without
/// root, a directory kiln may not read or write (a rootless store holding an image's mode-0555
/// directory) is made owner-accessible first: everything below it is about to be removed.
fn open_subdir_for_listing(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Err(Errno::ACCESS) => {
            rustix::fs::chmodat(dir, name, Mode::from_raw_mode(0o700), AtFlags::empty())?;
            rustix::fs::openat(dir, name, flags, Mode::empty())?
        }
        r => r?,
    };
    if !crate::privilege::is_root() {
        let mode = rustix::fs::fstat(&fd)?.st_mode;
        if mode & 0o700 != 0o700 {
            rustix::fs::fchmod(&fd, Mode::from_raw_mode((mode & 0o7777) | 0o700))?;
        }
    }
    Ok(fd)
}

/// The names in a readable directory, without `.` and `..`, sorted.
pub fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let mut d = rustix::fs::Dir::read_from(dir)?;
    let mut names = Vec::new();
    while let Some(ent) = d.read() {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn ignore_missing(r: rustix::io::Result<()>) -> io::Result<()> {
    match r {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A path through `/proc/self/fd` naming `name` inside the already-resolved directory `dir`.
/// Used for the calls that have no `*at` form (`lsetxattr`); the parent is a resolved
/// descriptor and `name` a single component that the `l*` call does not follow.
pub fn fd_path(dir: BorrowedFd<'_>, name: &OsStr) -> PathBuf {
    use std::os::fd::AsRawFd;
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    if !name.is_empty() {
        p.push(name);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Vec<String>, String> {
        RelPath::parse(s.as_bytes()).map(|p| {
            p.0.iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect()
        })
    }

    #[test]
    fn cleans_like_docker() {
        assert_eq!(parse("./a/b/").unwrap(), ["a", "b"]);
        assert_eq!(parse("/abs/x").unwrap(), ["abs", "x"]);
        assert_eq!(parse("a/../b").unwrap(), ["b"]);
        assert_eq!(parse("a//./b").unwrap(), ["a", "b"]);
        assert!(parse(".").unwrap().is_empty());
    }

    #[test]
    fn refuses_escapes_and_oversized_names() {
        assert!(parse("../x").is_err());
        assert!(parse("a/../../x").is_err());
        assert!(parse("/..").is_err());
        assert!(parse(&"x".repeat(256)).is_err());
        assert!(parse(&"a/".repeat(3000)).is_err());
    }
}
