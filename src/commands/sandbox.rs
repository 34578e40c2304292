//! `kiln sandbox`: runs one command in the sandbox over a root filesystem directory, with
//! `docker run`'s flags and exit statuses. Hidden: it is the tool to test and debug the runner,
//! and the base `kiln run IMAGE` is built on.

use crate::error::{CliError, CliResult};
use clap::{Args, ValueEnum};
use kiln_runner::{BindMount, Limits, Network, Spec, Streams, TmpfsMount};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// The root filesystem directory.
    #[arg(long, value_name = "DIR")]
    pub rootfs: PathBuf,
    /// Set an environment variable (KEY=VALUE, or KEY to pass kiln's own value).
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,
    /// Working directory inside the sandbox (created when missing).
    #[arg(short = 'w', long = "workdir", value_name = "DIR", default_value = "/")]
    pub workdir: PathBuf,
    /// User to run as: name|uid[:group|gid].
    #[arg(short = 'u', long = "user", value_name = "USER", default_value = "")]
    pub user: String,
    /// Network: a private one with only loopback, or the host's.
    #[arg(long, value_enum, default_value_t = NetworkArg::None)]
    pub network: NetworkArg,
    /// Hostname inside the sandbox.
    #[arg(long, default_value = "kiln")]
    pub hostname: String,
    /// Bind mount HOST:CONTAINER[:ro].
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
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum NetworkArg {
    None,
    Host,
}

/// Docker's size syntax: a number with an optional b, k, m or g suffix (powers of 1024).
fn parse_size(text: &str) -> Result<u64, String> {
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

fn build_spec(args: SandboxArgs) -> CliResult<Spec> {
    let rootfs = std::fs::canonicalize(&args.rootfs).map_err(|e| CliError::io(&args.rootfs, e))?;
    // As with `docker run`, `-e KEY` passes the variable's value from kiln's environment,
    // and nothing when it is unset.
    let mut env: Vec<String> = args
        .env
        .into_iter()
        .filter_map(|entry| {
            if entry.contains('=') {
                Some(entry)
            } else {
                std::env::var(&entry).ok().map(|v| format!("{entry}={v}"))
            }
        })
        .collect();
    // `docker run` tells the process its hostname.
    if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
        env.insert(0, format!("HOSTNAME={}", args.hostname));
    }
    let mounts = args
        .volumes
        .iter()
        .map(|v| parse_volume(v))
        .collect::<CliResult<Vec<_>>>()?;
    let mut spec = Spec::new(rootfs, args.command);
    spec.env = env;
    spec.cwd = args.workdir;
    spec.user = args.user;
    spec.hostname = args.hostname;
    spec.network = match args.network {
        NetworkArg::None => Network::None,
        NetworkArg::Host => Network::Host,
    };
    spec.mounts = mounts;
    spec.tmpfs = args
        .tmpfs
        .into_iter()
        .map(|target| TmpfsMount {
            target,
            size: None,
            mode: None,
        })
        .collect();
    spec.limits = Limits {
        memory: args.memory,
        cpus: args.cpus,
        pids: args.pids_limit,
    };
    spec.tty = args.tty;
    spec.init = args.init;
    spec.stdin = args.interactive;
    spec.stop_timeout = Duration::from_secs(args.stop_timeout);
    Ok(spec)
}

pub fn run(args: SandboxArgs) -> CliResult<ExitCode> {
    let spec = build_spec(args)?;
    let sandbox = kiln_runner::spawn(&spec, Streams::default())?;
    // `kill -INT <kiln>` must stop the sandbox the way Ctrl-C does.
    let forwarding = sandbox.forward_signals()?;
    let outcome = sandbox.wait();
    drop(forwarding);
    let outcome = outcome?;
    if outcome.oom_killed {
        eprintln!("kiln: the process was killed for exceeding the memory limit");
    }
    Ok(ExitCode::from(outcome.status.code().clamp(0, 255) as u8))
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
    fn volumes_parse_with_mode() {
        let v = parse_volume("/tmp:/data:ro").expect("volume");
        assert!(v.readonly);
        assert_eq!(v.target, PathBuf::from("/data"));
        assert!(!parse_volume("/tmp:/data").expect("volume").readonly);
        assert!(parse_volume("/tmp").is_err());
        assert!(parse_volume("/tmp:/x:bogus").is_err());
    }
}
