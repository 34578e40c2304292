//! `RUN --mount=type=cache,target=/root/.cache,…`: the mount spec, read as BuildKit reads it.
//!
//! A spec is one CSV record of `key=value` fields. Values may name build args (`target=$HOME/x`),
//! which only the builder can expand, so [`Mount::parse`] checks what it can without expanding
//! and keeps the raw spec; the builder calls [`Mount::parse_expanded`] on it at build time. `type`
//! and `from` are never expanded: they decide the build graph before any stage runs.

use crate::error::{Error, ErrorKind, Result};
use crate::suggest::closest;
use serde::Serialize;

/// Expands one word at build time (the builder's lexer over the step's args and env).
pub type Expander<'a> = dyn FnMut(&str) -> Result<String> + 'a;

/// What is mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    /// A directory of the build context or of another stage/image (`from=`), read-only by default.
    Bind,
    /// A persistent cache directory shared between builds.
    Cache,
    /// An empty tmpfs.
    Tmpfs,
    /// A secret file (or env variable) given to the build.
    Secret,
    /// The SSH agent socket given to the build.
    Ssh,
}

impl MountType {
    const ALL: [(&'static str, MountType); 5] = [
        ("bind", MountType::Bind),
        ("cache", MountType::Cache),
        ("tmpfs", MountType::Tmpfs),
        ("secret", MountType::Secret),
        ("ssh", MountType::Ssh),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

/// A field of the spec other than `type`, `from`, `source`, `target` and `id`, under its
/// canonical key (`ro` → `readonly`, `rw` → `readwrite`); `value` is `None` for a bare flag
/// such as `readonly` or `required`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountOption {
    pub key: String,
    pub value: Option<String>,
}

/// One `--mount` of a RUN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    /// The flag's value as written, for [`Mount::parse_expanded`] at build time.
    pub spec: String,
    #[serde(rename = "type")]
    pub kind: MountType,
    /// A stage name or index, or an image, to mount from (bind and cache mounts).
    pub from: Option<String>,
    pub source: Option<String>,
    pub target: Option<String>,
    /// The cache or secret id.
    pub id: Option<String>,
    /// Every other field, in source order.
    pub options: Vec<MountOption>,
}

/// The keys a mount spec accepts, for "did you mean" hints.
const ALL_KEYS: &[&str] = &[
    "type",
    "from",
    "source",
    "target",
    "readonly",
    "id",
    "sharing",
    "required",
    "size",
    "mode",
    "uid",
    "gid",
    "src",
    "dst",
    "destination",
    "ro",
    "rw",
    "readwrite",
    "env",
];

impl Mount {
    /// Parse a spec without expanding it: values that name variables are kept raw and checked
    /// once expanded.
    pub fn parse(spec: &str) -> Result<Mount> {
        parse_mount(spec, None)
    }

    /// Parse a spec, expanding every value but `type` and `from` with `expand`, and check it fully.
    pub fn parse_expanded(spec: &str, expand: &mut Expander<'_>) -> Result<Mount> {
        parse_mount(spec, Some(expand))
    }

    /// The last value given for an option key (canonical name), if the key was given.
    pub fn option(&self, key: &str) -> Option<&MountOption> {
        self.options.iter().rev().find(|o| o.key == key)
    }

    /// Whether the mount is read-only: as the last `readonly`/`readwrite` field says, else
    /// read-write for cache and tmpfs mounts and read-only for the others.
    pub fn readonly(&self) -> bool {
        let explicit = self.options.iter().rev().find_map(|o| {
            let value = o.value.as_deref().map_or(Some(true), parse_go_bool);
            match o.key.as_str() {
                "readonly" => value,
                "readwrite" => value.map(|rw| !rw),
                _ => None,
            }
        });
        explicit.unwrap_or(!matches!(self.kind, MountType::Cache | MountType::Tmpfs))
    }

    /// Whether a secret or ssh mount must be present (`required`, `required=true`).
    pub fn required(&self) -> bool {
        self.option("required")
            .is_some_and(|o| o.value.as_deref().map_or(Some(true), parse_go_bool) == Some(true))
    }
}

fn mount_error(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Instruction, message)
}

/// True when a value names a variable the builder would expand (`$` followed by anything).
fn names_variable(value: &str) -> bool {
    value.find('$').is_some_and(|i| i + 1 < value.len())
}

