//! kiln as `docker`: when the binary is invoked under the name `docker` (a symlink) or as
//! `kiln docker …`, the docker command line is translated into kiln's commands: each docker
//! command is parsed with docker's flags (kiln's own argument structs flattened in, see
//! [`cli`]) and handed to the kiln command that does the work; output is reshaped into
//! docker's formats ([`format`], with Go templates from [`template`]).
//!
//! Exit statuses follow the docker CLI: 125 for its own command-line errors, 1 for a failed
//! command, and `run`'s own (the container's status, 125/126/127 when it cannot start).

mod cli;
mod format;
mod template;

use crate::commands::store::StoreCommand;
use crate::commands::{Access, open_store, print_stdout};
use crate::error::{CliError, CliResult};
use clap::Args;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `kiln docker ARG…`: the arguments of a docker command line.
#[derive(Debug, Args)]
pub struct DockerArgs {
    /// A docker command and its arguments (`build -t app .`, `images`, `inspect -f … app`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub args: Vec<String>,
}

/// The exit status when this process was started as `docker`, or `None` to go on as kiln.
pub fn main_if_invoked_as_docker() -> Option<ExitCode> {
    let mut argv = std::env::args_os();
    let arg0 = argv.next()?;
    if Path::new(&arg0).file_name() != Some(OsStr::new("docker")) {
        return None;
    }
    let args: Vec<String> = argv.map(|a| a.to_string_lossy().into_owned()).collect();
    let root = std::env::var_os("KILN_ROOT").map(PathBuf::from);
    Some(main(root, args))
}

/// `kiln docker …`.
pub fn run(root: &Option<PathBuf>, args: DockerArgs) -> CliResult<ExitCode> {
    Ok(main(root.clone(), args.args))
}

/// Options that come before the command.
struct Globals {
    root: Option<PathBuf>,
    /// `--config DIR`: docker's configuration (credentials) directory, for push/pull/login.
    config: Option<String>,
}

fn main(root: Option<PathBuf>, args: Vec<String>) -> ExitCode {
    let mut globals = Globals { root, config: None };
    let mut rest = args.as_slice();
    while let Some(arg) = rest.first() {
        if !arg.starts_with('-') || arg == "-" {
            break;
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f, Some(v.to_string())),
            None => (arg.as_str(), None),
        };
        let takes_value = matches!(
            flag,
            "--root"
                | "--config"
                | "-c"
                | "--context"
                | "-H"
                | "--host"
                | "-l"
                | "--log-level"
                | "--tlscacert"
                | "--tlscert"
                | "--tlskey"
        );
        let value = if takes_value && inline.is_none() {
            let Some(v) = rest.get(1) else {
                eprintln!("flag needs an argument: {flag}\nSee 'docker --help'.");
                return ExitCode::from(cli::USAGE_FAILED);
            };
            rest = &rest[1..];
            Some(v.clone())
        } else {
            inline
        };
        match flag {
            "--root" => globals.root = value.map(PathBuf::from),
            "--config" => globals.config = value,
            "-v" | "--version" => {
                println!(
                    "kiln version {} (docker-compatible command line, API {})",
                    env!("CARGO_PKG_VERSION"),
                    format::API_VERSION
                );
                return ExitCode::SUCCESS;
            }
            "-h" | "--help" => {
                print!("{}", help());
                return ExitCode::SUCCESS;
            }
            _ if takes_value => {}
            "-D" | "--debug" | "--tls" | "--tlsverify" => {}
            other => {
                eprintln!("unknown flag: {other}\nSee 'docker --help'.");
                return ExitCode::from(cli::USAGE_FAILED);
            }
        }
        rest = &rest[1..];
    }
    let Some((command, args)) = rest.split_first() else {
        print!("{}", help());
        return ExitCode::SUCCESS;
    };
    dispatch(&globals, command, args)
}

