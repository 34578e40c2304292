//! Typed, validated instructions built from [`Node`]s, with BuildKit's rules and messages.
//!
//! Each instruction declares the flags it accepts (one flag reader serves them all), checks its
//! argument count and form, and keeps its words raw: variables are expanded by the builder, in
//! the environment of the step that runs them. The one exception is structural: values that
//! decide the build graph (`COPY --from`, `--mount=from=`) may not name variables at all.

mod duration;
mod flags;
mod mount;

pub use mount::{Expander, Mount, MountOption, MountType};

use crate::ast::{Heredoc, Node, Span};
use crate::error::{Error, ErrorKind, Result};
use flags::{FlagSpec, Flags, parse_flags};
use serde::{Serialize, Serializer};
use std::time::Duration;

/// One instruction of a Dockerfile, typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instruction {
    #[serde(flatten)]
    pub kind: InstructionKind,
    /// The instruction's logical line, as written (continuations joined).
    pub original: String,
    pub span: Span,
}

/// What an instruction does, with its validated arguments (unexpanded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "instruction", rename_all = "lowercase")]
pub enum InstructionKind {
    From(FromInstruction),
    Run(RunInstruction),
    Cmd {
        command: Command,
    },
    Entrypoint {
        command: Command,
    },
    Env {
        vars: Vec<KeyValue>,
    },
    Label {
        labels: Vec<KeyValue>,
    },
    Maintainer {
        name: String,
    },
    /// Ports as written (`80`, `53/udp`, `$PORT`), sorted as BuildKit sorts them.
    Expose {
        ports: Vec<String>,
    },
    Volume {
        paths: Vec<String>,
    },
    User {
        user: String,
    },
    Workdir {
        path: String,
    },
    Arg {
        args: Vec<ArgDecl>,
    },
    /// `expression` is the trigger text stored in the image (`RUN make`); `trigger` is it parsed.
    Onbuild {
        expression: String,
        trigger: Box<Instruction>,
    },
    #[serde(rename = "stopsignal")]
    StopSignal {
        signal: String,
    },
    Healthcheck {
        check: Healthcheck,
    },
    Shell {
        shell: Vec<String>,
    },
    Copy(CopyInstruction),
    Add(AddInstruction),
}

/// `FROM [--platform=p] image [AS name]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FromInstruction {
    /// The base image or stage, unexpanded (`alpine:3.20`, `${BASE}`, `builder`).
    pub image: String,
    /// The stage name, lower-cased as BuildKit does.
    pub name: Option<String>,
    /// The `--platform` value, unexpanded.
    pub platform: Option<String>,
}

/// The command of RUN, CMD, ENTRYPOINT and HEALTHCHECK CMD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Command {
    /// JSON form: run these argv directly.
    Exec(Vec<String>),
    /// Shell form: the text, run with the stage's SHELL.
    Shell(String),
}

/// `RUN [--mount=…]… [--network=…] [--security=…] command`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunInstruction {
    pub command: Command,
    pub mounts: Vec<Mount>,
    pub network: NetworkMode,
    pub security: SecurityMode,
    /// Heredoc bodies the command refers to (`RUN <<EOF`).
    pub heredocs: Vec<Heredoc>,
}

/// `RUN --network=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    #[default]
    Default,
    None,
    Host,
}

/// `RUN --security=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecurityMode {
    #[default]
    Sandbox,
    Insecure,
}

/// One `key=value` of ENV or LABEL, raw (quotes still in place; the builder expands them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
    /// True for the legacy `ENV key value` form, written without `=`.
    pub legacy: bool,
}

/// One name of an ARG instruction, with its default as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgDecl {
    pub name: String,
    pub default: Option<String>,
}

/// HEALTHCHECK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable any check inherited from the base image.
    None,
    /// `HEALTHCHECK [--interval=…] CMD command`. Unset durations inherit the base image's.
    Cmd(HealthCmd),
}

