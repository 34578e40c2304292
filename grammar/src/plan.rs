//! The build plan: a Dockerfile's stages, what each is built on and needs, the args each can see,
//! pruned to what `--target` needs and ordered for building.
//!
//! Stages may only use stages defined before them (by name, case-insensitively, or by index),
//! so the dependency graph is acyclic by construction and ascending index order is a valid
//! build order. ONBUILD triggers are not resolved here: they come from base images, which the
//! plan does not read.

mod args;
mod platform;

pub use args::{ArgValue, GlobalArg, PLATFORM_ARGS, PROXY_ARGS, StageArg};
pub use platform::Platform;

use crate::ast::{Dockerfile, Span, Warning};
use crate::error::{Error, ErrorKind, Result};
use crate::expand::Lexer;
use crate::instructions::{ArgDecl, Instruction, InstructionKind, parse_instruction};
use crate::suggest::closest;
use args::{GlobalScope, resolve_arg};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// What the plan is resolved for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanOptions {
    /// The stage to build (by name); `None` builds the last stage.
    pub target: Option<String>,
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// The platform the image is built for (`TARGETPLATFORM`).
    pub platform: Platform,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            target: None,
            build_args: BTreeMap::new(),
            platform: Platform::native(),
        }
    }
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Base {
    /// An image reference, with the global args expanded (`alpine:3.20`).
    Image { reference: String },
    /// `FROM scratch`: an empty filesystem.
    Scratch,
    /// An earlier stage of this Dockerfile.
    Stage { index: usize },
}

/// One stage of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stage {
    /// The stage's position among all the Dockerfile's stages (what `--from=1` counts).
    pub index: usize,
    /// The `AS` name, lower-case.
    pub name: Option<String>,
    pub base: Base,
    /// The FROM word as written (`${BASE}`, `builder`).
    pub base_name: String,
    /// The platform the stage builds for: its `--platform`, else its base stage's, else the
    /// plan's target platform.
    pub platform: Platform,
    /// True when FROM gave `--platform` (the base image must be pulled for that platform).
    pub platform_explicit: bool,
    /// The stages this one needs built first (its base, `COPY --from`, `RUN --mount=from=`).
    pub deps: Vec<usize>,
    /// Images used by `COPY --from` or `RUN --mount=from=` that are not stages.
    pub image_deps: Vec<String>,
    /// The args in scope at the end of the stage, in declaration order: those of its base stage,
    /// then its own ARGs (a redeclaration replaces the earlier one).
    pub args: Vec<StageArg>,
    /// The stage's instructions after FROM.
    pub instructions: Vec<Instruction>,
    /// The FROM instruction's line as written, and its span.
    pub original: String,
    pub span: Span,
}

/// A resolved Dockerfile: what to build, in which order, with which args.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildPlan {
    /// The stages needed for the target, in ascending index order.
    pub stages: Vec<Stage>,
    /// The index of the stage whose result is the image.
    pub target: usize,
    /// Stage indices in an order that builds every stage after what it needs.
    pub order: Vec<usize>,
    /// Stage indices grouped so that each group needs only earlier groups: the stages of one
    /// group can build in parallel.
    pub groups: Vec<Vec<usize>>,
    /// The ARGs before the first FROM, resolved.
    pub global_args: Vec<GlobalArg>,
    /// What FROM lines and a stage's `ARG NAME` see: the predefined args, then the global ARGs.
    pub global_scope: BTreeMap<String, String>,
    /// The `--build-arg` values the plan was made with (inputs, so not shown).
    #[serde(skip)]
    pub build_args: BTreeMap<String, String>,
    /// Proxy `--build-arg`s: given to every RUN without an ARG, kept out of the image history.
    pub proxy_args: BTreeMap<String, String>,
    /// `--build-arg` names that no ARG of the planned stages declares and kiln does not predefine.
    pub unused_build_args: Vec<String>,
    pub build_platform: Platform,
    pub target_platform: Platform,
    /// The Dockerfile's escape character, for expanding words later.
    pub escape: char,
    /// Findings that do not stop the build (a `--from` image that looks like a misspelt stage).
    pub warnings: Vec<Warning>,
}

