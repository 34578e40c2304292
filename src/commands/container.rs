//! The container commands: `ps`, `rm`, `commit` and `container prune|ls|rm|commit`, with
//! docker's names, flags and output.

use crate::commands::store::{human, layer_options, optional_tag};
use crate::commands::{Access, open_store};
use crate::containers::{self, Containers, Record, State};
use crate::error::{CliError, CliResult};
use clap::{Args, Subcommand};
use kiln_oci::config::parse_rfc3339;
use kiln_oci::image::creation_time;
use kiln_oci::{History, Layer, LayerOptions, LayerWriter, Store};
use kiln_snapshotter::{ChainId, DiffOptions, SANDBOX_MOUNT_POINTS, Snapshotter};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers (default shows just running).
    #[arg(short, long)]
    pub all: bool,
    /// Only show container ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not truncate the output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Output format: table or json (one object per line).
    #[arg(long, default_value = "table", value_name = "FORMAT")]
    pub format: String,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// The containers to remove: name, id or id prefix.
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CommitArgs {
    /// The container: name, id or id prefix.
    #[arg(value_name = "CONTAINER")]
    pub container: String,
    /// The name to give the image.
    #[arg(value_name = "NAME[:TAG]")]
    pub reference: Option<String>,
    /// The commit message recorded in the image's history.
    #[arg(short, long)]
    pub message: Option<String>,
    /// The author recorded in the image.
    #[arg(short, long)]
    pub author: Option<String>,
    /// Layer compression: gzip[:LEVEL], zstd[:LEVEL] or none.
    #[arg(long, default_value = "gzip", value_name = "ALGO")]
    pub compression: String,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Accepted for docker compatibility; kiln never asks for confirmation.
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// List containers.
    #[command(visible_aliases = ["ps", "list"])]
    Ls(PsArgs),
    /// Remove containers.
    Rm(RmArgs),
    /// Create an image from a container's changes.
    Commit(CommitArgs),
    /// Remove all stopped containers.
    Prune(PruneArgs),
}

pub fn run(root: &Option<PathBuf>, command: ContainerCommand) -> CliResult<ExitCode> {
    match command {
        ContainerCommand::Ls(args) => ps(root, args),
        ContainerCommand::Rm(args) => rm(root, args),
        ContainerCommand::Commit(args) => commit(root, args),
        ContainerCommand::Prune(args) => prune(root, args),
    }
}

/// The store and its containers.
fn open(root: &Option<PathBuf>) -> CliResult<(Store, Containers)> {
    let store = open_store(root, Access::Write)?;
    let containers = Containers::open(store.root())?;
    Ok((store, containers))
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// docker's STATUS column: `Up 3 minutes`, `Exited (7) 2 seconds ago`, `Created`.
fn status(record: &Record, now: i64) -> String {
    let since = |at: &str| parse_rfc3339(at).map_or(0, |t| now - t);
    if record.is_running() {
        let up = human::ago(since(&record.created));
        return format!("Up {}", up.trim_end_matches(" ago"));
    }
    match (record.state, record.exit_code) {
        (State::Created, _) if record.pid.is_none() => "Created".to_string(),
        (_, Some(code)) => format!(
            "Exited ({code}) {}",
            human::ago(since(record.finished.as_deref().unwrap_or(&record.created)))
        ),
        // Its process died before it could record how the command ended.
        (_, None) => "Exited (unknown)".to_string(),
    }
}

/// The state docker's JSON reports: a record whose process is gone is no longer running.
fn state_name(record: &Record) -> &'static str {
    if record.is_running() {
        "running"
    } else if record.state == State::Created && record.pid.is_none() {
        "created"
    } else {
        "exited"
    }
}

/// A command line as docker's COMMAND column shows it: words joined, quoted as a whole.
fn command_text(record: &Record) -> String {
    record.command.join(" ")
}

