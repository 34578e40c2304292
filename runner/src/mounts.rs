//! The sandbox's view of the filesystem, built in its own mount namespace: the rootfs becomes `/`
//! through `pivot_root`, with a fresh `/proc`, a minimal `/dev`, a read-only `/sys`, the runner's
//! `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`, the caller's bind and tmpfs mounts, and
//! docker's masked and read-only paths.
//!
//! Every path inside the rootfs is resolved with its symlinks confined to the rootfs, so an image
//! cannot point a mount target at the host (`/etc -> /host/etc`).

use nix::fcntl::{OFlag, open};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::Mode;
use nix::sys::statvfs::{FsFlags, statvfs};
use nix::unistd::{chdir, fchdir, pivot_root};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{OpenOptionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result, SetupContext};
use crate::spec::Spec;

/// Files a container reads from the host's `/dev`, bind-mounted because an unprivileged user
/// namespace cannot `mknod`.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Hidden from the container, as docker hides them.
const MASKED: [&str; 12] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Visible but read-only, as docker makes them.
const READONLY: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Symlinks resolved before giving up, as the kernel's limit.
const MAX_SYMLINKS: usize = 40;

/// Where the runner's generated `/etc` files are on the host.
#[derive(Default)]
pub(crate) struct EtcFiles {
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    pub hostname: PathBuf,
}

/// Resolves `path` (absolute, inside the rootfs) the way the kernel would after a chroot to
/// `root`: symlinks are followed, absolute ones restart at `root`, and `..` never climbs above
/// it. Returns the resolved path relative to the rootfs, as an absolute container path. Missing
/// components are kept as they are (the caller may create them).
pub(crate) fn resolve_in_root(root: &Path, path: &Path) -> Result<PathBuf> {
    let mut resolved = PathBuf::from("/");
    let mut pending: VecDeque<OsString> = names(path).collect();
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            // At the root this stays at the root, as `/..` does.
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&name);
        let host = host_path(root, &candidate);
        match fs::symlink_metadata(&host) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(Error::setup(
                        format!("resolving {}", path.display()),
                        "too many levels of symbolic links",
                    ));
                }
                let target = fs::read_link(&host).map_err(|e| Error::path(&host, e))?;
                if target.is_absolute() {
                    resolved = PathBuf::from("/");
                }
                // The link's own components come before what was left of the path.
                let rest = std::mem::take(&mut pending);
                pending = names(&target).chain(rest).collect();
            }
            _ => resolved = candidate,
        }
    }
    Ok(resolved)
}

/// The components of a path that move through the tree: names and `..` (as the name "..",
/// which no real entry can have).
fn names(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(n) => Some(n.to_os_string()),
        Component::ParentDir => Some(OsString::from("..")),
        _ => None,
    })
}

/// The host path of an absolute container path.
fn host_path(root: &Path, container: &Path) -> PathBuf {
    root.join(container.strip_prefix("/").unwrap_or(container))
}

/// Creates mount points inside the rootfs and remembers what it created.
struct Mountpoints<'a> {
    root: &'a Path,
    created: Vec<PathBuf>,
}

impl Mountpoints<'_> {
    /// Makes sure `path` is a directory in the rootfs; returns its host path.
    fn dir(&mut self, path: &Path) -> Result<PathBuf> {
        let resolved = resolve_in_root(self.root, path)?;
        let mut current = PathBuf::from("/");
        for comp in resolved.components().skip(1) {
            current.push(comp);
            let host = host_path(self.root, &current);
            match fs::symlink_metadata(&host) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(Error::setup(
                        format!("creating mount point {}", path.display()),
                        format!("{} exists and is not a directory", current.display()),
                    ));
                }
                Err(_) => {
                    fs::create_dir(&host)
                        .step(|| format!("creating mount point {}", current.display()))?;
                    self.created.push(current.clone());
                }
            }
        }
        Ok(host_path(self.root, &resolved))
    }

    /// Makes sure `path` exists as a file (or anything but a directory) in the rootfs.
    fn file(&mut self, path: &Path) -> Result<PathBuf> {
        let resolved = resolve_in_root(self.root, path)?;
        if let Some(parent) = resolved.parent() {
            self.dir(parent)?;
        }
        let host = host_path(self.root, &resolved);
        match fs::symlink_metadata(&host) {
            Ok(m) if m.is_dir() => Err(Error::setup(
                format!("creating mount point {}", path.display()),
                "it exists and is a directory",
            )),
            Ok(_) => Ok(host),
            Err(_) => {
                fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o644)
                    .open(&host)
                    .step(|| format!("creating mount point {}", resolved.display()))?;
                self.created.push(resolved);
                Ok(host)
            }
        }
    }
}

