//! Build cache that travels between stores: `--cache-to` exports the cache records of a build
//! (and the layers they name) to a place other machines can read, `--cache-from` reads such an
//! export back and answers steps from it.
//!
//! An export is one OCI image manifest ([`format`]) in an OCI image layout directory
//! (`type=local`) or a registry repository (`type=registry`); both are reached through
//! [`kiln_oci::transport::CacheTransport`]. Cache keys are made of content only (the base
//! image's id, instructions, variables and source digests), never of paths or ids local to one
//! store, so a key computed on one machine finds the record written on another.

pub mod export;
pub mod format;
pub mod import;

use crate::cache::CacheRecord;
use crate::error::Result;
use crate::state::StageState;
use kiln_oci::registry::{RegistryConfig, RegistryTransport};
use kiln_oci::transport::{CacheTransport, LayoutTransport};
use std::collections::BTreeMap;
use std::path::PathBuf;

pub use export::{ExportReport, export};
pub use import::RemoteCache;

/// Where exported cache lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheLocation {
    /// An OCI image layout directory; `tag` names the export in its `index.json`.
    Local { dir: PathBuf, tag: String },
    /// A repository and tag in a registry (`registry.example/app:buildcache`).
    Registry { reference: String },
}

impl std::fmt::Display for CacheLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheLocation::Local { dir, .. } => write!(f, "local:{}", dir.display()),
            CacheLocation::Registry { reference } => f.write_str(reference),
        }
    }
}

/// Which records an export holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// The steps whose results make up the final image (its stage and the stages it is built
    /// on), config-only steps included.
    #[default]
    Min,
    /// Every step of every stage the build ran, intermediate stages included.
    Max,
}

/// One `--cache-to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheExport {
    pub location: CacheLocation,
    pub mode: CacheMode,
    /// `ignore-error=true`: a failed export is a warning rather than a failed build.
    pub ignore_error: bool,
}

/// Opens the transport of `location`; `registry` says how registries are reached (plain
/// HTTP, mirrors). Opening checks nothing remote: a local directory is created when the first
/// export writes to it, a registry is first asked when the export or import runs.
pub fn open_transport(
    location: &CacheLocation,
    registry: &RegistryConfig,
) -> Result<Box<dyn CacheTransport>> {
    Ok(match location {
        CacheLocation::Local { dir, tag } => Box::new(LayoutTransport::new(dir, tag)),
        CacheLocation::Registry { reference } => {
            Box::new(RegistryTransport::new(reference, registry.clone())?)
        }
    })
}

/// The records a build can export: those of the final image, and those of every stage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportableCache {
    pub target: BTreeMap<String, CacheRecord>,
    pub all: BTreeMap<String, CacheRecord>,
}

impl ExportableCache {
    /// Collects the records of the built stages; `target` is the final stage's state.
    pub fn collect<'a>(
        target: &StageState,
        stages: impl IntoIterator<Item = &'a StageState>,
    ) -> ExportableCache {
        let target: BTreeMap<String, CacheRecord> = target.cache_records.iter().cloned().collect();
        let mut all = target.clone();
        for stage in stages {
            all.extend(stage.cache_records.iter().cloned());
        }
        ExportableCache { target, all }
    }

    pub fn records(&self, mode: CacheMode) -> &BTreeMap<String, CacheRecord> {
        match mode {
            CacheMode::Min => &self.target,
            CacheMode::Max => &self.all,
        }
    }
}
