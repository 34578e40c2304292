//! `kiln parse`: print a Dockerfile's syntax tree, as BuildKit's dump or as JSON with spans.

use super::dockerfile;
use crate::error::{CliError, CliResult};
use clap::{Args, ValueEnum};
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// BuildKit's AST dump: one `(instruction "arg" …)` line per instruction.
    Dump,
    /// The syntax tree with source spans, as JSON.
    Json,
}

#[derive(Debug, Args)]
pub struct ParseArgs {
    #[command(flatten)]
    pub file: dockerfile::FileArg,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Dump)]
    pub format: Format,
}

pub fn run(args: ParseArgs) -> CliResult<ExitCode> {
    let source = args.file.read()?;
    let tree = source.parse()?;
    source.warn(&tree.warnings);
    let out = match args.format {
        Format::Dump => kiln_grammar::dump::dump(&tree),
        Format::Json => {
            let mut json = serde_json::to_string_pretty(&tree)
                .map_err(|e| CliError::usage(format!("cannot encode the syntax tree: {e}")))?;
            json.push('\n');
            json
        }
    };
    super::print_stdout(&out)?;
    Ok(ExitCode::SUCCESS)
}
