//! The image store commands: `import`, `load`, `save`, `images`, `tag`, `rmi`, `inspect`,
//! `history`, `prune` and `fsck`, with docker's names, flags and output.

pub(crate) mod human;
pub(crate) mod listing;

use crate::commands::{Access, open_store};
use crate::error::{CliError, CliResult};
use clap::{Args, Subcommand};
use kiln_oci::archive::{self, ArchiveFormat, SaveItem};
use kiln_oci::gc::{self, GcParticipant, PruneOptions};
use kiln_oci::image::{import_layer, import_rootfs};
use kiln_oci::{Compression, LayerOptions, LayerWriter, Reference, Store};
use kiln_snapshotter::gc::{CacheRecords, GcError, SnapshotGc, Sweep, sweep_debris};
use kiln_snapshotter::{DiffOptions, write_tree};
use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Create an image from a root filesystem tarball or directory.
    Import(ImportArgs),
    /// Load images from a docker-archive or oci-archive (stdin without -i).
    Load(LoadArgs),
    /// Save images to a docker-archive (default) or oci-archive.
    Save(SaveArgs),
    /// List images.
    Images(ImagesArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE.
    Tag(TagArgs),
    /// Remove images (tags; an image goes when its last tag does).
    Rmi(RmiArgs),
    /// Show low-level information on images, as JSON.
    Inspect(InspectArgs),
    /// Show the history of an image.
    History(HistoryArgs),
    /// Remove dangling images and unreferenced content from the store.
    Prune(PruneArgs),
    /// Verify the store: blobs, images, snapshots and cache records.
    Fsck(FsckArgs),
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The root filesystem: a tar archive (plain, gzip or zstd), a directory, or `-` for a tar on
    /// stdin.
    #[arg(value_name = "FILE|-")]
    pub source: String,
    /// The name to give the image.
    #[arg(value_name = "NAME[:TAG]")]
    pub reference: Option<String>,
    /// Layer compression: gzip[:LEVEL], zstd[:LEVEL] or none.
    #[arg(long, default_value = "gzip", value_name = "ALGO")]
    pub compression: String,
    /// The commit message recorded in the image's history.
    #[arg(short, long)]
    pub message: Option<String>,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read from this file instead of stdin.
    #[arg(short, long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Print nothing but errors.
    #[arg(short, long)]
    pub quiet: bool,
    /// Compression for layers that arrive uncompressed (docker-archive).
    #[arg(long, default_value = "gzip", value_name = "ALGO")]
    pub compression: String,
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// The images to save: name[:tag], id or id prefix.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
    /// Write to this file instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Archive format: docker (docker load, podman load) or oci.
    #[arg(long, default_value = "docker", value_name = "FORMAT")]
    pub format: String,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Only images of this repository (and tag).
    #[arg(value_name = "REPOSITORY[:TAG]")]
    pub repository: Option<String>,
    /// Output format: table or json (one object per line).
    #[arg(long, default_value = "table", value_name = "FORMAT")]
    pub format: String,
    /// Only show image ids.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct TagArgs {
    /// The image to tag: name[:tag], id or id prefix.
    #[arg(value_name = "SOURCE_IMAGE[:TAG]")]
    pub source: String,
    /// The new name (the tag defaults to latest).
    #[arg(value_name = "TARGET_IMAGE[:TAG]")]
    pub target: String,
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    /// The images to remove: name[:tag], id or id prefix.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
    /// Remove an image named by id even if several tags refer to it.
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The images to show: name[:tag], id or id prefix.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The image: name[:tag], id or id prefix.
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// Do not truncate the output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Only show image ids.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Also remove all build cache and snapshots, not just unused ones.
    #[arg(short, long)]
    pub all: bool,
    /// Shrink the store to at most this size (e.g. 10GB), as far as tagged images allow.
    #[arg(long, value_name = "SIZE")]
    pub keep_storage: Option<String>,
    /// Accepted for docker compatibility; kiln never asks for confirmation.
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct FsckArgs {
    /// Remove corrupt blobs, the index entries of images whose content is incomplete, broken
    /// snapshots (with those stacked on them) and cache records naming missing blobs.
    #[arg(long)]
    pub repair: bool,
}

impl From<kiln_oci::Error> for CliError {
    fn from(error: kiln_oci::Error) -> Self {
        match error {
            kiln_oci::Error::InvalidReference { .. } => CliError::usage(error.to_string()),
            other => CliError::Store(other),
        }
    }
}

impl From<GcError> for CliError {
    fn from(error: GcError) -> Self {
        match error {
            GcError::Snapshot(e) => CliError::Snapshot(e),
            GcError::Store(e) => e.into(),
            GcError::Io { path, source, .. } => CliError::io(path, source),
        }
    }
}

pub fn run(root: &Option<PathBuf>, command: StoreCommand) -> CliResult<ExitCode> {
    // Prune sweeps by itself, to say when it could not.
    let access = match &command {
        StoreCommand::Import(_)
        | StoreCommand::Load(_)
        | StoreCommand::Tag(_)
        | StoreCommand::Rmi(_) => Access::Write,
        StoreCommand::Fsck(args) if args.repair => Access::Write,
        _ => Access::Read,
    };
    let store = open_store(root, access)?;
    match command {
        StoreCommand::Import(args) => import(&store, args),
        StoreCommand::Load(args) => load(&store, args),
        StoreCommand::Save(args) => save(&store, args),
        StoreCommand::Images(args) => {
            let json = match args.format.as_str() {
                "table" => false,
                "json" => true,
                other => {
                    return Err(CliError::usage(format!(
                        "unknown --format {other:?}: expected table or json"
                    )));
                }
            };
            let text = listing::images(&store, args.repository.as_deref(), json, args.quiet)?;
            print(&text)
        }
        StoreCommand::Tag(args) => {
            let target = parse_reference(&args.target)?;
            store.tag_image(&args.source, &target)?;
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Rmi(args) => rmi(&store, args),
        StoreCommand::Inspect(args) => inspect(&store, args),
        StoreCommand::History(args) => {
            let image = store.find_image(&args.image)?;
            print(&listing::history(&image, args.no_trunc, args.quiet)?)
        }
        StoreCommand::Prune(args) => prune(&store, args),
        StoreCommand::Fsck(args) => fsck(&store, args),
    }
}

fn print(text: &str) -> CliResult<ExitCode> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| CliError::io("stdout", e))?;
    Ok(ExitCode::SUCCESS)
}

