//! `ADD https://…`: one file over HTTP(S), as BuildKit fetches it.
//!
//! The file is named after the last segment of the URL's path (`__unnamed__` when it has
//! none), gets mode 0600 and the server's `Last-Modified` time (the epoch without one), and is
//! verified against `--checksum` when that is given. Redirects are followed up to
//! [`MAX_REDIRECTS`]; `KILN_HTTP_TIMEOUT` (seconds, 600 by default) bounds the whole transfer.

use super::chain;
use crate::error::{Error, Result};
use sha2::Digest as _;
use std::io::{Read, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;
use std::time::Duration;

pub const MAX_REDIRECTS: usize = 10;
const DEFAULT_TIMEOUT_SECS: u64 = 600;

/// Downloads `url` into `dir`; returns the file's name there.
pub fn fetch(url: &str, dir: &Path, checksum: Option<&str>) -> Result<String> {
    let fail = |message: String| Error::Remote {
        url: url.to_string(),
        message,
    };
    let expected = checksum.map(Checksum::parse).transpose().map_err(fail)?;
    let timeout = std::env::var("KILN_HTTP_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(DEFAULT_TIMEOUT_SECS);
    kiln_oci::registry::install_tls_provider();
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
        .connect_timeout(Duration::from_secs(timeout.min(30)))
        .timeout(Duration::from_secs(timeout))
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| fail(chain(&e)))?;
    let describe = |e: reqwest::Error| {
        fail(if e.is_timeout() {
            format!("timed out after {timeout}s (KILN_HTTP_TIMEOUT sets the limit in seconds)")
        } else if e.is_redirect() {
            format!("more than {MAX_REDIRECTS} redirects")
        } else if e.is_connect() {
            format!("could not connect: {}", chain(&e))
        } else {
            chain(&e)
        })
    };
    let mut response = client.get(url).send().map_err(describe)?;
    let status = response.status();
    if !status.is_success() {
        return Err(fail(format!("the server answered {status}")));
    }
    let mtime = response
        .headers()
        .get(reqwest::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date)
        .unwrap_or(0);
    let name = file_name(url);
    let path = dir.join(&name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    let mut hasher = expected.as_ref().map(Checksum::hasher);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match response.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(fail(
                    match e.get_ref().and_then(|inner| {
                        inner
                            .downcast_ref::<reqwest::Error>()
                            .map(reqwest::Error::is_timeout)
                    }) {
                        Some(true) => format!(
                            "timed out after {timeout}s (KILN_HTTP_TIMEOUT sets the limit in seconds)"
                        ),
                        _ => format!("reading the response: {}", chain(&e)),
                    },
                ));
            }
        };
        if let Some(h) = hasher.as_mut() {
            h.update(&buf[..n]);
        }
        file.write_all(&buf[..n]).map_err(|e| Error::io(&path, e))?;
    }
    if let (Some(expected), Some(hasher)) = (&expected, hasher) {
        let got = hasher.finish();
        if got != expected.hex {
            return Err(fail(format!(
                "checksum mismatch: --checksum={}:{} but the content is {}:{got}",
                expected.algorithm, expected.hex, expected.algorithm
            )));
        }
    }
    // The umask may have taken bits away from the mode: BuildKit's file is exactly 0600.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(&path, e))?;
    let time = rustix::fs::Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    rustix::fs::futimens(
        &file,
        &rustix::fs::Timestamps {
            last_access: time,
            last_modification: time,
        },
    )
    .map_err(|e| Error::io(&path, e.into()))?;
    Ok(name)
}

/// The last segment of the URL's path, as BuildKit's Dockerfile frontend names the file.
pub fn file_name(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let path = rest.find('/').map_or("", |at| &rest[at..]);
    match path.trim_end_matches('/').rsplit('/').next() {
        Some(base) if !base.is_empty() && base != "." && base != ".." => base.to_string(),
        _ => "__unnamed__".to_string(),
    }
}

/// `--checksum=ALGORITHM:HEX`.
struct Checksum {
    algorithm: &'static str,
    hex: String,
}

enum Hasher {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Checksum {
    fn parse(text: &str) -> std::result::Result<Checksum, String> {
        let (algorithm, hex) = text.split_once(':').unwrap_or(("", text));
        let (algorithm, len) = match algorithm {
            "sha256" => ("sha256", 64),
            "sha384" => ("sha384", 96),
            "sha512" => ("sha512", 128),
            _ => {
                return Err(format!(
                    "invalid checksum {text:?}: expected sha256:, sha384: or sha512: and the \
                     digest in hex"
                ));
            }
        };
        if hex.len() != len || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "invalid checksum {text:?}: a {algorithm} digest is {len} hex digits"
            ));
        }
        Ok(Checksum {
            algorithm,
            hex: hex.to_ascii_lowercase(),
        })
    }

    fn hasher(&self) -> Hasher {
        match self.algorithm {
            "sha384" => Hasher::Sha384(sha2::Sha384::new()),
            "sha512" => Hasher::Sha512(sha2::Sha512::new()),
            _ => Hasher::Sha256(sha2::Sha256::new()),
        }
    }
}

impl Hasher {
    fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha384(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    fn finish(self) -> String {
        match self {
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha384(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
        }
    }
}

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`, the form servers send) as seconds since the
/// epoch.
pub fn parse_http_date(text: &str) -> Option<i64> {
    let mut words = text.split_whitespace();
    let _weekday = words.next()?;
    let day: u32 = words.next()?.parse().ok()?;
    let month = match words.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: u32 = words.next()?.parse().ok()?;
    let time = words.next()?;
    if words.next()? != "GMT" {
        return None;
    }
    kiln_oci::config::parse_rfc3339(&format!("{year:04}-{month:02}-{day:02}T{time}Z"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_named_after_the_url_path() {
        assert_eq!(file_name("https://h/a/b/tool.tar.gz"), "tool.tar.gz");
        assert_eq!(file_name("https://h/a/b?x=1#f"), "b");
        assert_eq!(file_name("https://h/dir/"), "dir");
        assert_eq!(file_name("https://h"), "__unnamed__");
        assert_eq!(file_name("https://h/"), "__unnamed__");
    }

    #[test]
    fn http_dates_parse() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("yesterday"), None);
    }

    #[test]
    fn checksums_name_an_algorithm_and_a_full_digest() {
        assert!(Checksum::parse(&format!("sha256:{}", "a".repeat(64))).is_ok());
        assert!(Checksum::parse(&format!("sha512:{}", "A".repeat(128))).is_ok());
        assert!(Checksum::parse("sha256:abc").is_err());
        assert!(Checksum::parse(&format!("md5:{}", "a".repeat(32))).is_err());
    }
}
