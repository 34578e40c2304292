//! File operations on a step's root filesystem, confined to it: every path is resolved by the
//! kernel inside the root (`openat2(RESOLVE_IN_ROOT)`, through the snapshotter's [`Root`]), so a
//! symlink or `..` planted by an image can never make kiln read or create anything outside it.

use crate::path::clean;
use kiln_snapshotter::{RelPath, Root};
use rustix::fs::OFlags;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// A container path (absolute inside the root) as a root-relative path: cleaned like Go's
/// `path.Clean` of an absolute path, so `..` stops at `/` as it does for a process inside.
fn relative(path: &str) -> io::Result<RelPath> {
    let cleaned = clean(&format!("/{path}"));
    RelPath::parse(cleaned.as_bytes()).map_err(io::Error::other)
}

/// Creates directory `path` (absolute inside the root) and its missing parents, mode 0755,
/// owned by `uid:gid` (the directories that already exist are left as they are).
pub fn make_dirs(root: &Path, path: &str, uid: u32, gid: u32) -> io::Result<()> {
    Root::open(root)?
        .make_dirs_owned(&relative(path)?, Some((uid, gid)))
        .map(drop)
}

/// The host path of `path` (absolute inside the root) with every symlink resolved inside the
/// root: what a bind mount of it may safely name.
pub fn resolve(root: &Path, path: &str) -> io::Result<PathBuf> {
    use std::os::fd::AsRawFd;
    let fd = Root::open(root)?.open_in_root(&relative(path)?.to_path(), OFlags::PATH)?;
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// The text of file `path` in the root; empty when it does not exist (as for an image without
/// `/etc/passwd`, where numeric users still work).
pub fn read_text(root: &Path, path: &str) -> io::Result<String> {
    match Root::open(root)?.open_in_root(&relative(path)?.to_path(), OFlags::RDONLY) {
        Ok(fd) => {
            let mut text = String::new();
            // Bounded: these are small configuration files, not something to slurp unbounded.
            std::fs::File::from(fd)
                .take(16 << 20)
                .read_to_string(&mut text)?;
            Ok(text)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn directories_are_created_inside_the_root_even_through_escaping_links() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(&outside).unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(root.join("outside")).unwrap_or_else(|e| panic!("{e}"));
        symlink("../../outside", root.join("escape")).unwrap_or_else(|e| panic!("{e}"));
        let (uid, gid) = (rustix::process::getuid(), rustix::process::getgid());
        make_dirs(&root, "/escape/a/b", uid.as_raw(), gid.as_raw())
            .unwrap_or_else(|e| panic!("{e}"));
        // `escape` resolves to `/outside` inside the root, not the real one.
        assert!(root.join("outside/a/b").is_dir());
        assert!(!outside.join("a").exists());
        make_dirs(&root, "/app/./x/", uid.as_raw(), gid.as_raw()).unwrap_or_else(|e| panic!("{e}"));
        assert!(root.join("app/x").is_dir());
        std::fs::write(root.join("file"), "x").unwrap_or_else(|e| panic!("{e}"));
        assert!(make_dirs(&root, "/file/sub", 0, 0).is_err());
        // A dangling link is not a directory to create things in.
        symlink("/nowhere", root.join("dangling")).unwrap_or_else(|e| panic!("{e}"));
        assert!(make_dirs(&root, "/dangling/x", 0, 0).is_err());

        assert_eq!(
            read_text(&root, "/etc/passwd").unwrap_or_else(|e| panic!("{e}")),
            ""
        );
        assert_eq!(
            read_text(&root, "/file").unwrap_or_else(|e| panic!("{e}")),
            "x"
        );
    }
}