fn help() -> String {
    "Usage:  docker [OPTIONS] COMMAND\n\n\
     kiln, answering to docker's command line: builds and keeps images without a daemon.\n\n\
     Commands:\n  \
       build       Build an image from a Dockerfile\n  \
       buildx      Build with buildx's flags (build, create, use, inspect, ls, version, rm, stop)\n  \
       images      List images\n  \
       image       Manage images (build, ls, tag, push, pull, rm, inspect, save, load, history)\n  \
       inspect     Return low-level information on images\n  \
       tag         Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE\n  \
       rmi         Remove one or more images\n  \
       save        Save one or more images to a tar archive (streamed to STDOUT by default)\n  \
       load        Load an image from a tar archive or STDIN\n  \
       run         Create and run a new container from an image\n  \
       ps          List containers (kept by `run` without --rm)\n  \
       rm          Remove one or more containers\n  \
       commit      Create a new image from a container's changes\n  \
       container   Manage containers (ls, rm, commit, prune)\n  \
       push        Upload an image to a registry\n  \
       pull        Download an image from a registry\n  \
       login       Authenticate to a registry\n  \
       logout      Log out from a registry\n  \
       history     Show the history of an image\n  \
       import      Import the contents from a tarball to create a filesystem image\n  \
       version     Show the kiln version information\n  \
       info        Display system-wide information\n\n\
     Global Options:\n      \
           --config string   Location of client config files (credentials)\n      \
           --root string     kiln's image store (default: $KILN_ROOT, else kiln's default)\n  \
       -v, --version         Print version information and quit\n\n\
     See docs/docker-compat.md for what differs from docker.\n"
        .to_string()
}

fn unknown_command(path: &str, command: &str) -> ExitCode {
    eprintln!(
        "docker: unknown command: docker {}{command}\n\nRun 'docker {}--help' for more information",
        path, path
    );
    ExitCode::from(1)
}

/// A kiln command's result as docker reports it: errors on stderr, exit status 1.
fn finish(result: CliResult<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(err) => {
            // docker prints a command's error as it is, without kiln's `error: ` label.
            let text = err.render();
            eprintln!("{}", text.strip_prefix("error: ").unwrap_or(&text));
            ExitCode::from(1)
        }
    }
}

macro_rules! parse_or_exit {
    ($ty:ty, $name:expr, $usage:expr, $args:expr) => {
        match cli::parse::<$ty>($name, &format!("docker {} {}", $name, $usage), $args) {
            Ok(parsed) => parsed,
            Err(code) => return code,
        }
    };
}

fn dispatch(globals: &Globals, command: &str, args: &[String]) -> ExitCode {
    let root = &globals.root;
    match command {
        "build" => build(root, "build", args, false),
        "buildx" => buildx(globals, args),
        "images" => images(root, "images", args),
        "image" => {
            let Some((sub, args)) = args.split_first() else {
                print!("{}", help());
                return ExitCode::SUCCESS;
            };
            match sub.as_str() {
                "build" => build(root, "image build", args, false),
                "ls" | "list" => images(root, "image ls", args),
                "tag" => tag(root, "image tag", args),
                "rm" | "remove" => rmi(root, "image rm", args),
                "inspect" => inspect(root, "image inspect", args),
                "save" => save(root, "image save", args),
                "load" => load(root, "image load", args),
                "history" => history(root, "image history", args),
                "import" => import(root, "image import", args),
                "push" => push(globals, "image push", args),
                "pull" => pull(globals, "image pull", args),
                "-h" | "--help" => {
                    print!("{}", help());
                    ExitCode::SUCCESS
                }
                other => unknown_command("image ", other),
            }
        }
        "ps" => containers(root, "ps", args),
        "rm" => containers(root, "rm", args),
        "commit" => containers(root, "commit", args),
        "container" => match args.split_first() {
            Some((sub, args)) => match sub.as_str() {
                "ls" | "ps" | "list" => containers(root, "container ls", args),
                "rm" | "remove" => containers(root, "container rm", args),
                "commit" => containers(root, "container commit", args),
                "prune" => containers(root, "container prune", args),
                "-h" | "--help" => {
                    print!("{}", help());
                    ExitCode::SUCCESS
                }
                other => unknown_command("container ", other),
            },
            None => {
                print!("{}", help());
                ExitCode::SUCCESS
            }
        },
        "tag" => tag(root, "tag", args),
        "rmi" => rmi(root, "rmi", args),
        "inspect" => inspect(root, "inspect", args),
        "save" => save(root, "save", args),
        "load" => load(root, "load", args),
        "history" => history(root, "history", args),
        "import" => import(root, "import", args),
        "run" => run_container(root, args),
        "version" => version(args),
        "info" => finish(info(root, args)),
        "push" => push(globals, "push", args),
        "pull" => pull(globals, "pull", args),
        "login" => login(globals, args),
        "logout" => logout(globals, args),
        "help" => {
            print!("{}", help());
            ExitCode::SUCCESS
        }
        other => unknown_command("", other),
    }
}

