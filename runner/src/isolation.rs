//! How strongly a process is isolated, and what each level costs and needs.
//!
//! - [`Isolation::Namespace`]: new mount, PID, UTS, IPC (and network, and user when not root)
//!   namespaces and `pivot_root` into the rootfs. The default.
//! - [`Isolation::Chroot`]: no new namespaces needed: the process is `chroot`ed into the rootfs.
//!   When a private mount namespace can still be made (CAP_SYS_ADMIN, no seccomp filter against
//!   `unshare`), the sandbox's `/proc`, `/dev`, `/sys`, `/etc` files and bind mounts are set up
//!   in it as in namespace mode; otherwise the process sees only what the rootfs holds (no
//!   `/proc`, no device nodes unless the image ships them, `/etc/hosts`, `/etc/resolv.conf`
//!   and `/etc/hostname` written where the image has none) and bind mounts are refused.
//! - [`Isolation::None`]: the process runs in the caller's own root filesystem (the rootfs must
//!   be `/`), as kaniko runs its steps. Only for throwaway containers.
//!
//! In every mode the user switch, capability bounding, `no_new_privs`, the seccomp filter,
//! environment, working directory and exit status are the same.

use nix::mount::MsFlags;
use nix::sched::{CloneFlags, unshare};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Uid, chdir, chroot, fork};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, SetupContext};
use crate::mounts::{self, EtcFiles};
use crate::spec::Spec;

/// How a sandboxed process is separated from the host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Isolation {
    /// Linux namespaces and `pivot_root`.
    #[default]
    Namespace,
    /// `chroot` into the rootfs, without new namespaces.
    Chroot,
    /// The current root filesystem, unconfined.
    None,
}

impl Isolation {
    /// Strongest first: the order `auto` tries them in.
    pub const ALL: [Isolation; 3] = [Isolation::Namespace, Isolation::Chroot, Isolation::None];

    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Namespace => "namespace",
            Isolation::Chroot => "chroot",
            Isolation::None => "none",
        }
    }

    pub fn parse(text: &str) -> Option<Isolation> {
        Isolation::ALL.into_iter().find(|i| i.as_str() == text)
    }

    /// Whether the sandbox gets namespaces of its own (and so a network namespace for
    /// `Network::None`, a hostname, a PID 1).
    pub fn is_namespaced(self) -> bool {
        self == Isolation::Namespace
    }

    /// Checks, in a short-lived child process, whether this machine lets kiln run a sandbox
    /// with this isolation. The error says what was refused.
    pub fn probe(self) -> std::result::Result<(), String> {
        match self {
            Isolation::Namespace => {
                let rootless = !Uid::effective().is_root();
                let mut flags = CloneFlags::CLONE_NEWNS
                    | CloneFlags::CLONE_NEWPID
                    | CloneFlags::CLONE_NEWUTS
                    | CloneFlags::CLONE_NEWIPC
                    | CloneFlags::CLONE_NEWNET;
                if rootless {
                    flags |= CloneFlags::CLONE_NEWUSER;
                }
                in_child("creating namespaces and mounting in them", move || {
                    unshare(flags)?;
                    make_mounts_private()
                })
            }
            Isolation::Chroot => in_child("chroot (it needs CAP_SYS_CHROOT)", || chroot("/")),
            Isolation::None => Ok(()),
        }
    }
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Runs `test` in a forked child and reports how it went. The child makes system calls only
/// (async-signal-safe: the caller may have threads), then exits with the errno it got.
fn in_child(what: &str, test: impl FnOnce() -> nix::Result<()>) -> std::result::Result<(), String> {
    // SAFETY: the child only calls unshare/mount/chroot and _exit, all async-signal-safe.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let code = match test() {
                Ok(()) => 0,
                Err(e) => (e as i32).clamp(1, 255),
            };
            // SAFETY: ends the child at once, without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, 0)) => return Ok(()),
                Ok(WaitStatus::Exited(_, code)) => {
                    return Err(format!("{what}: {}", nix::Error::from_raw(code).desc()));
                }
                Ok(WaitStatus::Signaled(_, sig, _)) => {
                    return Err(format!("the probe was killed by {sig}"));
                }
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(e) => return Err(format!("waiting for the probe: {}", e.desc())),
            }
        },
        Err(e) => Err(format!("fork: {}", e.desc())),
    }
}

fn make_mounts_private() -> nix::Result<()> {
    nix::mount::mount(
        None::<&Path>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
}

/// A private mount namespace for the sandbox, where the machine allows one. Mounts made in it
/// vanish with the process, so nothing is left on the host.
fn private_mount_namespace() -> bool {
    unshare(CloneFlags::CLONE_NEWNS).is_ok() && make_mounts_private().is_ok()
}

/// Builds the filesystem view of a non-namespaced sandbox and enters it. Returns the mount
/// points created in the rootfs.
pub(crate) fn enter(spec: &Spec, etc: &EtcFiles, console: Option<&Path>) -> Result<Vec<PathBuf>> {
    let wants_mounts = !spec.mounts.is_empty() || !spec.tmpfs.is_empty();
    match spec.isolation {
        Isolation::Namespace => Err(Error::setup(
            "entering the root filesystem",
            "namespace isolation is set up by the namespaced sandbox",
        )),
        Isolation::Chroot => {
            if private_mount_namespace() {
                return mounts::setup_in(spec, etc, console, false, mounts::Enter::Chroot);
            }
            if wants_mounts {
                return Err(refused_mounts(spec.isolation));
            }
            let created = mounts::write_missing_etc_files(spec, &spec.rootfs)?;
            chroot_into(&spec.rootfs)?;
            Ok(created)
        }
        Isolation::None => {
            let mut created = mounts::write_missing_etc_files(spec, Path::new("/"))?;
            if wants_mounts {
                if !private_mount_namespace() {
                    return Err(refused_mounts(spec.isolation));
                }
                created.extend(mounts::user_mounts_in_place(spec)?);
            }
            Ok(created)
        }
    }
}

fn refused_mounts(isolation: Isolation) -> Error {
    Error::setup(
        format!("bind mounts with {isolation} isolation"),
        "this environment refuses mounts (no CAP_SYS_ADMIN, or a seccomp filter against \
         unshare/mount), so RUN --mount and secrets cannot be provided",
    )
}

pub(crate) fn chroot_into(root: &Path) -> Result<()> {
    chdir(root).step(|| format!("entering {}", root.display()))?;
    chroot(".").step(|| format!("chroot to {}", root.display()))?;
    chdir("/").step(|| "entering /".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_strongest_first() {
        for i in Isolation::ALL {
            assert_eq!(Isolation::parse(i.as_str()), Some(i));
        }
        assert_eq!(Isolation::parse("auto"), None);
        assert_eq!(Isolation::ALL[0], Isolation::Namespace);
        assert!(Isolation::None.probe().is_ok());
    }
}
