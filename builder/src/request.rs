//! What a build is asked to do, and what it produced: the contract between the command line and
//! the solver.

use crate::remote_cache::{CacheLocation, ExportableCache};
use kiln_grammar::plan::PlanOptions;
use kiln_oci::Compression;
use kiln_runner::{Isolation, Network};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One `kiln build`.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The context directory (a context given as a tar on stdin is unpacked to a temp dir first).
    pub context: PathBuf,
    /// The Dockerfile's path, when it has one: its `<name>.dockerignore` beside it wins.
    pub dockerfile_path: Option<PathBuf>,
    /// The Dockerfile's name in messages (`Dockerfile`, `ci/Dockerfile.prod`, `-`).
    pub dockerfile_name: String,
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// `--target`, `--build-arg`, the platform.
    pub plan: PlanOptions,
    /// `-t` names (`name[:tag]`), applied to the final image.
    pub tags: Vec<String>,
    /// `--label` values, added to the final image's config.
    pub labels: BTreeMap<String, String>,
    /// `--no-cache`: run every step.
    pub no_cache: bool,
    /// `--no-cache-filter`: stages (by name) whose steps always run.
    pub no_cache_filter: Vec<String>,
    /// `--pull`: check every base image in its registry, even when the store has it.
    pub pull: bool,
    /// Plain-HTTP registries and mirrors, for images the build pulls.
    pub registry: kiln_oci::registry::RegistryConfig,
    /// The network of RUN steps when the instruction does not say (`--network`); host by default.
    pub network: Network,
    /// How layers are compressed (`--compression`).
    pub compression: Compression,
    /// `--secret`s by id: where `RUN --mount=type=secret` reads each value. Only the source is
    /// held here; the value is read when a step mounts it.
    pub secrets: BTreeMap<String, SecretSource>,
    /// `--ssh` agent sockets by id (`default` for a bare `--ssh default`).
    pub ssh: BTreeMap<String, PathBuf>,
    /// `--cache-from`: exported caches to look steps up in, in order, after the store's own.
    pub cache_from: Vec<CacheLocation>,
    /// How RUN steps are confined (`--isolation`, already resolved from `auto`). Without
    /// isolation they run in the current root filesystem, which is synced to each step's parent.
    pub isolation: Isolation,
    /// Resource limits of every RUN step (`--memory`, `--pids-limit`).
    pub limits: kiln_runner::Limits,
}

/// Where a build secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// The content of a file.
    File(PathBuf),
    /// The value of an environment variable of the build process.
    Env(String),
}

/// What a successful build produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOutcome {
    /// The image id: `sha256:` + the config digest (what `--iidfile` and `-q` print).
    pub image_id: String,
    /// `sha256:` + the manifest digest (`containerimage.digest` in `--metadata-file`).
    pub manifest_digest: String,
    /// The names the image was tagged with, normalised (`name:tag`).
    pub tags: Vec<String>,
    /// Steps that ran and steps answered from the cache.
    pub steps_run: usize,
    pub steps_cached: usize,
    /// The cache records of the build, for `--cache-to`.
    pub cache: ExportableCache,
}
