//! Whole-tree copies (for the copy snapshotter) and removal.
//!
//! A copy keeps everything a layer diff can see — types, modes, owners, times to the nanosecond,
//! extended attributes, hard links — so that comparing the copy with its source later finds
//! exactly what changed. File data is reflinked where the filesystem can share extents
//! (btrfs, XFS), else copied in the kernel with `copy_file_range`.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, Timespec, Timestamps};

use crate::error::{Error, Result};
use crate::paths;
use crate::xattr;

/// How a copy moved file data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyStats {
    pub files: u64,
    /// Files whose data was shared by reflink rather than copied.
    pub reflinked: u64,
}

/// Copies the tree at `src` to `dst` (which must not exist). Owners are kept when running as
/// root; sockets are skipped (a layer cannot carry them either).
pub fn copy_tree(src: &Path, dst: &Path) -> Result<CopyStats> {
    let mut c = Copier {
        links: HashMap::new(),
        stats: CopyStats::default(),
        chown: crate::privilege::is_root(),
    };
    let md = fs::symlink_metadata(src).map_err(|e| Error::io("reading", src, e))?;
    if !md.is_dir() {
        return Err(Error::io(
            "copying",
            src,
            io::Error::new(io::ErrorKind::InvalidInput, "not a directory"),
        ));
    }
    c.copy(src, dst, &md)?;
    Ok(c.stats)
}

/// Removes `path` and everything below it without following symlinks. Directories kiln may not
/// enter (mode 0 in a rootless store) are opened up first. A missing path is not an error.
pub fn remove_tree(path: &Path) -> Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(Error::io(
            "removing",
            path,
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "refusing to remove a root directory",
            ),
        ));
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let dir = match rustix::fs::open(
        parent,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(Error::io("removing", path, e)),
    };
    paths::remove_all_at(dir.as_fd(), name).map_err(|e| Error::io("removing", path, e))
}

/// Copies one node (a directory with everything below it) from `src` to `dst`, which must not
/// exist, keeping what [`copy_tree`] keeps.
pub(crate) fn copy_node(src: &Path, dst: &Path) -> Result<()> {
    let md = fs::symlink_metadata(src).map_err(|e| Error::io("reading", src, e))?;
    let mut c = Copier {
        links: HashMap::new(),
        stats: CopyStats::default(),
        chown: crate::privilege::is_root(),
    };
    c.copy(src, dst, &md)
}

/// Gives the existing directory `dst` the owner, mode, attributes and times of `src`.
pub(crate) fn copy_dir_metadata(src: &Path, dst: &Path) -> Result<()> {
    let md = fs::symlink_metadata(src).map_err(|e| Error::io("reading", src, e))?;
    copy_metadata(
        src,
        dst,
        &md,
        FileType::Directory,
        crate::privilege::is_root(),
    )
}

struct Copier {
    /// (device, inode) of multiply-linked files already copied → their copy.
    links: HashMap<(u64, u64), std::path::PathBuf>,
    stats: CopyStats,
    chown: bool,
}

