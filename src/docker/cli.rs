//! docker's commands and flags as clap parsers. Where kiln has the command, its own argument
//! struct is flattened in, so a docker flag is parsed exactly as the kiln flag it maps to;
//! the docker-only flags beside it are accepted and either mapped or answered with a note.
//! Parse errors are worded as the docker CLI words them, with its exit status (125).

use crate::commands::build::BuildArgs;
use crate::commands::container::{CommitArgs, PruneArgs, PsArgs, RmArgs as ContainerRmArgs};
use crate::commands::run::RunArgs;
use crate::commands::store::{ImportArgs, LoadArgs, RmiArgs, SaveArgs, TagArgs};
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, Parser};
use std::process::ExitCode;

/// docker's status for its own command-line errors.
pub const USAGE_FAILED: u8 = 125;

/// Parses `args` as the docker command `name` (`build`, `image ls`, …) whose usage line is
/// `usage`; on failure prints docker's message (or the help) and returns the exit status.
pub fn parse<T: Parser>(name: &str, usage: &str, args: &[String]) -> Result<T, ExitCode> {
    let full = format!("docker {name}");
    let argv = std::iter::once(full.clone()).chain(args.iter().cloned());
    let mut command = <T as clap::CommandFactory>::command()
        .bin_name(full.clone())
        .display_name(full.clone())
        .override_usage(usage.to_string());
    let matches = command.try_get_matches_from_mut(argv);
    let parsed = matches.and_then(|m| T::from_arg_matches(&m));
    parsed.map_err(|err| report(&full, usage, &err))
}

fn report(full: &str, usage: &str, err: &clap::Error) -> ExitCode {
    let help = format!("\nUsage:  {usage}\n\nRun '{full} --help' for more information");
    let invalid = match err.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s.clone(),
        Some(ContextValue::Strings(v)) => v.join(", "),
        _ => String::new(),
    };
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = err.print();
            ExitCode::SUCCESS
        }
        ErrorKind::UnknownArgument => {
            let flag = invalid.split('=').next().unwrap_or_default();
            let message = match flag.strip_prefix("--") {
                Some(_) => format!("unknown flag: {flag}"),
                None => {
                    let short = flag.trim_start_matches('-').chars().next().unwrap_or('?');
                    format!("unknown shorthand flag: '{short}' in {flag}")
                }
            };
            eprintln!("{message}\n{help}");
            ExitCode::from(USAGE_FAILED)
        }
        ErrorKind::MissingRequiredArgument | ErrorKind::TooFewValues => {
            eprintln!("\"{full}\" requires at least 1 argument.\n{help}");
            ExitCode::from(1)
        }
        _ => {
            let text = err.kind().as_str().unwrap_or("invalid arguments");
            // `--network <MODE>` → `--network`, as docker names the flag.
            let flag = invalid.split(' ').next().unwrap_or_default();
            let value = match err.get(ContextKind::InvalidValue) {
                Some(ContextValue::String(v)) => Some(v.clone()),
                _ => None,
            };
            let reason = match err.get(ContextKind::ValidValue) {
                Some(ContextValue::Strings(valid)) => {
                    format!("expected one of: {}", valid.join(", "))
                }
                _ => text.to_string(),
            };
            let message = match (flag.is_empty(), value) {
                (true, _) => text.to_string(),
                (false, Some(value)) => {
                    format!("invalid argument {value:?} for \"{flag}\" flag: {reason}")
                }
                (false, None) => format!("invalid argument for \"{flag}\" flag: {reason}"),
            };
            eprintln!("{message}\n{help}");
            ExitCode::from(USAGE_FAILED)
        }
    }
}

/// `docker build` and `docker buildx build`: kiln's build flags plus docker's daemon-side ones.
#[derive(Debug, Parser)]
#[command(about = "Build an image from a Dockerfile", long_about = None)]
pub struct Build {
    #[command(flatten)]
    pub kiln: BuildArgs,
    #[command(flatten)]
    pub daemon: DaemonBuildFlags,
}