fn build(root: &Option<PathBuf>, name: &str, args: &[String], buildx: bool) -> ExitCode {
    let parsed = parse_or_exit!(cli::Build, name, "[OPTIONS] PATH | URL | -", args);
    for flag in parsed.daemon.without_effect() {
        eprintln!("note: {flag} has no effect with kiln (it configures docker's build daemon)");
    }
    let mut kiln = parsed.kiln;
    // `--load` asks for the image in the local image store, which is where kiln puts it;
    // `--builder` names a builder `buildx create` made, which is kiln itself.
    kiln.buildx_only.load = false;
    kiln.buildx_only.builder = None;
    // The legacy builder's closing lines, which scripts grep for; buildx prints none, and
    // neither does plain or machine-readable progress.
    kiln.classic_summary =
        !buildx && !kiln.quiet && !matches!(kiln.progress.as_str(), "plain" | "rawjson" | "quiet");
    finish(crate::commands::build::run(root, kiln))
}

fn store_command(root: &Option<PathBuf>, command: StoreCommand) -> ExitCode {
    finish(crate::commands::store::run(root, command))
}

fn tag(root: &Option<PathBuf>, name: &str, args: &[String]) -> ExitCode {
    let parsed = parse_or_exit!(
        cli::Tag,
        name,
        "SOURCE_IMAGE[:TAG] TARGET_IMAGE[:TAG]",
        args
    );
    store_command(root, StoreCommand::Tag(parsed.kiln))
}

fn rmi(root: &Option<PathBuf>, name: &str, args: &[String]) -> ExitCode {
    let parsed = parse_or_exit!(cli::Rmi, name, "[OPTIONS] IMAGE [IMAGE...]", args);
    store_command(root, StoreCommand::Rmi(parsed.kiln))
}

fn save(root: &Option<PathBuf>, name: &str, args: &[String]) -> ExitCode {
    let parsed = parse_or_exit!(cli::Save, name, "[OPTIONS] IMAGE [IMAGE...]", args);
    store_command(root, StoreCommand::Save(parsed.kiln))
}

fn load(root: &Option<PathBuf>, name: &str, args: &[String]) -> ExitCode {
    let parsed = parse_or_exit!(cli::Load, name, "[OPTIONS]", args);
    store_command(root, StoreCommand::Load(parsed.kiln))
}

fn import(root: &Option<PathBuf>, name: &str, args: &[String]) -> ExitCode {
    let parsed = parse_or_exit!(
        cli::Import,
        name,
        "[OPTIONS] file|URL|- [REPOSITORY[:TAG]]",
        args
    );
    if !parsed.changes.is_empty() {
        return finish(Err(CliError::Unsupported {
            message: "--change: kiln imports the file system only".into(),
            hint: Some("build FROM the imported image to set its config".into()),
        }));
    }
    store_command(root, StoreCommand::Import(parsed.kiln))
}

