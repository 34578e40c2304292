//! `kiln build`: accepts `docker buildx build`'s flags, turns them into a
//! `kiln_builder::BuildRequest`, runs the build with the chosen progress display and writes the
//! results: the image id on stdout (or a `result` object in rawjson mode), `--iidfile`,
//! `--metadata-file` and every `--output`.

mod cache;
mod context;
mod isolation;
mod output;
mod scratch;
mod secrets;
mod ssh_agent;

use crate::commands::{Access, open_store};
use crate::error::{CliError, CliResult};
use crate::progress::{Mode, Progress};
use clap::Args;
use kiln_builder::events::EventSink;
use kiln_builder::{BuildOutcome, BuildRequest};
use kiln_grammar::plan::{PlanOptions, Platform};
use kiln_oci::{Compression, Image, Reference, Store};
use kiln_runner::Network;
use output::Output;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use super::plan::PlanInputs;

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The build context: a directory, or `-` for a tar archive on stdin (or, instead of a tar,
    /// a Dockerfile, with an empty context).
    #[arg(value_name = "CONTEXT")]
    pub context: String,
    /// The Dockerfile (default: CONTEXT/Dockerfile; `-` reads it from stdin). Relative to the
    /// working directory, or, with a context tar on stdin, a path inside the tar.
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
    /// Where to put the result besides the store: `type=local,dest=DIR` (or just `DIR`),
    /// `type=tar|oci|docker,dest=FILE|-`, `type=image[,name=N]`; repeatable.
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
    /// Progress output: auto, plain, tty, quiet or rawjson (JSON lines on stdout).
    #[arg(
        long,
        value_name = "MODE",
        default_value = "auto",
        env = "BUILDKIT_PROGRESS"
    )]
    pub progress: String,
    /// Layer compression: gzip (default) or zstd.
    #[arg(long, value_name = "ALGO", default_value = "gzip")]
    pub compression: String,
    /// A secret for RUN --mount=type=secret (`id=ID[,src=FILE|env=VAR]`).
    #[arg(long = "secret", value_name = "SPEC")]
    pub secrets: Vec<String>,
    /// An SSH agent socket for RUN --mount=type=ssh (`default` for $SSH_AUTH_SOCK, or
    /// `ID=SOCKET`).
    #[arg(long = "ssh", value_name = "SPEC")]
    pub ssh: Vec<String>,
    /// Import build cache (`type=registry,ref=…` or `type=local,src=…`); repeatable, tried
    /// in order.
    #[arg(long = "cache-from", value_name = "SPEC")]
    pub cache_from: Vec<String>,
    /// Export build cache (`type=registry,ref=…` or `type=local,dest=…`, with
    /// `[,mode=min|max][,ignore-error=true]`); repeatable.
    #[arg(long = "cache-to", value_name = "SPEC")]
    pub cache_to: Vec<String>,
    /// After the build, print why each step that ran was not answered from the cache.
    #[arg(long)]
    pub explain: bool,
    /// Push the image after building it (same as `--output type=registry`).
    #[arg(long)]
    pub push: bool,
    /// How RUN steps are confined: auto (the strongest that works here), namespace, chroot,
    /// or none (in this container's own root filesystem; see docs/isolation.md).
    #[arg(
        long,
        value_name = "MODE",
        default_value = "auto",
        env = "KILN_ISOLATION"
    )]
    pub isolation: String,
    /// Allow --isolation none outside a detected container.
    #[arg(long)]
    pub force: bool,
    /// Memory limit of each RUN step (bytes, or with a b/k/m/g suffix).
    #[arg(short = 'm', long, value_name = "SIZE", value_parser = super::sandbox::parse_size)]
    pub memory: Option<u64>,
    /// Maximum number of processes of each RUN step.
    #[arg(long = "pids-limit", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub pids_limit: Option<u64>,
    #[command(flatten)]
    pub buildx_only: BuildxOnly,
    /// End with the legacy docker builder's `Successfully built ID` / `Successfully tagged
    /// NAME` lines instead of the image id (set by kiln's docker command line, not a flag).
    #[arg(skip)]
    pub classic_summary: bool,
    #[command(flatten)]
    pub registry: super::registry::RegistryFlags,
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
    /// `--platform`: kiln runs RUN steps natively, so only the native platform can be built.
    fn platform(&self) -> CliResult<Platform> {
        let native = Platform::native();
        let Some(spec) = self.platform.as_deref().filter(|s| !s.is_empty()) else {
            return Ok(native);
        };
        let wanted: Vec<&str> = spec.split(',').map(str::trim).collect();
        if wanted.len() > 1 {
            return Err(CliError::Unsupported {
                message: format!("--platform {spec}: multi-platform builds are not supported"),
                hint: Some(format!("build for one platform: --platform {native}")),
            });
        }
        let platform = Platform::parse(wanted[0]).map_err(|e| CliError::Usage {
            message: format!("--platform: {e}"),
            hint: Some(format!("this machine builds {native}")),
        })?;
        // A variant left out means the native one (`linux/arm` on an arm/v7 machine).
        let same = platform.os == native.os
            && platform.architecture == native.architecture
            && (platform.variant.is_none() || platform.variant == native.variant);
        if !same {
            return Err(CliError::Unsupported {
                message: format!(
                    "--platform {spec}: kiln builds only for the platform it runs on ({native}); \
                     emulation is not supported"
                ),
                hint: Some(format!("drop --platform, or pass --platform {native}")),
            });
        }
        Ok(native)
    }

    fn network(&self) -> CliResult<Network> {
        match self.network.as_deref() {
            None | Some("default") | Some("host") => Ok(Network::Host),
            Some("none") => Ok(Network::None),
            Some(other) => Err(CliError::Usage {
                message: format!("unknown --network {other:?}"),
                hint: Some("RUN steps use host (the default) or none".into()),
            }),
        }
    }

    /// `--label K=V`; `--label K` sets an empty value, as docker does.
    fn labels(&self) -> CliResult<BTreeMap<String, String>> {
        let mut labels = BTreeMap::new();
        for raw in &self.labels {
            let (key, value) = raw.split_once('=').unwrap_or((raw, ""));
            if key.is_empty() {
                return Err(CliError::Usage {
                    message: format!("invalid --label {raw:?}: the name is empty"),
                    hint: Some("write --label NAME=VALUE".into()),
                });
            }
            labels.insert(key.to_string(), value.to_string());
        }
        Ok(labels)
    }
}