impl BuildPlan {
    /// The planned stage with this index (`None` if it was pruned or does not exist).
    pub fn stage(&self, index: usize) -> Option<&Stage> {
        self.stages.iter().find(|s| s.index == index)
    }

    /// The stage whose result is the image (always planned; `None` only for a hand-made plan).
    pub fn target_stage(&self) -> Option<&Stage> {
        self.stage(self.target)
    }

    /// The value a stage's `ARG` declaration takes, for the builder at that ARG: `--build-arg`,
    /// else its default (to expand in the stage's environment), else the global or predefined
    /// value, else unset.
    pub fn arg_value(&self, decl: &ArgDecl) -> ArgValue {
        resolve_arg(decl, &self.global_scope, &self.build_args)
    }

    /// Every image the plan pulls: stage bases and `--from` images, sorted, without repeats.
    pub fn images(&self) -> Vec<String> {
        let mut images = BTreeSet::new();
        for stage in &self.stages {
            if let Base::Image { reference } = &stage.base {
                images.insert(reference.clone());
            }
            images.extend(stage.image_deps.iter().cloned());
        }
        images.into_iter().collect()
    }
}

/// A `--from`/FROM reference, resolved.
enum Reference {
    Stage(usize),
    Image(String),
}

/// One stage as the Dockerfile writes it: its FROM, then its instructions.
struct StageHeader {
    name: Option<String>,
    /// The FROM word, unexpanded.
    image: String,
    /// The `--platform` value, unexpanded.
    platform: Option<String>,
    original: String,
    span: Span,
    instructions: Vec<Instruction>,
}

fn plan_error(message: impl Into<String>, span: Span) -> Error {
    Error::new(ErrorKind::Plan, message).at(span)
}

