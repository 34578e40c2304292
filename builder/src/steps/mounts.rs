//! `RUN --mount`: tmpfs, bind mounts (of the build context, a stage or an image), cache
//! mounts, build secrets and the SSH agent. Parsed and keyed before the step; attached to the
//! sandbox only when the step runs.
//!
//! A secret's value is read only when the step runs, into a private file that is bind-mounted
//! read-only (or into the step's environment): the cache key sees the secret's id, never its
//! value, and neither the history nor the layer sees either (the mount point the sandbox makes
//! for it is left out of the layer like every mount point).

use super::{Expand, SourceFs, resolve_from};
use crate::cache_key::SourceFile;
use crate::context::EntryKind;
use crate::copy::{self, CopySpec, SourceRoot};
use crate::error::{Error, Result};
use crate::request::SecretSource;
use crate::stage::{BuildCtx, StageCtx};
use crate::state::StageState;
use kiln_grammar::instructions::{Instruction, Mount, MountType, RunInstruction};
use kiln_runner::{BindMount, Spec, TmpfsMount};
use kiln_snapshotter::ActiveSnapshot;
use sha2::{Digest as _, Sha256};
use std::fs::{self, File};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
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
    /// `from=` and `source=`: what a new cache starts with.
    seed: Option<(SourceFs, String)>,
}

/// Where a secret is mounted when the mount does not say (BuildKit's default).
const SECRETS_DIR: &str = "/run/secrets";
/// Where the SSH agent socket is mounted when the mount does not say (BuildKit's default).
const SSH_DEFAULT_TARGET: &str = "/run/buildkit/ssh_agent.0";
/// The environment variable naming the agent socket to ssh clients.
const SSH_AUTH_SOCK: &str = "SSH_AUTH_SOCK";

/// A build secret (`--mount=type=secret`). Only `id` and where it goes are inputs of the
/// cache key; the value is read when the step runs.
struct SecretMount {
    id: String,
    /// The file's path in the sandbox; `None` when the secret only goes into `env`.
    target: Option<String>,
    env: Option<String>,
    required: bool,
    mode: u32,
    uid: u32,
    gid: u32,
    /// Where the value comes from; `None` when the build was given no such secret and the
    /// mount is not required, which skips it.
    source: Option<SecretSource>,
}

/// The SSH agent socket (`--mount=type=ssh`).
struct SshMount {
    id: String,
    target: String,
    required: bool,
    /// The agent socket on the host; `None` when the build has none and the mount is not
    /// required, which skips it.
    socket: Option<PathBuf>,
    /// `mode`, `uid`, `gid` when any is given: the step gets a relaying socket of its own
    /// with them (BuildKit's defaults, 0600 and root, for those not given).
    owner: Option<(u32, u32, u32)>,
}

/// The mounts of one RUN.
#[derive(Default)]
pub struct RunMounts {
    tmpfs: Vec<TmpfsMount>,
    binds: Vec<StageBind>,
    context_binds: Vec<ContextBind>,
    caches: Vec<CacheMount>,
    secrets: Vec<SecretMount>,
    ssh: Vec<SshMount>,
    /// `Dockerfile:LINE` of the RUN, for errors of attaching.
    location: String,
}