fn history(root: &Option<PathBuf>, name: &str, args: &[String]) -> ExitCode {
    #[derive(Debug, clap::Parser)]
    #[command(about = "Show the history of an image", long_about = None)]
    struct History {
        #[command(flatten)]
        kiln: crate::commands::store::HistoryArgs,
        /// Print sizes and dates in human readable format (always).
        #[arg(short = 'H', long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
        human: Option<String>,
    }
    let parsed = parse_or_exit!(History, name, "[OPTIONS] IMAGE", args);
    store_command(root, StoreCommand::History(parsed.kiln))
}

/// `ps`, `rm`, `commit` and `container …`: kiln's container commands.
fn containers(root: &Option<PathBuf>, name: &str, args: &[String]) -> ExitCode {
    use crate::commands::container::{self, ContainerCommand};
    let command = match name.trim_start_matches("container ") {
        "ps" | "ls" => ContainerCommand::Ls(parse_or_exit!(cli::Ps, name, "[OPTIONS]", args).kiln),
        "rm" => ContainerCommand::Rm(
            parse_or_exit!(
                cli::ContainerRm,
                name,
                "[OPTIONS] CONTAINER [CONTAINER...]",
                args
            )
            .kiln,
        ),
        "commit" => ContainerCommand::Commit(
            parse_or_exit!(
                cli::Commit,
                name,
                "[OPTIONS] CONTAINER [REPOSITORY[:TAG]]",
                args
            )
            .kiln,
        ),
        _ => ContainerCommand::Prune(
            parse_or_exit!(cli::ContainerPrune, name, "[OPTIONS]", args).kiln,
        ),
    };
    finish(container::run(root, command))
}

fn images(root: &Option<PathBuf>, name: &str, args: &[String]) -> ExitCode {
    let parsed = parse_or_exit!(cli::Images, name, "[OPTIONS] [REPOSITORY[:TAG]]", args);
    finish((|| {
        let store = open_store(root, Access::Read)?;
        let view = format::ImagesView {
            repository: parsed.repository.as_deref(),
            filters: &parsed.filters,
            format: parsed.format.as_deref(),
            digests: parsed.digests,
            no_trunc: parsed.no_trunc,
            quiet: parsed.quiet,
        };
        print_stdout(&format::images(&store, &view)?)?;
        Ok(ExitCode::SUCCESS)
    })())
}

fn inspect(root: &Option<PathBuf>, name: &str, args: &[String]) -> ExitCode {
    let usage = if name == "inspect" {
        "[OPTIONS] NAME|ID [NAME|ID...]"
    } else {
        "[OPTIONS] IMAGE [IMAGE...]"
    };
    let parsed = parse_or_exit!(cli::Inspect, name, usage, args);
    finish((|| {
        if let Some(kind) = parsed.kind.as_deref().filter(|k| *k != "image") {
            return Err(CliError::Unsupported {
                message: format!("--type {kind}: kiln inspects images only"),
                hint: None,
            });
        }
        let store = open_store(root, Access::Read)?;
        let mut images = Vec::new();
        let mut missing = Vec::new();
        for wanted in &parsed.names {
            match store.find_image(wanted) {
                Ok(image) => images.push(image),
                Err(kiln_oci::Error::ImageNotFound(_)) => missing.push(wanted.clone()),
                Err(e) => return Err(e.into()),
            }
        }
        let text = match parsed.format.as_deref() {
            None | Some("") => {
                let all: Vec<format::DockerInspect<'_>> =
                    images.iter().map(format::inspect).collect();
                format::docker_json(&all)?
            }
            Some(template) => {
                let mut text = String::new();
                for image in &images {
                    text.push_str(&format::render_one(
                        "",
                        template,
                        &format::inspect_value(image)?,
                    )?);
                }
                text
            }
        };
        print_stdout(&text)?;
        if missing.is_empty() {
            return Ok(ExitCode::SUCCESS);
        }
        for wanted in missing {
            if name == "inspect" {
                eprintln!("Error: No such object: {wanted}");
            } else {
                eprintln!("Error: No such image: {wanted}");
            }
        }
        Ok(ExitCode::from(1))
    })())
}