/// The check of `HEALTHCHECK CMD`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthCmd {
    /// `Exec` is stored in the image as `["CMD", …]`, `Shell` as `["CMD-SHELL", text]`.
    pub command: Command,
    #[serde(serialize_with = "nanos")]
    pub interval: Option<Duration>,
    #[serde(serialize_with = "nanos")]
    pub timeout: Option<Duration>,
    #[serde(serialize_with = "nanos")]
    pub start_period: Option<Duration>,
    #[serde(serialize_with = "nanos")]
    pub start_interval: Option<Duration>,
    pub retries: Option<u32>,
}

/// Durations as integer nanoseconds, the unit of the image config's healthcheck.
fn nanos<S: Serializer>(value: &Option<Duration>, s: S) -> std::result::Result<S::Ok, S::Error> {
    match value {
        Some(d) => s.serialize_some(&d.as_nanos()),
        None => s.serialize_none(),
    }
}

/// What COPY and ADD share: sources, destination, ownership and filters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transfer {
    /// Source paths (or URLs for ADD), unexpanded, without the heredoc sources.
    pub sources: Vec<String>,
    /// Heredoc sources (`COPY <<EOF /dst`), each written to a file named after its delimiter.
    pub heredocs: Vec<Heredoc>,
    pub dest: String,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    /// `--exclude` patterns, in order.
    pub excludes: Vec<String>,
}

/// `COPY [--from=…] [--parents] … src… dest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyInstruction {
    #[serde(flatten)]
    pub transfer: Transfer,
    /// A stage name or index, or an image, to copy from instead of the build context.
    pub from: Option<String>,
    pub parents: bool,
}

/// `ADD [--checksum=…] [--keep-git-dir] [--unpack] … src… dest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddInstruction {
    #[serde(flatten)]
    pub transfer: Transfer,
    pub checksum: Option<String>,
    pub keep_git_dir: bool,
    /// `None` when not given: archives from the context are unpacked, remote ones are not.
    pub unpack: Option<bool>,
}

impl Instruction {
    /// The instruction's keyword in upper case (`RUN`, `COPY`, …).
    pub fn keyword(&self) -> &'static str {
        self.kind.keyword()
    }
}

impl InstructionKind {
    /// The keyword in upper case (`RUN`, `COPY`, …).
    pub fn keyword(&self) -> &'static str {
        match self {
            InstructionKind::From(_) => "FROM",
            InstructionKind::Run(_) => "RUN",
            InstructionKind::Cmd { .. } => "CMD",
            InstructionKind::Entrypoint { .. } => "ENTRYPOINT",
            InstructionKind::Env { .. } => "ENV",
            InstructionKind::Label { .. } => "LABEL",
            InstructionKind::Maintainer { .. } => "MAINTAINER",
            InstructionKind::Expose { .. } => "EXPOSE",
            InstructionKind::Volume { .. } => "VOLUME",
            InstructionKind::User { .. } => "USER",
            InstructionKind::Workdir { .. } => "WORKDIR",
            InstructionKind::Arg { .. } => "ARG",
            InstructionKind::Onbuild { .. } => "ONBUILD",
            InstructionKind::StopSignal { .. } => "STOPSIGNAL",
            InstructionKind::Healthcheck { .. } => "HEALTHCHECK",
            InstructionKind::Shell { .. } => "SHELL",
            InstructionKind::Copy(_) => "COPY",
            InstructionKind::Add(_) => "ADD",
        }
    }
}

const RUN_FLAGS: &[FlagSpec] = &[
    FlagSpec::strings("mount"),
    FlagSpec::string("network"),
    FlagSpec::string("security"),
];
const COPY_FLAGS: &[FlagSpec] = &[
    FlagSpec::string("from"),
    FlagSpec::string("chown"),
    FlagSpec::string("chmod"),
    FlagSpec::bool("link"),
    FlagSpec::bool("parents"),
    FlagSpec::strings("exclude"),
];
const ADD_FLAGS: &[FlagSpec] = &[
    FlagSpec::string("chown"),
    FlagSpec::string("chmod"),
    FlagSpec::bool("link"),
    FlagSpec::strings("exclude"),
    FlagSpec::string("checksum"),
    FlagSpec::bool("keep-git-dir"),
    FlagSpec::bool("unpack"),
];
const HEALTHCHECK_FLAGS: &[FlagSpec] = &[
    FlagSpec::string("interval"),
    FlagSpec::string("timeout"),
    FlagSpec::string("start-period"),
    FlagSpec::string("start-interval"),
    FlagSpec::string("retries"),
];