fn do_mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    mount(source, target, fstype, flags, data).step(|| {
        let what = fstype
            .map(str::to_string)
            .or_else(|| source.map(|s| s.display().to_string()))
            .unwrap_or_default();
        format!("mounting {what} on {}", target.display())
    })
}

fn bind(source: &Path, target: &Path) -> Result<()> {
    do_mount(
        Some(source),
        target,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
}

/// Remounts a bind mount read-only. Inside a user namespace the kernel refuses a remount that
/// would clear a flag the mount already has (nosuid, nodev, noexec, atime flags), so those are
/// carried over.
fn remount_readonly(path: &Path) -> Result<()> {
    let current = statvfs(path).step(|| format!("statfs {}", path.display()))?;
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    for (fs_flag, ms_flag) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if current.flags().contains(fs_flag) {
            flags |= ms_flag;
        }
    }
    mount(None::<&Path>, path, None::<&str>, flags, None::<&str>)
        .step(|| format!("remounting {} read-only", path.display()))
}

/// One caller-requested mount, ordered by depth so parents are mounted before children.
enum UserMount<'a> {
    Bind(&'a crate::spec::BindMount),
    Tmpfs(&'a crate::spec::TmpfsMount),
}

impl UserMount<'_> {
    fn target(&self) -> &Path {
        match self {
            UserMount::Bind(b) => &b.target,
            UserMount::Tmpfs(t) => &t.target,
        }
    }
}

/// How the sandbox switches into its prepared root.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Enter {
    /// `pivot_root`, detaching the old root (namespace isolation).
    Pivot,
    /// `chroot` (chroot isolation in a private mount namespace).
    Chroot,
}

/// Builds the sandbox's filesystem and switches into it. Runs inside the new mount namespace,
/// as (namespaced) root. Returns the mount points it created in the rootfs.
pub(crate) fn setup(
    spec: &Spec,
    etc: &EtcFiles,
    console: Option<&Path>,
    rootless: bool,
) -> Result<Vec<PathBuf>> {
    setup_in(spec, etc, console, rootless, Enter::Pivot)
}

/// [`setup`], entering the root the way `enter` says.
pub(crate) fn setup_in(
    spec: &Spec,
    etc: &EtcFiles,
    console: Option<&Path>,
    rootless: bool,
    enter: Enter,
) -> Result<Vec<PathBuf>> {
    // Nothing mounted from here on may propagate back to the host.
    do_mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )?;
    let root = spec.rootfs.as_path();
    // pivot_root needs the new root to be a mount point.
    bind(root, root)?;
    let mut points = Mountpoints {
        root,
        created: Vec::new(),
    };

    let proc_dir = points.dir(Path::new("/proc"))?;
    do_mount(
        Some(Path::new("proc")),
        &proc_dir,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;

    let dev = points.dir(Path::new("/dev"))?;
    setup_dev(&dev, console, rootless)?;

    let sys = points.dir(Path::new("/sys"))?;
    mount_sys(&sys)?;

    for (container, host) in [
        ("/etc/hosts", &etc.hosts),
        ("/etc/resolv.conf", &etc.resolv_conf),
        ("/etc/hostname", &etc.hostname),
    ] {
        let target = points.file(Path::new(container))?;
        do_mount(Some(host), &target, None, MsFlags::MS_BIND, None)?;
    }

    mount_user_mounts(spec, &mut points)?;

    match enter {
        Enter::Pivot => pivot(root)?,
        Enter::Chroot => crate::isolation::chroot_into(root)?,
    }
    mask_paths()?;
    Ok(points.created)
}