fn run_container(root: &Option<PathBuf>, args: &[String]) -> ExitCode {
    let parsed = parse_or_exit!(cli::Run, "run", "[OPTIONS] IMAGE [COMMAND] [ARG...]", args);
    if parsed.detach {
        eprintln!(
            "docker: -d: kiln runs containers in the foreground only.\n\n\
             Run 'docker run --help' for more information"
        );
        return ExitCode::from(cli::USAGE_FAILED);
    }
    if !parsed.publish.is_empty() {
        eprintln!("note: -p has no effect with kiln (containers use the host's network or none)");
    }
    if !parsed.labels.is_empty() {
        eprintln!("note: --label has no effect with kiln (containers carry no labels)");
    }
    if let Some(platform) = &parsed.kiln.platform {
        let native = format!("{}/{}", std::env::consts::OS, format::go_arch());
        if !platform.starts_with(&native) {
            eprintln!("docker: --platform {platform}: kiln runs only {native} images");
            return ExitCode::from(cli::USAGE_FAILED);
        }
    }
    // kiln run reports its own errors with docker run's statuses.
    match crate::commands::run::run(root, parsed.kiln) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("{}", err.render());
            ExitCode::from(cli::USAGE_FAILED)
        }
    }
}

fn version(args: &[String]) -> ExitCode {
    let parsed = parse_or_exit!(cli::Formatted, "version", "[OPTIONS]", args);
    let value = format::version_value();
    finish((|| {
        let text = match parsed.format.as_deref() {
            Some(f) => format::render_one("version", f, &value)?,
            None => format::version_text(&value),
        };
        print_stdout(&text)?;
        Ok(ExitCode::SUCCESS)
    })())
}

