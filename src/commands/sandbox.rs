//! `kiln sandbox`: runs one command in the sandbox over a root filesystem directory, with
//! `docker run`'s flags and exit statuses. Hidden: it is the tool to test and debug the runner.
//! Its flags and their mapping to a [`Spec`] are the ones `kiln run IMAGE` uses.

use crate::error::{CliError, CliResult};
use clap::{Args, ValueEnum};
use kiln_runner::{BindMount, Limits, Network, Outcome, Spec, Streams, TmpfsMount};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// The root filesystem directory.
    #[arg(long, value_name = "DIR")]
    pub rootfs: PathBuf,
    #[command(flatten)]
    pub flags: SandboxFlags,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// The flags `kiln sandbox` and `kiln run` share, with `docker run`'s names and meanings.
#[derive(Debug, Args)]
pub struct SandboxFlags {
    /// Set an environment variable (KEY=VALUE, or KEY to pass kiln's own value).
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,
    /// Read environment variables from a file (KEY=VALUE or KEY lines; # starts a comment).
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// The working directory inside the container (created when missing).
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// User to run as: name|uid[:group|gid].
    #[arg(short = 'u', long = "user", value_name = "USER")]
    pub user: Option<String>,
    /// The network: `none` (a private one with only loopback) or `host` (the host's).
    #[arg(long, value_enum, default_value_t = NetworkArg::None)]
    pub network: NetworkArg,
    /// The hostname inside the container.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Bind-mount a host path into the container, read-only with `:ro`.
    #[arg(short = 'v', long = "volume", value_name = "HOST:CONTAINER[:ro]")]
    pub volumes: Vec<String>,
    /// Mount a tmpfs at PATH.
    #[arg(long, value_name = "PATH")]
    pub tmpfs: Vec<PathBuf>,
    /// Run a reaping init as PID 1 in front of the command.
    #[arg(long)]
    pub init: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Keep stdin connected.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Memory limit (bytes, or with a b/k/m/g suffix).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory: Option<u64>,
    /// CPU limit as a number of CPUs.
    #[arg(long, value_name = "N")]
    pub cpus: Option<f64>,
    /// Maximum number of processes.
    #[arg(long = "pids-limit", value_name = "N")]
    pub pids_limit: Option<u64>,
    /// Seconds between a forwarded SIGINT/SIGTERM and SIGKILL.
    #[arg(long = "stop-timeout", value_name = "SECONDS", default_value_t = 10)]
    pub stop_timeout: u64,
}

/// What applies when a flag is not given: docker's defaults, or an image's config.
#[derive(Debug, Clone)]
pub struct SpecDefaults {
    /// Environment entries that `--env-file` and `-e` override key by key.
    pub env: Vec<String>,
    pub workdir: PathBuf,
    pub user: String,
    pub hostname: String,
}

impl Default for SpecDefaults {
    fn default() -> Self {
        SpecDefaults {
            env: Vec::new(),
            workdir: PathBuf::from("/"),
            user: String::new(),
            hostname: "kiln".to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum NetworkArg {
    None,
    Host,
}

/// Docker's size syntax: a number with an optional b, k, m or g suffix (powers of 1024).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let (digits, unit) = match lower.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => lower.split_at(i),
        None => (lower.as_str(), ""),
    };
    let factor: u64 = match unit {
        "" | "b" => 1,
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        "g" | "gb" => 1 << 30,
        _ => {
            return Err(format!(
                "invalid size {text:?}: use a number with b, k, m or g"
            ));
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| format!("invalid size {text:?}"))
}

fn parse_volume(spec: &str) -> CliResult<BindMount> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, target, readonly) = match parts.as_slice() {
        [s, t] => (*s, *t, false),
        [s, t, "ro"] => (*s, *t, true),
        [s, t, "rw"] => (*s, *t, false),
        _ => {
            return Err(CliError::Usage {
                message: format!("invalid volume {spec:?}"),
                hint: Some("use HOST:CONTAINER or HOST:CONTAINER:ro".into()),
            });
        }
    };
    let source = std::fs::canonicalize(source).map_err(|e| CliError::io(source, e))?;
    Ok(BindMount {
        source,
        target: target.into(),
        readonly,
    })
}

/// `KEY` alone takes the value from kiln's own environment, and nothing when it is unset, as
/// `docker run -e KEY` does.
fn resolve_env(entry: String) -> Option<String> {
    if entry.contains('=') {
        Some(entry)
    } else {
        std::env::var(&entry).ok().map(|v| format!("{entry}={v}"))
    }
}

/// docker's env-file format: one `KEY=VALUE` or `KEY` per line; blank lines and lines starting
/// with `#` are skipped; values are taken literally (no quotes, no expansion).
fn read_env_file(path: &Path) -> CliResult<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| CliError::io(path, e))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = line.split_once('=').map_or(line, |(k, _)| k);
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(CliError::Usage {
                message: format!(
                    "{}:{}: {key:?} is not a valid variable name",
                    path.display(),
                    n + 1
                ),
                hint: Some("write KEY=VALUE or KEY, one per line".into()),
            });
        }
        out.extend(resolve_env(line.to_string()));
    }
    Ok(out)
}

