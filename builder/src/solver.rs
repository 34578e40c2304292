//! The solver: parses and plans the Dockerfile, builds the planned stages group by group (the
//! stages of one group in parallel), and writes the target stage as the image.
//!
//! Events: every step that BuildKit shows as a vertex (FROM an image, RUN, COPY, ADD, WORKDIR)
//! is `Started` with its title (`[build 2/5] RUN make`) and Dockerfile line, may log output
//! lines, and ends with exactly one of `Cached` (answered from the cache: nothing ran), `Done`
//! or `Failed`. Config-only instructions (ENV, LABEL, …) are not vertices. `Warning`s carry
//! what does not stop the build (parser findings, unused build args, the copy snapshotter).
//! Ids are unique within a build, so the events of stages that build in parallel can
//! interleave.
//!
//! Caching: every step has a key (see [`crate::cache_key`]) chained from the base (image id,
//! `scratch`, or the base stage's last key) through every instruction, config-only ones
//! included; after a step that makes a layer the chain continues from the key and the layer's
//! diff-id, so a step that runs again and makes other bytes invalidates what follows it.

use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::events::{Event, EventSink};
use crate::remote_cache::{ExportableCache, RemoteCache};
use crate::request::{BuildOutcome, BuildRequest};
use crate::stage::{BuildCtx, build_stage};
use crate::state::StageState;
use kiln_grammar::expand::Lexer;
use kiln_grammar::plan::{BuildPlan, plan};
use kiln_oci::{Reference, Store};
use kiln_runner::Isolation;
use kiln_snapshotter::{Backend, Snapshotter, SnapshotterOptions};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

/// Builds the image `request` describes into `store`, reporting progress to `events`.
///
/// The process must be able to start the sandbox: it re-executes its own binary, whose `main`
/// calls [`kiln_runner::helper_main_if_requested`] first.
pub fn build(
    store: &Store,
    request: &BuildRequest,
    events: &dyn EventSink,
) -> Result<BuildOutcome> {
    let render = |e: kiln_grammar::Error| {
        Error::Dockerfile(e.render(&request.dockerfile_name, &request.dockerfile))
    };
    let dockerfile = kiln_grammar::parse(&request.dockerfile).map_err(render)?;
    for warning in &dockerfile.warnings {
        events.emit(Event::Warning {
            message: format!(
                "{}:{}: {}",
                request.dockerfile_name, warning.span.start_line, warning.message
            ),
        });
    }
    let mut plan = plan(&dockerfile, &request.plan).map_err(render)?;
    for warning in &plan.warnings {
        events.emit(Event::Warning {
            message: format!(
                "{}:{}: {}",
                request.dockerfile_name, warning.span.start_line, warning.message
            ),
        });
    }
    if !plan.unused_build_args.is_empty() {
        events.emit(Event::Warning {
            message: format!(
                "one or more build args were not consumed: {}",
                plan.unused_build_args.join(", ")
            ),
        });
    }
    // Tags are checked before anything runs: a typo must not cost a whole build.
    let tags = request
        .tags
        .iter()
        .map(|tag| {
            Reference::parse(tag)
                .map(Reference::with_default_tag)
                .map_err(|source| Error::InvalidTag {
                    tag: tag.clone(),
                    source,
                })
        })
        .collect::<Result<Vec<_>>>()?;

    crate::stage::add_trigger_deps(&dockerfile, &request.plan, &mut plan, store)?;
    // RUN steps in the live root are diffed against flattened chains, which copies keep.
    let snapshotter = Snapshotter::with_options(
        store.root(),
        SnapshotterOptions {
            force_copy: request.isolation == Isolation::None,
            ..SnapshotterOptions::default()
        },
    )?;
    if let Backend::Copy { reason } = snapshotter.backend()
        && request.isolation != Isolation::None
    {
        events.emit(Event::Warning {
            message: format!("{reason}; using copies of the filesystem, which is slower"),
        });
    }
    let clamp_mtime = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok());
    let ids = AtomicU32::new(1);
    let remote = RemoteCache::load(&request.cache_from, &request.registry, events, &ids);
    let ctx = BuildCtx {
        request,
        plan: &plan,
        store,
        snapshotter: &snapshotter,
        cache: Cache::new(store),
        remote,
        events,
        lexer: Lexer::new(plan.escape),
        ids,
        cancelled: AtomicBool::new(false),
        steps_run: AtomicUsize::new(0),
        steps_cached: AtomicUsize::new(0),
        clamp_mtime,
        context: Mutex::new(None),
        explain: crate::explain::Explainer::new(
            store.root(),
            build_identity(request, &plan, &tags),
        ),
        registry: crate::pull::Registry::new(request.registry.clone()),
    };
    let built = build_stages(&ctx, &plan);
    ctx.explain.save();
    let mut built = built?;
    let mut target = built
        .remove(&plan.target)
        .ok_or_else(|| Error::Unsupported {
            location: request.dockerfile_name.clone(),
            message: format!("the target stage {} was not built", plan.target),
        })?;
    let cache = ExportableCache::collect(&target, built.values());
    finish_config(&mut target, request);
    let image = store.write_image(&target.config, &target.layers, &tags)?;
    Ok(BuildOutcome {
        image_id: image.id.to_string(),
        manifest_digest: image.manifest_digest.to_string(),
        tags: tags.iter().map(Reference::store_tag).collect(),
        steps_run: ctx.steps_run.load(Ordering::Relaxed),
        steps_cached: ctx.steps_cached.load(Ordering::Relaxed),
        cache,
    })
}

