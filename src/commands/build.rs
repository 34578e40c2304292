//! `kiln build`: accepts `docker buildx build`'s flags, reads the Dockerfile and resolves its plan.
//! Executing the plan (RUN in the sandbox, layers, the image) is not available yet: the command
//! says so plainly after checking everything it can check.

use super::dockerfile;
use super::plan::PlanInputs;
use crate::error::{CliError, CliResult};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The build context: a directory, or `-` for a tar archive on stdin.
    #[arg(value_name = "CONTEXT")]
    pub context: String,
    /// The Dockerfile (default: CONTEXT/Dockerfile; `-` reads it from stdin).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<String>,
    /// Name and optionally tag the image (`name:tag`); repeatable.
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    pub tags: Vec<String>,
    #[command(flatten)]
    pub plan: PlanInputs,
    /// Set a label on the image (`K=V`); repeatable.
    #[arg(long = "label", value_name = "K=V")]
    pub labels: Vec<String>,
    /// Do not use the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Do not use the cache for these stages.
    #[arg(long = "no-cache-filter", value_name = "STAGE", value_delimiter = ',')]
    pub no_cache_filter: Vec<String>,
    /// Always check for newer versions of base images.
    #[arg(long)]
    pub pull: bool,
    /// The network of RUN steps: `host` (default) or `none`.
    #[arg(long, value_name = "MODE")]
    pub network: Option<String>,
    /// The target platform; only the native one is supported.
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Where to put the result: `type=local|tar|oci|docker[,dest=PATH]`.
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,
    /// Write the image id (`sha256:…`) to this file.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Write the build's result metadata (buildx's keys) to this JSON file.
    #[arg(long = "metadata-file", value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    /// Print only the image id on success.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Progress output: auto, plain, tty, quiet.
    #[arg(long, value_name = "MODE", default_value = "auto")]
    pub progress: String,
    /// Layer compression: gzip (default) or zstd.
    #[arg(long, value_name = "ALGO", default_value = "gzip")]
    pub compression: String,
    /// A secret for RUN --mount=type=secret (`id=ID[,src=FILE|env=VAR]`).
    #[arg(long = "secret", value_name = "SPEC")]
    pub secrets: Vec<String>,
    /// An SSH agent socket or keys for RUN --mount=type=ssh (`default|ID[=SOCKET]`).
    #[arg(long = "ssh", value_name = "SPEC")]
    pub ssh: Vec<String>,
    /// Import build cache (`type=registry,ref=…` or `type=local,src=…`).
    #[arg(long = "cache-from", value_name = "SPEC")]
    pub cache_from: Vec<String>,
    /// Export build cache (`type=registry,ref=…[,mode=min|max]` or `type=local,dest=…`).
    #[arg(long = "cache-to", value_name = "SPEC")]
    pub cache_to: Vec<String>,
    /// Push the image after building it (same as `--output type=registry`).
    #[arg(long)]
    pub push: bool,
    #[command(flatten)]
    pub buildx_only: BuildxOnly,
}

/// `docker buildx build` flags that have no meaning for a daemonless builder: accepted, so that
/// scripts written for buildx run unchanged, and answered with a warning.
#[derive(Debug, Args)]
pub struct BuildxOnly {
    /// (buildx) Load the image into docker; kiln's store already holds it.
    #[arg(long)]
    pub load: bool,
    /// (buildx) The builder instance to use.
    #[arg(long, value_name = "NAME")]
    pub builder: Option<String>,
    /// (buildx) Provenance attestation.
    #[arg(long, value_name = "SPEC", num_args = 0..=1, default_missing_value = "true")]
    pub provenance: Option<String>,
    /// (buildx) SBOM attestation.
    #[arg(long, value_name = "SPEC", num_args = 0..=1, default_missing_value = "true")]
    pub sbom: Option<String>,
    /// (buildx) Attestation parameters.
    #[arg(long = "attest", value_name = "SPEC")]
    pub attest: Vec<String>,
}

impl BuildxOnly {
    fn warn_ignored(&self) {
        let mut ignored = Vec::new();
        if self.load {
            ignored.push("--load");
        }
        if self.builder.is_some() {
            ignored.push("--builder");
        }
        if self.provenance.is_some() {
            ignored.push("--provenance");
        }
        if self.sbom.is_some() {
            ignored.push("--sbom");
        }
        if !self.attest.is_empty() {
            ignored.push("--attest");
        }
        for flag in ignored {
            eprintln!("warning: {flag} has no effect with kiln (no daemon, no builder instances)");
        }
    }
}

impl BuildArgs {
    /// The Dockerfile path: `-f` as given (relative to the working directory, like docker), else
    /// `CONTEXT/Dockerfile`.
    fn dockerfile_path(&self) -> CliResult<String> {
        match &self.file {
            Some(file) => Ok(file.clone()),
            None if self.context == "-" => Err(CliError::Usage {
                message: "with the context on stdin, the Dockerfile must be named with -f".into(),
                hint: Some("pass -f PATH/Dockerfile, or a context directory".into()),
            }),
            None => Ok(Path::new(&self.context)
                .join("Dockerfile")
                .to_string_lossy()
                .into_owned()),
        }
    }
}

pub fn run(_root: &Option<PathBuf>, args: BuildArgs) -> CliResult<ExitCode> {
    args.buildx_only.warn_ignored();
    if args.context != "-" && !Path::new(&args.context).is_dir() {
        return Err(CliError::Usage {
            message: format!("build context {:?} is not a directory", args.context),
            hint: Some("pass the directory holding your sources, for example `.`".into()),
        });
    }
    let source = dockerfile::read(&args.dockerfile_path()?)?;
    let plan = args.plan.resolve(&source)?;
    let stages = plan.stages.len();
    Err(CliError::Unsupported {
        message: format!(
            "{}: parsed and planned ({stages} stage{} to build), but this version of kiln cannot execute builds yet",
            source.name,
            if stages == 1 { "" } else { "s" }
        ),
        hint: Some("`kiln plan` shows the resolved stage graph".into()),
    })
}
