//! The `kiln` command line: parses arguments, dispatches to a command, renders errors and exit codes.
//! Build logic lives in the library crates; this crate only wires them to the terminal.

mod commands;
mod containers;
mod docker;
mod error;
mod progress;

use clap::{ColorChoice, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// kiln builds container images from Dockerfiles, without a daemon.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, propagate_version = true)]
pub struct Cli {
    /// The image store (default /var/lib/kiln as root, $XDG_DATA_HOME/kiln otherwise).
    #[arg(long, global = true, env = "KILN_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile.
    Build(Box<commands::build::BuildArgs>),
    /// Parse a Dockerfile and print its syntax tree.
    Parse(commands::parse::ParseArgs),
    /// Resolve a Dockerfile into its stage graph (JSON).
    Plan(commands::plan::PlanArgs),
    /// Run a docker command line (kiln also answers to the name `docker`).
    #[command(disable_help_flag = true)]
    Docker(docker::DockerArgs),
    #[command(flatten)]
    Store(commands::store::StoreCommand),
    /// Run a command in a new container from an image.
    Run(Box<commands::run::RunArgs>),
    /// List containers.
    Ps(commands::container::PsArgs),
    /// Remove containers.
    Rm(commands::container::RmArgs),
    /// Create an image from a container's changes.
    Commit(commands::container::CommitArgs),
    /// Manage containers.
    #[command(subcommand)]
    Container(commands::container::ContainerCommand),
    /// Run a command in the sandbox over a root filesystem directory (for testing and debugging).
    #[command(hide = true)]
    Sandbox(commands::sandbox::SandboxArgs),
    /// Download an image from a registry.
    Pull(commands::registry::PullArgs),
    /// Upload an image to a registry.
    Push(commands::registry::PushArgs),
    /// Log in to a registry.
    Login(commands::registry::LoginArgs),
    /// Log out from a registry.
    Logout(commands::registry::LogoutArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish or powershell).
    Completion(commands::completion::CompletionArgs),
    /// Print kiln's man page, or write the pages of all commands into a directory.
    Man(commands::completion::ManArgs),
}

fn main() -> ExitCode {
    // The sandbox re-executes this binary as its helper; that must happen before anything else.
    kiln_runner::helper_main_if_requested();
    if let Some(code) = docker::main_if_invoked_as_docker() {
        return code;
    }
    let cli = parse_args();
    let outcome = match cli.command {
        Command::Build(args) => commands::build::run(&cli.root, *args),
        Command::Parse(args) => commands::parse::run(args),
        Command::Plan(args) => commands::plan::run(args),
        Command::Docker(args) => docker::run(&cli.root, args),
        Command::Store(command) => commands::store::run(&cli.root, command),
        Command::Run(args) => commands::run::run(&cli.root, *args),
        Command::Ps(args) => {
            commands::container::run(&cli.root, commands::container::ContainerCommand::Ls(args))
        }
        Command::Rm(args) => {
            commands::container::run(&cli.root, commands::container::ContainerCommand::Rm(args))
        }
        Command::Commit(args) => commands::container::run(
            &cli.root,
            commands::container::ContainerCommand::Commit(args),
        ),
        Command::Container(command) => commands::container::run(&cli.root, command),
        Command::Sandbox(args) => commands::sandbox::run(args),
        Command::Pull(args) => commands::registry::pull(&cli.root, args),
        Command::Push(args) => commands::registry::push(&cli.root, args),
        Command::Login(args) => commands::registry::login(args),
        Command::Logout(args) => commands::registry::logout(args),
        Command::Completion(args) => commands::completion::completion(args),
        Command::Man(args) => commands::completion::man(args),
    };
    match outcome {
        Ok(code) => code,
        Err(err) => {
            eprintln!("{}", err.render());
            err.exit_code()
        }
    }
}

/// Parse the command line, with help and usage errors uncoloured when `NO_COLOR` is set and not
/// empty (https://no-color.org): the same rule the progress display follows, stated here rather
/// than left to whichever terminal detection clap's output stream does.
fn parse_args() -> Cli {
    let mut command = Cli::command();
    if std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()) {
        command = command.color(ColorChoice::Never);
    }
    let matches = command.get_matches_mut();
    Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.format(&mut command).exit())
}

#[cfg(test)]
mod tests {
    /// clap checks argument names and ids only when a command is built: every subcommand's are
    /// checked here, so a clash between flattened flag groups fails a test, not a user.
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
