//! One handler per instruction, and what they share: word expansion with the instruction's
//! place attached, the cache lookup of a step, and turning a snapshot into a layer.

pub mod copy;
pub mod metadata;
pub mod mounts;
pub mod run;
pub mod workdir;

use crate::cache::{CacheRecord, LayerRecord};
use crate::cache_key::CacheKey;
use crate::error::{Error, Result};
use crate::stage::StageCtx;
use crate::state::StageState;
use crate::vertex::Vertex;
use kiln_grammar::expand::Lookup;
use kiln_grammar::instructions::{Command, Instruction, InstructionKind};
use kiln_oci::{LayerOptions, LayerWriter};
use kiln_snapshotter::{ActiveSnapshot, ChainId, DiffOptions};
use std::sync::atomic::Ordering;

/// Runs one instruction of a stage.
pub fn dispatch(
    ctx: &mut StageCtx<'_, '_>,
    state: &mut StageState,
    instruction: &Instruction,
) -> Result<()> {
    match &instruction.kind {
        InstructionKind::Run(run) => run::run(ctx, state, instruction, run),
        InstructionKind::Workdir { path } => workdir::workdir(ctx, state, instruction, path),
        InstructionKind::Copy(_) | InstructionKind::Add(_) => copy::copy(ctx, state, instruction),
        InstructionKind::From(_) => Err(Error::Unsupported {
            location: ctx.build.location(instruction.span),
            message: "FROM inside a stage".to_string(),
        }),
        _ => config_step(ctx, state, instruction),
    }
}

/// A config-only step: applied, keyed and recorded (its record keeps the history time, so a
/// rebuild from the cache writes the same config).
fn config_step(
    ctx: &StageCtx<'_, '_>,
    state: &mut StageState,
    instruction: &Instruction,
) -> Result<()> {
    let created_by = metadata::apply(ctx, state, instruction)?;
    record_config_step(ctx, state, created_by)
}

/// Keys and records a step that changed only the config (already applied to `state`), and
/// adds its history entry.
pub fn record_config_step(
    ctx: &StageCtx<'_, '_>,
    state: &mut StageState,
    created_by: String,
) -> Result<()> {
    let step = CacheKey::new(&state.cache_key)
        .instruction(&created_by)
        .variables(pairs(&state.key_variables()))
        .finish_explained();
    let place = ctx.build.explain.place(ctx.stage);
    let key = step.key.clone();
    let created = match ctx.lookup(&key) {
        Some(record) => record.created,
        None => {
            // Config steps are no vertices: their reasons show in the steps they make run.
            let reasons = ctx
                .build
                .explain
                .explain(ctx.stage, &place, &step, ctx.no_cache_flag());
            ctx.build
                .explain
                .ran_config(ctx.stage, place, &created_by, &reasons, &step);
            let created = kiln_oci::image::creation_time();
            ctx.build.cache.store(
                &key,
                &CacheRecord {
                    created: created.clone(),
                    layer: None,
                },
            )?;
            created
        }
    };
    state.add_history(created_by, true, &created);
    state.cache_records.push((
        key.clone(),
        CacheRecord {
            created,
            layer: None,
        },
    ));
    state.cache_key = key;
    Ok(())
}

pub(crate) fn pairs(vars: &[(String, String)]) -> impl Iterator<Item = (&str, &str)> {
    vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
}

/// A filesystem another step reads from (`COPY --from`, `RUN --mount=from=`): an earlier
/// stage's result or an image in the store.
pub struct SourceFs {
    /// Its snapshot chain (`None`: an empty filesystem).
    pub chain: Option<ChainId>,
    /// What identifies its content in cache keys: the stage's last key, or the image id.
    pub identity: String,
}

/// Resolves a `--from` value: a stage built earlier (by index or name), else an image.
pub fn resolve_from(ctx: &StageCtx<'_, '_>, from: &str) -> Result<SourceFs> {
    let plan = ctx.build.plan;
    let index = match from.parse::<usize>() {
        Ok(index) => Some(index),
        Err(_) => plan
            .stages
            .iter()
            .find(|s| s.name.as_deref() == Some(from.to_lowercase().as_str()))
            .map(|s| s.index),
    };
    if let Some(index) = index {
        let state = ctx.built.get(&index).ok_or_else(|| Error::Unsupported {
            location: ctx.build.location(ctx.stage.span),
            message: format!("stage {from} is not built before the stage that uses it"),
        })?;
        return Ok(SourceFs {
            chain: state.chain.clone(),
            identity: state.cache_key.clone(),
        });
    }
    let build = ctx.build;
    let image = build.image(from, ctx.stage.span.start_line)?;
    Ok(SourceFs {
        chain: crate::rootfs::unpack_image(build.store, build.snapshotter, &image)?,
        identity: image.id.to_string(),
    })
}

