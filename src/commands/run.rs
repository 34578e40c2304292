//! `kiln run IMAGE [ARG…]`: a container from a store image, in the foreground, as `docker run`
//! starts one: a fresh writable snapshot on the image's layers, the image config's Env,
//! WorkingDir, User, Entrypoint and Cmd under the command line's overrides, and the process's
//! exit status as kiln's (125 when kiln itself fails).

use crate::commands::registry::{RegistryFlags, Say, pull_image};
use crate::commands::sandbox::{self, SandboxFlags, SpecDefaults};
use crate::commands::{Access, open_store};
use crate::containers::{self, Containers, Record, State};
use crate::error::{CliError, CliResult};
use clap::Args;
use kiln_oci::ContainerConfig;
use kiln_snapshotter::{Backend, Snapshotter};
use std::path::PathBuf;
use std::process::ExitCode;

/// `docker run`'s status when the engine, not the command, failed.
const ENGINE_FAILED: u8 = 125;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Name the container (default: a generated name).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Replace the image's ENTRYPOINT (an empty string removes it); the image's CMD is dropped.
    #[arg(long, value_name = "COMMAND")]
    pub entrypoint: Option<String>,
    /// Pull the image: `missing` (when the store lacks it, the default), `always` or `never`.
    #[arg(long, value_name = "POLICY", default_value = "missing", value_parser = ["missing", "always", "never"])]
    pub pull: String,
    /// The platform to pull from a multi-platform image (`os/arch[/variant]`; default: this
    /// machine's).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    #[command(flatten)]
    pub registry: RegistryFlags,
    #[command(flatten)]
    pub flags: SandboxFlags,
    /// The image: name[:tag], id or id prefix.
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// The command and its arguments (replace the image's CMD).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARG"
    )]
    pub args: Vec<String>,
}

pub fn run(root: &Option<PathBuf>, args: RunArgs) -> CliResult<ExitCode> {
    match run_container(root, args) {
        Ok(code) => Ok(ExitCode::from(code)),
        Err(err) => {
            eprintln!("{}", err.render());
            Ok(ExitCode::from(engine_status(&err)))
        }
    }
}

/// The exit status for a failure before or around the process: the runner's 126/127 for a
/// command that cannot be run, else 125.
fn engine_status(err: &CliError) -> u8 {
    match err {
        CliError::Sandbox(e) => e.exit_code(),
        _ => ENGINE_FAILED,
    }
}

/// The command a container runs, composed as `docker run` does: arguments replace CMD;
/// `--entrypoint` replaces ENTRYPOINT and drops CMD. A shell-form ENTRYPOINT is stored as
/// `["/bin/sh", "-c", "…"]`, so whatever follows it lands in `$0…` and is ignored by the shell.
pub fn compose_command(
    config: Option<&ContainerConfig>,
    entrypoint: Option<&str>,
    args: Vec<String>,
) -> Vec<String> {
    let image_entrypoint = config
        .and_then(|c| c.entrypoint.clone())
        .unwrap_or_default();
    let image_cmd = config.and_then(|c| c.cmd.clone()).unwrap_or_default();
    let (mut argv, cmd) = match entrypoint {
        Some("") => (Vec::new(), Vec::new()),
        Some(e) => (vec![e.to_string()], Vec::new()),
        None => (image_entrypoint, image_cmd),
    };
    argv.extend(if args.is_empty() { cmd } else { args });
    argv
}

/// The image to run: from the store, or pulled as `--pull` says (`docker run` pulls an image it
/// does not have). Pull messages go to stderr: stdout is the container's.
fn find_or_pull(store: &kiln_oci::Store, args: &RunArgs) -> CliResult<kiln_oci::Image> {
    let found = match args.pull.as_str() {
        "always" => None,
        _ => match store.find_image(&args.image) {
            Ok(image) => Some(image),
            Err(kiln_oci::Error::ImageNotFound(_)) if args.pull == "missing" => None,
            Err(e) => return Err(e.into()),
        },
    };
    if let Some(image) = found {
        return Ok(image);
    }
    let reference = kiln_oci::Reference::parse(&args.image)?;
    let client = kiln_oci::registry::Client::new(args.registry.config()?)?;
    if args.pull == "missing" {
        eprintln!("Unable to find image '{}' locally", reference.normalized());
    }
    let full = pull_image(
        &client,
        store,
        &reference,
        args.platform.clone(),
        false,
        Say::Stderr,
    )?;
    Ok(store.find_image(&full.to_string())?)
}

/// The image config's Env, WorkingDir and User as defaults for the flags; the hostname is the
/// container's short id, as docker names it.
fn spec_defaults(config: Option<&ContainerConfig>, hostname: &str) -> SpecDefaults {
    let mut defaults = SpecDefaults {
        hostname: hostname.to_string(),
        ..SpecDefaults::default()
    };
    if let Some(c) = config {
        defaults.env = c.env.clone().unwrap_or_default();
        if let Some(dir) = c.working_dir.as_deref().filter(|d| !d.is_empty()) {
            defaults.workdir = PathBuf::from(dir);
        }
        defaults.user = c.user.clone().unwrap_or_default();
    }
    defaults
}

