//! Overlay mounts. The option logic is pure ([`plan_legacy_mount`]) so it can be tested without
//! root; the syscalls live behind [`Mounter`] so the snapshotter can be tested with a mounter that
//! fails on purpose.
//!
//! Two ways to mount:
//! - the new mount API (`fsopen` + `fsconfig("lowerdir+")`, Linux 6.8+): one call per layer, no
//!   length limit, no escaping — used when the kernel has it;
//! - `mount(2)`, whose option string is limited to one page. Long chains, or paths containing the
//!   `:` and `,` that overlayfs uses as separators, go through a directory of short symlinks
//!   (`0`, `1`, … → layer directories) and a mount made from that directory as working
//!   directory — in a thread that unshared its filesystem context, since chdir is otherwise
//!   process-wide.

use std::ffi::CString;
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::io::Errno;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, UnmountFlags,
};

use crate::error::{Error, Result};

/// Options kiln always passes: no inode index, no metadata-only copy-up, no directory
/// redirects. Each of those writes state into the upper directory that a layer diff cannot
/// carry; without redirects, renaming a lower directory fails with EXDEV and tools fall back
/// to copy and delete, which a diff can express.
///
/// With `userxattr` the kernel refuses `redirect_dir=off` ("conflicting options") and takes
/// only `nofollow`, which also creates no redirects (and follows none).
impl OverlayOptions {
    pub fn fixed(&self) -> [(&'static str, &'static str); 3] {
        let redirect = if self.userxattr { "nofollow" } else { "off" };
        [
            ("index", "off"),
            ("metacopy", "off"),
            ("redirect_dir", redirect),
        ]
    }
}

/// Mount-time choices beyond the layer directories.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OverlayOptions {
    /// Keep overlay state in `user.overlay.*` attributes (needed for rootless mounts inside a
    /// user namespace).
    pub userxattr: bool,
    /// Mount with `nodev`: device nodes a layer carries cannot be opened through the snapshot
    /// (a sandbox brings its own `/dev`; an image's `/dev/sda` must not reach the host disk).
    pub nodev: bool,
}

/// One overlay mount: `lowers` top-most first.
#[derive(Clone, Debug)]
pub struct OverlayMount {
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub target: PathBuf,
    pub options: OverlayOptions,
}

/// The system calls a snapshot needs.
pub trait Mounter: Send + Sync {
    /// Mounts `m` on `m.target`. `scratch` is an empty directory the mounter may use for
    /// auxiliary files (short symlinks) that must outlive the mount call but not the mount.
    fn mount_overlay(&self, m: &OverlayMount, scratch: &Path) -> Result<()>;
    /// Unmounts `target`.
    fn unmount(&self, target: &Path) -> Result<()>;
}

/// The real mounter.
#[derive(Clone, Copy, Debug)]
pub struct KernelMounter {
    /// Try the new mount API first (falling back to `mount(2)` where the kernel lacks it).
    /// Off forces `mount(2)`, the path older kernels take.
    pub new_api: bool,
}

impl Default for KernelMounter {
    fn default() -> Self {
        KernelMounter { new_api: true }
    }
}

/// A `mount(2)` call worked out in advance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountPlan {
    /// The option string.
    pub data: String,
    /// Directory to mount from; option paths are relative to it. None: all paths absolute.
    pub chdir: Option<PathBuf>,
    /// Symlinks to create in `chdir` first: (name, absolute target).
    pub links: Vec<(String, PathBuf)>,
}

/// Works out the `mount(2)` call for `m`: absolute paths when they fit in `limit` bytes (the
/// page the kernel copies, less its NUL) and need no escaping, otherwise short relative
/// symlinks created in `link_dir`.
pub fn plan_legacy_mount(m: &OverlayMount, link_dir: &Path, limit: usize) -> MountPlan {
    let fixed: String = m
        .options
        .fixed()
        .iter()
        .map(|(k, v)| format!(",{k}={v}"))
        .collect();
    let extra = if m.options.userxattr {
        ",userxattr"
    } else {
        ""
    };
    let data = |lowers: &[String], upper: &str, work: &str| {
        format!(
            "lowerdir={},upperdir={upper},workdir={work}{fixed}{extra}",
            lowers.join(":")
        )
    };

    let all: Vec<&Path> = m
        .lowers
        .iter()
        .map(PathBuf::as_path)
        .chain([m.upper.as_path(), m.work.as_path()])
        .collect();
    let plain = all.iter().all(|p| {
        p.is_absolute()
            && !p
                .as_os_str()
                .as_bytes()
                .iter()
                .any(|b| b":,\\=".contains(b))
    });
    if plain {
        let lowers: Vec<String> = m
            .lowers
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let s = data(
            &lowers,
            &m.upper.to_string_lossy(),
            &m.work.to_string_lossy(),
        );
        if s.len() <= limit {
            return MountPlan {
                data: s,
                chdir: None,
                links: Vec::new(),
            };
        }
    }
    let mut links: Vec<(String, PathBuf)> = m
        .lowers
        .iter()
        .enumerate()
        .map(|(i, p)| (i.to_string(), p.clone()))
        .collect();
    links.push(("u".into(), m.upper.clone()));
    links.push(("w".into(), m.work.clone()));
    let lowers: Vec<String> = (0..m.lowers.len()).map(|i| i.to_string()).collect();
    MountPlan {
        data: data(&lowers, "u", "w"),
        chdir: Some(link_dir.to_owned()),
        links,
    }
}