/// What a running step holds for its mounts; released after the run (or dropped on an error,
/// which releases it as well).
pub struct Attached {
    snapshots: Vec<ActiveSnapshot>,
    _copies: Vec<tempfile::TempDir>,
    _locks: Vec<File>,
    _agents: Vec<crate::ssh_proxy::AgentProxy>,
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
        let mut out = RunMounts {
            location: ctx.build.location(instruction.span),
            ..RunMounts::default()
        };
        for mount in &run.mounts {
            let mount =
                Mount::parse_expanded(&mount.spec, &mut |w| ctx.build.lexer.expand_word(w, &env))
                    .map_err(|e| ctx.build.dockerfile_error(e, instruction.span))?;
            let number = |key: &str, radix: u32| -> Result<Option<u32>> {
                match mount.option(key).and_then(|o| o.value.as_deref()) {
                    None => Ok(None),
                    Some(text) => u32::from_str_radix(text, radix)
                        .map(Some)
                        .map_err(|_| x.invalid(format!("invalid {key} {text:?}"))),
                }
            };
            let given_target = mount.target.as_deref().filter(|t| !t.is_empty());
            let missing = |what: &str, id: &str, flag: String| Error::MountSource {
                location: ctx.build.location(instruction.span),
                message: format!(
                    "{what} {id:?} is required but the build was not given it; pass {flag}"
                ),
            };
            // Secret and ssh mounts have default targets and may be skipped: handled apart.
            match mount.kind {
                MountType::Secret => {
                    let id = [mount.id.as_deref(), mount.source.as_deref()]
                        .into_iter()
                        .flatten()
                        .find(|i| !i.is_empty())
                        .map(str::to_string)
                        .or_else(|| {
                            given_target
                                .and_then(|t| t.trim_end_matches('/').rsplit('/').next())
                                .filter(|name| !name.is_empty())
                                .map(str::to_string)
                        })
                        .ok_or_else(|| x.invalid("a secret mount needs an id".into()))?;
                    let env_var = mount
                        .option("env")
                        .and_then(|o| o.value.clone())
                        .filter(|v| !v.is_empty());
                    // With only `env=`, the secret is not a file at all (as in BuildKit).
                    let target = match (given_target, &env_var) {
                        (Some(t), _) => Some(super::workdir::normalize(&state.workdir(), t)),
                        (None, Some(_)) => None,
                        (None, None) => Some(format!("{SECRETS_DIR}/{id}")),
                    };
                    let source = ctx
                        .build
                        .request
                        .secrets
                        .get(&id)
                        .filter(|s| secret_present(s))
                        .cloned();
                    if source.is_none() && mount.required() {
                        return Err(missing("secret", &id, format!("--secret id={id},src=FILE")));
                    }
                    out.secrets.push(SecretMount {
                        target,
                        env: env_var,
                        required: mount.required(),
                        mode: number("mode", 8)?.unwrap_or(0o400),
                        uid: number("uid", 10)?.unwrap_or(0),
                        gid: number("gid", 10)?.unwrap_or(0),
                        source,
                        id,
                    });
                    continue;
                }
                MountType::Ssh => {
                    // The agent's own socket is mounted as it is, unless the mount asks for a
                    // mode or owner: changing those would change the host's socket, so the
                    // step then gets a relaying socket of its own.
                    let owner = if ["mode", "uid", "gid"]
                        .into_iter()
                        .any(|k| mount.option(k).is_some())
                    {
                        Some((
                            number("mode", 8)?.unwrap_or(0o600),
                            number("uid", 10)?.unwrap_or(0),
                            number("gid", 10)?.unwrap_or(0),
                        ))
                    } else {
                        None
                    };
                    let id = mount
                        .id
                        .clone()
                        .filter(|i| !i.is_empty())
                        .unwrap_or_else(|| "default".to_string());
                    let socket = ctx.build.request.ssh.get(&id).cloned();
                    if socket.is_none() && mount.required() {
                        let flag = if id == "default" {
                            "--ssh default".to_string()
                        } else {
                            format!("--ssh {id}=SOCKET")
                        };
                        return Err(missing("ssh agent", &id, flag));
                    }
                    out.ssh.push(SshMount {
                        target: given_target.map_or_else(
                            || SSH_DEFAULT_TARGET.to_string(),
                            |t| super::workdir::normalize(&state.workdir(), t),
                        ),
                        required: mount.required(),
                        socket,
                        owner,
                        id,
                    });
                    continue;
                }
                _ => {}
            }
            let Some(target) = given_target else {
                return Err(x.invalid(format!("a {} mount needs a target", mount.kind.as_str())));
            };
            let target = super::workdir::normalize(&state.workdir(), target);
            let from = mount.from.as_deref().filter(|f| !f.is_empty());
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
                (MountType::Cache, _) => {
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
                        seed: match from {
                            Some(from) => Some((
                                resolve_from(ctx, from).map_err(at)?,
                                mount.source.clone().unwrap_or_else(|| "/".to_string()),
                            )),
                            None => None,
                        },
                    });
                }
                // Handled before the target is required.
                (MountType::Secret | MountType::Ssh, _) => {}
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
            "caches": self.caches.iter().map(|c| match &c.seed {
                None => serde_json::json!((&c.id, &c.target, format!("{:?}", c.sharing), c.uid, c.gid, c.mode, c.readonly)),
                // The source only when there is one, so that other keys stay as they were.
                Some((fs, source)) => serde_json::json!((&c.id, &c.target, format!("{:?}", c.sharing), c.uid, c.gid, c.mode, c.readonly, &fs.identity, source)),
            }).collect::<Vec<_>>(),
            // The id and where it goes, never the value nor whether the build had it (BuildKit
            // keys secrets the same way).
            "secrets": self.secrets.iter().map(|s| (&s.id, &s.target, &s.env, s.required, s.mode, s.uid, s.gid)).collect::<Vec<_>>(),
            // A mode or owner only when given, so that other keys stay as they were.
            "ssh": self.ssh.iter().map(|s| match s.owner {
                None => serde_json::json!([&s.id, &s.target, s.required]),
                Some(owner) => serde_json::json!([&s.id, &s.target, s.required, owner]),
            }).collect::<Vec<_>>(),
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
            _agents: Vec::new(),
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
                    if let Some((from, source)) = &cache.seed {
                        crate::cache_mounts::seed(build, from, source, &path)?;
                    }
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
        self.attach_secrets(build, spec, &mut attached)?;
        let mut agent_set = false;
        for ssh in &self.ssh {
            let Some(socket) = &ssh.socket else {
                continue;
            };
            let socket = match ssh.owner {
                None => socket.clone(),
                Some((mode, uid, gid)) => {
                    let dir = temp_dir(build, "ssh-")?;
                    let at = dir.path().to_path_buf();
                    let proxy = crate::ssh_proxy::AgentProxy::start(socket, dir, mode, uid, gid)
                        .map_err(|e| Error::io(&at, e))?;
                    let own = proxy.socket().to_path_buf();
                    attached._agents.push(proxy);
                    own
                }
            };
            // Read-only still lets the step connect (a socket is no file the mount flag
            // guards) but not chmod or replace the host's socket.
            spec.mounts.push(BindMount {
                source: socket,
                target: PathBuf::from(&ssh.target),
                readonly: true,
            });
            // The first agent is the one ssh clients use, as in BuildKit.
            if !agent_set {
                set_env(&mut spec.env, SSH_AUTH_SOCK, &ssh.target);
                agent_set = true;
            }
        }
        Ok(attached)
    }

    /// Writes each secret the build has into a private directory and mounts it read-only, or
    /// puts it into the step's environment. The directory goes when `attached` is released.
    fn attach_secrets(
        &self,
        build: &BuildCtx<'_>,
        spec: &mut Spec,
        attached: &mut Attached,
    ) -> Result<()> {
        let mut dir: Option<tempfile::TempDir> = None;
        for (index, secret) in self.secrets.iter().enumerate() {
            let Some(source) = &secret.source else {
                continue;
            };
            let value = read_secret(source, &secret.id, &self.location)?;
            if let Some(var) = &secret.env {
                let text = String::from_utf8(value.clone()).map_err(|_| Error::MountSource {
                    location: self.location.clone(),
                    message: format!(
                        "secret {:?} is not UTF-8 text, which env={var} cannot hold",
                        secret.id
                    ),
                })?;
                set_env(&mut spec.env, var, &text);
            }
            let Some(target) = &secret.target else {
                continue;
            };
            let dir = match &mut dir {
                Some(dir) => dir,
                none => none.insert(secret_dir(build)?),
            };
            // Named by position: an id may hold any character.
            let path = dir.path().join(index.to_string());
            let mut file = File::options()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            file.write_all(&value).map_err(|e| Error::io(&path, e))?;
            drop(file);
            fs::set_permissions(&path, fs::Permissions::from_mode(secret.mode))
                .map_err(|e| Error::io(&path, e))?;
            std::os::unix::fs::chown(&path, Some(secret.uid), Some(secret.gid))
                .map_err(|e| Error::io(&path, e))?;
            spec.mounts.push(BindMount {
                source: path,
                target: PathBuf::from(target),
                readonly: true,
            });
        }
        attached._copies.extend(dir);
        Ok(())
    }
}