fn run_container(root: &Option<PathBuf>, args: RunArgs) -> CliResult<u8> {
    let store = open_store(root, Access::Write)?;
    let image = find_or_pull(&store, &args)?;
    let config = image.config.config.as_ref();
    let argv = compose_command(config, args.entrypoint.as_deref(), args.args);
    if argv.is_empty() {
        return Err(CliError::Usage {
            message: format!(
                "no command specified: {} has no ENTRYPOINT or CMD",
                args.image
            ),
            hint: Some(format!("give one: kiln run {} COMMAND [ARG…]", args.image)),
        });
    }
    let snapshotter = Snapshotter::new(store.root())?;
    if let Backend::Copy { reason } = snapshotter.backend() {
        eprintln!("warning: {reason}; the container gets a full copy of the image");
    }
    let parent = kiln_builder::rootfs::unpack_image(&store, &snapshotter, &image)
        .map_err(containers::from_builder)?;

    let containers = Containers::open(store.root())?;
    let record = Record {
        id: String::new(),
        name: String::new(),
        image: args.image.clone(),
        image_id: image.id.to_string(),
        parent_chain: parent.as_ref().map(|c| c.to_string()),
        command: argv.clone(),
        created: containers::now(),
        state: State::Created,
        exit_code: None,
        finished: None,
        pid: None,
        pid_start: None,
        mount_points: Vec::new(),
    };
    let mut record = containers.create(record, args.name.as_deref())?;
    let snapshot = match snapshotter.prepare_at(parent.as_ref(), &containers.rootfs_dir(&record)) {
        Ok(s) => s,
        Err(e) => {
            let _ = containers.remove(&snapshotter, &record);
            return Err(e.into());
        }
    };
    // The dropped snapshot unmounts and removes itself on every early return below.
    let prepared = (|| {
        let rootfs = std::fs::canonicalize(snapshot.mount_point())
            .map_err(|e| CliError::io(snapshot.mount_point(), e))?;
        let defaults = spec_defaults(config, record.short_id());
        let spec = args.flags.into_spec(rootfs, argv, defaults)?;
        record.mark_running();
        containers.save(&record)?;
        Ok(spec)
    })();
    let spec = match prepared {
        Ok(spec) => spec,
        Err(e) => {
            drop(snapshot);
            let _ = containers.remove(&snapshotter, &record);
            return Err(e);
        }
    };

    let outcome = sandbox::run_in_foreground(&spec);
    let status = match &outcome {
        Ok(o) => sandbox::exit_code(o),
        Err(e) => engine_status(e),
    };
    let cleaned = if args.rm {
        let aborted = snapshot.abort();
        let removed = containers.remove(&snapshotter, &record);
        aborted.map_err(CliError::from).and(removed.map(|_| ()))
    } else {
        let mount_points = outcome
            .as_ref()
            .map(|o| {
                o.created_mountpoints
                    .iter()
                    .map(|p| p.to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let kept = snapshot.unmount_keep().map_err(CliError::from);
        record.mark_exited(i32::from(status), mount_points);
        kept.and(containers.save(&record))
    };
    outcome?;
    cleaned?;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(entrypoint: Option<&[&str]>, cmd: Option<&[&str]>) -> ContainerConfig {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        ContainerConfig {
            entrypoint: entrypoint.map(owned),
            cmd: cmd.map(owned),
            ..ContainerConfig::default()
        }
    }

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn commands_compose_like_docker_run() {
        let cmd_only = config(None, Some(&["sh"]));
        assert_eq!(compose_command(Some(&cmd_only), None, vec![]), ["sh"]);
        assert_eq!(
            compose_command(Some(&cmd_only), None, args(&["echo", "hi"])),
            ["echo", "hi"]
        );
        let both = config(Some(&["/bin/echo", "a"]), Some(&["b"]));
        assert_eq!(
            compose_command(Some(&both), None, vec![]),
            ["/bin/echo", "a", "b"]
        );
        assert_eq!(
            compose_command(Some(&both), None, args(&["c"])),
            ["/bin/echo", "a", "c"]
        );
        // --entrypoint drops the image's CMD but keeps the arguments.
        assert_eq!(compose_command(Some(&both), Some("ls"), vec![]), ["ls"]);
        assert_eq!(
            compose_command(Some(&both), Some("ls"), args(&["-l"])),
            ["ls", "-l"]
        );
        assert!(compose_command(Some(&both), Some(""), vec![]).is_empty());
        assert_eq!(compose_command(None, None, args(&["true"])), ["true"]);
        assert!(compose_command(None, None, vec![]).is_empty());
    }

    #[test]
    fn image_config_gives_the_defaults() {
        let c = ContainerConfig {
            env: Some(args(&["A=1"])),
            working_dir: Some("/srv".into()),
            user: Some("nobody".into()),
            ..ContainerConfig::default()
        };
        let d = spec_defaults(Some(&c), "abc");
        assert_eq!(d.env, ["A=1"]);
        assert_eq!(d.workdir, PathBuf::from("/srv"));
        assert_eq!(d.user, "nobody");
        assert_eq!(d.hostname, "abc");
        let empty = ContainerConfig {
            working_dir: Some(String::new()),
            ..ContainerConfig::default()
        };
        assert_eq!(spec_defaults(Some(&empty), "x").workdir, PathBuf::from("/"));
    }
}
