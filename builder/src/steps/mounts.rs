//! `RUN --mount`: tmpfs, bind mounts (of the build context, a stage or an image) and cache
//! mounts. Parsed and keyed before the step; attached to the sandbox only when the step runs.

use super::{Expand, SourceFs, resolve_from};
use crate::cache_key::SourceFile;
use crate::context::EntryKind;
use crate::copy::{self, CopySpec, SourceRoot};
use crate::error::{Error, Result};
use crate::stage::{BuildCtx, StageCtx};
use crate::state::StageState;
use kiln_grammar::instructions::{Instruction, Mount, MountType, RunInstruction};
use kiln_runner::{BindMount, Spec, TmpfsMount};
use kiln_snapshotter::ActiveSnapshot;
use sha2::{Digest as _, Sha256};
use std::fs::{self, File};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where cache mounts live in the store: one directory per cache id.
pub const CACHE_MOUNTS_DIR: &str = "cache-mounts";

/// A bind mount of a stage's or an image's path, from a snapshot of it prepared for the run (so
/// a writable mount's changes are thrown away with the snapshot).
struct StageBind {
    fs: SourceFs,
    source: String,
    target: String,
    readwrite: bool,
}

/// A bind mount of the build context. The selected files (`.dockerignore` applied) are copied
/// for the run, so nothing the context ignores, and nothing outside it that a link in it points
/// at, is visible; a writable mount's changes go with the copy.
struct ContextBind {
    selection: copy::Selection,
    /// The mounted path inside the copy: `m` for a directory, `m/NAME` for a file.
    inner: String,
    /// The cache inputs: the files as they will be mounted.
    files: Vec<SourceFile>,
    target: String,
    readwrite: bool,
}

/// How concurrent builds share a cache mount (BuildKit's `sharing=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sharing {
    Shared,
    /// A cache in use by another step is not shared: this step gets a fresh, throw-away one.
    Private,
    /// Steps using the cache wait for each other.
    Locked,
}

/// A persistent directory kept between builds (`--mount=type=cache`). Its content is no input
/// of the step's cache key, as in BuildKit.
struct CacheMount {
    id: String,
    target: String,
    sharing: Sharing,
    uid: u32,
    gid: u32,
    mode: u32,
    readonly: bool,
}

/// The mounts of one RUN.
#[derive(Default)]
pub struct RunMounts {
    tmpfs: Vec<TmpfsMount>,
    binds: Vec<StageBind>,
    context_binds: Vec<ContextBind>,
    caches: Vec<CacheMount>,
}

/// What a running step holds for its mounts; released after the run (or dropped on an error,
/// which releases it as well).
pub struct Attached {
    snapshots: Vec<ActiveSnapshot>,
    _copies: Vec<tempfile::TempDir>,
    _locks: Vec<File>,
}

impl Attached {
    /// Unmounts the stage snapshots (discarding what the step wrote to them).
    pub fn release(self) -> Result<()> {
        for snapshot in self.snapshots {
            snapshot.abort()?;
        }
        Ok(())
    }
}