/// Expands the words of one instruction; errors point at the instruction.
pub struct Expand<'c, 'a, 'b> {
    ctx: &'c StageCtx<'a, 'b>,
    instruction: &'c Instruction,
}

impl<'c, 'a, 'b> Expand<'c, 'a, 'b> {
    pub fn new(ctx: &'c StageCtx<'a, 'b>, instruction: &'c Instruction) -> Self {
        Expand { ctx, instruction }
    }

    pub fn word(&self, word: &str, env: &dyn Lookup) -> Result<String> {
        self.ctx
            .build
            .lexer
            .expand_word(word, env)
            .map_err(|e| self.ctx.build.dockerfile_error(e, self.instruction.span))
    }

    pub fn words(&self, word: &str, env: &dyn Lookup) -> Result<Vec<String>> {
        self.ctx
            .build
            .lexer
            .expand_words(word, env)
            .map_err(|e| self.ctx.build.dockerfile_error(e, self.instruction.span))
    }

    /// An invalid value in this instruction.
    pub fn invalid(&self, message: String) -> Error {
        let error = kiln_grammar::Error::new(kiln_grammar::ErrorKind::Instruction, message);
        self.ctx
            .build
            .dockerfile_error(error, self.instruction.span)
    }
}

/// The argv of RUN/CMD/ENTRYPOINT: exec form as written, shell form through the stage's SHELL.
pub fn command_argv(state: &StageState, command: &Command) -> Vec<String> {
    match command {
        Command::Exec(argv) => argv.clone(),
        Command::Shell(text) => {
            let mut argv = state.shell();
            argv.push(text.clone());
            argv
        }
    }
}

/// How a step is titled: the instruction as written, keyword upper-cased and variables
/// expanded where they can be (BuildKit's `processCmdEnv`); as written when they cannot.
pub fn title(ctx: &StageCtx<'_, '_>, state: &StageState, instruction: &Instruction) -> String {
    let original = instruction.original.trim();
    let rest = original
        .split_once(char::is_whitespace)
        .map_or("", |(_, rest)| rest.trim_start());
    let text = format!("{} {rest}", instruction.keyword());
    let lexer = kiln_grammar::expand::Lexer::new(ctx.build.lexer.escape())
        .raw_quotes(true)
        .raw_escapes(true)
        .skip_unset_env(true);
    lexer
        .expand_word(&text, &state.expansion_env())
        .unwrap_or(text)
        .trim_end()
        .to_string()
}

/// Who makes a step's changes, which decides how its snapshot is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Changes {
    /// A command in a sandbox: the new snapshot is applied from the layer, so the next step
    /// sees exactly what the layer says, whatever the command left outside it.
    Command,
    /// kiln itself (COPY, ADD, WORKDIR): the snapshot's changes are the layer, and on overlay
    /// they become the new snapshot as they are, without being written again.
    Kiln,
}

/// A step that changes the filesystem. Answered from the cache when `key` has a record;
/// otherwise `execute` works on a snapshot of the current chain, whose changes become the
/// step's layer. `execute` returns the paths (root-relative) to leave out of the layer.
/// `name` is the step's title (see [`StageCtx::next_title`]).
pub fn layer_step(
    ctx: &StageCtx<'_, '_>,
    state: &mut StageState,
    step: Step<'_>,
    execute: impl FnOnce(&ActiveSnapshot, &Vertex<'_>) -> Result<Vec<String>>,
) -> Result<()> {
    let snapshotter = ctx.build.snapshotter;
    layer_step_in(
        ctx,
        state,
        step,
        |parent| snapshotter.prepare(parent),
        execute,
    )
}

/// What [`layer_step_in`] records a step as.
pub struct Step<'i> {
    pub instruction: &'i Instruction,
    pub name: String,
    pub key: crate::explain::StepKey,
    pub created_by: String,
    pub changes: Changes,
}

