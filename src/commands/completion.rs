//! `kiln completion SHELL` and `kiln man [--dir DIR]`: shell completion scripts and man pages,
//! both generated from the same clap definition that parses the command line, so they can never
//! disagree with what kiln accepts.

use super::print_stdout;
use crate::error::{CliError, CliResult};
use clap::{Args, CommandFactory};
use clap_complete::Shell;
use clap_mangen::Man;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell to write the completion script for.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write kiln.1 and a page for every subcommand (kiln-build.1 and so on) into this
    /// directory (created when missing) instead of printing kiln.1 to stdout.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// The command tree the pages and scripts describe: the parser's own, as the binary is named.
fn command() -> clap::Command {
    // Without this, clap adds a `help` subcommand to every command that has subcommands, which
    // would get pages of its own (kiln-help.1, kiln-container-help.1) that say nothing new.
    let mut cmd = crate::Cli::command()
        .bin_name("kiln")
        .disable_help_subcommand(true);
    // Building fills in what the pages need: display names (kiln-build), propagated global
    // flags (--root on every page) and the version on every subcommand.
    cmd.build();
    cmd
}

/// The command tree without its hidden subcommands. clap_complete offers hidden subcommands
/// like any other (it only drops hidden flags and values), and clap cannot remove a subcommand,
/// so the top level is assembled anew from the parser's parts. Only the top level has hidden
/// subcommands (`sandbox`, a debugging tool).
fn visible_command() -> clap::Command {
    let full = crate::Cli::command();
    let mut cmd = clap::Command::new("kiln")
        .bin_name("kiln")
        .version(env!("CARGO_PKG_VERSION"))
        .propagate_version(true)
        .disable_help_subcommand(true)
        .args(full.get_arguments().cloned())
        .subcommands(
            full.get_subcommands()
                .filter(|sub| !sub.is_hide_set())
                .cloned(),
        );
    if let Some(about) = full.get_about() {
        cmd = cmd.about(about.clone());
    }
    cmd.build();
    cmd
}

/// Print the completion script for `args.shell`.
pub fn completion(args: CompletionArgs) -> CliResult<ExitCode> {
    let mut cmd = visible_command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "kiln", &mut script);
    // The script is built from kiln's own UTF-8 help text; lossy conversion cannot alter it.
    print_stdout(&String::from_utf8_lossy(&script))?;
    Ok(ExitCode::SUCCESS)
}

/// Print kiln.1, or write every page into `args.dir` and list the files written.
pub fn man(args: ManArgs) -> CliResult<ExitCode> {
    let cmd = command();
    match args.dir {
        None => {
            let page = render(&cmd).map_err(|e| CliError::io("<stdout>", e))?;
            print_stdout(&page)?;
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir).map_err(|e| CliError::io(&dir, e))?;
            let mut written = Vec::new();
            write_pages(&cmd, &dir, &mut written)?;
            let listing: String = written
                .iter()
                .map(|path| format!("{}\n", path.display()))
                .collect();
            print_stdout(&listing)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The roff source of `cmd`'s page.
fn render(cmd: &clap::Command) -> std::io::Result<String> {
    let mut page = Vec::new();
    page_of(cmd).render(&mut page)?;
    // clap_mangen writes roff built from kiln's UTF-8 strings; nothing here is lost.
    Ok(String::from_utf8_lossy(&page).into_owned())
}

fn page_of(cmd: &clap::Command) -> Man {
    let name = cmd.get_display_name().unwrap_or_else(|| cmd.get_name());
    Man::new(cmd.clone())
        // Man page titles are upper case by convention (KILN-BUILD(1)).
        .title(name.to_uppercase())
        // clap_mangen leaves the date field out entirely when it is empty, and the fields after
        // it then shift left: the footer would show the version as the date.
        .date(page_date())
        .manual("kiln Manual")
        // By default a subcommand's page would claim to come from "build 0.1.0".
        .source(format!("kiln {}", env!("CARGO_PKG_VERSION")))
}

/// The date a page shows: the day of `SOURCE_DATE_EPOCH` when set (so packagers get the same
/// pages from the same source), else today (UTC) — the same clock images are stamped with.
fn page_date() -> String {
    let created = kiln_oci::image::creation_time();
    created.get(..10).unwrap_or(&created).to_string()
}

/// Write the page of `cmd` and of each of its visible subcommands, depth first, into `dir`.
/// Hidden commands (the sandbox debugging tool) get no page, as they get no help entry.
fn write_pages(cmd: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> CliResult<()> {
    let man = page_of(cmd);
    let path = dir.join(man.get_filename());
    let page = render(cmd).map_err(|e| CliError::io(&path, e))?;
    std::fs::write(&path, page).map_err(|e| CliError::io(&path, e))?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        write_pages(sub, dir, written)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_visible_command_gets_a_page_named_after_its_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut written = Vec::new();
        write_pages(&command(), dir.path(), &mut written).expect("pages");
        let names: Vec<String> = written
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect();
        for expected in [
            "kiln.1",
            "kiln-build.1",
            "kiln-container-ls.1",
            "kiln-man.1",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} in {names:?}"
            );
        }
        assert!(
            !names
                .iter()
                .any(|n| n.contains("sandbox") || n.contains("help")),
            "no page for hidden or help commands: {names:?}"
        );
    }

    #[test]
    fn subcommand_pages_name_kiln_as_their_source() {
        let cmd = command();
        let build = cmd.find_subcommand("build").expect("build is a subcommand");
        let page = render(build).expect("render");
        let title = page
            .lines()
            .find(|line| line.starts_with(".TH "))
            .expect("a .TH line");
        let version = env!("CARGO_PKG_VERSION");
        assert!(title.starts_with(".TH KILN-BUILD 1 "), "{title}");
        assert!(
            title.ends_with(&format!("\"kiln {version}\" \"kiln Manual\"")),
            "{title}"
        );
    }
}