fn parse_mount(spec: &str, mut expand: Option<&mut Expander<'_>>) -> Result<Mount> {
    let fields =
        split_csv(spec).map_err(|e| mount_error(format!("failed to parse csv mounts: {e}")))?;
    let mut mount = Mount {
        spec: spec.to_string(),
        kind: MountType::Bind,
        from: None,
        source: None,
        target: None,
        id: None,
        options: Vec::new(),
    };
    for field in &fields {
        let Some((key, raw_value)) = field.split_once('=') else {
            let key = field.to_lowercase();
            let canonical = match key.as_str() {
                "readonly" | "ro" => "readonly",
                "readwrite" | "rw" => "readwrite",
                "required" => "required",
                _ => {
                    return Err(mount_error(format!(
                        "invalid field '{field}' must be a key=value pair"
                    )));
                }
            };
            mount.options.push(MountOption {
                key: canonical.to_string(),
                value: None,
            });
            continue;
        };
        let key = key.to_lowercase();
        let literal_only = key == "type" || key == "from";
        if literal_only && names_variable(raw_value) {
            return Err(mount_error(format!(
                "'{key}' doesn't support variable expansion, define alias stage instead"
            ))
            .with_hint("declare `FROM ${VAR} AS name` and use from=name"));
        }
        let value = match expand.as_mut() {
            Some(expand) if !literal_only => expand(raw_value)?,
            _ => raw_value.to_string(),
        };
        // Values left raw (naming variables) skip their checks until they are expanded.
        let check_value = expand.is_some() || !names_variable(&value);
        match key.as_str() {
            "type" => {
                let lower = value.to_lowercase();
                mount.kind = MountType::ALL
                    .iter()
                    .find(|(name, _)| *name == lower)
                    .map(|(_, kind)| *kind)
                    .ok_or_else(|| {
                        let err = mount_error(format!("unsupported mount type {value:?}"));
                        let names: Vec<&str> = MountType::ALL.iter().map(|(n, _)| *n).collect();
                        match closest(&value, &names) {
                            Some(best) => err.with_hint(format!("did you mean {best:?}?")),
                            None => {
                                err.with_hint("mount types are bind, cache, tmpfs, secret, ssh")
                            }
                        }
                    })?;
            }
            "from" => mount.from = Some(value),
            "source" | "src" => mount.source = Some(value),
            "target" | "dst" | "destination" => mount.target = Some(value),
            "id" => mount.id = Some(value),
            "readonly" | "ro" | "readwrite" | "rw" | "required" => {
                if check_value && parse_go_bool(&value).is_none() {
                    return Err(mount_error(format!("invalid value for {key}: {value}")));
                }
                let canonical = match key.as_str() {
                    "ro" => "readonly",
                    "rw" => "readwrite",
                    other => other,
                };
                push_option(&mut mount, canonical, value);
            }
            "size" => {
                if check_value && parse_ram_bytes(&value).is_none() {
                    return Err(mount_error(format!("invalid value for {key}: {value}")));
                }
                push_option(&mut mount, "size", value);
            }
            "sharing" => {
                if check_value
                    && !matches!(
                        value.to_lowercase().as_str(),
                        "shared" | "private" | "locked"
                    )
                {
                    return Err(mount_error(format!("unsupported sharing value {value:?}"))
                        .with_hint("sharing is one of shared, private, locked"));
                }
                push_option(&mut mount, "sharing", value);
            }
            "mode" => {
                if check_value && u32::from_str_radix(&value, 8).is_err() {
                    return Err(mount_error(format!("invalid value {value} for mode"))
                        .with_hint("write the mode in octal, for example mode=0600"));
                }
                push_option(&mut mount, "mode", value);
            }
            "uid" | "gid" => {
                if check_value && value.parse::<u32>().is_err() {
                    return Err(mount_error(format!("invalid value {value} for {key}")));
                }
                push_option(&mut mount, &key, value);
            }
            "env" => push_option(&mut mount, "env", value),
            _ => {
                let err = mount_error(format!("unexpected key '{key}' in '{field}'"));
                return Err(match closest(&key, ALL_KEYS) {
                    Some(best) => err.with_hint(format!("did you mean '{best}'?")),
                    None => err.with_hint(format!("mount keys are {}", ALL_KEYS[..12].join(", "))),
                });
            }
        }
    }
    check_combination(&mount)?;
    Ok(mount)
}

fn push_option(mount: &mut Mount, key: &str, value: String) {
    mount.options.push(MountOption {
        key: key.to_string(),
        value: Some(value),
    });
}