/// Builds every planned stage; the stages of one group run on threads of their own. The
/// first failure cancels the others, which stop at their next step (a running RUN is
/// killed); it is the error reported.
fn build_stages(ctx: &BuildCtx<'_>, plan: &BuildPlan) -> Result<BTreeMap<usize, StageState>> {
    let mut built: BTreeMap<usize, StageState> = BTreeMap::new();
    for group in &plan.groups {
        let results: Mutex<Vec<(usize, Result<StageState>)>> = Mutex::new(Vec::new());
        let done = &built;
        std::thread::scope(|s| {
            for &index in group {
                let Some(stage) = plan.stage(index) else {
                    continue;
                };
                let results = &results;
                s.spawn(move || {
                    // A panic in a stage must not take the whole process down with it: it
                    // fails the build like any other error.
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        build_stage(ctx, stage, done)
                    }))
                    .unwrap_or(Err(Error::Thread("stage")));
                    if result.is_err() {
                        ctx.cancelled.store(true, Ordering::SeqCst);
                    }
                    results
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((index, result));
                });
            }
        });
        let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
        if results.len() != group.len() {
            return Err(Error::Thread("stage"));
        }
        let mut first_error = None;
        for (index, result) in results {
            match result {
                Ok(state) => {
                    built.insert(index, state);
                }
                // A stage that stopped because another failed is not the news.
                Err(Error::Cancelled) => {
                    first_error.get_or_insert(Error::Cancelled);
                }
                Err(e) => {
                    if matches!(first_error, None | Some(Error::Cancelled)) {
                        first_error = Some(e);
                    }
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
    }
    Ok(built)
}

/// What makes two builds the same build for explanations: the first tag, or without one the
/// Dockerfile, the context and the target stage.
fn build_identity(request: &BuildRequest, plan: &BuildPlan, tags: &[Reference]) -> String {
    if let Some(tag) = tags.first() {
        return tag.store_tag();
    }
    let context = std::path::absolute(&request.context).unwrap_or_else(|_| request.context.clone());
    let target = plan
        .stage(plan.target)
        .and_then(|s| s.name.clone())
        .unwrap_or_else(|| plan.target.to_string());
    format!(
        "{} in {} (target {target})",
        request.dockerfile_name,
        context.display()
    )
}

/// The last touches of the image config: `--label`s and the creation time (the newest
/// history entry's, so an image rebuilt from the cache keeps its id; `SOURCE_DATE_EPOCH` when
/// that is set).
fn finish_config(state: &mut StageState, request: &BuildRequest) {
    if !request.labels.is_empty() {
        state
            .container_mut()
            .labels
            .get_or_insert_with(BTreeMap::new)
            .extend(request.labels.clone());
    }
    let reproducible = std::env::var_os("SOURCE_DATE_EPOCH").is_some();
    let created = state
        .config
        .history
        .iter()
        .filter_map(|h| h.created.as_deref())
        .filter_map(|c| kiln_oci::config::parse_rfc3339(c).map(|secs| (secs, c)))
        .max_by_key(|(secs, _)| *secs)
        .filter(|_| !reproducible)
        .map(|(_, c)| c.to_string())
        .unwrap_or_else(kiln_oci::image::creation_time);
    state.config.created = Some(created);
}
