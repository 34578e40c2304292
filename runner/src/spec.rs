//! What to run and how to confine it. A [`Spec`] is plain data: it crosses into the helper process
//! as JSON, so everything in it is serialisable (paths as raw bytes, since they need not be UTF-8).

use serde::{Deserialize, Serialize};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::isolation::Isolation;

/// The `PATH` a process gets when its environment has none, as docker sets it.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long a process may take to exit after SIGINT/SIGTERM is forwarded before it is killed.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// One process to run in a fresh sandbox over `rootfs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// The prepared root filesystem (a directory, typically an overlay mount).
    #[serde(with = "path_bytes")]
    pub rootfs: PathBuf,
    /// The command and its arguments; `argv[0]` is looked up in the `PATH` of `env`.
    pub argv: Vec<String>,
    /// `KEY=VALUE` entries. `PATH` and `HOME` are added when missing (see [`Spec::effective_env`]).
    pub env: Vec<String>,
    /// Working directory inside the rootfs; created (mode 0755) when missing, as docker does.
    #[serde(with = "path_bytes")]
    pub cwd: PathBuf,
    /// `name|uid[:group|gid]`, resolved against the rootfs's `/etc/passwd` and `/etc/group`.
    /// Empty means root.
    pub user: String,
    pub hostname: String,
    pub network: Network,
    pub mounts: Vec<BindMount>,
    pub tmpfs: Vec<TmpfsMount>,
    pub limits: Limits,
    /// Give the process a pseudo-terminal (relayed to the caller's stdin/stdout).
    pub tty: bool,
    /// Put a small reaping init in front of the command instead of making it PID 1.
    pub init: bool,
    /// Connect the caller's stdin; otherwise the process reads `/dev/null`.
    pub stdin: bool,
    /// Contents of `/etc/hosts`; `None` writes localhost entries and the hostname.
    pub hosts: Option<String>,
    /// Contents of `/etc/resolv.conf`; `None` copies the host's.
    pub resolv_conf: Option<String>,
    /// Contents of `/etc/hostname`; `None` writes `hostname`.
    pub hostname_file: Option<String>,
    /// Grace period between a forwarded SIGINT/SIGTERM and SIGKILL.
    pub stop_timeout: Duration,
    /// How the process is confined (namespaces by default).
    #[serde(default)]
    pub isolation: Isolation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// Share the host's network namespace.
    Host,
    /// A fresh network namespace with only `lo`, brought up.
    None,
}

/// A host path made visible inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    #[serde(with = "path_bytes")]
    pub source: PathBuf,
    /// Absolute path inside the sandbox.
    #[serde(with = "path_bytes")]
    pub target: PathBuf,
    pub readonly: bool,
}

/// A fresh tmpfs inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TmpfsMount {
    #[serde(with = "path_bytes")]
    pub target: PathBuf,
    /// Size in bytes; `None` is the kernel default (half of RAM).
    pub size: Option<u64>,
    /// Permission bits of the root of the tmpfs; `None` is 1777 as docker uses.
    pub mode: Option<u32>,
}

/// Resource limits, enforced through a cgroup created for the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory in bytes (no swap beyond it).
    pub memory: Option<u64>,
    /// CPU time as a number of CPUs (e.g. 0.5).
    pub cpus: Option<f64>,
    /// Maximum number of processes and threads.
    pub pids: Option<u64>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.memory.is_none() && self.cpus.is_none() && self.pids.is_none()
    }
}

impl Spec {
    /// A spec with docker's defaults: root, `/` as working directory, no network, hostname
    /// `kiln`, stdin closed.
    pub fn new(rootfs: impl Into<PathBuf>, argv: Vec<String>) -> Self {
        Spec {
            rootfs: rootfs.into(),
            argv,
            env: Vec::new(),
            cwd: PathBuf::from("/"),
            user: String::new(),
            hostname: "kiln".to_string(),
            network: Network::None,
            mounts: Vec::new(),
            tmpfs: Vec::new(),
            limits: Limits::default(),
            tty: false,
            init: false,
            stdin: false,
            hosts: None,
            resolv_conf: None,
            hostname_file: None,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            isolation: Isolation::Namespace,
        }
    }