fn info(root: &Option<PathBuf>, args: &[String]) -> CliResult<ExitCode> {
    let parsed = match cli::parse::<cli::Formatted>("info", "docker info [OPTIONS]", args) {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let store = open_store(root, Access::Read)?;
    let mut ids: Vec<String> = store
        .list_images()?
        .into_iter()
        .filter_map(|s| s.id.map(|d| d.to_string()))
        .collect();
    ids.sort();
    ids.dedup();
    let containers = crate::containers::Containers::open(store.root())?.list()?;
    let driver = match kiln_snapshotter::Snapshotter::new(store.root()) {
        Ok(s) => match s.backend() {
            kiln_snapshotter::Backend::Overlay => "overlay".to_string(),
            kiln_snapshotter::Backend::Copy { .. } => "copy".to_string(),
        },
        Err(_) => "unknown".to_string(),
    };
    let inputs = format::InfoInputs {
        images: ids.len(),
        containers: containers.len(),
        running: containers.iter().filter(|c| c.is_running()).count(),
        root: store.root().display().to_string(),
        driver,
    };
    let value = format::info_value(&inputs);
    let text = match parsed.format.as_deref() {
        Some(f) => format::render_one("", f, &value)?,
        None => format::info_text(&value),
    };
    print_stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// `docker buildx …`: kiln is its own builder, always ready; builder management is accepted
/// and reports that builder.
fn buildx(globals: &Globals, args: &[String]) -> ExitCode {
    let Some((sub, args)) = args.split_first() else {
        print!("{}", help());
        return ExitCode::SUCCESS;
    };
    let platform = format!("{}/{}", std::env::consts::OS, format::go_arch());
    let version = env!("CARGO_PKG_VERSION");
    match sub.as_str() {
        "build" | "b" => build(&globals.root, "buildx build", args, true),
        "create" => {
            let parsed = parse_or_exit!(
                cli::BuildxCreate,
                "buildx create",
                "[OPTIONS] [CONTEXT|ENDPOINT]",
                args
            );
            println!("{}", parsed.name.as_deref().unwrap_or("kiln"));
            ExitCode::SUCCESS
        }
        "use" | "rm" | "stop" => {
            let _ = parse_or_exit!(
                cli::BuildxNamed,
                &format!("buildx {sub}"),
                "[OPTIONS] [NAME]",
                args
            );
            ExitCode::SUCCESS
        }
        "inspect" => {
            let parsed =
                parse_or_exit!(cli::BuildxNamed, "buildx inspect", "[OPTIONS] [NAME]", args);
            let name = parsed.name.as_deref().unwrap_or("kiln");
            print!(
                "Name:          {name}\nDriver:        kiln\n\nNodes:\nName:             {name}0\n\
                 Endpoint:         local\nStatus:           running\n\
                 BuildKit version: kiln {version}\nPlatforms:        {platform}\n"
            );
            ExitCode::SUCCESS
        }
        "ls" => {
            let _ = parse_or_exit!(cli::BuildxPlain, "buildx ls", "[OPTIONS]", args);
            let rows = vec![
                vec![
                    "kiln*".into(),
                    "kiln".into(),
                    String::new(),
                    String::new(),
                    String::new(),
                ],
                vec![
                    " \\_ kiln0".into(),
                    " \\_ local".into(),
                    "running".into(),
                    format!("kiln {version}"),
                    platform,
                ],
            ];
            print!(
                "{}",
                crate::commands::store::human::table(
                    &[
                        "NAME/NODE",
                        "DRIVER/ENDPOINT",
                        "STATUS",
                        "BUILDKIT",
                        "PLATFORMS"
                    ],
                    &rows
                )
            );
            ExitCode::SUCCESS
        }
        "version" => {
            let _ = parse_or_exit!(cli::BuildxPlain, "buildx version", "", args);
            println!("kiln v{version} builtin");
            ExitCode::SUCCESS
        }
        "-h" | "--help" => {
            print!("{}", help());
            ExitCode::SUCCESS
        }
        other => unknown_command("buildx ", other),
    }
}

/// Runs `kiln ARGS…` in place of this process: for the registry commands, which kiln's own
/// command line implements.
fn exec_kiln(globals: &Globals, args: Vec<String>) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("error: cannot find kiln's own executable: {e}");
            return ExitCode::from(1);
        }
    };
    let mut command = std::process::Command::new(exe);
    command.arg0("kiln");
    if let Some(root) = &globals.root {
        command.arg("--root").arg(root);
    }
    if let Some(config) = &globals.config {
        command.env("DOCKER_CONFIG", config);
    }
    let err = command.args(args).exec();
    eprintln!("error: cannot run kiln: {err}");
    ExitCode::from(1)
}

fn push(globals: &Globals, name: &str, args: &[String]) -> ExitCode {
    let parsed = parse_or_exit!(cli::Push, name, "[OPTIONS] NAME[:TAG]", args);
    if parsed.flags.all_tags {
        eprintln!("note: --all-tags: kiln pushes the one name given");
    }
    exec_kiln(globals, parsed.kiln_args())
}

fn pull(globals: &Globals, name: &str, args: &[String]) -> ExitCode {
    let parsed = parse_or_exit!(cli::Pull, name, "[OPTIONS] NAME[:TAG|@DIGEST]", args);
    if parsed.flags.all_tags {
        eprintln!("note: --all-tags: kiln pulls the one name given");
    }
    exec_kiln(globals, parsed.kiln_args())
}

fn login(globals: &Globals, args: &[String]) -> ExitCode {
    let parsed = parse_or_exit!(cli::Login, "login", "[OPTIONS] [SERVER]", args);
    exec_kiln(globals, parsed.kiln_args())
}

fn logout(globals: &Globals, args: &[String]) -> ExitCode {
    let parsed = parse_or_exit!(cli::Logout, "logout", "[SERVER]", args);
    exec_kiln(globals, parsed.kiln_args())
}