/// Resolve a parsed Dockerfile into the plan for `opts`.
pub fn plan(df: &Dockerfile, opts: &PlanOptions) -> Result<BuildPlan> {
    let lexer = Lexer::new(df.directives.escape);
    let build_platform = Platform::native();
    let target_stage_name = opts.target.clone().unwrap_or_default();
    let mut globals = GlobalScope::predefined(
        &build_platform,
        &opts.platform,
        &target_stage_name,
        &opts.build_args,
    );

    let instructions = df
        .nodes
        .iter()
        .map(parse_instruction)
        .collect::<Result<Vec<_>>>()?;
    let mut headers = split_stages(instructions, &mut globals, &lexer, opts)?;
    let resolver = Resolver {
        names: stage_names(&headers)?,
        headers: &headers,
        globals: &globals,
        lexer: &lexer,
        opts,
    };

    let mut stages: Vec<Stage> = Vec::with_capacity(headers.len());
    let mut warnings = Vec::new();
    for index in 0..headers.len() {
        let stage = resolver.stage(index, &stages, &mut warnings)?;
        stages.push(stage);
    }
    let target = match &opts.target {
        None => stages.len() - 1,
        Some(wanted) => *resolver
            .names
            .get(wanted.to_lowercase().as_str())
            .ok_or_else(|| unknown_target(wanted, &headers))?,
    };
    for (stage, header) in stages.iter_mut().zip(headers.iter_mut()) {
        stage.instructions = std::mem::take(&mut header.instructions);
    }

    // Keep the target and, transitively, what it needs.
    let mut needed = BTreeSet::from([target]);
    let mut pending = vec![target];
    while let Some(index) = pending.pop() {
        for &dep in &stages[index].deps {
            if needed.insert(dep) {
                pending.push(dep);
            }
        }
    }
    let stages: Vec<Stage> = stages
        .into_iter()
        .filter(|s| needed.contains(&s.index))
        .collect();
    let warnings = warnings
        .into_iter()
        .filter(|(stage, _)| needed.contains(stage))
        .map(|(_, warning)| warning)
        .collect();

    let order: Vec<usize> = stages.iter().map(|s| s.index).collect();
    let groups = parallel_groups(&stages);
    let unused_build_args = unused_build_args(opts, &globals, &stages);
    let proxy_args = opts
        .build_args
        .iter()
        .filter(|(k, _)| PROXY_ARGS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();

    Ok(BuildPlan {
        stages,
        target,
        order,
        groups,
        global_args: globals.declared,
        global_scope: globals.env,
        build_args: opts.build_args.clone(),
        proxy_args,
        unused_build_args,
        build_platform,
        target_platform: opts.platform.clone(),
        escape: df.directives.escape,
        warnings,
    })
}

/// Read the global ARGs and cut the instructions into stages at each FROM.
fn split_stages(
    instructions: Vec<Instruction>,
    globals: &mut GlobalScope,
    lexer: &Lexer,
    opts: &PlanOptions,
) -> Result<Vec<StageHeader>> {
    let mut headers: Vec<StageHeader> = Vec::new();
    let mut last_span = None;
    for instruction in instructions {
        last_span = Some(instruction.span);
        match (instruction.kind, headers.last_mut()) {
            (InstructionKind::From(from), _) => headers.push(StageHeader {
                name: from.name,
                image: from.image,
                platform: from.platform,
                original: instruction.original,
                span: instruction.span,
                instructions: Vec::new(),
            }),
            (kind, Some(stage)) => stage.instructions.push(Instruction {
                kind,
                original: instruction.original,
                span: instruction.span,
            }),
            (InstructionKind::Arg { args }, None) => {
                globals.declare(&args, lexer, &opts.build_args, instruction.span)?;
            }
            (kind, None) => {
                return Err(plan_error("no build stage in current context", instruction.span)
                    .with_hint(format!(
                        "only ARG may come before the first FROM; start a stage with `FROM <image>` before this {}",
                        kind.keyword()
                    )));
            }
        }
    }
    if headers.is_empty() {
        return Err(plan_error(
            "dockerfile contains no stages to build",
            last_span.unwrap_or(Span::point(1, 1)),
        )
        .with_hint("start a stage with `FROM <image>`"));
    }
    Ok(headers)
}

/// Stage names to indices; a name may be given to one stage only.
fn stage_names(headers: &[StageHeader]) -> Result<BTreeMap<&str, usize>> {
    let mut names = BTreeMap::new();
    for (index, header) in headers.iter().enumerate() {
        if let Some(name) = &header.name {
            if let Some(&first) = names.get(name.as_str()) {
                let first: &StageHeader = &headers[first];
                return Err(
                    plan_error(format!("duplicate stage name {name:?}"), header.span).with_hint(
                        format!(
                            "stage {name:?} is already defined on line {}; stage names must be unique",
                            first.span.start_line
                        ),
                    ),
                );
            }
            names.insert(name.as_str(), index);
        }
    }
    Ok(names)
}

/// Where a stage reference was written: FROM resolves differently from `--from`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Site {
    From,
    CopyOrMount,
}

/// What resolving a stage needs to know about the whole Dockerfile.
struct Resolver<'a> {
    headers: &'a [StageHeader],
    names: BTreeMap<&'a str, usize>,
    globals: &'a GlobalScope,
    lexer: &'a Lexer,
    opts: &'a PlanOptions,
}