impl RunMounts {
    /// The RUN's `--mount`s, expanded.
    pub fn parse(
        ctx: &StageCtx<'_, '_>,
        state: &StageState,
        instruction: &Instruction,
        run: &RunInstruction,
    ) -> Result<RunMounts> {
        let env = state.expansion_env();
        let x = Expand::new(ctx, instruction);
        let at = |e: Error| Error::At {
            location: ctx.build.location(instruction.span),
            source: Box::new(e),
        };
        let refuse = |kind: MountType| Error::Unsupported {
            location: ctx.build.location(instruction.span),
            message: format!(
                "RUN --mount=type={} is not supported yet (tmpfs, bind and cache are)",
                kind.as_str()
            ),
        };
        let mut out = RunMounts::default();
        for mount in &run.mounts {
            let mount =
                Mount::parse_expanded(&mount.spec, &mut |w| ctx.build.lexer.expand_word(w, &env))
                    .map_err(|e| ctx.build.dockerfile_error(e, instruction.span))?;
            // Checked first: these have default targets, which kiln does not know yet.
            if matches!(mount.kind, MountType::Secret | MountType::Ssh) {
                return Err(refuse(mount.kind));
            }
            let Some(target) = mount.target.clone().filter(|t| !t.is_empty()) else {
                return Err(x.invalid(format!("a {} mount needs a target", mount.kind.as_str())));
            };
            let target = super::workdir::normalize(&state.workdir(), &target);
            let from = mount.from.as_deref().filter(|f| !f.is_empty());
            let number = |key: &str, radix: u32| -> Result<Option<u32>> {
                match mount.option(key).and_then(|o| o.value.as_deref()) {
                    None => Ok(None),
                    Some(text) => u32::from_str_radix(text, radix)
                        .map(Some)
                        .map_err(|_| x.invalid(format!("invalid {key} {text:?}"))),
                }
            };
            match (mount.kind, from) {
                (MountType::Tmpfs, _) => {
                    let size = match mount.option("size").and_then(|o| o.value.as_deref()) {
                        Some(text) => Some(
                            parse_size(text)
                                .ok_or_else(|| x.invalid(format!("invalid tmpfs size {text:?}")))?,
                        ),
                        None => None,
                    };
                    out.tmpfs.push(TmpfsMount {
                        target: PathBuf::from(target),
                        size,
                        mode: None,
                    });
                }
                (MountType::Bind, Some(from)) => out.binds.push(StageBind {
                    fs: resolve_from(ctx, from).map_err(at)?,
                    source: mount.source.clone().unwrap_or_else(|| "/".to_string()),
                    target,
                    readwrite: !mount.readonly(),
                }),
                (MountType::Bind, None) => {
                    let source = mount.source.clone().unwrap_or_else(|| ".".to_string());
                    let bind =
                        context_bind(ctx.build, &source, target, !mount.readonly()).map_err(at)?;
                    out.context_binds.push(bind);
                }
                (MountType::Cache, None) => {
                    let sharing = match mount.option("sharing").and_then(|o| o.value.as_deref()) {
                        None | Some("shared") => Sharing::Shared,
                        Some("private") => Sharing::Private,
                        Some("locked") => Sharing::Locked,
                        Some(other) => {
                            return Err(x.invalid(format!(
                                "unrecognized sharing for cache mount {other:?} (shared, private or locked)"
                            )));
                        }
                    };
                    out.caches.push(CacheMount {
                        id: mount
                            .id
                            .clone()
                            .filter(|i| !i.is_empty())
                            .unwrap_or_else(|| target.clone()),
                        target,
                        sharing,
                        uid: number("uid", 10)?.unwrap_or(0),
                        gid: number("gid", 10)?.unwrap_or(0),
                        mode: number("mode", 8)?.unwrap_or(0o755),
                        readonly: mount.readonly(),
                    });
                }
                (MountType::Cache, Some(_)) => {
                    return Err(Error::Unsupported {
                        location: ctx.build.location(instruction.span),
                        message: "RUN --mount=type=cache,from=… (a cache seeded from a stage) \
                                  is not supported yet"
                            .into(),
                    });
                }
                (MountType::Secret | MountType::Ssh, _) => return Err(refuse(mount.kind)),
            }
        }
        Ok(out)
    }

    /// The mounts as the step's cache key sees them (what they are, not what caches hold).
    pub fn canonical(&self) -> serde_json::Value {
        serde_json::json!({
            "tmpfs": self.tmpfs.iter().map(|t| (t.target.to_string_lossy().into_owned(), t.size)).collect::<Vec<_>>(),
            "binds": self.binds.iter().map(|b| (&b.fs.identity, &b.source, &b.target, b.readwrite)).collect::<Vec<_>>(),
            "context": self.context_binds.iter().map(|b| (&b.target, b.readwrite)).collect::<Vec<_>>(),
            "caches": self.caches.iter().map(|c| (&c.id, &c.target, format!("{:?}", c.sharing), c.uid, c.gid, c.mode, c.readonly)).collect::<Vec<_>>(),
        })
    }

    /// The files the context binds show: inputs of the step like COPY's sources.
    pub fn key_sources(&self) -> Vec<SourceFile> {
        self.context_binds
            .iter()
            .flat_map(|b| {
                b.files.iter().map(|f| SourceFile {
                    path: format!("{}\0{}", b.target, f.path),
                    ..f.clone()
                })
            })
            .collect()
    }

