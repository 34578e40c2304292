//! What RUN steps do differently when they are not namespaced: chroot isolation cannot give a
//! step a network of its own; without isolation a step runs in the live root filesystem, which
//! is synced to the step's parent chain first and diffed after (one step at a time: there is
//! only one root).

use crate::error::{Error, Result};
use crate::stage::StageCtx;
use crate::state::StageState;
use crate::steps::{Changes, Step, layer_step, layer_step_in};
use crate::vertex::Vertex;
use kiln_grammar::instructions::Instruction;
use kiln_runner::{Isolation, Network};
use kiln_snapshotter::ActiveSnapshot;
use std::path::Path;
use std::sync::Mutex;

/// The live root, held by the one RUN step that works in it.
static LIVE_ROOT: Mutex<()> = Mutex::new(());

/// Refuses what the isolation cannot provide, before anything runs.
pub fn check_run(isolation: Isolation, network: Network, location: &str) -> Result<()> {
    if network == Network::None && !isolation.is_namespaced() {
        return Err(Error::Unsupported {
            location: location.to_string(),
            message: format!(
                "RUN --network=none needs a network namespace, which --isolation {isolation} \
                 does not create; drop --network=none or build with --isolation namespace"
            ),
        });
    }
    Ok(())
}

/// A RUN's layer step: on a snapshot of the store, or, without isolation, in the live root.
pub fn run_layer_step(
    ctx: &StageCtx<'_, '_>,
    state: &mut StageState,
    instruction: &Instruction,
    name: String,
    key: crate::explain::StepKey,
    created_by: String,
    execute: impl FnOnce(&ActiveSnapshot, &Vertex<'_>) -> Result<Vec<String>>,
) -> Result<()> {
    let build = ctx.build;
    let step = Step {
        instruction,
        name,
        key,
        created_by,
        changes: Changes::Command,
    };
    if build.request.isolation != Isolation::None {
        return layer_step(ctx, state, step, execute);
    }
    let _root = LIVE_ROOT.lock().unwrap_or_else(|p| p.into_inner());
    // The context is read by later COPY steps, and the container's markers tell the next kiln
    // that it runs in a container; the store and kiln's own files are left out by the
    // snapshotter itself.
    let exclude = vec![
        build.request.context.to_string_lossy().into_owned(),
        "/.dockerenv".to_string(),
        "/run/.containerenv".to_string(),
    ];
    let prepare = |parent: Option<&_>| {
        build
            .snapshotter
            .prepare_root(parent, Path::new("/"), &exclude)
    };
    layer_step_in(ctx, state, step, prepare, execute)
}
