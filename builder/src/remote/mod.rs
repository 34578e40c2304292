//! ADD sources from outside the build context: files over HTTP(S) and git repositories.
//!
//! Every remote source of one ADD is fetched into a directory of its own below the store's
//! `tmp/`; the copy then reads that directory as it reads an image's root, so destinations,
//! `--chown` and `--chmod` work as for any other source. The cache key of the step is made from
//! what was fetched (its content digests), so a URL whose content changed runs the step again
//! and one that did not is answered from the cache. As BuildKit does, remote sources are fetched
//! on every build to learn that.

pub mod git;
pub mod http;

use crate::copy::CopySpec;
use crate::error::{Error, Result};
use std::path::Path;

/// What kind of remote source a word of ADD is, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    /// A file over `http://` or `https://`.
    Http(String),
    /// A git repository (`https://host/repo.git#ref:subdir`, `git://…`, `git@host:repo`).
    Git(git::GitUrl),
}

impl Remote {
    /// `None` for a path in the build context. A git URL is recognised before an HTTP one:
    /// `https://host/repo.git` is a repository.
    pub fn parse(source: &str) -> Option<Remote> {
        if let Some(url) = git::GitUrl::parse(source) {
            return Some(Remote::Git(url));
        }
        let lower = source.to_ascii_lowercase();
        (lower.starts_with("http://") || lower.starts_with("https://"))
            .then(|| Remote::Http(source.to_string()))
    }
}

/// The remote sources of one ADD, fetched: a directory that holds them and the spec that
/// copies them from it.
pub struct Fetched {
    pub dir: tempfile::TempDir,
    /// The ADD with each source replaced by its place in `dir`.
    pub spec: CopySpec,
}

/// How an ADD's remote sources are fetched.
#[derive(Debug, Clone, Copy, Default)]
pub struct FetchOptions<'a> {
    /// `--keep-git-dir`: keep `.git` in a repository's checkout.
    pub keep_git_dir: bool,
    /// `SOURCE_DATE_EPOCH` is set: files of a checkout take the commit's time.
    pub reproducible: bool,
    /// The build's default SSH agent (`--ssh default`), which git uses for `git@` and
    /// `ssh://` repositories, as BuildKit does.
    pub ssh_agent: Option<&'a Path>,
}

/// Fetches the remote sources of `spec` into a new directory under `tmp`; `None` when it has
/// none. An ADD may not mix remote sources with context paths (what it would do with them
/// together differs between builders).
pub fn fetch(spec: &CopySpec, tmp: &Path, options: FetchOptions<'_>) -> Result<Option<Fetched>> {
    if !spec.is_add {
        return Ok(None);
    }
    let remotes: Vec<Option<Remote>> = spec.sources.iter().map(|s| Remote::parse(s)).collect();
    if remotes.iter().all(Option::is_none) {
        return Ok(None);
    }
    let invalid = |reason: String| Error::CopyInvalid {
        instruction: "ADD",
        reason,
    };
    if let Some(local) = spec
        .sources
        .iter()
        .zip(&remotes)
        .find_map(|(s, r)| r.is_none().then_some(s))
    {
        return Err(invalid(format!(
            "{local:?} is a path in the build context and another source is a URL; \
             use one ADD for the URLs and another for the local files"
        )));
    }
    if spec.checksum.is_some() && spec.sources.len() != 1 {
        return Err(invalid(
            "checksum can't be specified for multiple sources".into(),
        ));
    }
    let dir = tempfile::Builder::new()
        .prefix("add-")
        .tempdir_in(tmp)
        .map_err(|e| Error::io(tmp, e))?;
    let mut sources = Vec::with_capacity(remotes.len());
    for (i, remote) in remotes.into_iter().flatten().enumerate() {
        let slot = dir.path().join(i.to_string());
        std::fs::create_dir(&slot).map_err(|e| Error::io(&slot, e))?;
        let place = match remote {
            Remote::Http(url) => {
                let name = http::fetch(&url, &slot, spec.checksum.as_deref())?;
                format!("{i}/{name}")
            }
            Remote::Git(url) => {
                git::fetch(&url, &slot, spec.checksum.as_deref(), options)?;
                match &url.subdir {
                    Some(sub) => format!("{i}/{}", sub.trim_matches('/')),
                    None => i.to_string(),
                }
            }
        };
        sources.push(place);
    }
    let spec = CopySpec {
        sources,
        checksum: None,
        // Remote archives are copied as they are unless `--unpack=true` asks otherwise.
        unpack: Some(spec.unpack.unwrap_or(false)),
        ..spec.clone()
    };
    Ok(Some(Fetched { dir, spec }))
}

/// The selection of fetched sources: read from the fetch directory, owned by root (or
/// `--chown`) rather than by whoever fetched them.
pub fn select(fetched: &Fetched) -> Result<crate::copy::Selection> {
    let mut selection = crate::copy::select(
        &fetched.spec,
        &crate::copy::SourceRoot::Dir(fetched.dir.path()),
    )?;
    selection.keep_owner = false;
    Ok(selection)
}

/// An error's message followed by its causes (`error sending request: …: connection refused`).
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_classified_as_buildkit_does() {
        assert!(matches!(
            Remote::parse("https://example.com/a.tar.gz"),
            Some(Remote::Http(_))
        ));
        assert!(matches!(
            Remote::parse("https://example.com/repo.git#main"),
            Some(Remote::Git(_))
        ));
        assert!(matches!(
            Remote::parse("git@example.com:org/repo.git"),
            Some(Remote::Git(_))
        ));
        assert_eq!(Remote::parse("src/file.txt"), None);
        assert_eq!(Remote::parse("./https://x"), None);
    }

    #[test]
    fn urls_and_context_paths_do_not_mix() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let spec = CopySpec {
            sources: vec!["a.txt".into(), "http://127.0.0.1:9/b".into()],
            dest: "/x/".into(),
            is_add: true,
            ..CopySpec::default()
        };
        let err = fetch(&spec, tmp.path(), FetchOptions::default())
            .err()
            .unwrap_or_else(|| panic!("refused"));
        assert!(err.to_string().contains("\"a.txt\" is a path"), "{err}");
        let copy = CopySpec {
            is_add: false,
            ..spec
        };
        assert!(matches!(
            fetch(&copy, tmp.path(), FetchOptions::default()),
            Ok(None)
        ));
    }
}
