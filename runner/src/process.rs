//! The last steps before the command runs: who it runs as, where, with which environment, with
//! which capabilities, and the `execve` itself.

use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, signal, sigprocmask};
use nix::unistd::{Gid, Uid, chdir, execve, setgroups, setresgid, setresuid};
use std::ffi::CString;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::capabilities;
use crate::error::{Error, Result, SetupContext};
use crate::spec::Spec;
use crate::user::{self, ExecUser};

/// Resolves the spec's user against the sandbox's own `/etc/passwd` and `/etc/group` (run after
/// `pivot_root`, so links in the image resolve inside it). Missing files are empty: numeric ids
/// still work, as with docker.
pub(crate) fn resolve_user(spec: &Spec) -> Result<ExecUser> {
    let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
    Ok(user::resolve(
        &spec.user,
        &read("/etc/passwd"),
        &read("/etc/group"),
    )?)
}

/// Creates the working directory when missing (root-owned, 0755), as docker does for `-w` and
/// `WORKDIR`.
pub(crate) fn ensure_cwd(cwd: &Path) -> Result<()> {
    if cwd.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(cwd)
        .step(|| format!("creating the working directory {}", cwd.display()))
}

/// Switches to the user and reduces capabilities to docker's default set, then forbids gaining
/// privileges through setuid binaries or file capabilities.
///
/// The order matters: the bounding set can only be reduced while CAP_SETPCAP is effective, and
/// keep-caps must be on across `setresuid` or a non-root user loses every capability at once.
pub(crate) fn drop_privileges(user: &ExecUser, allows_setgroups: bool) -> Result<()> {
    capabilities::limit_bounding_set()?;
    nix::sys::prctl::set_keepcaps(true).step(|| "prctl(PR_SET_KEEPCAPS)".into())?;
    if allows_setgroups {
        let groups: Vec<Gid> = user.groups.iter().map(|g| Gid::from_raw(*g)).collect();
        setgroups(&groups).step(|| format!("setting supplementary groups {:?}", user.groups))?;
    }
    // Without setgroups (a user namespace with a single mapped id) the process keeps no
    // supplementary groups, as with rootless docker.
    let gid = Gid::from_raw(user.gid);
    setresgid(gid, gid, gid).map_err(unmapped("gid", user.gid))?;
    let uid = Uid::from_raw(user.uid);
    setresuid(uid, uid, uid).map_err(unmapped("uid", user.uid))?;
    capabilities::apply_process_sets()?;
    nix::sys::prctl::set_keepcaps(false).step(|| "prctl(PR_SET_KEEPCAPS)".into())?;
    nix::sys::prctl::set_no_new_privs().step(|| "prctl(PR_SET_NO_NEW_PRIVS)".into())
}

fn unmapped(what: &'static str, id: u32) -> impl Fn(nix::Error) -> Error {
    move |e| {
        let hint = if e == nix::Error::EINVAL {
            " (the id is not mapped in this user namespace: rootless runs need \
             /etc/subuid and /etc/subgid ranges for other users)"
        } else {
            ""
        };
        Error::setup(
            format!("switching to {what} {id}"),
            format!("{}{hint}", e.desc()),
        )
    }
}

pub(crate) fn enter_cwd(cwd: &Path) -> Result<()> {
    chdir(cwd).step(|| format!("entering the working directory {}", cwd.display()))
}

/// Restores default signal handling: the runner blocks signals it reads through signalfd, and
/// an ignored disposition (Rust ignores SIGPIPE) would survive `execve` into the command.
pub(crate) fn reset_signals() {
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: installing SIG_DFL runs no code of ours in signal context.
        let _ = unsafe { signal(sig, SigHandler::SigDfl) };
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// Finds the program like docker does: a name with a `/` is used as is, anything else is looked
/// up in the `PATH` of the process's environment (not the runner's).
pub(crate) fn find_program(argv0: &str, env: &[String]) -> Result<PathBuf> {
    if argv0.contains('/') {
        return Ok(PathBuf::from(argv0));
    }
    let path = Spec::env_value(env, "PATH").unwrap_or("");
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(argv0);
        if let Ok(meta) = fs::metadata(&candidate)
            && meta.is_file()
            && meta.permissions().mode() & 0o111 != 0
        {
            return Ok(candidate);
        }
    }
    Err(Error::Exec {
        program: argv0.to_string(),
        reason: "executable file not found in $PATH".into(),
        not_found: true,
    })
}

fn cstrings(items: &[String]) -> Result<Vec<CString>> {
    items
        .iter()
        .map(|s| {
            CString::new(s.as_bytes())
                .map_err(|_| Error::InvalidSpec(format!("{s:?} contains a NUL byte")))
        })
        .collect()
}

/// Replaces this process with the command. Only returns on failure.
pub(crate) fn exec(argv: &[String], env: &[String]) -> Error {
    let Some(argv0) = argv.first() else {
        return Error::InvalidSpec("no command given".into());
    };
    let program = match find_program(argv0, env) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let (args, envs) = match (cstrings(argv), cstrings(env)) {
        (Ok(a), Ok(e)) => (a, e),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let Ok(path) = CString::new(program.as_os_str().as_encoded_bytes()) else {
        return Error::InvalidSpec(format!("{} contains a NUL byte", program.display()));
    };
    reset_signals();
    let errno = match execve(&path, &args, &envs) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    Error::Exec {
        program: argv0.clone(),
        reason: errno.desc().to_string(),
        not_found: errno == nix::Error::ENOENT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_lookup_uses_the_process_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("tool");
        fs::write(&bin, "#!/bin/sh\n").expect("write");
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).expect("chmod");
        let plain = dir.path().join("plain");
        fs::write(&plain, "data").expect("write");
        let env = vec![format!("PATH=/nonexistent:{}", dir.path().display())];
        assert_eq!(find_program("tool", &env).expect("found"), bin);
        assert!(matches!(
            find_program("plain", &env),
            Err(Error::Exec {
                not_found: true,
                ..
            })
        ));
        assert!(find_program("tool", &[]).is_err());
        assert_eq!(
            find_program("./x/y", &env).expect("path"),
            PathBuf::from("./x/y")
        );
    }

    #[test]
    fn cwd_is_created_when_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cwd = dir.path().join("a/b/c");
        ensure_cwd(&cwd).expect("create");
        assert!(cwd.is_dir());
        ensure_cwd(&cwd).expect("exists");
    }
}