/// Build the typed instruction of one node. Errors carry the node's span.
pub fn parse_instruction(node: &Node) -> Result<Instruction> {
    let kind = parse_kind(node).map_err(|e| e.or_at(node.span))?;
    Ok(Instruction {
        kind,
        original: node.original.clone(),
        span: node.span,
    })
}

fn error(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Instruction, message)
}

fn parse_kind(node: &Node) -> Result<InstructionKind> {
    let keyword = node.keyword.to_ascii_uppercase();
    let flags = |specs: &[FlagSpec]| parse_flags(&keyword, &node.flags, specs);
    let args = &node.args;
    Ok(match keyword.as_str() {
        "FROM" => {
            let flags = flags(&[FlagSpec::string("platform")])?;
            InstructionKind::From(parse_from(args, &flags)?)
        }
        "RUN" => InstructionKind::Run(parse_run(node, &flags(RUN_FLAGS)?)?),
        "CMD" => {
            flags(&[])?;
            InstructionKind::Cmd {
                command: command_of(node),
            }
        }
        "ENTRYPOINT" => {
            flags(&[])?;
            InstructionKind::Entrypoint {
                command: command_of(node),
            }
        }
        "ENV" => {
            flags(&[])?;
            InstructionKind::Env {
                vars: key_values(args, "ENV")?,
            }
        }
        "LABEL" => {
            flags(&[])?;
            InstructionKind::Label {
                labels: key_values(args, "LABEL")?,
            }
        }
        "MAINTAINER" => {
            flags(&[])?;
            InstructionKind::Maintainer {
                name: exactly_one(args, "MAINTAINER")?,
            }
        }
        "EXPOSE" => {
            flags(&[])?;
            at_least_one(args, "EXPOSE")?;
            let mut ports = args.clone();
            ports.sort();
            InstructionKind::Expose { ports }
        }
        "VOLUME" => {
            flags(&[])?;
            at_least_one(args, "VOLUME")?;
            let paths = args
                .iter()
                .map(|v| match v.trim() {
                    "" => Err(error("VOLUME specified can not be an empty string")),
                    v => Ok(v.to_string()),
                })
                .collect::<Result<_>>()?;
            InstructionKind::Volume { paths }
        }
        "USER" => {
            flags(&[])?;
            InstructionKind::User {
                user: exactly_one(args, "USER")?,
            }
        }
        "WORKDIR" => {
            flags(&[])?;
            InstructionKind::Workdir {
                path: exactly_one(args, "WORKDIR")?,
            }
        }
        "ARG" => {
            flags(&[])?;
            InstructionKind::Arg {
                args: parse_arg(args)?,
            }
        }
        "ONBUILD" => {
            flags(&[])?;
            parse_onbuild(node)?
        }
        "STOPSIGNAL" => {
            flags(&[])?;
            InstructionKind::StopSignal {
                signal: exactly_one(args, "STOPSIGNAL")?,
            }
        }
        "HEALTHCHECK" => InstructionKind::Healthcheck {
            check: parse_healthcheck(node, &keyword)?,
        },
        "SHELL" => {
            flags(&[])?;
            if !node.json {
                return Err(error("SHELL requires the arguments to be in JSON form")
                    .with_hint("write SHELL [\"/bin/sh\", \"-c\"]"));
            }
            at_least_one(args, "SHELL")?;
            InstructionKind::Shell {
                shell: args.clone(),
            }
        }
        "COPY" => {
            at_least_two(args, "COPY")?;
            let flags = flags(COPY_FLAGS)?;
            let from = flags.string("from");
            if let Some(from) = &from {
                refuse_variable_in_from(from, "COPY --from")?;
            }
            InstructionKind::Copy(CopyInstruction {
                transfer: transfer(node, &flags, "COPY")?,
                from,
                parents: flags.bool("parents").unwrap_or(false),
            })
        }
        "ADD" => {
            at_least_two(args, "ADD")?;
            let flags = flags(ADD_FLAGS)?;
            InstructionKind::Add(AddInstruction {
                transfer: transfer(node, &flags, "ADD")?,
                checksum: flags.string("checksum"),
                keep_git_dir: flags.bool("keep-git-dir").unwrap_or(false),
                unpack: flags.bool("unpack"),
            })
        }
        _ => {
            return Err(error(format!("unknown instruction: {keyword}")));
        }
    })
}