/// A name to tag an image with: `name[:tag]`; a digest names content and cannot be assigned.
pub(crate) fn parse_reference(text: &str) -> CliResult<Reference> {
    let reference = Reference::parse(text)?;
    if reference.digest().is_some() {
        return Err(CliError::usage(format!(
            "{text}: a tag cannot contain a digest; use NAME[:TAG]"
        )));
    }
    Ok(reference.with_default_tag())
}

/// The image name an optional `NAME[:TAG]` argument gives: none, or one tag.
pub(crate) fn optional_tag(text: Option<&str>) -> CliResult<Vec<Reference>> {
    text.map(parse_reference).into_iter().collect()
}

pub(crate) fn layer_options(compression: &str) -> CliResult<LayerOptions> {
    Ok(LayerOptions {
        compression: Compression::parse(compression).map_err(|e| CliError::usage(e.to_string()))?,
        threads: 0,
    })
}

fn import(store: &Store, args: ImportArgs) -> CliResult<ExitCode> {
    let tags = optional_tag(args.reference.as_deref())?;
    let options = layer_options(&args.compression)?;
    let message = args.message.as_deref();
    let image = if args.source == "-" {
        import_rootfs(store, &mut io::stdin().lock(), "-", &tags, options, message)?
    } else {
        let path = Path::new(&args.source);
        if path.is_dir() {
            // The same deterministic tree walker that writes build layers.
            let mut writer = LayerWriter::new(store, options)?;
            write_tree(path, &mut writer, &DiffOptions::default())?;
            let layer = writer.finish()?;
            let image = import_layer(store, layer, &args.source, &tags, message)?;
            return print(&format!("{}\n", image.id));
        }
        let mut file = File::open(path).map_err(|e| CliError::io(path, e))?;
        import_rootfs(store, &mut file, &args.source, &tags, options, message)?
    };
    print(&format!("{}\n", image.id))
}