    /// Refuses specs that cannot work, before any process is started.
    pub fn validate(&self) -> Result<()> {
        let invalid = |m: String| Err(Error::InvalidSpec(m));
        if self.argv.is_empty() {
            return invalid("no command given".into());
        }
        if self.argv.iter().any(|a| a.contains('\0')) {
            return invalid("an argument contains a NUL byte".into());
        }
        if !self.rootfs.is_absolute() {
            return invalid(format!(
                "the root filesystem path {} is not absolute",
                self.rootfs.display()
            ));
        }
        for entry in &self.env {
            match entry.split_once('=') {
                Some((key, _)) if !key.is_empty() && !entry.contains('\0') => {}
                _ => return invalid(format!("environment entry {entry:?} is not KEY=VALUE")),
            }
        }
        check_container_path("working directory", &self.cwd)?;
        if self.hostname.len() > 64 || self.hostname.contains(['\0', '/']) {
            return invalid(format!("hostname {:?} is not valid", self.hostname));
        }
        for m in &self.mounts {
            check_container_path("bind mount target", &m.target)?;
            if !m.source.is_absolute() {
                return invalid(format!(
                    "bind mount source {} is not absolute",
                    m.source.display()
                ));
            }
        }
        for t in &self.tmpfs {
            check_container_path("tmpfs target", &t.target)?;
        }
        if let Some(cpus) = self.limits.cpus
            && !(cpus.is_finite() && cpus > 0.0)
        {
            return invalid(format!("cpus must be a positive number, not {cpus}"));
        }
        self.validate_isolation()?;
        if self.limits.pids == Some(0) || self.limits.memory == Some(0) {
            return invalid("a limit of 0 would stop anything from running".into());
        }
        Ok(())
    }

    /// What a sandbox without namespaces cannot give: a network of its own, and (without
    /// isolation) any root filesystem but the current one.
    fn validate_isolation(&self) -> Result<()> {
        if self.isolation.is_namespaced() {
            return Ok(());
        }
        if self.network == Network::None {
            return Err(Error::InvalidSpec(format!(
                "network none needs a network namespace, which {} isolation does not create",
                self.isolation
            )));
        }
        if self.isolation == Isolation::None && self.rootfs != Path::new("/") {
            return Err(Error::InvalidSpec(format!(
                "without isolation a process runs in the current root filesystem, not in {}",
                self.rootfs.display()
            )));
        }
        if self.tty {
            return Err(Error::InvalidSpec(format!(
                "a terminal needs a mount namespace for /dev/console, which {} isolation does not \
                 create",
                self.isolation
            )));
        }
        Ok(())
    }

    /// The environment the process gets: the spec's entries (the last of a repeated key wins,
    /// as with docker), plus `PATH`, `HOME` (from the user's passwd entry) and, with a TTY,
    /// `TERM` when those are not set.
    pub fn effective_env(&self, home: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::with_capacity(self.env.len() + 3);
        for entry in &self.env {
            let key = entry.split_once('=').map_or(entry.as_str(), |(k, _)| k);
            out.retain(|e: &String| e.split_once('=').map(|(k, _)| k) != Some(key));
            out.push(entry.clone());
        }
        let has = |out: &[String], key: &str| {
            out.iter()
                .any(|e| e.split_once('=').map(|(k, _)| k) == Some(key))
        };
        if !has(&out, "PATH") {
            out.push(format!("PATH={DEFAULT_PATH}"));
        }
        if !has(&out, "HOME") {
            out.push(format!("HOME={home}"));
        }
        if self.tty && !has(&out, "TERM") {
            out.push("TERM=xterm".to_string());
        }
        out
    }