fn at_least_one(args: &[String], keyword: &str) -> Result<()> {
    if args.is_empty() {
        return Err(error(format!("{keyword} requires at least one argument")));
    }
    Ok(())
}

fn at_least_two(args: &[String], keyword: &str) -> Result<()> {
    if args.len() < 2 {
        return Err(error(format!(
            "{keyword} requires at least two arguments, but only one was provided. Destination could not be determined"
        ))
        .with_hint(format!("write {keyword} <source>... <destination>")));
    }
    Ok(())
}

fn exactly_one(args: &[String], keyword: &str) -> Result<String> {
    match args {
        [one] => Ok(one.clone()),
        _ => Err(error(format!("{keyword} requires exactly one argument"))),
    }
}

/// A stage name: a lower-case letter, then letters, digits, `-`, `_` or `.`.
pub(crate) fn is_valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

fn parse_from(args: &[String], flags: &Flags) -> Result<FromInstruction> {
    let name = match args {
        [_] => None,
        [_, as_word, name] if as_word.eq_ignore_ascii_case("as") => {
            let lower = name.to_lowercase();
            if !is_valid_stage_name(&lower) {
                return Err(error(format!(
                    "invalid name for build stage: {name:?}, name can't start with a number or contain symbols"
                ))
                .with_hint("stage names start with a letter and use letters, digits, '-', '_' and '.'"));
            }
            Some(lower)
        }
        _ => {
            return Err(error("FROM requires either one or three arguments")
                .with_hint("write FROM <image> or FROM <image> AS <name>"));
        }
    };
    Ok(FromInstruction {
        image: args[0].clone(),
        name,
        platform: flags.string("platform"),
    })
}

/// The command of RUN/CMD/ENTRYPOINT: the JSON array, or the shell text.
fn command_of(node: &Node) -> Command {
    if node.json {
        Command::Exec(node.args.clone())
    } else {
        Command::Shell(node.args.join(" "))
    }
}

fn parse_run(node: &Node, flags: &Flags) -> Result<RunInstruction> {
    let command = command_of(node);
    let empty = match &command {
        Command::Exec(argv) => argv.is_empty(),
        Command::Shell(text) => text.trim().is_empty(),
    };
    if empty {
        return Err(error("RUN requires at least one argument"));
    }
    let mounts = flags
        .strings("mount")
        .iter()
        .map(|spec| Mount::parse(spec))
        .collect::<Result<_>>()?;
    let network = match flags.string("network").as_deref() {
        None | Some("default") => NetworkMode::Default,
        Some("none") => NetworkMode::None,
        Some("host") => NetworkMode::Host,
        Some(other) => {
            return Err(error(format!("invalid network mode {other:?}"))
                .with_hint("--network is one of default, none, host"));
        }
    };
    let security = match flags.string("security").as_deref() {
        None | Some("sandbox") => SecurityMode::Sandbox,
        Some("insecure") => SecurityMode::Insecure,
        Some(other) => {
            return Err(error(format!("security {other:?} is not valid"))
                .with_hint("--security is one of sandbox, insecure"));
        }
    };
    Ok(RunInstruction {
        command,
        mounts,
        network,
        security,
        heredocs: node.heredocs.clone(),
    })
}

/// ENV/LABEL arguments come as `key, value, separator` triples from the parser.
fn key_values(args: &[String], keyword: &str) -> Result<Vec<KeyValue>> {
    at_least_one(args, keyword)?;
    if !args.len().is_multiple_of(3) {
        return Err(error(format!("Bad input to {keyword}, too many arguments")));
    }
    args.chunks_exact(3)
        .map(|kv| {
            if kv[0].is_empty() {
                return Err(error(format!("{keyword} names can not be blank")));
            }
            Ok(KeyValue {
                key: kv[0].clone(),
                value: kv[1].clone(),
                legacy: kv[2].is_empty(),
            })
        })
        .collect()
}

