//! Image references: `[host[:port]/]path[:tag][@digest]`, validated with Docker's grammar.
//! Names are kept as written (`busybox`, not `docker.io/library/busybox`); only a missing tag is
//! filled in (`latest`). [`Reference::normalized`] gives Docker's full form, which registries and
//! pulled images use.

use crate::digest::Digest;
use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;

pub const DEFAULT_TAG: &str = "latest";
/// The registry of a name without a domain (Docker Hub).
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// Docker Hub's official images live under this namespace (`alpine` is `library/alpine`).
const OFFICIAL_NAMESPACE: &str = "library";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// `host[:port]`, when the first component names a registry.
    domain: Option<String>,
    /// The repository path, `library/busybox` or `busybox`.
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    pub fn parse(input: &str) -> Result<Reference> {
        let bad = |reason: &str| Error::InvalidReference {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(bad("it is empty"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, d)) => (
                rest,
                Some(
                    Digest::parse(d)
                        .map_err(|_| bad("the digest must be sha256:<64 hex digits>"))?,
                ),
            ),
            None => (input, None),
        };
        // A tag follows the last ':' that comes after the last '/' (a ':' before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            validate_tag(tag).map_err(|r| bad(&r))?;
        }
        if name.is_empty() {
            return Err(bad("the repository name is empty"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(bad("the repository name is longer than 255 characters"));
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.')
                    || first.contains(':')
                    || first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                validate_domain(first).map_err(|r| bad(&r))?;
                (Some(first.to_string()), rest)
            }
            _ => (None, name),
        };
        for component in path.split('/') {
            validate_path_component(component).map_err(|r| bad(&r))?;
        }
        Ok(Reference {
            domain,
            path: path.to_string(),
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// The repository name with its domain: `localhost:5000/app`, `busybox`.
    pub fn name(&self) -> String {
        match &self.domain {
            Some(d) => format!("{d}/{}", self.path),
            None => self.path.clone(),
        }
    }

    pub fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The same reference with `latest` filled in when it has neither tag nor digest.
    pub fn with_default_tag(mut self) -> Reference {
        if self.tag.is_none() && self.digest.is_none() {
            self.tag = Some(DEFAULT_TAG.to_string());
        }
        self
    }

    pub fn with_tag(mut self, tag: &str) -> Result<Reference> {
        validate_tag(tag).map_err(|reason| Error::InvalidReference {
            input: tag.to_string(),
            reason,
        })?;
        self.tag = Some(tag.to_string());
        Ok(self)
    }

    /// The registry host (and port) this reference lives on: its domain, or `docker.io`
    /// (`index.docker.io` is the same registry, and is spelt `docker.io` too).
    pub fn registry(&self) -> &str {
        match self.domain.as_deref() {
            None | Some("index.docker.io") => DEFAULT_REGISTRY,
            Some(domain) => domain,
        }
    }

    /// The repository on its registry: `library/alpine` for Docker Hub's `alpine`.
    pub fn repository(&self) -> String {
        if self.registry() == DEFAULT_REGISTRY && !self.path.contains('/') {
            format!("{OFFICIAL_NAMESPACE}/{}", self.path)
        } else {
            self.path.clone()
        }
    }

    /// Docker's normalised form: registry and repository spelt out, `latest` filled in when
    /// there is neither tag nor digest (`alpine` → `docker.io/library/alpine:latest`).
    pub fn normalized(&self) -> Reference {
        Reference {
            domain: Some(self.registry().to_string()),
            path: self.repository(),
            tag: self.tag.clone(),
            digest: self.digest.clone(),
        }
        .with_default_tag()
    }

    /// The same repository with only `digest` (`name@sha256:…`).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag: None,
            digest: Some(digest),
        }
    }

    /// `name:tag` as the store records it in `org.opencontainers.image.ref.name`
    /// (`latest` when no tag was given; the digest, if any, is not part of a tag).
    pub fn store_tag(&self) -> String {
        format!(
            "{}:{}",
            self.name(),
            self.tag.as_deref().unwrap_or(DEFAULT_TAG)
        )
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = Error;
    fn from_str(s: &str) -> Result<Reference> {
        Reference::parse(s)
    }
}

fn validate_tag(tag: &str) -> std::result::Result<(), String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = tag.chars();
    match chars.next() {
        None => return Err("the tag after ':' is empty".into()),
        Some(c) if !word(c) => {
            return Err("a tag must start with a letter, digit or underscore".into());
        }
        _ => {}
    }
    if !chars.all(|c| word(c) || c == '.' || c == '-') {
        return Err("a tag may only contain letters, digits, '_', '.' and '-'".into());
    }
    if tag.len() > MAX_TAG_LEN {
        return Err("a tag is at most 128 characters".into());
    }
    Ok(())
}

