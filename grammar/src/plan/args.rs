//! Build arguments: the predefined ones, the global scope before the first FROM, and how a
//! stage's `ARG` finds its value.

use super::platform::Platform;
use crate::ast::Span;
use crate::error::Result;
use crate::expand::Lexer;
use crate::instructions::ArgDecl;
use serde::Serialize;
use std::collections::BTreeMap;

/// Proxy settings: any stage's RUN sees them when given as `--build-arg`, without an ARG, and
/// they are kept out of the image history.
pub const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// The args every Dockerfile can use in FROM, and in a stage after `ARG NAME`.
pub const PLATFORM_ARGS: [&str; 9] = [
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
    "TARGETSTAGE",
];

/// Where a stage's ARG gets its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "source", content = "value", rename_all = "kebab-case")]
pub enum ArgValue {
    /// Given with `--build-arg`: final.
    BuildArg(String),
    /// `ARG NAME` without a default, taking the global (or predefined) value: final.
    Global(String),
    /// The default as written: the builder expands it at the ARG, in the stage's environment
    /// (which may hold ENV values and the base image's variables the plan cannot know).
    Default(String),
    /// Declared without any value.
    Unset,
}

/// One arg in a stage's scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageArg {
    pub name: String,
    pub value: ArgValue,
    /// The stage whose ARG declared it (a base stage's args carry over to stages built on it).
    pub stage: usize,
    /// The line of that ARG.
    pub line: usize,
}

/// One ARG before the first FROM, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GlobalArg {
    pub name: String,
    /// `None` when declared without a default and not given as `--build-arg`.
    pub value: Option<String>,
}

/// The global scope: predefined platform args, then the ARGs before the first FROM.
#[derive(Debug, Clone)]
pub(crate) struct GlobalScope {
    /// What FROM words expand against, and what `ARG NAME` in a stage imports.
    pub env: BTreeMap<String, String>,
    pub declared: Vec<GlobalArg>,
}

impl GlobalScope {
    /// The predefined args, each overridable by `--build-arg` as in BuildKit.
    pub fn predefined(
        build: &Platform,
        target: &Platform,
        target_stage: &str,
        build_args: &BTreeMap<String, String>,
    ) -> GlobalScope {
        let values = [
            build.to_string(),
            build.os.clone(),
            build.architecture.clone(),
            build.variant.clone().unwrap_or_default(),
            target.to_string(),
            target.os.clone(),
            target.architecture.clone(),
            target.variant.clone().unwrap_or_default(),
            target_stage.to_string(),
        ];
        let env = PLATFORM_ARGS
            .iter()
            .zip(values)
            .map(|(name, value)| {
                let value = build_args.get(*name).cloned().unwrap_or(value);
                (name.to_string(), value)
            })
            .collect();
        GlobalScope {
            env,
            declared: Vec::new(),
        }
    }

    /// Add the ARGs of one instruction before the first FROM: a `--build-arg` wins, else the
    /// default expanded over the args before it; a bare `ARG NAME` keeps a predefined value.
    pub fn declare(
        &mut self,
        decls: &[ArgDecl],
        lexer: &Lexer,
        build_args: &BTreeMap<String, String>,
        span: Span,
    ) -> Result<()> {
        for decl in decls {
            let value = match (build_args.get(&decl.name), &decl.default) {
                (Some(given), _) => Some(given.clone()),
                (None, Some(default)) => Some(
                    lexer
                        .expand_word(default, &self.env)
                        .map_err(|e| e.or_at(span))?,
                ),
                (None, None) => self.env.get(&decl.name).cloned(),
            };
            // Like BuildKit, a global declared without a value is still set (to ""), so a stage
            // importing it sees an empty variable.
            self.env
                .insert(decl.name.clone(), value.clone().unwrap_or_default());
            self.declared.retain(|g| g.name != decl.name);
            self.declared.push(GlobalArg {
                name: decl.name.clone(),
                value,
            });
        }
        Ok(())
    }
}

/// The value a stage's `ARG` declaration takes: `--build-arg`, else its default, else the
/// global (or predefined) value, else unset.
pub(crate) fn resolve_arg(
    decl: &ArgDecl,
    global_scope: &BTreeMap<String, String>,
    build_args: &BTreeMap<String, String>,
) -> ArgValue {
    if let Some(given) = build_args.get(&decl.name) {
        return ArgValue::BuildArg(given.clone());
    }
    if let Some(default) = &decl.default {
        return ArgValue::Default(default.clone());
    }
    match global_scope.get(&decl.name) {
        Some(value) => ArgValue::Global(value.clone()),
        None => ArgValue::Unset,
    }
}

/// True for the names kiln knows without any ARG (platform and proxy args).
pub(crate) fn is_predefined(name: &str) -> bool {
    PLATFORM_ARGS.contains(&name) || PROXY_ARGS.contains(&name)
}