impl Copier {
    fn copy(&mut self, src: &Path, dst: &Path, md: &fs::Metadata) -> Result<()> {
        let ft = FileType::from_raw_mode(md.mode());
        if ft != FileType::Directory
            && md.nlink() > 1
            && let Some(first) = self.links.get(&(md.dev(), md.ino()))
        {
            return fs::hard_link(first, dst).map_err(|e| Error::io("linking", dst, e));
        }
        match ft {
            FileType::Directory => {
                fs::create_dir(dst).map_err(|e| Error::io("creating directory", dst, e))?;
                let mut children: Vec<_> = fs::read_dir(src)
                    .map_err(|e| Error::io("listing", src, e))?
                    .collect::<io::Result<_>>()
                    .map_err(|e| Error::io("listing", src, e))?;
                children.sort_by_key(|e| e.file_name());
                for child in children {
                    let from = child.path();
                    let cmd =
                        fs::symlink_metadata(&from).map_err(|e| Error::io("reading", &from, e))?;
                    self.copy(&from, &dst.join(child.file_name()), &cmd)?;
                }
            }
            FileType::RegularFile => {
                self.copy_data(src, dst)?;
                self.stats.files += 1;
            }
            FileType::Symlink => {
                let target = fs::read_link(src).map_err(|e| Error::io("reading link", src, e))?;
                std::os::unix::fs::symlink(&target, dst)
                    .map_err(|e| Error::io("creating symlink", dst, e))?;
            }
            FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo => {
                rustix::fs::mknodat(CWD, dst, ft, Mode::from_raw_mode(0o600), md.rdev())
                    .map_err(|e| Error::io("creating node", dst, e))?;
            }
            // Sockets belong to a running process; no layer format can carry them.
            _ => return Ok(()),
        }
        if ft != FileType::Directory && md.nlink() > 1 {
            self.links.insert((md.dev(), md.ino()), dst.to_owned());
        }
        copy_metadata(src, dst, md, ft, self.chown)
    }

    fn copy_data(&mut self, src: &Path, dst: &Path) -> Result<()> {
        let from = OpenOptions::new()
            .read(true)
            .custom_flags(libc_o_nofollow())
            .open(src)
            .map_err(|e| Error::io("opening", src, e))?;
        let to = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dst)
            .map_err(|e| Error::io("creating", dst, e))?;
        if rustix::fs::ioctl_ficlone(&to, &from).is_ok() {
            self.stats.reflinked += 1;
            return Ok(());
        }
        copy_bytes(&from, &to).map_err(|e| Error::io("copying", dst, e))
    }
}

fn libc_o_nofollow() -> i32 {
    OFlags::NOFOLLOW.bits() as i32
}

/// In-kernel copy, falling back to read/write where `copy_file_range` is not supported.
fn copy_bytes(from: &File, to: &File) -> io::Result<()> {
    loop {
        match rustix::fs::copy_file_range(from, None, to, None, 1 << 30) {
            Ok(0) => return Ok(()),
            Ok(_) => continue,
            Err(
                rustix::io::Errno::XDEV
                | rustix::io::Errno::NOSYS
                | rustix::io::Errno::INVAL
                | rustix::io::Errno::OPNOTSUPP,
            ) => break,
            Err(e) => return Err(e.into()),
        }
    }
    let mut r = from;
    let mut w = to;
    io::copy(&mut r, &mut w).map(|_| ())
}

/// Owner, attributes, mode and times, in the order apply uses (chown clears set-id bits and
/// capabilities, so it goes first).
fn copy_metadata(
    src: &Path,
    dst: &Path,
    md: &fs::Metadata,
    ft: FileType,
    chown: bool,
) -> Result<()> {
    if chown {
        std::os::unix::fs::lchown(dst, Some(md.uid()), Some(md.gid()))
            .map_err(|e| Error::io("setting owner", dst, e))?;
    }
    for (k, v) in xattr::list(src).map_err(|e| Error::io("reading attributes", src, e))? {
        if let Err(e) = xattr::set(dst, &k, &v) {
            // Symlinks take no user.* attributes and unprivileged copies cannot set
            // privileged namespaces; neither can a layer, so nothing diffable is lost.
            if ft == FileType::Symlink || !crate::privilege::is_host_root() {
                continue;
            }
            return Err(Error::io("setting attribute", dst, e));
        }
    }
    if ft != FileType::Symlink {
        rustix::fs::chmodat(
            CWD,
            dst,
            Mode::from_raw_mode(md.mode() & 0o7777),
            AtFlags::empty(),
        )
        .map_err(|e| Error::io("setting mode", dst, e))?;
    }
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: md.atime(),
            tv_nsec: md.atime_nsec(),
        },
        last_modification: Timespec {
            tv_sec: md.mtime(),
            tv_nsec: md.mtime_nsec(),
        },
    };
    rustix::fs::utimensat(CWD, dst, &times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| Error::io("setting times", dst, e))
}