/// [`layer_step`] on a snapshot that `prepare` makes from the parent chain (a RUN without
/// isolation works in the live root instead of a snapshot of the store).
pub fn layer_step_in(
    ctx: &StageCtx<'_, '_>,
    state: &mut StageState,
    step: Step<'_>,
    prepare: impl FnOnce(Option<&ChainId>) -> kiln_snapshotter::Result<ActiveSnapshot>,
    execute: impl FnOnce(&ActiveSnapshot, &Vertex<'_>) -> Result<Vec<String>>,
) -> Result<()> {
    let Step {
        instruction,
        name,
        key,
        created_by,
        changes,
    } = step;
    let build = ctx.build;
    let step = key;
    let key = step.key.clone();
    let place = build.explain.place(ctx.stage);
    let title = name.clone();
    let vertex = build.start_vertex(name, instruction.span.start_line);
    // A record that cannot be reused (its blob damaged, say) is a miss: the step runs again.
    if let Some(record) = ctx.lookup(&key)
        && matches!(ctx.reuse_layer(state, &record), Ok(true))
    {
        state.add_history(created_by, false, &record.created);
        state.cache_records.push((key.clone(), record));
        state.cache_key = after_layer(&key, state);
        build.steps_cached.fetch_add(1, Ordering::Relaxed);
        vertex.cached();
        return Ok(());
    }
    vertex.explained(
        build
            .explain
            .explain(ctx.stage, &place, &step, ctx.no_cache_flag()),
    );
    let made = Made {
        key: &key,
        created_by,
        changes,
    };
    match execute_layer(ctx, state, made, &vertex, prepare, execute) {
        Ok(()) => {
            build.explain.ran(ctx.stage, place, &title, &step);
            state.cache_key = after_layer(&key, state);
            build.steps_run.fetch_add(1, Ordering::Relaxed);
            vertex.done();
            Ok(())
        }
        Err(e) => {
            vertex.failed(e.to_string());
            Err(e)
        }
    }
}

/// The key the next step builds on: the step's key and the layer it produced. A step that
/// runs again (`--no-cache`) and makes other bytes than before therefore invalidates what
/// follows it, while one that makes the same bytes keeps it cached.
fn after_layer(key: &str, state: &StageState) -> String {
    let diff_id = state
        .layers
        .last()
        .map(|l| l.diff_id.to_string())
        .unwrap_or_default();
    CacheKey::new(key)
        .instruction(&format!("layer {diff_id}"))
        .finish()
}

/// What [`execute_layer`] records the layer it makes under.
struct Made<'k> {
    key: &'k str,
    created_by: String,
    changes: Changes,
}

fn execute_layer(
    ctx: &StageCtx<'_, '_>,
    state: &mut StageState,
    made: Made<'_>,
    vertex: &Vertex<'_>,
    prepare: impl FnOnce(Option<&ChainId>) -> kiln_snapshotter::Result<ActiveSnapshot>,
    execute: impl FnOnce(&ActiveSnapshot, &Vertex<'_>) -> Result<Vec<String>>,
) -> Result<()> {
    let Made {
        key,
        created_by,
        changes,
    } = made;
    let build = ctx.build;
    let active = prepare(state.chain.as_ref())?;
    let extra = match execute(&active, vertex) {
        Ok(extra) => extra,
        Err(e) => {
            // Unmount now; the error that matters is the step's.
            let _ = active.abort();
            return Err(e);
        }
    };
    build.check_cancelled()?;
    let options = DiffOptions {
        clamp_mtime: build.clamp_mtime,
        exclude: extra,
    };
    let mut writer = LayerWriter::new(
        build.store,
        LayerOptions {
            compression: build.request.compression,
            threads: 0,
        },
    )?;
    let committed = match changes {
        Changes::Command => active.commit(&mut writer, &options)?,
        Changes::Kiln => active.commit_upper(&mut writer, &options, |w| {
            w.diff_id().map_err(|e| kiln_snapshotter::Error::Io {
                op: "hashing",
                path: "the layer".into(),
                source: std::io::Error::other(e),
            })
        })?,
    };
    let layer = writer.finish()?;
    if layer.diff_id != committed.diff_id {
        return Err(Error::Layer {
            digest: layer.digest.to_string(),
            source: std::io::Error::other(format!(
                "the layer's diff-id {} differs from the snapshot's {}",
                layer.diff_id, committed.diff_id
            )),
        });
    }
    // Until the cache record names it, only a lease keeps the new snapshot from a concurrent
    // `kiln prune`; one that ran before the lease is undone from the (pinned) layer blob.
    build.store.lease(committed.chain_id.as_str())?;
    if !build.snapshotter.exists(&committed.chain_id) {
        let diff_id = committed.diff_id.clone();
        let mut reader = kiln_oci::open_layer_blob(build.store, &layer.digest)?;
        build
            .snapshotter
            .apply_layer(state.chain.as_ref(), &diff_id, &mut reader)?;
    }
    let created = kiln_oci::image::creation_time();
    let record = CacheRecord {
        created: created.clone(),
        layer: Some(LayerRecord::new(&layer, committed.chain_id.as_str())),
    };
    build.cache.store(key, &record)?;
    state.cache_records.push((key.to_string(), record));
    state.layers.push(layer);
    state.chain = Some(committed.chain_id);
    state.add_history(created_by, false, &created);
    Ok(())
}
