//! Which namespaces a sandbox gets, and the uid/gid mapping of its user namespace when kiln runs
//! without root.
//!
//! Rootless runs map the caller to root inside. Where `/etc/subuid` and `/etc/subgid` grant the
//! caller subordinate ranges and `newuidmap`/`newgidmap` are installed, those ranges become ids
//! 1… inside (so `USER app` works); otherwise only the single id 0 exists inside.

use nix::sched::CloneFlags;
use nix::unistd::{Gid, Pid, Uid};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};
use crate::spec::{Network, Spec};

/// Namespaces every sandbox gets, plus a network namespace for `Network::None` and a user
/// namespace when not root. They are created together by one `clone`, so the user namespace
/// (created first by the kernel) owns all the others.
pub(crate) fn clone_flags(spec: &Spec, rootless: bool) -> CloneFlags {
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    if spec.network == Network::None {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if rootless {
        flags |= CloneFlags::CLONE_NEWUSER;
    }
    flags
}

/// A subordinate id range: `start`, `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Range {
    pub start: u32,
    pub count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IdMapping {
    /// Only the caller, as id 0. `setgroups` is denied in such a namespace (the kernel demands
    /// it for an unprivileged gid map).
    Single { uid: u32, gid: u32 },
    /// The caller as 0 and the subordinate ranges as 1…count, written by the setuid helpers.
    Subordinate {
        uid: u32,
        gid: u32,
        uids: Range,
        gids: Range,
        newuidmap: PathBuf,
        newgidmap: PathBuf,
    },
}

impl IdMapping {
    /// The mapping for the calling user.
    pub(crate) fn for_caller() -> IdMapping {
        let uid = Uid::current().as_raw();
        let gid = Gid::current().as_raw();
        let name = fs::read_to_string("/etc/passwd")
            .ok()
            .and_then(|p| crate::user::name_of_uid(&p, uid));
        let subuid = fs::read_to_string("/etc/subuid").unwrap_or_default();
        let subgid = fs::read_to_string("/etc/subgid").unwrap_or_default();
        let uids = parse_subid(&subuid, name.as_deref(), uid);
        let gids = parse_subid(&subgid, name.as_deref(), uid);
        match (
            uids,
            gids,
            find_program("newuidmap"),
            find_program("newgidmap"),
        ) {
            (Some(uids), Some(gids), Some(newuidmap), Some(newgidmap)) => IdMapping::Subordinate {
                uid,
                gid,
                uids,
                gids,
                newuidmap,
                newgidmap,
            },
            _ => IdMapping::Single { uid, gid },
        }
    }

    pub(crate) fn allows_setgroups(&self) -> bool {
        matches!(self, IdMapping::Subordinate { .. })
    }

    /// Writes the maps of `pid`'s user namespace, from outside it.
    pub(crate) fn apply(&self, pid: Pid) -> Result<()> {
        match self {
            IdMapping::Single { uid, gid } => {
                let proc = PathBuf::from(format!("/proc/{pid}"));
                write_proc(&proc.join("uid_map"), &format!("0 {uid} 1\n"))?;
                write_proc(&proc.join("setgroups"), "deny")?;
                write_proc(&proc.join("gid_map"), &format!("0 {gid} 1\n"))
            }
            IdMapping::Subordinate {
                uid,
                gid,
                uids,
                gids,
                newuidmap,
                newgidmap,
            } => {
                run_map_helper(newuidmap, pid, *uid, *uids)?;
                run_map_helper(newgidmap, pid, *gid, *gids)
            }
        }
    }
}

fn write_proc(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(|e| Error::setup(format!("writing {}", path.display()), e))
}

fn run_map_helper(program: &Path, pid: Pid, id: u32, range: Range) -> Result<()> {
    let step = || format!("{} for pid {pid}", program.display());
    let out = Command::new(program)
        .args([
            pid.to_string(),
            "0".into(),
            id.to_string(),
            "1".into(),
            "1".into(),
            range.start.to_string(),
            range.count.to_string(),
        ])
        .output()
        .map_err(|e| Error::setup(step(), e))?;
    if !out.status.success() {
        return Err(Error::setup(
            step(),
            String::from_utf8_lossy(&out.stderr).trim(),
        ));
    }
    Ok(())
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The first range `/etc/subuid` (or `/etc/subgid`) grants to the user, by name or by uid.
pub(crate) fn parse_subid(text: &str, name: Option<&str>, uid: u32) -> Option<Range> {
    let uid_text = uid.to_string();
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .find_map(|line| {
            let mut f = line.trim().split(':');
            let owner = f.next()?;
            let start = f.next()?.parse().ok()?;
            let count: u32 = f.next()?.parse().ok()?;
            let mine = owner == uid_text || Some(owner) == name;
            (mine && count > 0).then_some(Range { start, count })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subid_ranges_match_name_or_uid() {
        let text = "# ranges\nalice:100000:65536\n1001:200000:1000\nbob:x:1\nzero:300000:0\n";
        assert_eq!(
            parse_subid(text, Some("alice"), 1000),
            Some(Range {
                start: 100000,
                count: 65536
            })
        );
        assert_eq!(
            parse_subid(text, Some("carol"), 1001),
            Some(Range {
                start: 200000,
                count: 1000
            })
        );
        assert_eq!(parse_subid(text, Some("bob"), 1002), None);
        assert_eq!(parse_subid(text, Some("zero"), 1003), None);
        assert_eq!(parse_subid("", None, 0), None);
    }

    #[test]
    fn network_none_gets_its_own_namespace() {
        let mut spec = Spec::new("/r", vec!["true".into()]);
        let flags = clone_flags(&spec, false);
        assert!(flags.contains(CloneFlags::CLONE_NEWNET));
        assert!(!flags.contains(CloneFlags::CLONE_NEWUSER));
        spec.network = Network::Host;
        let flags = clone_flags(&spec, true);
        assert!(!flags.contains(CloneFlags::CLONE_NEWNET));
        assert!(flags.contains(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWPID));
    }
}
