//! Building one stage: its base (an image, `scratch` or an earlier stage), then the base's
//! ONBUILD triggers, then each instruction in order.

use crate::cache::{Cache, CacheRecord};
use crate::cache_key::CacheKey;
use crate::context::{BuildContext, DigestMemo, Entry};
use crate::error::{Error, Result};
use crate::events::EventSink;
use crate::remote_cache::RemoteCache;
use crate::request::BuildRequest;
use crate::rootfs::unpack_image;
use crate::state::StageState;
use crate::steps;
use crate::vertex::{StepLabel, Vertex};
use kiln_grammar::ast::Span;
use kiln_grammar::expand::Lexer;
use kiln_grammar::instructions::InstructionKind;
use kiln_grammar::plan::{Base, BuildPlan, PlanOptions, Stage};
use kiln_oci::{ImageConfig, Layer, Reference, Store};
use kiln_snapshotter::{Snapshotter, chain_id};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What every stage of one build shares.
pub struct BuildCtx<'a> {
    pub request: &'a BuildRequest,
    pub plan: &'a BuildPlan,
    pub store: &'a Store,
    pub snapshotter: &'a Snapshotter,
    pub cache: Cache,
    /// `--cache-from`: records of exported caches, looked up when the store has none.
    pub remote: RemoteCache,
    pub events: &'a dyn EventSink,
    pub lexer: Lexer,
    /// The next step id (`#N`).
    pub ids: AtomicU32,
    /// Set when a stage fails: the others stop at their next step (a running RUN is killed).
    pub cancelled: AtomicBool,
    pub steps_run: AtomicUsize,
    pub steps_cached: AtomicUsize,
    /// `SOURCE_DATE_EPOCH`: layer mtimes are clamped to it.
    pub clamp_mtime: Option<i64>,
    /// The build context and its entries, walked on first use (a Dockerfile without COPY or
    /// ADD never reads it).
    pub context: Mutex<Option<Arc<ContextFiles>>>,
    /// Why steps ran (see [`crate::explain`]).
    pub explain: crate::explain::Explainer,
    /// Where images not in the store come from.
    pub registry: crate::pull::Registry,
}

/// The build context, walked (`.dockerignore` applied).
pub struct ContextFiles {
    pub context: BuildContext,
    pub entries: Vec<Entry>,
}

impl BuildCtx<'_> {
    /// `Dockerfile:LINE`, as BuildKit names the place of a failing step.
    pub fn location(&self, span: Span) -> String {
        format!("{}:{}", self.request.dockerfile_name, span.start_line)
    }

    /// A Dockerfile error (expansion, invalid value) rendered with the file, line and source.
    pub fn dockerfile_error(&self, error: kiln_grammar::Error, span: Span) -> Error {
        Error::Dockerfile(
            error
                .or_at(span)
                .render(&self.request.dockerfile_name, &self.request.dockerfile),
        )
    }

    pub fn check_cancelled(&self) -> Result<()> {
        if self.cancelled.load(Ordering::SeqCst) {
            return Err(Error::Cancelled);
        }
        Ok(())
    }

    /// The build context, walked and hashed once for the whole build. Digests are memoised by
    /// inode metadata in the store (one memo per context directory), so a rebuild of an
    /// unchanged context stats its files and reads none.
    pub fn context(&self) -> Result<Arc<ContextFiles>> {
        let mut slot = self.context.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(files) = slot.as_ref() {
            return Ok(files.clone());
        }
        let context = BuildContext::open(
            &self.request.context,
            self.request.dockerfile_path.as_deref(),
        )?;
        let memo_path = self.context_memo_path();
        // The memo loads while the tree is walked; only the hashing needs both.
        let (memo, walked) = rayon::join(|| DigestMemo::load(&memo_path), || context.walk_stat());
        let (entries, _) = walked?.hash(&memo)?;
        // Only a cache: a memo that cannot be written costs the next build some reading.
        let _ = memo.save(&memo_path);
        let files = Arc::new(ContextFiles { context, entries });
        *slot = Some(files.clone());
        Ok(files)
    }

    /// `<store>/context-digests/<sha256 of the context's absolute path>`.
    fn context_memo_path(&self) -> std::path::PathBuf {
        let dir = std::path::absolute(&self.request.context)
            .unwrap_or_else(|_| self.request.context.clone());
        let name = CacheKey::new("context")
            .instruction(&dir.to_string_lossy())
            .finish();
        self.store
            .root()
            .join("context-digests")
            .join(name.trim_start_matches("sha256:"))
    }

    pub fn start_vertex(&self, name: String, line: usize) -> Vertex<'_> {
        Vertex::start(self.events, &self.ids, name, Some(line))
    }
}

