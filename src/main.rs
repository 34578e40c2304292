//! The `kiln` command line: parses arguments, dispatches to a command, renders errors and exit codes.
//! Build logic lives in the library crates; this crate only wires them to the terminal.

mod commands;
mod containers;
mod error;
mod progress;

use clap::{Parser, Subcommand};
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
}

fn main() -> ExitCode {
    // The sandbox re-executes this binary as its helper; that must happen before anything else.
    kiln_runner::helper_main_if_requested();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Build(args) => commands::build::run(&cli.root, *args),
        Command::Parse(args) => commands::parse::run(args),
        Command::Plan(args) => commands::plan::run(args),
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
    };
    match outcome {
        Ok(code) => code,
        Err(err) => {
            eprintln!("{}", err.render());
            err.exit_code()
        }
    }
}
