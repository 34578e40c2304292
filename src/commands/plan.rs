//! `kiln plan`: resolve a Dockerfile into its stage graph (stages, bases, args, dependencies) as JSON.

use super::dockerfile;
use crate::error::{CliError, CliResult};
use clap::Args;
use kiln_grammar::plan::{BuildPlan, PlanOptions, Platform};
use std::collections::BTreeMap;
use std::process::ExitCode;

/// The Dockerfile-resolution flags shared by `kiln plan` and `kiln build`.
#[derive(Debug, Args)]
pub struct PlanInputs {
    /// The stage to build (default: the last one).
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
    /// Set a build-time variable (`K=V`, or `K` to take the value from the environment).
    #[arg(long = "build-arg", value_name = "K[=V]")]
    pub build_args: Vec<String>,
}

impl PlanInputs {
    /// `--build-arg` values as docker reads them: `K=V`, or `K` alone taking `$K` when it is set
    /// (and ignored when it is not).
    pub fn build_args(&self) -> CliResult<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for raw in &self.build_args {
            let (key, value) = match raw.split_once('=') {
                Some((k, v)) => (k, Some(v.to_string())),
                None => (raw.as_str(), std::env::var(raw).ok()),
            };
            if key.is_empty() {
                return Err(CliError::Usage {
                    message: format!("invalid --build-arg {raw:?}: the name is empty"),
                    hint: Some("write --build-arg NAME=VALUE".into()),
                });
            }
            if let Some(value) = value {
                out.insert(key.to_string(), value);
            }
        }
        Ok(out)
    }

    /// Parse the Dockerfile and resolve its plan for the native platform.
    pub fn resolve(&self, source: &dockerfile::Source) -> CliResult<BuildPlan> {
        let tree = source.parse()?;
        let options = PlanOptions {
            target: self.target.clone(),
            build_args: self.build_args()?,
            platform: Platform::native(),
        };
        let plan = kiln_grammar::plan::plan(&tree, &options).map_err(|e| source.error(e))?;
        source.warn(&tree.warnings);
        source.warn(&plan.warnings);
        if !plan.unused_build_args.is_empty() {
            eprintln!(
                "warning: build args not used by the Dockerfile: {}",
                plan.unused_build_args.join(", ")
            );
        }
        Ok(plan)
    }
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub file: dockerfile::FileArg,
    #[command(flatten)]
    pub inputs: PlanInputs,
}

pub fn run(args: PlanArgs) -> CliResult<ExitCode> {
    let source = args.file.read()?;
    let plan = args.inputs.resolve(&source)?;
    let mut json = serde_json::to_string_pretty(&plan)
        .map_err(|e| CliError::usage(format!("cannot encode the plan: {e}")))?;
    json.push('\n');
    super::print_stdout(&json)?;
    Ok(ExitCode::SUCCESS)
}