/// Where nothing can be mounted: `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname` that the
/// rootfs lacks are written with the runner's contents (files it has are left as they are).
/// Returns what was created, as the mount points of a namespaced sandbox are: the same paths,
/// so the step's layer leaves out the same entries in every isolation.
pub(crate) fn write_missing_etc_files(spec: &Spec, root: &Path) -> Result<Vec<PathBuf>> {
    let mut points = Mountpoints {
        root,
        created: Vec::new(),
    };
    for (container, contents) in [
        ("/etc/hosts", spec.hosts_contents()),
        ("/etc/resolv.conf", spec.resolv_conf_contents()),
        ("/etc/hostname", spec.hostname_file_contents()),
    ] {
        let before = points.created.len();
        let host = points.file(Path::new(container))?;
        if points.created.len() > before {
            fs::write(&host, contents).step(|| format!("writing {container}"))?;
        }
    }
    Ok(points.created)
}

/// The caller's bind and tmpfs mounts, made right where they are asked for in the current root
/// (no-isolation runs, in a private mount namespace). Returns the mount points created.
pub(crate) fn user_mounts_in_place(spec: &Spec) -> Result<Vec<PathBuf>> {
    let mut points = Mountpoints {
        root: Path::new("/"),
        created: Vec::new(),
    };
    mount_user_mounts(spec, &mut points)?;
    Ok(points.created)
}

/// Mounts the spec's bind and tmpfs mounts in the rootfs, parents before children.
fn mount_user_mounts(spec: &Spec, points: &mut Mountpoints<'_>) -> Result<()> {
    let mut user_mounts: Vec<UserMount<'_>> = spec
        .mounts
        .iter()
        .map(UserMount::Bind)
        .chain(spec.tmpfs.iter().map(UserMount::Tmpfs))
        .collect();
    user_mounts.sort_by_key(|m| m.target().components().count());
    for m in user_mounts {
        match m {
            UserMount::Bind(b) => {
                let meta = fs::metadata(&b.source).map_err(|e| Error::path(b.source.clone(), e))?;
                let target = if meta.is_dir() {
                    points.dir(&b.target)?
                } else {
                    points.file(&b.target)?
                };
                bind(&b.source, &target)?;
                if b.readonly {
                    remount_readonly(&target)?;
                }
            }
            UserMount::Tmpfs(t) => {
                let target = points.dir(&t.target)?;
                let mut data = format!("mode={:o}", t.mode.unwrap_or(0o1777));
                if let Some(size) = t.size {
                    data.push_str(&format!(",size={size}"));
                }
                do_mount(
                    Some(Path::new("tmpfs")),
                    &target,
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some(&data),
                )?;
            }
        }
    }

    Ok(())
}

fn setup_dev(dev: &Path, console: Option<&Path>, rootless: bool) -> Result<()> {
    do_mount(
        Some(Path::new("tmpfs")),
        dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    let touch = |path: &Path| {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o666)
            .open(path)
            .map(drop)
            .step(|| format!("creating {}", path.display()))
    };
    for name in DEVICES {
        let target = dev.join(name);
        touch(&target)?;
        bind(&Path::new("/dev").join(name), &target)?;
    }
    if let Some(console) = console {
        let target = dev.join("console");
        touch(&target)?;
        bind(console, &target)?;
    }

    let pts = dev.join("pts");
    fs::create_dir(&pts).step(|| "creating /dev/pts".into())?;
    // gid 5 is the tty group; a rootless namespace usually has no such id mapped.
    let pts_data = if rootless {
        "newinstance,ptmxmode=0666,mode=0620"
    } else {
        "newinstance,ptmxmode=0666,mode=0620,gid=5"
    };
    do_mount(
        Some(Path::new("devpts")),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(pts_data),
    )?;
    symlink("pts/ptmx", dev.join("ptmx")).step(|| "linking /dev/ptmx".into())?;

    let shm = dev.join("shm");
    fs::create_dir(&shm).step(|| "creating /dev/shm".into())?;
    do_mount(
        Some(Path::new("shm")),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )?;

    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ] {
        symlink(target, dev.join(name)).step(|| format!("linking /dev/{name}"))?;
    }
    Ok(())
}

/// A fresh read-only sysfs needs a network namespace of our own user namespace; with the host's
/// network in a rootless run the kernel refuses it, and the host's `/sys` is bound instead.
fn mount_sys(sys: &Path) -> Result<()> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY;
    match mount(
        Some(Path::new("sysfs")),
        sys,
        Some("sysfs"),
        flags,
        None::<&str>,
    ) {
        Ok(()) => Ok(()),
        Err(nix::Error::EPERM) => {
            bind(Path::new("/sys"), sys)?;
            remount_readonly(sys)
        }
        Err(e) => Err(Error::setup("mounting sysfs", e.desc())),
    }
}