/// Whether a secret's source exists: a file that does, or an environment variable that is set.
fn secret_present(source: &SecretSource) -> bool {
    match source {
        SecretSource::File(path) => path.exists(),
        SecretSource::Env(name) => std::env::var_os(name).is_some(),
    }
}

/// A secret's value. Errors name the file or variable, never the content.
fn read_secret(source: &SecretSource, id: &str, location: &str) -> Result<Vec<u8>> {
    match source {
        SecretSource::File(path) => fs::read(path).map_err(|e| Error::io(path, e)),
        SecretSource::Env(name) => std::env::var_os(name)
            .map(std::os::unix::ffi::OsStringExt::into_vec)
            .ok_or_else(|| Error::MountSource {
                location: location.to_string(),
                message: format!("secret {id:?}: the environment variable {name} is not set"),
            }),
    }
}

/// A private (0700) directory for the secrets of one step: in memory (`/dev/shm`) when it can
/// be, so that a value never touches a disk, else in the store's temp dir.
fn secret_dir(build: &BuildCtx<'_>) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("kiln-secrets-")
        .tempdir_in("/dev/shm")
        .or_else(|_| temp_dir(build, "secrets-"))
}

/// Sets `key` in a `KEY=VALUE` list, replacing what the image set.
fn set_env(env: &mut Vec<String>, key: &str, value: &str) {
    env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
    env.push(format!("{key}={value}"));
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
    let seeded = cache
        .seed
        .as_ref()
        .map(|(fs, source)| crate::cache_mounts::seed_name(fs, source));
    let name = hex::encode(Sha256::digest(
        format!("{}{}", cache.id, seeded.unwrap_or_default()).as_bytes(),
    ));
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
        if let Some((from, source)) = &cache.seed {
            crate::cache_mounts::seed(build, from, source, &tmp)?;
        }
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
