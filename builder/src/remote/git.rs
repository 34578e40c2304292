//! `ADD https://host/repo.git#ref:subdir`: a git repository checked out with the `git` on PATH.
//!
//! The ref (a branch, a tag or a commit; the remote's HEAD when none is given) is fetched with
//! depth 1 and checked out, submodules included; a commit the server will not hand out alone
//! is found in a full fetch. Without `--keep-git-dir` the checkout's `.git` is removed. Files
//! keep the time they were checked out at, except with `SOURCE_DATE_EPOCH`, where they take
//! the commit's time (as BuildKit does). `--checksum` names the commit the ref must resolve to
//! (its full hash or a prefix of at least 7 digits). `git@` and `ssh://` repositories are
//! reached through the build's default SSH agent (`--ssh default`) when it has one.

use super::FetchOptions;
use crate::error::{Error, Result};
use std::path::Path;
use std::process::{Command, Stdio};

/// A git source: where the repository is, which ref, which directory of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitUrl {
    /// The repository as git is given it (the URL without its `#fragment`).
    pub remote: String,
    pub reference: Option<String>,
    pub subdir: Option<String>,
}

impl GitUrl {
    /// A git source as BuildKit recognises one: `git://`, `ssh://`, `git@host:path`, or an
    /// `http(s)://` URL whose path ends in `.git`; `#ref:subdir` after it.
    pub fn parse(source: &str) -> Option<GitUrl> {
        let (remote, fragment) = match source.split_once('#') {
            Some((remote, fragment)) => (remote, Some(fragment)),
            None => (source, None),
        };
        let lower = remote.to_ascii_lowercase();
        let is_git = lower.starts_with("git://")
            || lower.starts_with("ssh://")
            || lower.starts_with("git@")
            || ((lower.starts_with("http://") || lower.starts_with("https://"))
                && lower
                    .split('?')
                    .next()
                    .is_some_and(|p| p.trim_end_matches('/').ends_with(".git")));
        if !is_git {
            return None;
        }
        let (reference, subdir) = match fragment {
            None => (None, None),
            Some(f) => match f.split_once(':') {
                Some((r, s)) => (Some(r), Some(s)),
                None => (Some(f), None),
            },
        };
        let some = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_string);
        Some(GitUrl {
            remote: remote.to_string(),
            reference: some(reference),
            subdir: some(subdir).filter(|s| !s.trim_matches('/').is_empty()),
        })
    }
}

/// Checks `url` out into the empty directory `dest`.
pub fn fetch(
    url: &GitUrl,
    dest: &Path,
    checksum: Option<&str>,
    options: FetchOptions<'_>,
) -> Result<()> {
    let fail = |message: String| Error::Remote {
        url: url.remote.clone(),
        message,
    };
    if let Some(sub) = &url.subdir
        && sub.split('/').any(|c| c == "..")
    {
        return Err(fail(format!(
            "subdirectory {sub:?} climbs out of the repository"
        )));
    }
    let git = |args: &[&str]| run_git(dest, args, options.ssh_agent).map_err(&fail);
    git(&["init", "--quiet"])?;
    git(&["remote", "add", "origin", &url.remote])?;
    let wanted = url.reference.as_deref().unwrap_or("HEAD");
    if let Err(shallow) = git(&[
        "fetch",
        "--quiet",
        "--depth=1",
        "--no-tags",
        "origin",
        wanted,
    ]) {
        // A commit that is not the tip of a ref: servers may refuse it alone.
        if !looks_like_commit(wanted) {
            return Err(shallow);
        }
        git(&["fetch", "--quiet", "--tags", "origin"])?;
        git(&[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{wanted}^{{commit}}"),
        ])
        .map_err(|_| fail(format!("the repository has no commit {wanted}")))?;
        git(&["checkout", "--quiet", "--detach", wanted])?;
    } else {
        git(&["checkout", "--quiet", "--detach", "FETCH_HEAD"])?;
    }
    let commit = git(&["rev-parse", "HEAD"])?;
    if let Some(expected) = checksum {
        let expected = expected.trim().to_ascii_lowercase();
        if expected.len() < 7 || !commit.starts_with(&expected) {
            return Err(fail(format!(
                "checksum mismatch: --checksum={expected} but {wanted} is commit {commit}"
            )));
        }
    }
    if dest.join(".gitmodules").exists() {
        git(&[
            "submodule",
            "update",
            "--quiet",
            "--init",
            "--recursive",
            "--depth=1",
        ])?;
    }
    if let Some(sub) = &url.subdir {
        let path = dest.join(sub.trim_matches('/'));
        if !path.is_dir() {
            return Err(fail(format!("{wanted} has no directory {sub:?}")));
        }
    }
    if options.reproducible {
        let time: i64 = git(&["log", "-1", "--format=%ct", "HEAD"])?
            .parse()
            .map_err(|_| fail("git log gave no commit time".to_string()))?;
        set_times(dest, time)?;
    }
    if !options.keep_git_dir {
        let dot_git = dest.join(".git");
        std::fs::remove_dir_all(&dot_git).map_err(|e| Error::io(&dot_git, e))?;
    }
    Ok(())
}

fn looks_like_commit(reference: &str) -> bool {
    (7..=64).contains(&reference.len()) && reference.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Runs git in `dir` without prompting; its trimmed stdout, or its stderr as the error.
fn run_git(
    dir: &Path,
    args: &[&str],
    ssh_agent: Option<&Path>,
) -> std::result::Result<String, String> {
    let mut command = Command::new("git");
    if let Some(agent) = ssh_agent {
        command.env("SSH_AUTH_SOCK", agent);
    }
    let output = command
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                "git is not installed: ADD of a git repository runs the git on PATH".to_string()
            }
            _ => format!("running git: {e}"),
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        return Err(format!("git {} failed: {last}", args[0]));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Sets the mtime of everything below `root` (symlinks themselves, not their targets).
fn set_times(root: &Path, secs: i64) -> Result<()> {
    let time = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let times = rustix::fs::Timestamps {
        last_access: time,
        last_modification: time,
    };
    // Children before their directory, whose mtime each change would move again.
    for entry in walkdir::WalkDir::new(root).contents_first(true) {
        let entry = entry.map_err(|e| Error::io(root, e.into()))?;
        rustix::fs::utimensat(
            rustix::fs::CWD,
            entry.path(),
            &times,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| Error::io(entry.path(), e.into()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_sources_parse_with_their_ref_and_subdir() {
        let url = GitUrl::parse("https://example.com/org/repo.git#v1.2:docs/site")
            .unwrap_or_else(|| panic!("a git url"));
        assert_eq!(url.remote, "https://example.com/org/repo.git");
        assert_eq!(url.reference.as_deref(), Some("v1.2"));
        assert_eq!(url.subdir.as_deref(), Some("docs/site"));
        let url =
            GitUrl::parse("git@example.com:org/repo.git").unwrap_or_else(|| panic!("a git url"));
        assert_eq!((url.reference, url.subdir), (None, None));
        let url = GitUrl::parse("git://127.0.0.1:9418/repo.git#:sub")
            .unwrap_or_else(|| panic!("a git url"));
        assert_eq!((url.reference, url.subdir.as_deref()), (None, Some("sub")));
        assert_eq!(GitUrl::parse("https://example.com/file.tar.gz"), None);
        assert_eq!(GitUrl::parse("dir/repo.git"), None);
    }

    #[test]
    fn commits_are_told_from_branch_names() {
        assert!(looks_like_commit("0123abc"));
        assert!(!looks_like_commit("main"));
        assert!(!looks_like_commit("abc"));
    }
}