/// Makes `root` the root directory and detaches the old one (runc's way: no directory for the
/// old root is needed, which keeps the rootfs unchanged).
fn pivot(root: &Path) -> Result<()> {
    let flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    let old_root = open("/", flags, Mode::empty()).step(|| "opening /".into())?;
    let new_root =
        open(root, flags, Mode::empty()).step(|| format!("opening {}", root.display()))?;
    fchdir(&new_root).step(|| "entering the new root".into())?;
    pivot_root(".", ".").step(|| "pivot_root".into())?;
    // The old root is now stacked on "."; go there to detach it. Making it a slave first keeps
    // the unmount from propagating anywhere.
    fchdir(&old_root).step(|| "entering the old root".into())?;
    do_mount(
        None,
        Path::new("."),
        None,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None,
    )?;
    umount2(".", MntFlags::MNT_DETACH).step(|| "detaching the old root".into())?;
    chdir("/").step(|| "entering /".into())
}

fn mask_paths() -> Result<()> {
    for path in MASKED.iter().map(Path::new) {
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => do_mount(
                Some(Path::new("tmpfs")),
                path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=0"),
            )?,
            Ok(_) => do_mount(
                Some(Path::new("/dev/null")),
                path,
                None,
                MsFlags::MS_BIND,
                None,
            )?,
            Err(_) => {}
        }
    }
    for path in READONLY.iter().map(Path::new) {
        if path.exists() {
            bind(path, path)?;
            remount_readonly(path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = dir.path();
        fs::create_dir_all(r.join("real/etc")).expect("mkdir");
        symlink("/real/etc", r.join("etc")).expect("abs link");
        symlink("../../../../..", r.join("up")).expect("climbing link");
        symlink("real/../real", r.join("rel")).expect("relative link");
        symlink("loop2", r.join("loop1")).expect("loop1");
        symlink("loop1", r.join("loop2")).expect("loop2");
        dir
    }

    #[test]
    fn absolute_links_restart_at_the_root() {
        let dir = tree();
        let p = resolve_in_root(dir.path(), Path::new("/etc/hosts")).expect("resolve");
        assert_eq!(p, PathBuf::from("/real/etc/hosts"));
    }

    #[test]
    fn dotdot_and_links_cannot_escape() {
        let dir = tree();
        let p = resolve_in_root(dir.path(), Path::new("/up/etc/passwd")).expect("resolve");
        assert_eq!(p, PathBuf::from("/real/etc/passwd"));
        let p = resolve_in_root(dir.path(), Path::new("/../../x")).expect("resolve");
        assert_eq!(p, PathBuf::from("/x"));
        let p = resolve_in_root(dir.path(), Path::new("/rel/etc")).expect("resolve");
        assert_eq!(p, PathBuf::from("/real/etc"));
    }

    #[test]
    fn symlink_loops_are_errors() {
        let dir = tree();
        assert!(resolve_in_root(dir.path(), Path::new("/loop1/x")).is_err());
    }

    #[test]
    fn mountpoints_are_created_through_links_and_recorded() {
        let dir = tree();
        let mut points = Mountpoints {
            root: dir.path(),
            created: Vec::new(),
        };
        let host = points.file(Path::new("/etc/hosts")).expect("file");
        assert_eq!(host, dir.path().join("real/etc/hosts"));
        assert!(host.is_file());
        let host = points.dir(Path::new("/new/deep")).expect("dir");
        assert!(host.is_dir());
        assert_eq!(
            points.created,
            vec![
                PathBuf::from("/real/etc/hosts"),
                PathBuf::from("/new"),
                PathBuf::from("/new/deep")
            ]
        );
        // Existing paths are not reported again.
        points.file(Path::new("/etc/hosts")).expect("again");
        assert_eq!(points.created.len(), 3);
        // A file where a directory is needed is refused.
        assert!(points.dir(Path::new("/etc/hosts/x")).is_err());
        assert!(points.file(Path::new("/new")).is_err());
    }
}