fn ps(root: &Option<PathBuf>, args: PsArgs) -> CliResult<ExitCode> {
    let json = match args.format.as_str() {
        "table" => false,
        "json" => true,
        other => {
            return Err(CliError::usage(format!(
                "unknown --format {other:?}: expected table or json"
            )));
        }
    };
    let (_store, containers) = open(root)?;
    let now = now_secs();
    let shown: Vec<Record> = containers
        .list()?
        .into_iter()
        .filter(|r| args.all || r.is_running())
        .collect();
    let id = |r: &Record| {
        if args.no_trunc {
            r.id.clone()
        } else {
            r.short_id().to_string()
        }
    };
    let mut text = String::new();
    if args.quiet {
        for r in &shown {
            text.push_str(&id(r));
            text.push('\n');
        }
    } else if json {
        for r in &shown {
            let line = serde_json::json!({
                "ID": id(r),
                "Image": r.image,
                "ImageID": r.image_id,
                "Command": format!("\"{}\"", command_text(r)),
                "CreatedAt": r.created,
                "RunningFor": human::age_of(Some(&r.created)),
                "State": state_name(r),
                "Status": status(r, now),
                "ExitCode": r.exit_code,
                "Names": r.name,
            });
            text.push_str(&line.to_string());
            text.push('\n');
        }
    } else {
        let rows: Vec<Vec<String>> = shown
            .iter()
            .map(|r| {
                let command = if args.no_trunc {
                    command_text(r)
                } else {
                    human::ellipsis(&command_text(r), 20)
                };
                vec![
                    id(r),
                    r.image.clone(),
                    format!("\"{command}\""),
                    human::age_of(Some(&r.created)),
                    status(r, now),
                    r.name.clone(),
                ]
            })
            .collect();
        text = human::table(
            &[
                "CONTAINER ID",
                "IMAGE",
                "COMMAND",
                "CREATED",
                "STATUS",
                "NAMES",
            ],
            &rows,
        );
    }
    crate::commands::print_stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn refuse_running(record: &Record, doing: &str) -> CliResult<()> {
    if record.is_running() {
        return Err(CliError::Container {
            message: format!(
                "cannot {doing} container {} ({}): it is running",
                record.short_id(),
                record.name
            ),
            hint: Some(format!(
                "stop it first: Ctrl-C in its terminal, or `kill {}`",
                record.pid.unwrap_or_default()
            )),
        });
    }
    Ok(())
}

fn rm(root: &Option<PathBuf>, args: RmArgs) -> CliResult<ExitCode> {
    let (store, containers) = open(root)?;
    let snapshotter = Snapshotter::new(store.root())?;
    let mut failed = false;
    for name in &args.containers {
        let removed = containers.find(name).and_then(|record| {
            refuse_running(&record, "remove")?;
            containers.remove(&snapshotter, &record)
        });
        match removed {
            Ok(_) => println!("{name}"),
            Err(e) => {
                eprintln!("{}", e.render());
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn prune(root: &Option<PathBuf>, _args: PruneArgs) -> CliResult<ExitCode> {
    let (store, containers) = open(root)?;
    let snapshotter = Snapshotter::new(store.root())?;
    let mut deleted = Vec::new();
    let mut reclaimed = 0;
    for record in containers.list()? {
        if record.is_running() {
            continue;
        }
        reclaimed += containers.remove(&snapshotter, &record)?;
        deleted.push(record.id);
    }
    let mut text = String::new();
    if !deleted.is_empty() {
        text.push_str("Deleted Containers:\n");
        for id in &deleted {
            text.push_str(id);
            text.push('\n');
        }
        text.push('\n');
    }
    text.push_str(&format!(
        "Total reclaimed space: {}\n",
        human::size(reclaimed)
    ));
    crate::commands::print_stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn commit(root: &Option<PathBuf>, args: CommitArgs) -> CliResult<ExitCode> {
    let tags = optional_tag(args.reference.as_deref())?;
    let options = layer_options(&args.compression)?;
    let (store, containers) = open(root)?;
    let record = containers.find(&args.container)?;
    refuse_running(&record, "commit")?;
    let image = store.find_image(&record.image_id).map_err(|e| match e {
        kiln_oci::Error::ImageNotFound(_) => CliError::Container {
            message: format!(
                "the image of container {} ({}, {}) is no longer in the store",
                record.short_id(),
                record.image,
                record.image_id
            ),
            hint: Some(
                "its changes alone cannot make an image; pull or load that image again".into(),
            ),
        },
        other => other.into(),
    })?;
    let snapshotter = Snapshotter::new(store.root())?;
    // Applies any layer pruned since the run: a copy is diffed against its parent's tree.
    let parent: Option<ChainId> = kiln_builder::rootfs::unpack_image(&store, &snapshotter, &image)
        .map_err(containers::from_builder)?;
    let recorded = record.parent_chain.as_deref();
    if parent.as_ref().map(|c| c.to_string()).as_deref() != recorded {
        return Err(CliError::Container {
            message: format!(
                "container {}: its image's layers are not the ones it ran on",
                record.short_id()
            ),
            hint: None,
        });
    }
    let layer = diff_container(
        &store,
        &snapshotter,
        &containers,
        &record,
        parent.as_ref(),
        options,
    )?;

    let mut layers = Vec::new();
    for (layer, diff_id) in image.layers()?.into_iter().zip(image.diff_ids()?) {
        layers.push(Layer {
            digest: layer.digest,
            diff_id,
            size: layer.size,
            media_type: layer.media_type,
        });
    }
    layers.push(layer);
    let created = creation_time();
    let mut config = image.config.clone();
    config.created = Some(created.clone());
    if args.author.is_some() {
        config.author = args.author.clone();
    }
    config.history.push(History {
        created: Some(created),
        created_by: Some(command_text(&record)),
        author: args.author,
        comment: args.message,
        ..History::default()
    });
    let committed = store.write_image(&config, &layers, &tags)?;
    crate::commands::print_stdout(&format!("{}\n", committed.id))?;
    Ok(ExitCode::SUCCESS)
}

/// The container's changes as a new layer blob, without the sandbox's mount points.
fn diff_container(
    store: &Store,
    snapshotter: &Snapshotter,
    containers: &Containers,
    record: &Record,
    parent: Option<&ChainId>,
    options: LayerOptions,
) -> CliResult<Layer> {
    let mut exclude: Vec<String> = SANDBOX_MOUNT_POINTS.iter().map(|p| p.to_string()).collect();
    exclude.extend(record.mount_points.iter().cloned());
    let diff = DiffOptions {
        clamp_mtime: None,
        exclude,
    };
    let rootfs: PathBuf = containers.rootfs_dir(record);
    let mut writer = LayerWriter::new(store, options)?;
    snapshotter.diff_kept(Path::new(&rootfs), parent, &mut writer, &diff)?;
    Ok(writer.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(state: State, exit_code: Option<i32>, pid: Option<u32>) -> Record {
        Record {
            id: "a".repeat(64),
            name: "n".into(),
            image: "busybox".into(),
            image_id: "sha256:00".into(),
            parent_chain: None,
            command: vec!["sh".into(), "-c".into(), "exit 7".into()],
            created: kiln_oci::config::rfc3339(1_000),
            state,
            exit_code,
            finished: Some(kiln_oci::config::rfc3339(1_100)),
            pid,
            pid_start: pid.map(|_| 1),
            mount_points: Vec::new(),
        }
    }

    #[test]
    fn statuses_read_like_docker() {
        assert_eq!(
            status(&record(State::Exited, Some(7), None), 1_102),
            "Exited (7) 2 seconds ago"
        );
        assert_eq!(
            status(&record(State::Created, None, None), 1_000),
            "Created"
        );
        // A run whose process is gone: it did not get to write its exit status.
        let dead = record(State::Running, None, Some(u32::MAX));
        assert_eq!(status(&dead, 1_000), "Exited (unknown)");
        assert_eq!(state_name(&dead), "exited");
        assert_eq!(command_text(&dead), "sh -c exit 7");
    }
}