impl Resolver<'_> {
    /// How to name a stage in messages: its name, else its index.
    fn describe(&self, index: usize) -> String {
        match &self.headers[index].name {
            Some(name) => name.clone(),
            None => index.to_string(),
        }
    }

    /// Resolve stage `index` (without its instructions, which the caller moves in), given the
    /// stages before it.
    fn stage(
        &self,
        index: usize,
        earlier: &[Stage],
        warnings: &mut Vec<(usize, Warning)>,
    ) -> Result<Stage> {
        let header = &self.headers[index];
        let span = header.span;
        let expanded = self
            .lexer
            .expand_word(&header.image, &self.globals.env)
            .map_err(|e| e.or_at(span))?;
        if expanded.is_empty() {
            return Err(plan_error(
                format!("base name ({}) should not be blank", header.image),
                span,
            )
            .with_hint(
                "give the variable a value: a default in an ARG before the first FROM, or --build-arg",
            ));
        }
        // `FROM x AS x` names the image x, not the stage being defined.
        let self_named = header.name.as_deref() == Some(expanded.to_lowercase().as_str());
        let base = if expanded == "scratch" {
            Base::Scratch
        } else if self_named {
            Base::Image {
                reference: expanded,
            }
        } else {
            let what = format!("FROM {expanded}");
            match self.reference(&expanded, index, Site::From, &what, span)? {
                Reference::Stage(i) => Base::Stage { index: i },
                Reference::Image(reference) => Base::Image { reference },
            }
        };

        let (platform, platform_explicit) = match &header.platform {
            Some(raw) => (self.platform(raw, span)?, true),
            None => match &base {
                Base::Stage { index } => (earlier[*index].platform.clone(), false),
                _ => (self.opts.platform.clone(), false),
            },
        };

        let mut deps = BTreeSet::new();
        let mut image_deps = BTreeSet::new();
        let mut args: Vec<StageArg> = Vec::new();
        if let Base::Stage { index } = base {
            deps.insert(index);
            args.extend(earlier[index].args.iter().cloned());
        }
        for instruction in &header.instructions {
            let mut from_refs: Vec<(&str, String)> = Vec::new();
            match &instruction.kind {
                InstructionKind::Arg { args: decls } => {
                    for decl in decls {
                        args.retain(|a| a.name != decl.name);
                        args.push(StageArg {
                            name: decl.name.clone(),
                            value: resolve_arg(decl, &self.globals.env, &self.opts.build_args),
                            stage: index,
                            line: instruction.span.start_line,
                        });
                    }
                }
                InstructionKind::Copy(copy) => {
                    if let Some(from) = copy.from.as_deref().filter(|f| !f.is_empty()) {
                        from_refs.push((from, format!("COPY --from={from}")));
                    }
                }
                InstructionKind::Run(run) => {
                    for mount in &run.mounts {
                        if let Some(from) = mount.from.as_deref().filter(|f| !f.is_empty()) {
                            from_refs.push((from, format!("RUN --mount=from={from}")));
                        }
                    }
                }
                _ => {}
            }
            for (from, what) in from_refs {
                let site = Site::CopyOrMount;
                match self.reference(from, index, site, &what, instruction.span)? {
                    Reference::Stage(i) => {
                        deps.insert(i);
                    }
                    Reference::Image(image) => {
                        if let Some(warning) = self.misspelt_stage(&image, &what, instruction.span)
                        {
                            warnings.push((index, warning));
                        }
                        image_deps.insert(image);
                    }
                }
            }
        }

        Ok(Stage {
            index,
            name: header.name.clone(),
            base,
            base_name: header.image.clone(),
            platform,
            platform_explicit,
            deps: deps.into_iter().collect(),
            image_deps: image_deps.into_iter().collect(),
            args,
            instructions: Vec::new(),
            original: header.original.clone(),
            span,
        })
    }

    /// Resolve a stage reference (`builder`, `0`) seen in stage `current`: earlier stages only;
    /// a name that is no stage is an image.
    fn reference(
        &self,
        value: &str,
        current: usize,
        site: Site,
        what: &str,
        span: Span,
    ) -> Result<Reference> {
        let count = self.headers.len();
        let target = if let Ok(number) = value.parse::<i64>() {
            match usize::try_from(number).ok().filter(|n| *n < count) {
                Some(n) => n,
                None => {
                    let hint = if count == 1 {
                        "this Dockerfile has one stage, number 0".to_string()
                    } else {
                        format!(
                            "this Dockerfile has {count} stages, numbered 0 to {}",
                            count - 1
                        )
                    };
                    return Err(
                        plan_error(format!("invalid stage index {number}"), span).with_hint(hint)
                    );
                }
            }
        } else {
            match self.names.get(value.to_lowercase().as_str()) {
                Some(&n) => n,
                None => return Ok(Reference::Image(value.to_string())),
            }
        };
        if target == current {
            return Err(plan_error(
                format!(
                    "circular dependency detected on stage: {}",
                    self.describe(current)
                ),
                span,
            )
            .with_hint(format!("{what} refers to the stage it is in")));
        }
        if target > current {
            let name = self.describe(target);
            let line = self.headers[target].span.start_line;
            let mut hint = format!(
                "a stage can only use the stages before it; move stage {name:?} above this one"
            );
            if site == Site::From && self.headers[target].name.is_some() {
                hint.push_str(&format!(
                    ", or write the image's full reference (docker.io/library/{value}) to use the image"
                ));
            }
            return Err(plan_error(
                format!(
                    "{what} refers to stage {name:?} (line {line}), which comes later in the Dockerfile"
                ),
                span,
            )
            .with_hint(hint));
        }
        Ok(Reference::Stage(target))
    }

    /// A warning when a `--from` image is one typo away from a stage name.
    fn misspelt_stage(&self, image: &str, what: &str, span: Span) -> Option<Warning> {
        // Only bare names: `nginx:1.27` or `ghcr.io/x/y` are plainly meant as images.
        if image.contains([':', '/', '@']) {
            return None;
        }
        let candidates: Vec<&str> = self.names.keys().copied().collect();
        let best = closest(image, &candidates)?;
        Some(Warning {
            message: format!(
                "{what}: {image:?} is not a stage of this Dockerfile and will be pulled as an image; did you mean stage {best:?}?"
            ),
            span,
        })
    }

    /// Expand and read a FROM `--platform` value over the global args.
    fn platform(&self, raw: &str, span: Span) -> Result<Platform> {
        let value = self
            .lexer
            .expand_word(raw, &self.globals.env)
            .map_err(|e| e.or_at(span))?;
        if value.is_empty() {
            return Err(
                plan_error(format!("empty platform value from expression {raw}"), span)
                    .with_hint("give the variable a value, or write the platform (linux/amd64)"),
            );
        }
        Platform::parse(&value).map_err(|e| {
            plan_error(format!("failed to parse platform {raw}: {e}"), span)
                .with_hint("write the platform as os/arch[/variant], such as linux/arm64")
        })
    }
}

