//! Building one stage: its base (an image, `scratch` or an earlier stage), then each
//! instruction in order.

use crate::cache::{Cache, CacheRecord};
use crate::context::{BuildContext, Entry};
use crate::error::{Error, Result};
use crate::events::{Event, EventSink};
use crate::request::BuildRequest;
use crate::rootfs::unpack_image;
use crate::state::StageState;
use crate::steps;
use crate::vertex::{StepLabel, Vertex};
use kiln_grammar::ast::Span;
use kiln_grammar::expand::Lexer;
use kiln_grammar::plan::{Base, BuildPlan, Stage};
use kiln_oci::{ImageConfig, Layer, Reference, Store};
use kiln_snapshotter::{ChainId, DiffId, Snapshotter};
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

    pub fn warn(&self, message: String) {
        self.events.emit(Event::Warning { message });
    }

    /// The build context, walked once for the whole build.
    pub fn context(&self) -> Result<Arc<ContextFiles>> {
        let mut slot = self.context.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(files) = slot.as_ref() {
            return Ok(files.clone());
        }
        let context = BuildContext::open(
            &self.request.context,
            self.request.dockerfile_path.as_deref(),
        )?;
        let entries = context.walk()?;
        let files = Arc::new(ContextFiles { context, entries });
        *slot = Some(files.clone());
        Ok(files)
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

    /// The cache record of `key`, unless this stage must not use the cache.
    pub fn lookup(&self, key: &str) -> Option<CacheRecord> {
        if self.no_cache {
            return None;
        }
        self.build.cache.lookup(self.build.store, key)
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
        let Ok(diff_id) = DiffId::parse(layer.diff_id.as_str()) else {
            return Ok(false);
        };
        let chain = ChainId::chain(state.chain.as_ref(), &diff_id);
        if chain.as_str() != layer_record.chain_id {
            return Ok(false);
        }
        if !self.build.snapshotter.exists(&chain) {
            let store = self.build.store;
            let mut reader = kiln_oci::open_layer_blob(store, &layer.digest)?;
            self.build
                .snapshotter
                .apply_layer(state.chain.as_ref(), &diff_id, &mut reader)?;
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
    let mut state = match (&stage.base, base) {
        (Base::Image { reference }, _) => from_image(&mut ctx, reference)?,
        (Base::Scratch, _) => {
            let mut state = StageState::new(ImageConfig::for_host(), Vec::new(), None);
            state.cache_key = "scratch".to_string();
            state
        }
        (Base::Stage { .. }, Some(base)) => {
            let mut state = base.clone();
            state.cmd_set = false;
            // As with an image, the base stage's triggers are consumed here, not run (yet).
            if let Some(triggers) = state
                .container_mut()
                .on_build
                .take()
                .filter(|t| !t.is_empty())
            {
                build.warn(format!(
                    "{}: the base stage has ONBUILD triggers, which kiln does not run yet: {}",
                    build.location(stage.span),
                    triggers.join("; ")
                ));
            }
            state
        }
        (Base::Stage { index }, None) => {
            return Err(Error::Unsupported {
                location: build.location(stage.span),
                message: format!("stage {index} was not built before the stage that uses it"),
            });
        }
    };
    for instruction in &stage.instructions {
        build.check_cancelled()?;
        steps::dispatch(&mut ctx, &mut state, instruction)?;
    }
    Ok(state)
}

/// `FROM image`: the image's layers as a snapshot chain, its config as the start.
fn from_image(ctx: &mut StageCtx<'_, '_>, reference: &str) -> Result<StageState> {
    let build = ctx.build;
    let shown = Reference::parse(reference)
        .map(|r| full_name(&r.with_default_tag()))
        .unwrap_or_else(|_| reference.to_string());
    let vertex = build.start_vertex(
        ctx.label.next(&format!("FROM {shown}")),
        ctx.stage.span.start_line,
    );
    let result = load_image(build, reference);
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

fn load_image(build: &BuildCtx<'_>, reference: &str) -> Result<StageState> {
    let image = match build.store.find_image(reference) {
        Ok(image) => image,
        Err(kiln_oci::Error::ImageNotFound(_)) => {
            return Err(Error::ImageNotInStore(reference.to_string()));
        }
        Err(e) => return Err(e.into()),
    };
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
    if let Some(triggers) = image
        .config
        .config
        .as_ref()
        .and_then(|c| c.on_build.as_ref())
        .filter(|t| !t.is_empty())
    {
        build.warn(format!(
            "{reference} has ONBUILD triggers, which kiln does not run yet: {}",
            triggers.join("; ")
        ));
    }
    let mut state = StageState::new(image.config.clone(), layers, chain);
    state.cache_key = image.id.to_string();
    Ok(state)
}