/// `-t` values and `type=image,name=…` names, normalised (`name:tag`), without repeats.
fn tags(args: &BuildArgs, outputs: &[Output]) -> CliResult<Vec<Reference>> {
    let mut tags: Vec<Reference> = Vec::new();
    for text in &args.tags {
        let reference = Reference::parse(text)?;
        if reference.digest().is_some() {
            return Err(CliError::usage(format!(
                "-t {text}: a tag cannot contain a digest; use NAME[:TAG]"
            )));
        }
        tags.push(reference.with_default_tag());
    }
    tags.extend(outputs.iter().flat_map(|o| o.image_names().iter().cloned()));
    let mut seen = std::collections::BTreeSet::new();
    tags.retain(|t| seen.insert(t.to_string()));
    Ok(tags)
}

pub fn run(root: &Option<PathBuf>, args: BuildArgs) -> CliResult<ExitCode> {
    args.buildx_only.warn_ignored();
    // Everything the command line can refuse is refused before the context is read.
    let platform = args.platform()?;
    let mut outputs = args
        .outputs
        .iter()
        .map(|spec| Output::parse(spec))
        .collect::<CliResult<Vec<_>>>()?;
    if args.push {
        outputs.push(Output::Registry { names: Vec::new() });
    }
    output::check_all(&outputs)?;
    let mode = Mode::select(&args.progress, args.quiet, std::io::stderr().is_terminal())?;
    let stdout_taken = outputs.iter().any(Output::writes_stdout);
    if stdout_taken && mode.uses_stdout() {
        return Err(CliError::Usage {
            message: "--progress=rawjson writes to stdout, which an --output with dest=- uses"
                .into(),
            hint: Some("write that output to a file with dest=FILE".into()),
        });
    }
    let tags = tags(&args, &outputs)?;
    output::check_push(&outputs, &tags)?;
    let compression = Compression::parse(&args.compression).map_err(|e| CliError::Usage {
        message: format!("--compression: {e}"),
        hint: None,
    })?;
    let network = args.network()?;
    let isolation = isolation::Pending::start(&args.isolation, args.force)?;
    let labels = args.labels()?;
    let secrets = secrets::secrets(&args.secrets)?;
    let ssh = secrets::ssh(&args.ssh)?;
    let cache_from = args
        .cache_from
        .iter()
        .map(|spec| cache::import_spec(spec))
        .collect::<CliResult<Vec<_>>>()?;
    let cache_to = args
        .cache_to
        .iter()
        .map(|spec| cache::export_spec(spec))
        .collect::<CliResult<Vec<_>>>()?;
    let registry = args.registry.config()?;
    let exporters = cache::open_exports(cache_to, &registry)?;
    let plan = PlanOptions {
        target: args.plan.target.clone(),
        build_args: args.plan.build_args()?,
        platform,
    };

    let store = open_store(root, Access::Write)?;
    let context = context::prepare(&store, &args.context, args.file.as_deref())?;
    let isolation = isolation.finish()?;
    let request = BuildRequest {
        context: context.dir.clone(),
        dockerfile_path: context.dockerfile_path.clone(),
        dockerfile_name: context.dockerfile.name.clone(),
        dockerfile: context.dockerfile.text.clone(),
        plan,
        tags: tags.iter().map(Reference::to_string).collect(),
        labels,
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        pull: args.pull,
        registry,
        network,
        compression,
        secrets,
        ssh: ssh.sockets.clone(),
        cache_from,
        isolation: isolation.isolation,
        limits: kiln_runner::Limits {
            memory: args.memory,
            pids: args.pids_limit,
            ..Default::default()
        },
    };

    let progress = Progress::new(mode.display());
    let progress = if args.explain {
        progress.collect_explanations()
    } else {
        progress
    };
    if let Some(warning) = isolation.warning() {
        progress.emit(warning);
    }
    let finished = build_and_export(&store, &request, &tags, &outputs, &progress).and_then(
        |(outcome, image)| {
            cache::export_all(&store, &outcome.cache, &exporters, &progress)?;
            if let Some(path) = &args.iidfile {
                output::write_file_atomically(path, |out| {
                    out.write_all(outcome.image_id.as_bytes())
                        .map_err(|e| CliError::io(path, e))
                })?;
            }
            if let Some(path) = &args.metadata_file {
                let json = metadata(&outcome, &image)?;
                output::write_file_atomically(path, |out| {
                    out.write_all(json.as_bytes())
                        .map_err(|e| CliError::io(path, e))
                })?;
            }
            Ok(outcome)
        },
    );
    drop(context);
    match finished {
        Ok(outcome) => {
            progress.finish(Some(&outcome));
            progress.print_explanations();
            // The image id is the command's result: on stdout unless stdout carries an
            // archive, or JSON lines (where the `result` object says it).
            if !stdout_taken && !mode.uses_stdout() {
                super::print_stdout(&result_text(&outcome, args.classic_summary))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            progress.finish(None);
            progress.print_explanations();
            Err(err)
        }
    }
}

/// What a successful build prints on stdout: the image id, or the legacy builder's lines.
fn result_text(outcome: &BuildOutcome, classic: bool) -> String {
    if !classic {
        return format!("{}\n", outcome.image_id);
    }
    let hex = outcome.image_id.trim_start_matches("sha256:");
    let mut text = format!("Successfully built {}\n", &hex[..hex.len().min(12)]);
    for tag in &outcome.tags {
        text.push_str(&format!("Successfully tagged {tag}\n"));
    }
    text
}

/// Runs the build, then writes every `--output` of the image it produced, each as a step of
/// the progress display.
fn build_and_export(
    store: &Store,
    request: &BuildRequest,
    tags: &[Reference],
    outputs: &[Output],
    progress: &Progress,
) -> CliResult<(BuildOutcome, Image)> {
    let outcome = kiln_builder::build(store, request, progress as &dyn EventSink)?;
    let image = store.find_image(&outcome.image_id)?;
    progress.step("exporting to image").run(|step| {
        step.log(format!("writing image {} done", outcome.image_id));
        for tag in &outcome.tags {
            step.log(format!("naming to {tag} done"));
        }
        Ok(())
    })?;
    for output in outputs {
        if let Output::Image { .. } = output {
            continue;
        }
        if let Output::Registry { names } = output {
            progress.step(output.title()).run(|step| {
                super::registry::push_output(store, &image, names, tags, &request.registry, step)
            })?;
            continue;
        }
        progress
            .step(output.title())
            .run(|step| output.export(store, &image, tags, step))?;
    }
    Ok((outcome, image))
}

/// `--metadata-file`: buildx's keys for the image exporter.
fn metadata(outcome: &BuildOutcome, image: &Image) -> CliResult<String> {
    let mut map = serde_json::Map::new();
    map.insert(
        "containerimage.config.digest".into(),
        outcome.image_id.clone().into(),
    );
    map.insert(
        "containerimage.digest".into(),
        outcome.manifest_digest.clone().into(),
    );
    let media_type = image
        .manifest
        .media_type()
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".into());
    map.insert(
        "containerimage.descriptor".into(),
        serde_json::json!({
            "mediaType": media_type,
            "digest": outcome.manifest_digest,
            "size": image.manifest_size,
        }),
    );
    if !outcome.tags.is_empty() {
        map.insert("image.name".into(), outcome.tags.join(",").into());
    }
    let mut json = serde_json::to_string_pretty(&serde_json::Value::Object(map))
        .map_err(|e| CliError::usage(format!("cannot encode the metadata: {e}")))?;
    json.push('\n');
    Ok(json)
}