/// One stage being built.
pub struct StageCtx<'c, 'a> {
    pub build: &'c BuildCtx<'a>,
    pub stage: &'c Stage,
    /// The stages built before this one's group (what `COPY --from` can use).
    pub built: &'c BTreeMap<usize, StageState>,
    /// `--no-cache`, or the stage is named in `--no-cache-filter`: look nothing up.
    pub no_cache: bool,
    pub label: StepLabel,
}

impl StageCtx<'_, '_> {
    /// The numbered title of the next step (`[build 2/5] RUN make`).
    pub fn next_title(
        &mut self,
        state: &StageState,
        instruction: &kiln_grammar::instructions::Instruction,
    ) -> String {
        let text = steps::title(self, state, instruction);
        self.label.next(&text)
    }

    /// The flag that keeps this stage from the cache, if one does.
    pub fn no_cache_flag(&self) -> Option<&'static str> {
        match (self.no_cache, self.build.request.no_cache) {
            (false, _) => None,
            (true, true) => Some("--no-cache"),
            (true, false) => Some("--no-cache-filter"),
        }
    }

    /// The cache record of `key`, unless this stage must not use the cache.
    pub fn lookup(&self, key: &str) -> Option<CacheRecord> {
        if self.no_cache {
            return None;
        }
        self.build.cache.lookup(self.build.store, key).or_else(|| {
            let build = self.build;
            build
                .remote
                .lookup(build.store, &build.cache, key, build.events)
        })
    }

    /// Reuses a cached layer: adds it to the state and makes sure its snapshot exists,
    /// applying it from the blob when it does not. `false` when the record does not fit (a
    /// damaged record is a miss).
    pub fn reuse_layer(&self, state: &mut StageState, record: &CacheRecord) -> Result<bool> {
        let Some(layer_record) = &record.layer else {
            return Ok(false);
        };
        let Some(layer) = layer_record.layer() else {
            return Ok(false);
        };
        let chain = chain_id(state.chain.as_ref(), &layer.diff_id);
        if chain.as_str() != layer_record.chain_id {
            return Ok(false);
        }
        // Leased before its existence is checked: a `kiln prune` from now on keeps it.
        self.build.store.lease(chain.as_str())?;
        if !self.build.snapshotter.exists(&chain) {
            let store = self.build.store;
            let mut reader = kiln_oci::open_layer_blob(store, &layer.digest)?;
            self.build.snapshotter.apply_layer(
                state.chain.as_ref(),
                &layer.diff_id,
                &mut reader,
            )?;
            // Read to the end so the blob reader verifies the compressed digest as well.
            std::io::copy(&mut reader, &mut std::io::sink()).map_err(|e| Error::Layer {
                digest: layer.digest.to_string(),
                source: e,
            })?;
        }
        if !self.build.store.retain_blob(&layer.digest)? {
            return Ok(false);
        }
        state.layers.push(layer);
        state.chain = Some(chain);
        Ok(true)
    }
}

/// Builds `stage` on `base` (the final state of its base stage, when it has one).
pub fn build_stage(
    build: &BuildCtx<'_>,
    stage: &Stage,
    built: &BTreeMap<usize, StageState>,
) -> Result<StageState> {
    let base = match stage.base {
        Base::Stage { index } => built.get(&index),
        _ => None,
    };
    let no_cache = build.request.no_cache
        || stage.name.as_ref().is_some_and(|name| {
            build
                .request
                .no_cache_filter
                .iter()
                .any(|f| f.eq_ignore_ascii_case(name))
        });
    let mut ctx = StageCtx {
        build,
        stage,
        built,
        no_cache,
        label: StepLabel::new(build.plan, stage),
    };
    let (mut state, triggers) = match (&stage.base, base) {
        (Base::Image { reference }, _) => from_image(&mut ctx, reference)?,
        (Base::Scratch, _) => {
            let mut state = StageState::new(ImageConfig::for_host(), Vec::new(), None);
            state.cache_key = "scratch".to_string();
            (state, Vec::new())
        }
        (Base::Stage { .. }, Some(base)) => {
            let mut state = base.clone();
            state.cmd_set = false;
            // As with an image, the base stage's triggers are consumed by this stage: the
            // new image's OnBuild is only what this stage sets.
            let triggers = state.container_mut().on_build.take().unwrap_or_default();
            (state, triggers)
        }
        (Base::Stage { index }, None) => {
            return Err(Error::Unsupported {
                location: build.location(stage.span),
                message: format!("stage {index} was not built before the stage that uses it"),
            });
        }
    };
    for trigger in &triggers {
        build.check_cancelled()?;
        run_trigger(&mut ctx, &mut state, trigger).map_err(|source| Error::Trigger {
            location: build.location(stage.span),
            trigger: trigger.clone(),
            source: Box::new(source),
        })?;
    }
    for instruction in &stage.instructions {
        build.check_cancelled()?;
        steps::dispatch(&mut ctx, &mut state, instruction)?;
    }
    Ok(state)
}