/// `docker build` flags that configure the daemon's build container. kiln has no build
/// container to configure: they are accepted; those that would change a build say so.
#[derive(Debug, Args)]
pub struct DaemonBuildFlags {
    /// Remove intermediate containers (kiln always does).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub rm: Option<String>,
    /// Always remove intermediate containers (kiln always does).
    #[arg(long = "force-rm")]
    pub force_rm: bool,
    /// Skip image verification (kiln does not verify signatures).
    #[arg(long = "disable-content-trust", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub disable_content_trust: Option<String>,
    /// Compress the context sent to the daemon (kiln reads it in place).
    #[arg(long)]
    pub compress: bool,
    /// Squash the layers into one (no effect with kiln).
    #[arg(long)]
    pub squash: bool,
    /// Memory plus swap limit (no effect with kiln).
    #[arg(long = "memory-swap", value_name = "BYTES")]
    pub memory_swap: Option<String>,
    /// CPU shares (no effect with kiln).
    #[arg(short = 'c', long = "cpu-shares", value_name = "N")]
    pub cpu_shares: Option<String>,
    /// CPUs to run on (no effect with kiln).
    #[arg(long = "cpuset-cpus", value_name = "CPUS")]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes to use (no effect with kiln).
    #[arg(long = "cpuset-mems", value_name = "MEMS")]
    pub cpuset_mems: Option<String>,
    /// CFS period (no effect with kiln).
    #[arg(long = "cpu-period", value_name = "N")]
    pub cpu_period: Option<String>,
    /// CFS quota (no effect with kiln).
    #[arg(long = "cpu-quota", value_name = "N")]
    pub cpu_quota: Option<String>,
    /// Size of /dev/shm (no effect with kiln).
    #[arg(long = "shm-size", value_name = "BYTES")]
    pub shm_size: Option<String>,
    /// Parent cgroup of the build container (no effect with kiln).
    #[arg(long = "cgroup-parent", value_name = "PATH")]
    pub cgroup_parent: Option<String>,
    /// Ulimit options (no effect with kiln).
    #[arg(long, value_name = "ULIMIT")]
    pub ulimit: Vec<String>,
    /// Add a host-to-IP mapping (no effect with kiln).
    #[arg(long = "add-host", value_name = "HOST:IP")]
    pub add_host: Vec<String>,
    /// Security options (no effect with kiln).
    #[arg(long = "security-opt", value_name = "OPT")]
    pub security_opt: Vec<String>,
    /// Add an annotation to the image (no effect with kiln).
    #[arg(long, value_name = "KEY=VALUE")]
    pub annotation: Vec<String>,
    /// Allow extra privileged entitlements (no effect with kiln).
    #[arg(long, value_name = "ENTITLEMENT")]
    pub allow: Vec<String>,
}

impl DaemonBuildFlags {
    /// The flags given that change a docker build but have no effect on kiln's.
    pub fn without_effect(&self) -> Vec<&'static str> {
        let given = [
            ("--squash", self.squash),
            ("--memory-swap", self.memory_swap.is_some()),
            ("--cpu-shares", self.cpu_shares.is_some()),
            ("--cpuset-cpus", self.cpuset_cpus.is_some()),
            ("--cpuset-mems", self.cpuset_mems.is_some()),
            ("--cpu-period", self.cpu_period.is_some()),
            ("--cpu-quota", self.cpu_quota.is_some()),
            ("--shm-size", self.shm_size.is_some()),
            ("--cgroup-parent", self.cgroup_parent.is_some()),
            ("--ulimit", !self.ulimit.is_empty()),
            ("--add-host", !self.add_host.is_empty()),
            ("--security-opt", !self.security_opt.is_empty()),
            ("--annotation", !self.annotation.is_empty()),
            ("--allow", !self.allow.is_empty()),
        ];
        given
            .into_iter()
            .filter(|(_, on)| *on)
            .map(|(flag, _)| flag)
            .collect()
    }
}