fn load(store: &Store, args: LoadArgs) -> CliResult<ExitCode> {
    let options = layer_options(&args.compression)?;
    let loaded = match &args.input {
        Some(path) => {
            let mut file = File::open(path).map_err(|e| CliError::io(path, e))?;
            archive::load(store, &mut file, options)?
        }
        None => {
            let stdin = io::stdin();
            if stdin.is_terminal() {
                return Err(CliError::Usage {
                    message: "no archive to load: stdin is a terminal".into(),
                    hint: Some("use -i FILE or pipe an archive: kiln load < image.tar".into()),
                });
            }
            let mut input = stdin.lock();
            archive::load(store, &mut input as &mut dyn Read, options)?
        }
    };
    if args.quiet {
        return Ok(ExitCode::SUCCESS);
    }
    let mut text = String::new();
    for loaded in &loaded.images {
        if loaded.tags.is_empty() {
            text.push_str(&format!("Loaded image ID: {}\n", loaded.image.id));
        }
        for tag in &loaded.tags {
            text.push_str(&format!("Loaded image: {tag}\n"));
        }
    }
    print(&text)
}

fn save(store: &Store, args: SaveArgs) -> CliResult<ExitCode> {
    let format = ArchiveFormat::parse(&args.format).map_err(|e| CliError::usage(e.to_string()))?;
    let mut items = Vec::new();
    for name in &args.images {
        let image = store.find_image(name)?;
        // Named by tag: that tag goes into the archive; named by id: none, as docker does.
        let tags = match Reference::parse(name) {
            Ok(r) if r.digest().is_none() && image.tags.contains(&r.store_tag()) => {
                vec![r.with_default_tag()]
            }
            _ => Vec::new(),
        };
        items.push(SaveItem { image, tags });
    }
    match &args.output {
        Some(path) => save_to_file(store, &items, format, path),
        None => {
            let stdout = io::stdout();
            if stdout.is_terminal() {
                return Err(CliError::Usage {
                    message: "refusing to write an image archive to a terminal".into(),
                    hint: Some("use -o FILE or redirect stdout".into()),
                });
            }
            let mut out = io::BufWriter::new(stdout.lock());
            archive::save(store, &items, format, &mut out)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Writes next to the destination and renames, so an interrupted save never leaves a
/// truncated archive under the requested name.
fn save_to_file(
    store: &Store,
    items: &[SaveItem],
    format: ArchiveFormat,
    path: &Path,
) -> CliResult<ExitCode> {
    let file_name = path
        .file_name()
        .ok_or_else(|| CliError::usage(format!("{}: not a file name", path.display())))?;
    let tmp = path.with_file_name(format!(
        ".{}.kiln-{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> CliResult<()> {
        let file = File::create(&tmp).map_err(|e| CliError::io(&tmp, e))?;
        let mut out = io::BufWriter::with_capacity(1 << 20, file);
        archive::save(store, items, format, &mut out)?;
        let file = out
            .into_inner()
            .map_err(|e| CliError::io(&tmp, e.into_error()))?;
        file.sync_all().map_err(|e| CliError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| CliError::io(path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| ExitCode::SUCCESS)
}

fn rmi(store: &Store, args: RmiArgs) -> CliResult<ExitCode> {
    let mut failed = None;
    for name in &args.images {
        match store.remove_image(name, args.force) {
            Ok(lines) => {
                for line in lines {
                    println!("{line}");
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                failed = Some(ExitCode::from(1));
            }
        }
    }
    Ok(failed.unwrap_or(ExitCode::SUCCESS))
}

fn inspect(store: &Store, args: InspectArgs) -> CliResult<ExitCode> {
    let mut images = Vec::new();
    let mut missing = Vec::new();
    for name in &args.images {
        match store.find_image(name) {
            Ok(image) => images.push(image),
            Err(kiln_oci::Error::ImageNotFound(_)) => missing.push(name.clone()),
            Err(e) => return Err(e.into()),
        }
    }
    let found: Vec<listing::Inspect<'_>> = images.iter().map(listing::inspect).collect();
    let text = serde_json::to_string_pretty(&found).map_err(|e| CliError::usage(e.to_string()))?;
    print(&format!("{text}\n"))?;
    if missing.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        for name in missing {
            eprintln!("error: no such image: {name}");
        }
        Ok(ExitCode::from(1))
    }
}

/// Components that own other parts of the store (snapshots, build cache) join the collection
/// here by implementing `kiln_oci::gc::GcParticipant`; their roots keep layers alive and
/// `--all` / `--keep-storage` reach them through `reclaim`.
///
/// Snapshots come first: under a size cap they are the cheapest to lose (re-extracted from
/// their layers on the next use), while a cache record saves re-running a step. Whether a
/// record keeps its snapshot depends only on the record's blobs, not on this order.
fn gc_participants(store: &Store) -> Vec<Box<dyn GcParticipant + '_>> {
    vec![
        Box::new(SnapshotGc::new(store)),
        Box::new(CacheRecords::new(store)),
    ]
}

fn prune(store: &Store, args: PruneArgs) -> CliResult<ExitCode> {
    let keep_storage = args
        .keep_storage
        .as_deref()
        .map(human::parse_size)
        .transpose()
        .map_err(CliError::usage)?;
    if sweep_debris(store)? == Sweep::Busy {
        eprintln!(
            "note: other kiln processes are using the store; their unfinished snapshots were left alone"
        );
    }
    let mut participants = gc_participants(store);
    let mut refs: Vec<&mut dyn GcParticipant> = participants
        .iter_mut()
        .map(|p| p.as_mut() as &mut dyn GcParticipant)
        .collect();
    let options = PruneOptions {
        all: args.all,
        keep_storage,
    };
    let report = gc::prune(store, options, &mut refs)?;
    // As `docker builder prune`: cache mounts no build is using go too (a size cap alone
    // trims the layer cache and keeps them).
    let mounts = if args.keep_storage.is_none() || args.all {
        kiln_builder::cache_mounts::prune(store)?
    } else {
        kiln_builder::cache_mounts::Pruned::default()
    };
    if mounts.busy {
        eprintln!("note: other kiln processes are using the store; cache mounts were left alone");
    }
    let mut text = String::new();
    if !report.removed_images.is_empty() {
        text.push_str("Deleted Images:\n");
        for digest in &report.removed_images {
            text.push_str(&format!("deleted: {digest}\n"));
        }
        text.push('\n');
    }
    if mounts.removed > 0 {
        text.push_str(&format!("Deleted cache mounts: {}\n", mounts.removed));
    }
    text.push_str(&format!(
        "Total reclaimed space: {} ({} blobs)\n",
        human::size(report.reclaimed_bytes + mounts.bytes),
        report.removed_blobs
    ));
    print(&text)?;
    if let Some(over) = report.over_cap_by {
        eprintln!(
            "warning: the store is still {} over --keep-storage: tagged images need that space \
             (remove some with `kiln rmi`)",
            human::size(over)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn fsck(store: &Store, args: FsckArgs) -> CliResult<ExitCode> {
    let report = gc::fsck(store, args.repair)?;
    // After the blobs: a record whose blob was just removed as corrupt is repaired too.
    let state = kiln_snapshotter::gc::fsck(store, args.repair)?;
    let mut text = format!(
        "checked {} blobs, {} snapshots, {} cache records\n",
        report.blobs_checked, state.snapshots_checked, state.records_checked
    );
    for digest in &report.corrupt {
        text.push_str(&format!("corrupt: {digest}\n"));
    }
    for (digest, users) in &report.missing {
        text.push_str(&format!(
            "missing: {digest} (needed by {})\n",
            users.join(", ")
        ));
    }
    for image in &report.broken_images {
        text.push_str(&format!("broken image: {image}\n"));
    }
    for finding in &state.broken {
        text.push_str(&format!("broken: {}: {}\n", finding.item, finding.problem));
    }
    for finding in &state.warnings {
        text.push_str(&format!("warning: {}: {}\n", finding.item, finding.problem));
    }
    for action in report.repaired.iter().chain(&state.repaired) {
        text.push_str(&format!("repaired: {action}\n"));
    }
    let clean = report.is_clean() && state.is_clean();
    if clean {
        text.push_str("store is consistent\n");
    }
    print(&text)?;
    if clean || args.repair {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: the store has problems; `kiln fsck --repair` removes what is damaged");
        Ok(ExitCode::from(1))
    }
}