fn unknown_target(wanted: &str, headers: &[StageHeader]) -> Error {
    let names: Vec<&str> = headers.iter().filter_map(|h| h.name.as_deref()).collect();
    let hint = if names.is_empty() {
        "this Dockerfile names no stages; name one with `FROM <image> AS <name>`".to_string()
    } else {
        let listed = names.join(", ");
        match closest(wanted, &names) {
            Some(best) => format!("did you mean {best:?}? the stages are: {listed}"),
            None => format!("the stages are: {listed}"),
        }
    };
    // The target comes from the command line, not the file: no span to point at.
    Error::new(
        ErrorKind::Plan,
        format!("target stage {wanted:?} could not be found"),
    )
    .with_hint(hint)
}

/// Group stages by depth: a stage's group is one past the deepest group of its deps.
fn parallel_groups(stages: &[Stage]) -> Vec<Vec<usize>> {
    let mut level: BTreeMap<usize, usize> = BTreeMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    // Deps always have lower indices, so ascending order sees them first.
    for stage in stages {
        let depth = stage
            .deps
            .iter()
            .filter_map(|d| level.get(d))
            .map(|l| l + 1)
            .max()
            .unwrap_or(0);
        level.insert(stage.index, depth);
        if groups.len() <= depth {
            groups.resize_with(depth + 1, Vec::new);
        }
        groups[depth].push(stage.index);
    }
    groups
}

fn unused_build_args(opts: &PlanOptions, globals: &GlobalScope, stages: &[Stage]) -> Vec<String> {
    let mut declared: BTreeSet<&str> = globals.declared.iter().map(|g| g.name.as_str()).collect();
    for stage in stages {
        declared.extend(stage.args.iter().map(|a| a.name.as_str()));
    }
    opts.build_args
        .keys()
        .filter(|k| !declared.contains(k.as_str()) && !args::is_predefined(k))
        .cloned()
        .collect()
}
