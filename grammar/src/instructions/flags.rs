//! `--name[=value]` flags of one instruction, read the way BuildKit's `BFlags` reads them.
//!
//! Each instruction declares the flags it takes ([`FlagSpec`]); anything else is refused, so a
//! typo such as `COPY --chmown` fails here instead of being silently ignored at build time.

use crate::error::{Error, ErrorKind, Result};
use crate::suggest::closest;
use std::collections::BTreeMap;

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlagKind {
    /// `--link`, `--link=true`, `--link=false` (case-insensitive value).
    Bool,
    /// `--from=x`; given at most once.
    String,
    /// `--mount=x`, repeatable; every value is kept in order.
    Strings,
}

/// One flag an instruction accepts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FlagSpec {
    pub name: &'static str,
    pub kind: FlagKind,
}

impl FlagSpec {
    pub const fn bool(name: &'static str) -> Self {
        FlagSpec {
            name,
            kind: FlagKind::Bool,
        }
    }
    pub const fn string(name: &'static str) -> Self {
        FlagSpec {
            name,
            kind: FlagKind::String,
        }
    }
    pub const fn strings(name: &'static str) -> Self {
        FlagSpec {
            name,
            kind: FlagKind::Strings,
        }
    }
}

/// The flags an instruction was given, by name.
#[derive(Debug, Default)]
pub(crate) struct Flags {
    values: BTreeMap<&'static str, Vec<String>>,
}

impl Flags {
    /// A bool flag: `None` when absent, so callers can tell "not given" from `=false`.
    pub fn bool(&self, name: &str) -> Option<bool> {
        self.values
            .get(name)
            .and_then(|v| v.last())
            .map(|v| v == "true")
    }

    /// A string flag's value when it was given.
    pub fn string(&self, name: &str) -> Option<String> {
        self.values.get(name).and_then(|v| v.last()).cloned()
    }

    /// Every value of a repeatable flag, in source order.
    pub fn strings(&self, name: &str) -> Vec<String> {
        self.values.get(name).cloned().unwrap_or_default()
    }
}

/// Read `raw` (each `--name[=value]`) against the flags `instruction` accepts.
pub(crate) fn parse_flags(instruction: &str, raw: &[String], specs: &[FlagSpec]) -> Result<Flags> {
    let mut flags = Flags::default();
    for arg in raw {
        let Some(body) = arg.strip_prefix("--") else {
            return Err(flag_error(format!("Arg should start with -- : {arg}")));
        };
        // BuildKit stops reading flags at a bare `--`.
        if body.is_empty() {
            break;
        }
        let (name, value) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (body, None),
        };
        let Some(spec) = specs.iter().find(|s| s.name == name) else {
            return Err(unknown_flag(instruction, name, specs));
        };
        let slot = flags.values.entry(spec.name).or_default();
        if !slot.is_empty() && spec.kind != FlagKind::Strings {
            return Err(flag_error(format!("duplicate flag specified: --{name}"))
                .with_hint(format!("give --{name} only once")));
        }
        let value = match (spec.kind, value) {
            (FlagKind::Bool, None) => "true".to_string(),
            (FlagKind::Bool, Some("")) | (FlagKind::String | FlagKind::Strings, None) => {
                return Err(flag_error(format!("missing a value on flag: --{name}"))
                    .with_hint(format!("write --{name}=VALUE")));
            }
            (FlagKind::Bool, Some(v)) => match v.to_ascii_lowercase().as_str() {
                b @ ("true" | "false") => b.to_string(),
                _ => {
                    return Err(flag_error(format!(
                        "expecting boolean value for flag --{name}, not: {v}"
                    ))
                    .with_hint(format!("write --{name}, --{name}=true or --{name}=false")));
                }
            },
            (FlagKind::String | FlagKind::Strings, Some(v)) => v.to_string(),
        };
        slot.push(value);
    }
    Ok(flags)
}

fn flag_error(message: String) -> Error {
    Error::new(ErrorKind::Instruction, message)
}

fn unknown_flag(instruction: &str, name: &str, specs: &[FlagSpec]) -> Error {
    let err = flag_error(format!("unknown flag: --{name}"));
    if specs.is_empty() {
        return err.with_hint(format!("{instruction} takes no flags"));
    }
    let names: Vec<&str> = specs.iter().map(|s| s.name).collect();
    let listed = names
        .iter()
        .map(|n| format!("--{n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let hint = match closest(name, &names) {
        Some(best) => format!("did you mean --{best}? {instruction} takes {listed}"),
        None => format!("{instruction} takes {listed}"),
    };
    err.with_hint(hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[FlagSpec] = &[
        FlagSpec::bool("link"),
        FlagSpec::string("from"),
        FlagSpec::strings("exclude"),
    ];

    fn raw(flags: &[&str]) -> Vec<String> {
        flags.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn reads_each_kind() {
        let f = parse_flags(
            "COPY",
            &raw(&["--link", "--from=build", "--exclude=a", "--exclude=b"]),
            SPECS,
        )
        .unwrap();
        assert_eq!(f.bool("link"), Some(true));
        assert_eq!(f.string("from").as_deref(), Some("build"));
        assert_eq!(f.strings("exclude"), vec!["a", "b"]);
        let f = parse_flags("COPY", &raw(&["--link=FALSE"]), SPECS).unwrap();
        assert_eq!(f.bool("link"), Some(false));
        assert_eq!(f.string("from"), None);
        assert!(f.strings("exclude").is_empty());
    }

    #[test]
    fn empty_string_value_is_kept() {
        let f = parse_flags("COPY", &raw(&["--from="]), SPECS).unwrap();
        assert_eq!(f.string("from").as_deref(), Some(""));
    }

    #[test]
    fn refuses_bad_flags() {
        let cases: &[(&[&str], &str)] = &[
            (&["--lnk"], "unknown flag: --lnk"),
            (
                &["--from=a", "--from=b"],
                "duplicate flag specified: --from",
            ),
            (&["--link", "--link"], "duplicate flag specified: --link"),
            (&["--link="], "missing a value on flag: --link"),
            (&["--from"], "missing a value on flag: --from"),
            (&["--exclude"], "missing a value on flag: --exclude"),
            (
                &["--link=yes"],
                "expecting boolean value for flag --link, not: yes",
            ),
            (&["-x"], "Arg should start with -- : -x"),
        ];
        for (input, message) in cases {
            let err = parse_flags("COPY", &raw(input), SPECS).unwrap_err();
            assert_eq!(err.message, *message, "{input:?}");
            assert_eq!(err.kind, ErrorKind::Instruction);
        }
    }

    #[test]
    fn unknown_flag_hint_suggests_and_lists() {
        let err = parse_flags("COPY", &raw(&["--lnk"]), SPECS).unwrap_err();
        assert_eq!(
            err.hint.as_deref(),
            Some("did you mean --link? COPY takes --link, --from, --exclude")
        );
        let err = parse_flags("USER", &raw(&["--x=1"]), &[]).unwrap_err();
        assert_eq!(err.hint.as_deref(), Some("USER takes no flags"));
    }

    #[test]
    fn double_dash_ends_flags() {
        let f = parse_flags("COPY", &raw(&["--link", "--", "--bogus"]), SPECS).unwrap();
        assert_eq!(f.bool("link"), Some(true));
    }
}