impl SandboxFlags {
    /// The spec to run `argv` over `rootfs` with these flags; what they leave unset comes from
    /// `defaults`.
    pub fn into_spec(
        self,
        rootfs: PathBuf,
        argv: Vec<String>,
        defaults: SpecDefaults,
    ) -> CliResult<Spec> {
        let hostname = self.hostname.unwrap_or(defaults.hostname);
        // Later entries win key by key: the image's, then env files, then `-e`.
        let mut env = defaults.env;
        for file in &self.env_file {
            env.extend(read_env_file(file)?);
        }
        env.extend(self.env.into_iter().filter_map(resolve_env));
        // `docker run` tells the process its hostname.
        if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
            env.insert(0, format!("HOSTNAME={hostname}"));
        }
        let mounts = self
            .volumes
            .iter()
            .map(|v| parse_volume(v))
            .collect::<CliResult<Vec<_>>>()?;
        let mut spec = Spec::new(rootfs, argv);
        spec.env = env;
        spec.cwd = self.workdir.unwrap_or(defaults.workdir);
        spec.user = self.user.unwrap_or(defaults.user);
        spec.hostname = hostname;
        spec.network = match self.network {
            NetworkArg::None => Network::None,
            NetworkArg::Host => Network::Host,
        };
        spec.mounts = mounts;
        spec.tmpfs = self
            .tmpfs
            .into_iter()
            .map(|target| TmpfsMount {
                target,
                size: None,
                mode: None,
            })
            .collect();
        spec.limits = Limits {
            memory: self.memory,
            cpus: self.cpus,
            pids: self.pids_limit,
        };
        spec.tty = self.tty;
        spec.init = self.init;
        spec.stdin = self.interactive;
        spec.stop_timeout = Duration::from_secs(self.stop_timeout);
        Ok(spec)
    }
}

/// Runs `spec` in the foreground: Ctrl-C and `kill -TERM <kiln>` reach the sandbox the way
/// they would reach a process started directly.
pub fn run_in_foreground(spec: &Spec) -> CliResult<Outcome> {
    let forwarding = kiln_runner::SignalForwarding::install()?;
    let sandbox = kiln_runner::spawn(spec, Streams::default())?;
    forwarding.attach(&sandbox);
    let outcome = sandbox.wait();
    drop(forwarding);
    let outcome = outcome?;
    if outcome.oom_killed {
        eprintln!("kiln: the process was killed for exceeding the memory limit");
    }
    Ok(outcome)
}

/// The exit status `docker run` gives for an outcome: the process's own, 128+n for a signal.
pub fn exit_code(outcome: &Outcome) -> u8 {
    outcome.status.code().clamp(0, 255) as u8
}

pub fn run(args: SandboxArgs) -> CliResult<ExitCode> {
    let rootfs = std::fs::canonicalize(&args.rootfs).map_err(|e| CliError::io(&args.rootfs, e))?;
    let spec = args
        .flags
        .into_spec(rootfs, args.command, SpecDefaults::default())?;
    let outcome = run_in_foreground(&spec)?;
    Ok(ExitCode::from(exit_code(&outcome)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_docker() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("2kb"), Ok(2048));
        assert!(parse_size("12q").is_err());
        assert!(parse_size("m").is_err());
        assert!(parse_size("99999999999999999999g").is_err());
    }

    #[test]
    fn env_files_read_like_docker() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("env");
        std::fs::write(
            &file,
            "# c\n\nA=1\n  B=two words\nKILN_TEST_UNSET_VAR\nC=\n",
        )
        .expect("write");
        assert_eq!(
            read_env_file(&file).expect("env file"),
            ["A=1", "B=two words", "C="]
        );
        std::fs::write(&file, "BAD KEY=1\n").expect("write");
        assert!(read_env_file(&file).is_err());
        std::fs::write(&file, "=1\n").expect("write");
        assert!(read_env_file(&file).is_err());
    }

    #[test]
    fn flags_override_defaults() {
        let flags = SandboxFlags {
            env: vec!["A=flag".into()],
            env_file: Vec::new(),
            workdir: None,
            user: Some("nobody".into()),
            network: NetworkArg::None,
            hostname: None,
            volumes: Vec::new(),
            tmpfs: Vec::new(),
            init: false,
            tty: false,
            interactive: false,
            memory: None,
            cpus: None,
            pids_limit: None,
            stop_timeout: 10,
        };
        let defaults = SpecDefaults {
            env: vec!["A=image".into(), "B=image".into()],
            workdir: "/srv".into(),
            user: "root".into(),
            hostname: "abc".into(),
        };
        let spec = flags
            .into_spec("/r".into(), vec!["true".into()], defaults)
            .expect("spec");
        assert_eq!(spec.env, ["HOSTNAME=abc", "A=image", "B=image", "A=flag"]);
        assert_eq!(spec.cwd, PathBuf::from("/srv"));
        assert_eq!(spec.user, "nobody");
        assert_eq!(spec.hostname, "abc");
    }

    #[test]
    fn volumes_parse_with_mode() {
        let v = parse_volume("/tmp:/data:ro").expect("volume");
        assert!(v.readonly);
        assert_eq!(v.target, PathBuf::from("/data"));
        assert!(!parse_volume("/tmp:/data").expect("volume").readonly);
        assert!(parse_volume("/tmp").is_err());
        assert!(parse_volume("/tmp:/x:bogus").is_err());
    }
}
