//! kiln's registry settings: which registries are reached over plain HTTP and which mirrors
//! stand in for Docker Hub.
//!
//! Read from `$KILN_CONFIG` when it is set; otherwise from `/etc/kiln/config.json` and then
//! `$XDG_CONFIG_HOME/kiln/config.json` (`~/.config/kiln/config.json`), the lists of both
//! combined. A missing file is no error; a malformed one is. The keys are dockerd's:
//!
//! ```json
//! { "insecure-registries": ["registry.lan:5000"], "registry-mirrors": ["https://mirror.lan"] }
//! ```

use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Where registries are and how to reach them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RegistryConfig {
    /// `host[:port]` of registries reached over plain HTTP (besides the loopback ones, which
    /// always are).
    #[serde(default)]
    pub insecure_registries: Vec<String>,
    /// Mirrors of Docker Hub (`https://mirror.example` or `host:port`), tried in order before
    /// Docker Hub itself when pulling.
    #[serde(default)]
    pub registry_mirrors: Vec<String>,
}

impl RegistryConfig {
    /// The configuration files in effect, merged (see the module documentation).
    pub fn load() -> Result<RegistryConfig> {
        let mut config = RegistryConfig::default();
        for path in config_files() {
            if let Some(file) = RegistryConfig::read(&path)? {
                config.merge(file);
            }
        }
        Ok(config)
    }

    /// One configuration file; `None` when it does not exist.
    pub fn read(path: &Path) -> Result<Option<RegistryConfig>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::json(path.display().to_string(), e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Adds `other`'s registries to these.
    pub fn merge(&mut self, other: RegistryConfig) {
        for host in other.insecure_registries {
            self.add_insecure(&host);
        }
        for mirror in other.registry_mirrors {
            // A mirror written as http://… is spoken to over plain HTTP.
            if mirror.starts_with("http://") {
                self.add_insecure(&mirror);
            }
            if !self.registry_mirrors.contains(&mirror) {
                self.registry_mirrors.push(mirror);
            }
        }
    }

    /// Marks a registry as reached over plain HTTP (`--insecure-registry`).
    pub fn add_insecure(&mut self, host: &str) {
        let host = strip_scheme(host).trim_end_matches('/').to_string();
        if !self.insecure_registries.contains(&host) {
            self.insecure_registries.push(host);
        }
    }

    /// Whether `registry` (`host[:port]`) is spoken to over plain HTTP: loopback addresses
    /// always, others when listed.
    pub fn is_insecure(&self, registry: &str) -> bool {
        let host = host_of(registry);
        matches!(host, "localhost" | "127.0.0.1" | "::1")
            || host.starts_with("127.")
            || self
                .insecure_registries
                .iter()
                .any(|r| r == registry || r == host)
    }

    /// The mirrors' `host[:port]`s, for pulls from Docker Hub.
    pub fn mirror_hosts(&self) -> Vec<String> {
        self.registry_mirrors
            .iter()
            .map(|m| strip_scheme(m).trim_end_matches('/').to_string())
            .filter(|m| !m.is_empty())
            .collect()
    }
}

fn strip_scheme(url: &str) -> &str {
    url.strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url)
}

/// The host of `host[:port]` (`[::1]:5000` → `::1`).
fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.split(':').next().unwrap_or(registry)
}

fn config_files() -> Vec<PathBuf> {
    if let Some(path) = std::env::var_os("KILN_CONFIG").filter(|v| !v.is_empty()) {
        return vec![PathBuf::from(path)];
    }
    let mut files = vec![PathBuf::from("/etc/kiln/config.json")];
    let user_dir = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    if let Some(dir) = user_dir {
        files.push(dir.join("kiln/config.json"));
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_plain_http_others_only_when_listed() {
        let mut config = RegistryConfig::default();
        for r in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:8080",
            "[::1]:5000",
        ] {
            assert!(config.is_insecure(r), "{r}");
        }
        assert!(!config.is_insecure("registry.lan:5000"));
        assert!(!config.is_insecure("docker.io"));
        config.add_insecure("http://registry.lan:5000/");
        assert!(config.is_insecure("registry.lan:5000"));
        assert!(!config.is_insecure("registry.lan:6000"));
        config.add_insecure("other.lan");
        assert!(config.is_insecure("other.lan:443"));
    }

    #[test]
    fn reads_and_merges_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        assert_eq!(RegistryConfig::read(&path).unwrap(), None);
        std::fs::write(
            &path,
            r#"{"insecure-registries":["a:5000"],"registry-mirrors":["https://m.lan/"]}"#,
        )
        .unwrap();
        let mut config = RegistryConfig::read(&path).unwrap().unwrap();
        config.merge(RegistryConfig {
            insecure_registries: vec!["a:5000".into(), "b".into()],
            registry_mirrors: vec![],
        });
        assert_eq!(config.insecure_registries, ["a:5000", "b"]);
        assert_eq!(config.mirror_hosts(), ["m.lan"]);
        assert!(!config.is_insecure("m.lan"));
        config.merge(RegistryConfig {
            insecure_registries: vec![],
            registry_mirrors: vec!["http://plain.lan:5000".into()],
        });
        assert_eq!(config.mirror_hosts(), ["m.lan", "plain.lan:5000"]);
        assert!(config.is_insecure("plain.lan:5000"));
        std::fs::write(&path, "{").unwrap();
        assert!(RegistryConfig::read(&path).is_err());
    }
}