    /// The value of `key` in the effective environment.
    pub(crate) fn env_value<'a>(env: &'a [String], key: &str) -> Option<&'a str> {
        env.iter().rev().find_map(|e| {
            e.split_once('=')
                .and_then(|(k, v)| if k == key { Some(v) } else { None })
        })
    }

    pub(crate) fn hosts_contents(&self) -> String {
        self.hosts.clone().unwrap_or_else(|| {
            let mut hosts = String::from(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
                 fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
                 ff02::2\tip6-allrouters\n",
            );
            if !self.hostname.is_empty() && self.hostname != "localhost" {
                hosts.push_str(&format!("127.0.1.1\t{}\n", self.hostname));
            }
            hosts
        })
    }

    pub(crate) fn resolv_conf_contents(&self) -> String {
        self.resolv_conf.clone().unwrap_or_else(|| {
            // Without a network there is nothing to resolve against; with the host's, its own
            // resolver configuration is the one that works.
            match self.network {
                Network::Host => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
                Network::None => String::new(),
            }
        })
    }

    pub(crate) fn hostname_file_contents(&self) -> String {
        self.hostname_file
            .clone()
            .unwrap_or_else(|| format!("{}\n", self.hostname))
    }
}

/// Container paths must be absolute and must not climb out with `..` (they are resolved inside
/// the rootfs anyway; refusing `..` keeps error messages honest).
fn check_container_path(what: &str, path: &Path) -> Result<()> {
    if !path.is_absolute() {
        return Err(Error::InvalidSpec(format!(
            "{what} {} is not an absolute path",
            path.display()
        )));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(Error::InvalidSpec(format!(
            "{what} {} contains '..'",
            path.display()
        )));
    }
    Ok(())
}

/// Paths as byte arrays on the wire: a `PathBuf` need not be UTF-8.
mod path_bytes {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::ffi::OsString;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::path::{Path, PathBuf};

    pub fn serialize<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
        path.as_os_str().as_bytes().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        Ok(PathBuf::from(OsString::from_vec(Vec::<u8>::deserialize(
            d,
        )?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec::new("/rootfs", vec!["sh".into()])
    }

    #[test]
    fn default_env_adds_path_and_home() {
        let env = spec().effective_env("/root");
        assert_eq!(
            env,
            vec![format!("PATH={DEFAULT_PATH}"), "HOME=/root".into()]
        );
    }

    #[test]
    fn env_keeps_given_path_and_last_duplicate() {
        let mut s = spec();
        s.env = vec![
            "A=1".into(),
            "PATH=/x".into(),
            "A=2".into(),
            "HOME=/h".into(),
        ];
        s.tty = true;
        let env = s.effective_env("/root");
        assert_eq!(env, vec!["PATH=/x", "A=2", "HOME=/h", "TERM=xterm"]);
        assert_eq!(Spec::env_value(&env, "A"), Some("2"));
    }

    #[test]
    fn validation_refuses_bad_specs() {
        let mut s = spec();
        assert!(s.validate().is_ok());
        s.argv.clear();
        assert!(s.validate().is_err());
        let mut s = spec();
        s.cwd = "relative".into();
        assert!(s.validate().is_err());
        let mut s = spec();
        s.env = vec!["NOEQUALS".into()];
        assert!(s.validate().is_err());
        let mut s = spec();
        s.mounts.push(BindMount {
            source: "/tmp".into(),
            target: "/a/../b".into(),
            readonly: false,
        });
        assert!(s.validate().is_err());
        let mut s = spec();
        s.limits.cpus = Some(f64::NAN);
        assert!(s.validate().is_err());
        let mut s = spec();
        s.rootfs = "rootfs".into();
        assert!(s.validate().is_err());
    }

    #[test]
    fn spec_round_trips_through_json_with_non_utf8_paths() {
        use std::os::unix::ffi::OsStrExt;
        let mut s = spec();
        s.rootfs = PathBuf::from(std::ffi::OsStr::from_bytes(b"/r\xffoot"));
        s.limits.cpus = Some(1.5);
        s.mounts.push(BindMount {
            source: "/src".into(),
            target: "/dst".into(),
            readonly: true,
        });
        let json = serde_json::to_vec(&s).expect("serialise");
        let back: Spec = serde_json::from_slice(&json).expect("deserialise");
        assert_eq!(back, s);
    }

    #[test]
    fn default_hosts_names_the_hostname() {
        let mut s = spec();
        s.hostname = "box".into();
        assert!(s.hosts_contents().contains("127.0.1.1\tbox\n"));
        assert_eq!(s.hostname_file_contents(), "box\n");
    }
}