    /// Adds the mounts to `spec`, preparing what they need.
    pub fn attach(&self, build: &BuildCtx<'_>, spec: &mut Spec) -> Result<Attached> {
        let mut attached = Attached {
            snapshots: Vec::with_capacity(self.binds.len()),
            _copies: Vec::with_capacity(self.context_binds.len()),
            _locks: Vec::new(),
        };
        spec.tmpfs.extend(self.tmpfs.iter().cloned());
        for bind in &self.binds {
            let snapshot = build.snapshotter.prepare(bind.fs.chain.as_ref())?;
            let source = crate::inroot::resolve(snapshot.mount_point(), &bind.source)
                .map_err(|e| Error::io(Path::new(&bind.source), e))?;
            spec.mounts.push(BindMount {
                source,
                target: PathBuf::from(&bind.target),
                readonly: !bind.readwrite,
            });
            attached.snapshots.push(snapshot);
        }
        for bind in &self.context_binds {
            let dir = temp_dir(build, "bind-")?;
            copy::apply(&bind.selection, dir.path())?;
            spec.mounts.push(BindMount {
                source: dir.path().join(&bind.inner),
                target: PathBuf::from(&bind.target),
                readonly: !bind.readwrite,
            });
            attached._copies.push(dir);
        }
        for cache in &self.caches {
            let source = match cache_dir(build, cache, &mut attached._locks)? {
                Some(dir) => dir,
                None => {
                    // A private cache that is in use: this step gets one of its own.
                    let dir = temp_dir(build, "cache-")?;
                    let path = dir.path().to_path_buf();
                    fs::set_permissions(&path, fs::Permissions::from_mode(cache.mode))
                        .map_err(|e| Error::io(&path, e))?;
                    std::os::unix::fs::chown(&path, Some(cache.uid), Some(cache.gid))
                        .map_err(|e| Error::io(&path, e))?;
                    attached._copies.push(dir);
                    path
                }
            };
            spec.mounts.push(BindMount {
                source,
                target: PathBuf::from(&cache.target),
                readonly: cache.readonly,
            });
        }
        Ok(attached)
    }
}

fn temp_dir(build: &BuildCtx<'_>, prefix: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(build.store.tmp_dir())
        .map_err(|e| Error::io(build.store.tmp_dir(), e))
}

/// The directory of a cache mount (created with its mode and owner the first time), with the
/// lock its sharing mode asks for taken; `None` for a private cache another step holds.
fn cache_dir(
    build: &BuildCtx<'_>,
    cache: &CacheMount,
    locks: &mut Vec<File>,
) -> Result<Option<PathBuf>> {
    let root = build.store.root().join(CACHE_MOUNTS_DIR);
    fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
    let name = hex::encode(Sha256::digest(cache.id.as_bytes()));
    let dir = root.join(&name);
    let lock_path = root.join(format!("{name}.lock"));
    if cache.sharing != Sharing::Shared {
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        match cache.sharing {
            Sharing::Locked => lock.lock().map_err(|e| Error::io(&lock_path, e))?,
            _ => match lock.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
                Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&lock_path, e)),
            },
        }
        locks.push(lock);
    }
    if !dir.is_dir() {
        // Made aside and renamed, so a concurrent step never sees it half set up.
        let tmp = root.join(format!(".{name}.{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::DirBuilder::new()
            .mode(cache.mode)
            .create(&tmp)
            .map_err(|e| Error::io(&tmp, e))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(cache.mode))
            .map_err(|e| Error::io(&tmp, e))?;
        std::os::unix::fs::chown(&tmp, Some(cache.uid), Some(cache.gid))
            .map_err(|e| Error::io(&tmp, e))?;
        if fs::rename(&tmp, &dir).is_err() {
            // Another step made it first.
            let _ = fs::remove_dir_all(&tmp);
        }
    }
    Ok(Some(dir))
}

/// Selects the context files a bind mount of `source` shows.
fn context_bind(
    build: &BuildCtx<'_>,
    source: &str,
    target: String,
    readwrite: bool,
) -> Result<ContextBind> {
    let context = build.context()?;
    let spec = CopySpec {
        sources: vec![source.to_string()],
        dest: "/m/".to_string(),
        workdir: "/".to_string(),
        ..CopySpec::default()
    };
    let selection = copy::select(
        &spec,
        &SourceRoot::Context(&context.context, &context.entries),
    )?;
    let files = selection.cache_sources(None)?;
    let clean = source.trim_start_matches("./").trim_matches('/');
    let is_dir = clean.is_empty()
        || clean == "."
        || context
            .entries
            .iter()
            .any(|e| e.path == clean && e.kind == EntryKind::Dir);
    let inner = match clean.rsplit('/').next() {
        Some(name) if !is_dir => format!("m/{name}"),
        _ => "m".to_string(),
    };
    Ok(ContextBind {
        selection,
        inner,
        files,
        target,
        readwrite,
    })
}

/// A size in bytes with an optional binary unit (`64m`, `1g`, `512k`, `1048576`), as Docker's
/// `units.RAMInBytes` reads it.
fn parse_size(text: &str) -> Option<u64> {
    let lower = text.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let (digits, factor) = match lower.char_indices().last()? {
        (i, 'k') => (&lower[..i], 1u64 << 10),
        (i, 'm') => (&lower[..i], 1 << 20),
        (i, 'g') => (&lower[..i], 1 << 30),
        (i, 't') => (&lower[..i], 1 << 40),
        _ => (lower, 1),
    };
    digits.trim().parse::<u64>().ok()?.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        assert_eq!(parse_size("64m"), Some(64 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("512kb"), Some(512 << 10));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size(""), None);
    }
}