/// Makes the stages that ONBUILD triggers of the planned stages' bases read from (`COPY
/// --from=NAME`, `RUN --mount=from=NAME`) part of the plan, built before the stage that runs
/// the trigger. The plan is made from the Dockerfile alone and cannot know a base image's
/// triggers; BuildKit resolves such names against the current Dockerfile's stages too.
pub fn add_trigger_deps(
    dockerfile: &kiln_grammar::ast::Dockerfile,
    options: &PlanOptions,
    plan: &mut BuildPlan,
    store: &Store,
) -> Result<()> {
    let mut changed = false;
    let mut next = 0;
    // Stages pulled in may have triggered bases of their own: scanned in turn.
    while next < plan.stages.len() {
        let stage = &plan.stages[next];
        next += 1;
        let triggers = match &stage.base {
            Base::Image { reference } => store
                .find_image(reference)
                .ok()
                .and_then(|image| image.config.config.and_then(|c| c.on_build))
                .unwrap_or_default(),
            Base::Stage { index } => plan
                .stage(*index)
                .map(|base| {
                    base.instructions
                        .iter()
                        .filter_map(|i| match &i.kind {
                            InstructionKind::Onbuild { expression, .. } => Some(expression.clone()),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            Base::Scratch => Vec::new(),
        };
        let stage_index = stage.index;
        let names: Vec<String> = triggers.iter().flat_map(|t| trigger_sources(t)).collect();
        for name in names {
            let planned = plan.stages.iter().find(|s| match name.parse::<usize>() {
                Ok(index) => s.index == index,
                Err(_) => s.name.as_deref() == Some(name.to_lowercase().as_str()),
            });
            let dep = match planned {
                Some(found) => found.index,
                None => {
                    // A stage the plan left out: planned on its own and merged in. A name
                    // that is no stage is an image, which needs nothing built.
                    let target = PlanOptions {
                        target: Some(name.clone()),
                        ..options.clone()
                    };
                    let Ok(sub) = kiln_grammar::plan::plan(dockerfile, &target) else {
                        continue;
                    };
                    for extra in sub.stages {
                        if plan.stage(extra.index).is_none() {
                            plan.stages.push(extra);
                        }
                    }
                    sub.target
                }
            };
            if dep == stage_index {
                continue;
            }
            if let Some(stage) = plan.stages.iter_mut().find(|s| s.index == stage_index)
                && !stage.deps.contains(&dep)
            {
                stage.deps.push(dep);
                changed = true;
            }
        }
    }
    if changed {
        plan.stages.sort_by_key(|s| s.index);
        plan.groups = layered(plan)?;
        plan.order = plan.groups.iter().flatten().copied().collect();
    }
    Ok(())
}

/// The stages in groups that need only earlier groups (deps may now point either way).
fn layered(plan: &BuildPlan) -> Result<Vec<Vec<usize>>> {
    let mut placed: BTreeMap<usize, usize> = BTreeMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    while placed.len() < plan.stages.len() {
        let ready: Vec<usize> = plan
            .stages
            .iter()
            .filter(|s| !placed.contains_key(&s.index))
            .filter(|s| {
                s.deps
                    .iter()
                    .all(|d| placed.contains_key(d) || plan.stage(*d).is_none())
            })
            .map(|s| s.index)
            .collect();
        if ready.is_empty() {
            return Err(Error::Unsupported {
                location: "ONBUILD".to_string(),
                message: "the stages that ONBUILD triggers copy from depend on each other in \
                          a cycle"
                    .to_string(),
            });
        }
        for index in &ready {
            placed.insert(*index, groups.len());
        }
        groups.push(ready);
    }
    Ok(groups)
}

/// The stages or images one trigger reads from: `COPY --from` and `RUN --mount=from=`.
/// A trigger that does not parse names nothing here; running it reports the error.
fn trigger_sources(trigger: &str) -> Vec<String> {
    let Ok(parsed) = kiln_grammar::parse(trigger) else {
        return Vec::new();
    };
    let Some(Ok(instruction)) = parsed
        .nodes
        .first()
        .map(kiln_grammar::instructions::parse_instruction)
    else {
        return Vec::new();
    };
    match instruction.kind {
        InstructionKind::Copy(copy) => copy.from.into_iter().collect(),
        InstructionKind::Run(run) => run.mounts.iter().filter_map(|m| m.from.clone()).collect(),
        _ => Vec::new(),
    }
}

/// Runs one ONBUILD trigger of the base right after FROM, as if it were written there: it is
/// parsed as a Dockerfile line of its own and placed at the FROM line (which is where errors
/// of its steps point). `COPY --from=NAME` in a trigger names a stage of this Dockerfile.
fn run_trigger(ctx: &mut StageCtx<'_, '_>, state: &mut StageState, trigger: &str) -> Result<()> {
    const SHOWN_AS: &str = "ONBUILD trigger";
    let render = |e: kiln_grammar::Error| Error::Dockerfile(e.render(SHOWN_AS, trigger));
    let parsed = kiln_grammar::parse(trigger).map_err(render)?;
    let node = match parsed.nodes.as_slice() {
        [node] => node,
        nodes => {
            return Err(Error::Dockerfile(format!(
                "{SHOWN_AS}: expected one instruction, found {}",
                nodes.len()
            )));
        }
    };
    // The checks `ONBUILD` makes when it is written, for images built by other tools.
    if matches!(
        node.keyword.to_ascii_lowercase().as_str(),
        "onbuild" | "from" | "maintainer"
    ) {
        return Err(Error::Dockerfile(format!(
            "{SHOWN_AS}: {} isn't allowed as an ONBUILD trigger",
            node.keyword.to_ascii_uppercase()
        )));
    }
    let mut instruction = kiln_grammar::instructions::parse_instruction(node).map_err(render)?;
    instruction.span = ctx.stage.span;
    if matches!(
        instruction.kind,
        InstructionKind::Run(_)
            | InstructionKind::Copy(_)
            | InstructionKind::Add(_)
            | InstructionKind::Workdir { .. }
    ) {
        ctx.label.add_step();
    }
    steps::dispatch(ctx, state, &instruction)
}

/// `FROM image`: the image's layers as a snapshot chain, its config as the start.
fn from_image(ctx: &mut StageCtx<'_, '_>, reference: &str) -> Result<(StageState, Vec<String>)> {
    let build = ctx.build;
    let shown = Reference::parse(reference)
        .map(|r| full_name(&r.with_default_tag()))
        .unwrap_or_else(|_| reference.to_string());
    let vertex = build.start_vertex(
        ctx.label.next(&format!("FROM {shown}")),
        ctx.stage.span.start_line,
    );
    let result = load_image(build, reference, ctx.stage.span.start_line);
    match result {
        Ok(state) => {
            vertex.done();
            Ok(state)
        }
        Err(e) => {
            vertex.failed(e.to_string());
            Err(e)
        }
    }
}

/// A reference as BuildKit shows it, registry and `library/` included
/// (`docker.io/library/busybox:latest`).
fn full_name(reference: &Reference) -> String {
    let shown = reference.to_string();
    if reference.domain().is_some() {
        return shown;
    }
    if reference.path().contains('/') {
        format!("docker.io/{shown}")
    } else {
        format!("docker.io/library/{shown}")
    }
}

/// The image's state and its ONBUILD triggers (which the state itself no longer carries).
fn load_image(
    build: &BuildCtx<'_>,
    reference: &str,
    line: usize,
) -> Result<(StageState, Vec<String>)> {
    let image = build.image(reference, line)?;
    let chain = unpack_image(build.store, build.snapshotter, &image)?;
    let layers = image
        .layers()?
        .into_iter()
        .zip(image.diff_ids()?)
        .map(|(layer, diff_id)| Layer {
            digest: layer.digest,
            diff_id,
            size: layer.size,
            media_type: layer.media_type,
        })
        .collect();
    let triggers = image
        .config
        .config
        .as_ref()
        .and_then(|c| c.on_build.clone())
        .unwrap_or_default();
    let mut state = StageState::new(image.config.clone(), layers, chain);
    state.cache_key = image.id.to_string();
    Ok((state, triggers))
}