/// `docker images` / `docker image ls`.
#[derive(Debug, Parser)]
#[command(about = "List images", long_about = None)]
pub struct Images {
    /// Only images of this repository (and tag).
    #[arg(value_name = "REPOSITORY[:TAG]")]
    pub repository: Option<String>,
    /// Show all images (kiln keeps no intermediate images, so the same list).
    #[arg(short, long)]
    pub all: bool,
    /// Show digests.
    #[arg(long)]
    pub digests: bool,
    /// Filter: dangling=true|false, reference=PATTERN, before=IMAGE, since=IMAGE.
    #[arg(short = 'f', long = "filter", value_name = "FILTER")]
    pub filters: Vec<String>,
    /// table, table TEMPLATE, json or a Go template.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// Do not truncate the image ids.
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Only show image ids.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `docker inspect` and `docker image inspect`.
#[derive(Debug, Parser)]
#[command(about = "Display detailed information on one or more images", long_about = None)]
pub struct Inspect {
    /// The images: name[:tag], id or id prefix.
    #[arg(required = true, value_name = "NAME|ID")]
    pub names: Vec<String>,
    /// A Go template, or `json`.
    #[arg(short = 'f', long, value_name = "TEMPLATE")]
    pub format: Option<String>,
    /// The object type: image (kiln inspects images only).
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: Option<String>,
    /// Display total file sizes (the image's Size is always shown).
    #[arg(short, long)]
    pub size: bool,
    /// Inspect this platform's variant (kiln's images have one platform).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
}

/// `docker import`: kiln's import, less what docker adds.
#[derive(Debug, Parser)]
#[command(about = "Import the contents from a tarball to create a filesystem image", long_about = None)]
pub struct Import {
    #[command(flatten)]
    pub kiln: ImportArgs,
    /// Dockerfile instructions to apply (kiln imports the file system only).
    #[arg(short = 'c', long = "change", value_name = "INSTRUCTION")]
    pub changes: Vec<String>,
    /// The platform the file system is for (kiln records the native one).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
}

/// `docker tag`.
#[derive(Debug, Parser)]
#[command(about = "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE", long_about = None)]
pub struct Tag {
    #[command(flatten)]
    pub kiln: TagArgs,
}

/// `docker rmi` / `docker image rm`.
#[derive(Debug, Parser)]
#[command(about = "Remove one or more images", long_about = None)]
pub struct Rmi {
    #[command(flatten)]
    pub kiln: RmiArgs,
    /// Do not delete untagged parents (kiln images have none).
    #[arg(long = "no-prune")]
    pub no_prune: bool,
    /// Remove only this platform's variant (kiln's images have one platform).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
}

/// `docker save`.
#[derive(Debug, Parser)]
#[command(about = "Save one or more images to a tar archive (streamed to STDOUT by default)", long_about = None)]
pub struct Save {
    #[command(flatten)]
    pub kiln: SaveArgs,
    /// Save this platform's variant (kiln's images have one platform).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
}

/// `docker load`.
#[derive(Debug, Parser)]
#[command(about = "Load an image from a tar archive or STDIN", long_about = None)]
pub struct Load {
    #[command(flatten)]
    pub kiln: LoadArgs,
    /// Load this platform's variant (kiln loads what the archive holds).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
}

/// `docker run`: kiln's run flags plus docker's that kiln cannot honour.
#[derive(Debug, Parser)]
#[command(about = "Create and run a new container from an image", long_about = None)]
pub struct Run {
    /// Run in the background (kiln runs containers in the foreground only).
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Publish a port (kiln's containers use the host's or no network).
    #[arg(short = 'p', long = "publish", value_name = "PORTS")]
    pub publish: Vec<String>,
    /// Container labels (kiln records none).
    #[arg(short = 'l', long = "label", value_name = "K=V")]
    pub labels: Vec<String>,
    #[command(flatten)]
    pub kiln: RunArgs,
}

/// `docker version` and `docker info`.
#[derive(Debug, Parser)]
#[command(about = "Show kiln's version or system-wide information", long_about = None)]
pub struct Formatted {
    /// A Go template, or `json`.
    #[arg(short = 'f', long, value_name = "FORMAT")]
    pub format: Option<String>,
}

/// The flags `docker push` and `docker pull` share.
#[derive(Debug, clap::Args)]
pub struct TransferFlags {
    /// All tags of the repository (kiln moves the one named).
    #[arg(short = 'a', long = "all-tags")]
    pub all_tags: bool,
    #[arg(short, long)]
    pub quiet: bool,
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    #[arg(long = "disable-content-trust", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub disable_content_trust: Option<String>,
}

/// `docker push`.
#[derive(Debug, Parser)]
#[command(about = "Upload an image to a registry", long_about = None)]
pub struct Push {
    #[arg(value_name = "NAME[:TAG]")]
    pub name: String,
    #[command(flatten)]
    pub flags: TransferFlags,
}

/// `docker pull`.
#[derive(Debug, Parser)]
#[command(about = "Download an image from a registry", long_about = None)]
pub struct Pull {
    #[arg(value_name = "NAME[:TAG|@DIGEST]")]
    pub name: String,
    #[command(flatten)]
    pub flags: TransferFlags,
}

/// `docker login`.
#[derive(Debug, Parser)]
#[command(about = "Authenticate to a registry", long_about = None)]
pub struct Login {
    #[arg(value_name = "SERVER")]
    pub server: Option<String>,
    #[arg(short, long, value_name = "USER")]
    pub username: Option<String>,
    #[arg(short, long, value_name = "PASSWORD", allow_hyphen_values = true)]
    pub password: Option<String>,
    #[arg(long = "password-stdin")]
    pub password_stdin: bool,
}

/// `docker logout`.
#[derive(Debug, Parser)]
#[command(about = "Log out from a registry", long_about = None)]
pub struct Logout {
    #[arg(value_name = "SERVER")]
    pub server: Option<String>,
}

// The registry commands run `kiln push|pull|login|logout`: their kiln command lines. Values
// are joined to their flags and names follow `--`, so none can be read as a flag.

impl TransferFlags {
    /// `kiln VERB … -- NAME`; `platform`: whether kiln's VERB takes `--platform`.
    fn kiln_args(self, verb: &str, name: String, platform: bool) -> Vec<String> {
        let mut args = vec![verb.to_string()];
        if platform {
            args.extend(self.platform.map(|p| format!("--platform={p}")));
        }
        if self.quiet {
            args.push("--quiet".into());
        }
        args.extend(["--".to_string(), name]);
        args
    }
}

impl Push {
    pub fn kiln_args(self) -> Vec<String> {
        self.flags.kiln_args("push", self.name, false)
    }
}

impl Pull {
    pub fn kiln_args(self) -> Vec<String> {
        self.flags.kiln_args("pull", self.name, true)
    }
}

impl Login {
    pub fn kiln_args(self) -> Vec<String> {
        let mut args = vec!["login".to_string()];
        args.extend(self.username.map(|u| format!("--username={u}")));
        args.extend(self.password.map(|p| format!("--password={p}")));
        if self.password_stdin {
            args.push("--password-stdin".into());
        }
        if let Some(server) = self.server {
            args.extend(["--".to_string(), server]);
        }
        args
    }
}

impl Logout {
    pub fn kiln_args(self) -> Vec<String> {
        let mut args = vec!["logout".to_string()];
        if let Some(server) = self.server {
            args.extend(["--".to_string(), server]);
        }
        args
    }
}

/// `docker buildx create`.
#[derive(Debug, Parser)]
#[command(about = "Create a builder instance (kiln is its own builder)", long_about = None)]
pub struct BuildxCreate {
    /// The context or endpoint (ignored).
    #[arg(value_name = "CONTEXT|ENDPOINT")]
    pub endpoint: Option<String>,
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    #[arg(long, value_name = "DRIVER")]
    pub driver: Option<String>,
    #[arg(long = "driver-opt", value_name = "OPT")]
    pub driver_opt: Vec<String>,
    #[arg(long = "buildkitd-flags", value_name = "FLAGS")]
    pub buildkitd_flags: Option<String>,
    #[arg(long = "buildkitd-config", alias = "config", value_name = "FILE")]
    pub buildkitd_config: Option<String>,
    #[arg(long, value_name = "PLATFORMS")]
    pub platform: Vec<String>,
    #[arg(long)]
    pub bootstrap: bool,
    #[arg(long = "use")]
    pub use_it: bool,
    #[arg(long)]
    pub append: bool,
    #[arg(long)]
    pub leave: bool,
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
}

/// `docker buildx use`, `inspect`, `rm`, `stop`: an optional builder name.
#[derive(Debug, Parser)]
#[command(about = "Manage a builder instance (kiln is its own builder)", long_about = None)]
pub struct BuildxNamed {
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
    #[arg(long)]
    pub bootstrap: bool,
    #[arg(long)]
    pub default: bool,
    #[arg(long)]
    pub global: bool,
    #[arg(short, long)]
    pub force: bool,
    #[arg(long = "keep-state")]
    pub keep_state: bool,
    #[arg(long = "all-inactive")]
    pub all_inactive: bool,
}

/// `docker buildx ls` and `docker buildx version`.
#[derive(Debug, Parser)]
#[command(about = "Show the builder (kiln is its own builder)", long_about = None)]
pub struct BuildxPlain {
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
}

/// `docker ps` / `docker container ls`.
#[derive(Debug, Parser)]
#[command(about = "List containers", long_about = None)]
pub struct Ps {
    #[command(flatten)]
    pub kiln: PsArgs,
}

/// `docker rm` / `docker container rm`.
#[derive(Debug, Parser)]
#[command(about = "Remove one or more containers", long_about = None)]
pub struct ContainerRm {
    #[command(flatten)]
    pub kiln: ContainerRmArgs,
    /// Remove a running container too (kiln's containers run in the foreground of their
    /// command, so none is running when this runs).
    #[arg(short, long)]
    pub force: bool,
    /// Remove anonymous volumes (kiln's containers have none).
    #[arg(short, long)]
    pub volumes: bool,
}

/// `docker commit` / `docker container commit`.
#[derive(Debug, Parser)]
#[command(about = "Create a new image from a container's changes", long_about = None)]
pub struct Commit {
    #[command(flatten)]
    pub kiln: CommitArgs,
    /// Pause the container while committing (kiln's are stopped).
    #[arg(short, long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub pause: Option<String>,
}

/// `docker container prune`.
#[derive(Debug, Parser)]
#[command(about = "Remove all stopped containers", long_about = None)]
pub struct ContainerPrune {
    #[command(flatten)]
    pub kiln: PruneArgs,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kiln<T: Parser>(argv: &[&str], to_kiln: fn(T) -> Vec<String>) -> Vec<String> {
        to_kiln(T::try_parse_from(argv).unwrap())
    }