impl Mounter for KernelMounter {
    fn mount_overlay(&self, m: &OverlayMount, scratch: &Path) -> Result<()> {
        if !self.new_api {
            return mount_legacy(m, scratch);
        }
        match mount_new_api(m) {
            Ok(()) => Ok(()),
            // No new mount API, or an overlayfs without `lowerdir+` (before 6.8).
            Err(NewApiError::Unsupported) => mount_legacy(m, scratch),
            Err(NewApiError::Failed { source, log }) => Err(Error::Mount {
                op: "mounting",
                target: m.target.clone(),
                hint: log,
                source,
            }),
        }
    }

    fn unmount(&self, target: &Path) -> Result<()> {
        // A process that has just exited may still pin the mount for a moment; retry, then
        // detach so that no mount outlives the snapshot.
        for _ in 0..20 {
            match rustix::mount::unmount(target, UnmountFlags::NOFOLLOW) {
                Ok(()) => return Ok(()),
                Err(Errno::BUSY) => std::thread::sleep(Duration::from_millis(25)),
                Err(Errno::INVAL) if !is_mounted(target) => return Ok(()),
                Err(e) => {
                    return Err(Error::Mount {
                        op: "unmounting",
                        target: target.to_owned(),
                        hint: None,
                        source: e.into(),
                    });
                }
            }
        }
        rustix::mount::unmount(target, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW).map_err(|e| {
            Error::Mount {
                op: "detaching",
                target: target.to_owned(),
                hint: Some("the mount stayed busy".into()),
                source: e.into(),
            }
        })
    }
}

enum NewApiError {
    Unsupported,
    Failed {
        source: io::Error,
        log: Option<String>,
    },
}

fn mount_new_api(m: &OverlayMount) -> std::result::Result<(), NewApiError> {
    let fs = match rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC) {
        Ok(fd) => fd,
        Err(Errno::NOSYS | Errno::PERM) => return Err(NewApiError::Unsupported),
        Err(e) => {
            return Err(NewApiError::Failed {
                source: e.into(),
                log: None,
            });
        }
    };
    let fail = |fs: &OwnedFd, e: Errno| NewApiError::Failed {
        source: e.into(),
        log: read_fs_log(fs),
    };
    for (i, lower) in m.lowers.iter().enumerate() {
        if let Err(e) = rustix::mount::fsconfig_set_string(&fs, "lowerdir+", lower) {
            if i == 0 && e == Errno::INVAL {
                let log = read_fs_log(&fs).unwrap_or_default();
                if log.contains("lowerdir+") || log.contains("Unknown parameter") || log.is_empty()
                {
                    return Err(NewApiError::Unsupported);
                }
            }
            return Err(fail(&fs, e));
        }
    }
    rustix::mount::fsconfig_set_string(&fs, "upperdir", &m.upper).map_err(|e| fail(&fs, e))?;
    rustix::mount::fsconfig_set_string(&fs, "workdir", &m.work).map_err(|e| fail(&fs, e))?;
    for (k, v) in m.options.fixed() {
        rustix::mount::fsconfig_set_string(&fs, k, v).map_err(|e| fail(&fs, e))?;
    }
    if m.options.userxattr {
        rustix::mount::fsconfig_set_flag(&fs, "userxattr").map_err(|e| fail(&fs, e))?;
    }
    rustix::mount::fsconfig_create(&fs).map_err(|e| fail(&fs, e))?;
    let attrs = if m.options.nodev {
        MountAttrFlags::MOUNT_ATTR_NODEV
    } else {
        MountAttrFlags::empty()
    };
    let mnt = rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
        .map_err(|e| fail(&fs, e))?;
    rustix::mount::move_mount(
        mnt.as_fd(),
        "",
        rustix::fs::CWD,
        &m.target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| fail(&fs, e))
}

/// The messages the kernel left in a filesystem context ("e overlay: …" lines): far more
/// useful than a bare EINVAL.
fn read_fs_log(fs: &OwnedFd) -> Option<String> {
    let mut f = fs::File::from(fs.try_clone().ok()?);
    let mut lines = Vec::new();
    let mut buf = [0u8; 1024];
    for _ in 0..16 {
        match f.read(&mut buf) {
            Ok(n) if n > 0 => lines.push(String::from_utf8_lossy(&buf[..n]).trim().to_owned()),
            _ => break,
        }
    }
    (!lines.is_empty()).then(|| lines.join("; "))
}