fn parse_arg(args: &[String]) -> Result<Vec<ArgDecl>> {
    at_least_one(args, "ARG")?;
    args.iter()
        .map(|word| {
            let (name, default) = match word.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (word.as_str(), None),
            };
            if name.is_empty() {
                return Err(error("ARG names can not be blank"));
            }
            Ok(ArgDecl {
                name: name.to_string(),
                default,
            })
        })
        .collect()
}

fn parse_onbuild(node: &Node) -> Result<InstructionKind> {
    let Some(nested) = node.onbuild.as_deref() else {
        return Err(error("ONBUILD requires at least one argument"));
    };
    let trigger_keyword = nested.keyword.to_ascii_uppercase();
    match trigger_keyword.as_str() {
        "ONBUILD" => {
            return Err(error(
                "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
            ));
        }
        "MAINTAINER" | "FROM" => {
            return Err(error(format!(
                "{trigger_keyword} isn't allowed as an ONBUILD trigger"
            )));
        }
        _ => {}
    }
    let trigger = parse_instruction(nested)?;
    let mut expression = strip_onbuild_keyword(&node.original).to_string();
    // The image stores the trigger as text; heredoc bodies must travel with it.
    let heredocs = if node.heredocs.is_empty() {
        &nested.heredocs
    } else {
        &node.heredocs
    };
    for heredoc in heredocs {
        expression.push('\n');
        expression.push_str(&heredoc.content);
        expression.push_str(&heredoc.name);
    }
    Ok(InstructionKind::Onbuild {
        expression,
        trigger: Box::new(trigger),
    })
}

/// `  onbuild   RUN x` → `RUN x` (the keyword matched case-insensitively, as BuildKit does).
fn strip_onbuild_keyword(original: &str) -> &str {
    let trimmed = original.trim_start();
    match trimmed.get(..7) {
        Some(word) if word.eq_ignore_ascii_case("onbuild") => trimmed[7..].trim_start(),
        _ => trimmed,
    }
}

fn parse_healthcheck(node: &Node, keyword: &str) -> Result<Healthcheck> {
    let Some((kind, rest)) = node.args.split_first() else {
        return Err(error("HEALTHCHECK requires at least one argument"));
    };
    let kind = kind.to_ascii_uppercase();
    if kind == "NONE" {
        parse_flags(keyword, &node.flags, &[])
            .map_err(|e| e.with_hint("HEALTHCHECK NONE takes no flags"))?;
        if !rest.is_empty() {
            return Err(error("HEALTHCHECK NONE takes no arguments"));
        }
        return Ok(Healthcheck::None);
    }
    let flags = parse_flags(keyword, &node.flags, HEALTHCHECK_FLAGS)?;
    if kind != "CMD" {
        return Err(error(format!(
            "Unknown type \"{kind}\" in HEALTHCHECK (try CMD)"
        )));
    }
    let command = if node.json {
        Command::Exec(rest.to_vec())
    } else {
        Command::Shell(rest.join(" "))
    };
    let missing = match &command {
        Command::Exec(argv) => argv.is_empty(),
        Command::Shell(text) => text.trim().is_empty(),
    };
    if missing {
        return Err(error("Missing command after HEALTHCHECK CMD"));
    }
    let interval = |name: &str| {
        let value = flags.string(name).unwrap_or_default();
        duration::parse_health_interval(name, &value).map_err(|message| {
            error(message).with_hint(format!(
                "write --{name} as a duration of at least 1ms, such as 30s, 1m30s or 500ms"
            ))
        })
    };
    let retries = match flags.string("retries").filter(|v| !v.is_empty()) {
        None => None,
        Some(value) => {
            let n: i64 = value
                .parse()
                .ok()
                .filter(|n| i32::try_from(*n).is_ok())
                .ok_or_else(|| {
                    error(format!("invalid value for --retries: {value:?}"))
                        .with_hint("--retries takes a whole number, such as 3")
                })?;
            let n = u32::try_from(n)
                .map_err(|_| error(format!("--retries cannot be negative ({n})")))?;
            Some(n)
        }
    };
    Ok(Healthcheck::Cmd(HealthCmd {
        command,
        interval: interval("interval")?,
        timeout: interval("timeout")?,
        start_period: interval("start-period")?,
        start_interval: interval("start-interval")?,
        retries,
    }))
}