fn validate_domain(domain: &str) -> std::result::Result<(), String> {
    let (host, port) = match domain.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || domain.starts_with('[') => (h, Some(p)),
        _ => (domain, None),
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.len() > 5)
    {
        return Err(format!("{domain:?} has an invalid port"));
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return if !v6.is_empty() && v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            Ok(())
        } else {
            Err(format!("{domain:?} is not a valid IPv6 registry address"))
        };
    }
    let ok = !host.is_empty()
        && host.split('.').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !c.starts_with('-')
                && !c.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("{domain:?} is not a valid registry host"))
    }
}

/// `[a-z0-9]+` joined by `.`, `_`, `__` or any run of `-`.
fn validate_path_component(component: &str) -> std::result::Result<(), String> {
    let err = || {
        Err(format!(
            "{component:?}: repository names use lowercase letters, digits and single separators \
             ('.', '_', '__', '-') between them"
        ))
    };
    let bytes = component.as_bytes();
    if bytes.is_empty() {
        return Err("the repository name has an empty path component".into());
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    let mut expect_alnum = true;
    while i < bytes.len() {
        let b = bytes[i];
        if alnum(b) {
            expect_alnum = false;
            i += 1;
            continue;
        }
        if expect_alnum {
            return err();
        }
        let sep_len = match b {
            b'.' => 1,
            b'_' if bytes.get(i + 1) == Some(&b'_') => 2,
            b'_' => 1,
            b'-' => bytes[i..].iter().take_while(|&&c| c == b'-').count(),
            _ => return err(),
        };
        i += sep_len;
        expect_alnum = true;
    }
    if expect_alnum { err() } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_references() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!((r.name(), r.tag()), ("busybox".to_string(), None));
        assert_eq!(r.store_tag(), "busybox:latest");
        let r = Reference::parse("localhost:5000/team/app:1.2-rc_1").unwrap();
        assert_eq!(r.domain(), Some("localhost:5000"));
        assert_eq!(r.path(), "team/app");
        assert_eq!(r.tag(), Some("1.2-rc_1"));
        assert_eq!(r.to_string(), "localhost:5000/team/app:1.2-rc_1");
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let r = Reference::parse(&format!("ghcr.io/a/b@sha256:{hex}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().unwrap().hex(), hex);
        assert_eq!(
            Reference::parse("a__b/c-----d:x").unwrap().path(),
            "a__b/c-----d"
        );
        assert_eq!(
            Reference::parse("[::1]:5000/x").unwrap().domain(),
            Some("[::1]:5000")
        );
    }

    #[test]
    fn normalises_as_docker_does() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        for (input, full, registry, repository) in [
            (
                "alpine",
                "docker.io/library/alpine:latest",
                "docker.io",
                "library/alpine",
            ),
            (
                "alpine:3",
                "docker.io/library/alpine:3",
                "docker.io",
                "library/alpine",
            ),
            (
                "team/app",
                "docker.io/team/app:latest",
                "docker.io",
                "team/app",
            ),
            (
                "docker.io/alpine",
                "docker.io/library/alpine:latest",
                "docker.io",
                "library/alpine",
            ),
            (
                "index.docker.io/library/alpine:1",
                "docker.io/library/alpine:1",
                "docker.io",
                "library/alpine",
            ),
            (
                "localhost:5000/x",
                "localhost:5000/x:latest",
                "localhost:5000",
                "x",
            ),
            ("localhost/x:2", "localhost/x:2", "localhost", "x"),
            (
                "127.0.0.1:5000/a/b:1",
                "127.0.0.1:5000/a/b:1",
                "127.0.0.1:5000",
                "a/b",
            ),
            ("[::1]:5000/x", "[::1]:5000/x:latest", "[::1]:5000", "x"),
            ("ghcr.io/o/r", "ghcr.io/o/r:latest", "ghcr.io", "o/r"),
        ] {
            let r = Reference::parse(input).unwrap();
            assert_eq!(r.normalized().to_string(), full, "{input}");
            assert_eq!(r.registry(), registry, "{input}");
            assert_eq!(r.repository(), repository, "{input}");
        }
        let pinned = Reference::parse(&format!("alpine@sha256:{hex}")).unwrap();
        assert_eq!(
            pinned.normalized().to_string(),
            format!("docker.io/library/alpine@sha256:{hex}")
        );
        let both = Reference::parse(&format!("alpine:3@sha256:{hex}")).unwrap();
        assert_eq!(
            both.normalized().to_string(),
            format!("docker.io/library/alpine:3@sha256:{hex}")
        );
        assert_eq!(both.with_digest(pinned.digest().unwrap().clone()), pinned);
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "Busybox",
            "busy box",
            "app:",
            "app:-x",
            ":tag",
            "a//b",
            "a/",
            "-a",
            "a-",
            "a..b",
            "a___b",
            "app@sha256:123",
            "bad host:1/x",
            "localhost:port/x",
            "../etc",
            "a/../b",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} must be refused");
        }
        let long = format!("app:{}", "x".repeat(129));
        assert!(Reference::parse(&long).is_err());
    }
}