fn mount_legacy(m: &OverlayMount, scratch: &Path) -> Result<()> {
    let page = rustix::param::page_size();
    let plan = plan_legacy_mount(m, scratch, page - 1);
    let merr = |e: io::Error, hint: Option<String>| Error::Mount {
        op: "mounting",
        target: m.target.clone(),
        hint,
        source: e,
    };
    for (name, target) in &plan.links {
        let link = scratch.join(name);
        std::os::unix::fs::symlink(target, &link).map_err(|e| Error::io("creating", &link, e))?;
    }
    let data = CString::new(plan.data.clone())
        .map_err(|e| merr(io::Error::new(io::ErrorKind::InvalidInput, e), None))?;
    let target = std::path::absolute(&m.target).map_err(|e| merr(e, None))?;
    let hint = Some(format!("options {:?}", plan.data));
    let flags = if m.options.nodev {
        MountFlags::NODEV
    } else {
        MountFlags::empty()
    };
    match plan.chdir {
        None => rustix::mount::mount("overlay", &target, "overlay", flags, data.as_c_str())
            .map_err(|e| merr(e.into(), hint)),
        Some(dir) => {
            let r = std::thread::scope(|s| {
                s.spawn(|| -> rustix::io::Result<()> {
                    // SAFETY: only the filesystem context (cwd, root, umask) is unshared, and
                    // only for this short-lived thread; descriptors stay shared.
                    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS)? };
                    rustix::process::chdir(&dir)?;
                    rustix::mount::mount("overlay", &target, "overlay", flags, data.as_c_str())
                })
                .join()
            });
            match r {
                Ok(r) => r.map_err(|e| merr(e.into(), hint)),
                Err(_) => Err(Error::Thread("mount")),
            }
        }
    }
}

/// Whether `path` is a mount point in this mount namespace (per `/proc/self/mountinfo`).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(path) = fs::canonicalize(path).or_else(|_| std::path::absolute(path)) else {
        return false;
    };
    kiln_oci::store::mountinfo::read()
        .iter()
        .any(|m| m.mount_point == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(n: usize, base: &str) -> OverlayMount {
        OverlayMount {
            lowers: (0..n)
                .map(|i| PathBuf::from(format!("{base}/snapshots/{i:064}/fs")))
                .collect(),
            upper: PathBuf::from(format!("{base}/a/upper")),
            work: PathBuf::from(format!("{base}/a/work")),
            target: PathBuf::from(format!("{base}/a/merged")),
            options: OverlayOptions::default(),
        }
    }

    #[test]
    fn short_chains_use_absolute_paths() {
        let p = plan_legacy_mount(&spec(2, "/s"), Path::new("/s/a/links"), 4095);
        assert_eq!(p.chdir, None);
        assert!(p.links.is_empty());
        assert!(p.data.starts_with(&format!(
            "lowerdir=/s/snapshots/{:064}/fs:/s/snapshots/{:064}/fs,",
            0, 1
        )));
        assert!(p.data.ends_with(
            ",upperdir=/s/a/upper,workdir=/s/a/work,index=off,metacopy=off,redirect_dir=off"
        ));
    }

    #[test]
    fn long_chains_switch_to_short_links_that_fit_a_page() {
        let m = spec(150, "/var/lib/kiln");
        let p = plan_legacy_mount(&m, Path::new("/l"), 4095);
        assert_eq!(p.chdir.as_deref(), Some(Path::new("/l")));
        assert!(p.data.len() <= 4095, "{}", p.data.len());
        assert_eq!(p.links.len(), 152);
        assert_eq!(p.links[0], ("0".to_owned(), m.lowers[0].clone()));
        assert!(p.data.starts_with("lowerdir=0:1:2:"));
        assert!(p.data.contains(":149,upperdir=u,workdir=w,"));
        // The deepest overlayfs allows (500 layers) still fits.
        assert!(
            plan_legacy_mount(&spec(500, "/x"), Path::new("/l"), 4095)
                .data
                .len()
                <= 4095
        );
    }

    #[test]
    fn separators_in_paths_force_links() {
        let p = plan_legacy_mount(&spec(1, "/odd:dir,x"), Path::new("/l"), 4095);
        assert!(p.chdir.is_some());
        assert!(!p.data.contains("odd"));
    }

    #[test]
    fn userxattr_is_passed() {
        let mut m = spec(1, "/s");
        m.options.userxattr = true;
        assert!(
            plan_legacy_mount(&m, Path::new("/l"), 4095)
                .data
                .ends_with(",redirect_dir=nofollow,userxattr")
        );
    }
}