/// The checks that look at the whole mount: which keys each type allows.
fn check_combination(mount: &Mount) -> Result<()> {
    let kind = mount.kind;
    let type_name = kind.as_str();
    let has = |key: &str| mount.option(key).is_some();
    let file_info_allowed = matches!(kind, MountType::Secret | MountType::Ssh | MountType::Cache);
    for key in ["mode", "uid", "gid"] {
        if has(key) && !file_info_allowed {
            return Err(mount_error(format!(
                "{key} not allowed for {type_name:?} type mounts"
            )));
        }
    }
    if has("required") && !matches!(kind, MountType::Secret | MountType::Ssh) {
        return Err(mount_error(format!(
            "unexpected key 'required' for mount type '{type_name}'"
        )));
    }
    if has("size") && kind != MountType::Tmpfs {
        return Err(mount_error(format!(
            "unexpected key 'size' for mount type '{type_name}'"
        )));
    }
    if kind == MountType::Secret {
        if mount.from.is_some() {
            return Err(mount_error("secret mount should not have a from"));
        }
        if has("sharing") {
            return Err(mount_error("secret mount should not define sharing"));
        }
        let empty = |v: &Option<String>| v.as_deref().is_none_or(str::is_empty);
        if empty(&mount.source) && empty(&mount.target) && empty(&mount.id) {
            return Err(
                mount_error("invalid secret mount. one of source, target required")
                    .with_hint("name the secret with id=NAME or give target=/path"),
            );
        }
        if !empty(&mount.source) && !empty(&mount.id) {
            return Err(mount_error("both source and id can't be set"));
        }
    }
    if has("sharing") && kind != MountType::Cache {
        return Err(mount_error(format!(
            "invalid cache sharing set for {type_name} mount"
        )));
    }
    Ok(())
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// docker's `units.RAMInBytes`: `64m`, `1.5g`, `512kb`, `100` (binary multiples).
fn parse_ram_bytes(value: &str) -> Option<u64> {
    let number_len = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(number_len);
    let number: f64 = number.parse().ok()?;
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let power = match unit {
        "" => 0,
        "k" => 1,
        "m" => 2,
        "g" => 3,
        "t" => 4,
        "p" => 5,
        _ => return None,
    };
    let bytes = number * 1024f64.powi(power);
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// One CSV record as Go's `encoding/csv` reads it: `,`-separated, a field may be `"quoted"` with
/// `""` for a quote inside; a quote elsewhere in an unquoted field is an error.
fn split_csv(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("extraneous or missing \" in quoted-field".into()),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(_) => return Err("extraneous or missing \" in quoted-field".into()),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => {
                        fields.push(field);
                        break;
                    }
                    Some('"') => return Err("bare \" in non-quoted-field".into()),
                    Some(c) => field.push(c),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields() {
        assert_eq!(split_csv("a,b").unwrap(), vec!["a", "b"]);
        assert_eq!(split_csv("").unwrap(), vec![""]);
        assert_eq!(
            split_csv("\"target=/a,b\",ro").unwrap(),
            vec!["target=/a,b", "ro"]
        );
        assert_eq!(split_csv("\"a\"\"b\"").unwrap(), vec!["a\"b"]);
        assert!(split_csv("a\"b").is_err());
        assert!(split_csv("\"ab").is_err());
        assert!(split_csv("\"a\"b").is_err());
    }

    #[test]
    fn ram_bytes() {
        assert_eq!(parse_ram_bytes("100"), Some(100));
        assert_eq!(parse_ram_bytes("64m"), Some(64 << 20));
        assert_eq!(parse_ram_bytes("1.5k"), Some(1536));
        assert_eq!(parse_ram_bytes("2GiB"), Some(2 << 30));
        assert_eq!(parse_ram_bytes("2 kb"), Some(2048));
        assert_eq!(parse_ram_bytes("x"), None);
        assert_eq!(parse_ram_bytes("1q"), None);
    }

    #[test]
    fn expanded_parse_checks_expanded_values() {
        let mut expand = |v: &str| Ok(v.replace("$M", "0700").replace("$T", "/cache"));
        let m = Mount::parse_expanded("type=cache,target=$T,mode=$M", &mut expand).unwrap();
        assert_eq!(m.target.as_deref(), Some("/cache"));
        assert_eq!(m.option("mode").unwrap().value.as_deref(), Some("0700"));
        let mut bad = |_: &str| Ok("nine".to_string());
        let err = Mount::parse_expanded("type=cache,mode=$M", &mut bad).unwrap_err();
        assert_eq!(err.message, "invalid value nine for mode");
    }
}