    #[test]
    fn registry_commands_become_kilns() {
        assert_eq!(
            kiln(&["push", "-q", "reg.example/app:1"], Push::kiln_args),
            ["push", "--quiet", "--", "reg.example/app:1"]
        );
        assert_eq!(
            kiln(
                &["pull", "--platform", "linux/amd64", "app"],
                Pull::kiln_args
            ),
            ["pull", "--platform=linux/amd64", "--", "app"]
        );
        assert_eq!(
            kiln(
                &["login", "-u", "me", "-p", "-secret", "reg.example"],
                Login::kiln_args
            ),
            [
                "login",
                "--username=me",
                "--password=-secret",
                "--",
                "reg.example"
            ]
        );
        assert_eq!(
            kiln(&["login", "--password-stdin", "-u", "me"], Login::kiln_args),
            ["login", "--username=me", "--password-stdin"]
        );
        assert_eq!(kiln(&["logout"], Logout::kiln_args), ["logout"]);
        assert_eq!(
            kiln(&["logout", "reg.example"], Logout::kiln_args),
            ["logout", "--", "reg.example"]
        );
    }

    /// Every docker command's parser is sound (clap checks names and ids only when a command is
    /// built, so a clash with a flag kiln's own arguments gained would otherwise show up at run
    /// time).
    #[test]
    fn every_command_line_is_well_formed() {
        use clap::CommandFactory;
        for command in [
            Build::command(),
            Images::command(),
            Inspect::command(),
            Import::command(),
            Tag::command(),
            Rmi::command(),
            Save::command(),
            Load::command(),
            Run::command(),
            Formatted::command(),
            Push::command(),
            Pull::command(),
            Login::command(),
            Logout::command(),
            BuildxCreate::command(),
            BuildxNamed::command(),
            BuildxPlain::command(),
            Ps::command(),
            ContainerRm::command(),
            Commit::command(),
            ContainerPrune::command(),
        ] {
            command.debug_assert();
        }
    }
}