/// `'from' doesn't support variable expansion`: the stage graph is fixed before anything runs.
fn refuse_variable_in_from(value: &str, what: &str) -> Result<()> {
    if value.find('$').is_some_and(|i| i + 1 < value.len()) {
        return Err(error(format!(
            "{what} doesn't support variable expansion, define alias stage instead"
        ))
        .with_hint("declare `FROM ${VAR} AS name` before this stage and use --from=name"));
    }
    Ok(())
}

/// The heredoc delimiter a source word refers to: `<<EOF`, `<<-EOF`, `<<"EOF"`, `3<<EOF`.
pub fn heredoc_reference(word: &str) -> Option<&str> {
    let rest = word.trim_start_matches(|c: char| c.is_ascii_digit());
    let rest = rest.strip_prefix("<<")?;
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    let name = ['"', '\'']
        .iter()
        .find_map(|q| rest.strip_prefix(*q).and_then(|r| r.strip_suffix(*q)))
        .unwrap_or(rest);
    (!name.is_empty() && !name.contains(['<', '"', '\''])).then_some(name)
}

fn transfer(node: &Node, flags: &Flags, keyword: &str) -> Result<Transfer> {
    let Some((dest, sources)) = node.args.split_last() else {
        return Err(error(format!("{keyword} requires at least two arguments")));
    };
    if heredoc_reference(dest).is_some() {
        return Err(error(format!(
            "{keyword} cannot accept a heredoc as a destination"
        )));
    }
    let mut paths = Vec::new();
    let mut heredocs = Vec::new();
    for source in sources {
        match heredoc_reference(source) {
            // JSON-form arguments are literal paths, never heredocs.
            Some(name) if !node.json => {
                let body = node
                    .heredocs
                    .iter()
                    .find(|h| h.name == name)
                    .ok_or_else(|| error(format!("no heredoc body for <<{name}")))?;
                heredocs.push(body.clone());
            }
            _ => paths.push(source.clone()),
        }
    }
    Ok(Transfer {
        sources: paths,
        heredocs,
        dest: dest.clone(),
        chown: flags.string("chown"),
        chmod: flags.string("chmod"),
        link: flags.bool("link").unwrap_or(false),
        excludes: flags.strings("exclude"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_names() {
        for ok in ["a", "build", "build-1", "b_2.x"] {
            assert!(is_valid_stage_name(ok), "{ok}");
        }
        for bad in ["", "1a", "-a", "a b", "a/b", "A", "a:b"] {
            assert!(!is_valid_stage_name(bad), "{bad}");
        }
    }

    #[test]
    fn heredoc_references() {
        assert_eq!(heredoc_reference("<<EOF"), Some("EOF"));
        assert_eq!(heredoc_reference("<<-EOF"), Some("EOF"));
        assert_eq!(heredoc_reference("<<\"EOF\""), Some("EOF"));
        assert_eq!(heredoc_reference("<<'EOF'"), Some("EOF"));
        assert_eq!(heredoc_reference("3<<EOF"), Some("EOF"));
        assert_eq!(heredoc_reference("file.txt"), None);
        assert_eq!(heredoc_reference("<<"), None);
        assert_eq!(heredoc_reference("a<<EOF"), None);
    }

    #[test]
    fn onbuild_keyword_is_stripped() {
        assert_eq!(strip_onbuild_keyword("ONBUILD RUN x"), "RUN x");
        assert_eq!(strip_onbuild_keyword("  onbuild\tCOPY a b"), "COPY a b");
        assert_eq!(strip_onbuild_keyword("ONB"), "ONB");
    }
}
