//! Why a step ran: the input of its cache key that changed since the last build of the same
//! tag (or, untagged, the same Dockerfile, context and target).
//!
//! Only steps that run are looked at, so a build answered from the cache pays for none of this
//! beyond keeping its keys' inputs in memory. A step that runs records what its key was made
//! of — the parent key, the instruction, a digest of each variable's value (never the value: a
//! build arg may be sensitive), and for COPY, ADD and RUN bind mounts a compact manifest of
//! the sources (path, kind, mode, owner, content digest) — in
//! `<store>/explain/<sha256 of the build's identity>`, one JSON file per identity, written once
//! at the end of a build that ran something. The next build that runs the same step (the
//! same place in the same stage) compares its inputs with those and names what differs:
//! a context file added, removed, or with other content or mode; a build arg or ENV value; the
//! base image; an earlier step that ran; or, when none of these changed, `--no-cache` or a
//! cache record that is gone.

use crate::cache_key::SourceFile;
use kiln_grammar::plan::{Base, Stage};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

/// What a cache key was made from, as fed to [`crate::cache_key::CacheKey`].
#[derive(Debug, Clone, Default)]
pub struct RawInputs {
    pub parent: String,
    pub instruction: String,
    pub variables: Vec<(String, String)>,
    pub sources: Option<Vec<SourceFile>>,
}

/// A step's cache key, with its inputs when the step can explain a miss.
#[derive(Debug, Clone)]
pub struct StepKey {
    pub key: String,
    pub inputs: Option<Box<RawInputs>>,
}

impl From<String> for StepKey {
    fn from(key: String) -> StepKey {
        StepKey { key, inputs: None }
    }
}

/// The recorded form of a step's inputs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Inputs {
    parent: String,
    instruction: String,
    /// Variable name (`arg:NAME`, `env:NAME`) → sha256 of its value.
    #[serde(default)]
    variables: BTreeMap<String, String>,
    /// Source path → `KIND MODE UID:GID DIGEST-OR-LINK`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sources: Option<BTreeMap<String, String>>,
}

impl Inputs {
    fn of(raw: &RawInputs) -> Inputs {
        Inputs {
            parent: raw.parent.clone(),
            instruction: raw.instruction.clone(),
            variables: raw
                .variables
                .iter()
                .map(|(k, v)| (k.clone(), hex::encode(Sha256::digest(v.as_bytes()))))
                .collect(),
            sources: raw.sources.as_ref().map(|files| {
                files
                    .iter()
                    .map(|f| {
                        let content = if f.kind == 'l' {
                            &f.link_target
                        } else {
                            &f.digest
                        };
                        (
                            f.path.clone(),
                            format!("{} {:o} {}:{} {content}", f.kind, f.mode, f.uid, f.gid),
                        )
                    })
                    .collect()
            }),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Step {
    title: String,
    inputs: Inputs,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Record {
    /// `STAGE/N` (the stage's name or index, the step's place in it) → the step.
    steps: BTreeMap<String, Step>,
}

/// The explanations of one build.
pub struct Explainer {
    path: PathBuf,
    /// How the build is named in explanations (`app:1`, or the Dockerfile and target).
    identity: String,
    previous: OnceLock<Option<Record>>,
    ran: Mutex<Record>,
    /// The next step's place, per stage.
    places: Mutex<BTreeMap<usize, usize>>,
    /// The title of the last step that ran, per stage.
    last_ran: Mutex<BTreeMap<usize, String>>,
}

impl Explainer {
    /// The explainer of a build named `identity` (what makes two builds "the same build"),
    /// keeping its records below `store_root`.
    pub fn new(store_root: &std::path::Path, identity: String) -> Explainer {
        let name = hex::encode(Sha256::digest(identity.as_bytes()));
        Explainer {
            path: store_root.join("explain").join(name),
            identity,
            previous: OnceLock::new(),
            ran: Mutex::new(Record::default()),
            places: Mutex::new(BTreeMap::new()),
            last_ran: Mutex::new(BTreeMap::new()),
        }
    }

    /// The place of the next step of `stage` (every step takes one, cached or not).
    pub fn place(&self, stage: &Stage) -> String {
        let mut places = self.places.lock().unwrap_or_else(|p| p.into_inner());
        let n = places.entry(stage.index).or_insert(0);
        *n += 1;
        format!("{}/{n}", stage_name(stage))
    }

    fn previous(&self) -> Option<&Record> {
        self.previous
            .get_or_init(|| {
                let bytes = std::fs::read(&self.path).ok()?;
                serde_json::from_slice(&bytes).ok()
            })
            .as_ref()
    }

    /// Why the step at `place` runs: one reason per changed input, most specific first.
    /// `no_cache` names the flag that kept the step from the cache, if one did.
    pub fn explain(
        &self,
        stage: &Stage,
        place: &str,
        key: &StepKey,
        no_cache: Option<&str>,
    ) -> Vec<String> {
        let Some(raw) = &key.inputs else {
            return vec!["its inputs are not recorded".to_string()];
        };
        let Some(previous) = self.previous() else {
            return vec![format!("no earlier build of {}", self.identity)];
        };
        let Some(old) = previous.steps.get(place) else {
            return vec![format!(
                "a new step: the last build of {} had no step {place}",
                self.identity
            )];
        };
        let new = Inputs::of(raw);
        let mut reasons = variable_changes(&old.inputs.variables, &new.variables);
        if let (Some(before), Some(after)) = (&old.inputs.sources, &new.sources) {
            let fields = serde_json::from_str::<serde_json::Value>(&new.instruction).ok();
            let field = |name: &str| {
                fields
                    .as_ref()
                    .and_then(|f| f.get(name))
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            };
            let context = field("from").as_deref() == Some("context");
            // A single source copied to a file path: named by what was written and where.
            let single = fields
                .as_ref()
                .and_then(|f| f.get("sources"))
                .and_then(|s| s.as_array())
                .filter(|s| s.len() == 1)
                .and_then(|s| s[0].as_str());
            let dest = field("dest").map(|dest| match single {
                Some(source) => format!("{source} (copied to {dest})"),
                None => format!("copied to {dest}"),
            });
            reasons.extend(source_changes(before, after, context, dest));
        }
        if old.inputs.instruction != new.instruction {
            reasons.push(instruction_change(
                &old.inputs.instruction,
                &new.instruction,
            ));
        }
        if reasons.is_empty() && old.inputs.parent != new.parent {
            let last = self
                .last_ran
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&stage.index)
                .cloned();
            reasons.push(match (last, &stage.base) {
                (Some(title), _) => format!("{EARLIER_STEP}{title}"),
                (None, Base::Image { reference }) => format!(
                    "the base image {reference} changed: {} → {}",
                    short(&old.inputs.parent),
                    short(&new.parent)
                ),
                (None, Base::Stage { index }) => {
                    format!("the stage it is built on (stage {index}) changed")
                }
                (None, Base::Scratch) => "an earlier step changed".to_string(),
            });
        }
        if reasons.is_empty() {
            reasons.push(if let Some(flag) = no_cache {
                flag.to_string()
            } else {
                "its inputs are unchanged but its cache record is gone (kiln prune, or the \
                 record was damaged)"
                    .to_string()
            });
        }
        reasons
    }

    /// Records that the step at `place` ran with `key`'s inputs.
    pub fn ran(&self, stage: &Stage, place: String, title: &str, key: &StepKey) {
        self.last_ran
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(stage.index, title.to_string());
        if let Some(raw) = &key.inputs {
            self.ran
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .steps
                .insert(
                    place,
                    Step {
                        title: title.to_string(),
                        inputs: Inputs::of(raw),
                    },
                );
        }
    }

    /// Records that a config step (no vertex of its own) ran for `reasons`. The steps it makes
    /// run name it with its reasons, unless it only ran because an earlier step did: then they
    /// name that earlier step.
    pub fn ran_config(
        &self,
        stage: &Stage,
        place: String,
        created_by: &str,
        reasons: &[String],
        key: &StepKey,
    ) {
        let knock_on = reasons.iter().all(|r| r.starts_with(EARLIER_STEP));
        let title = format!("{created_by} ({})", reasons.join("; "));
        let previous = self
            .last_ran
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&stage.index)
            .cloned();
        self.ran(stage, place, &title, key);
        if let (true, Some(previous)) = (knock_on, previous) {
            self.last_ran
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(stage.index, previous);
        }
    }

    /// Writes what ran into the identity's record, keeping the steps that did not run. Does
    /// nothing when nothing ran. Only a cache of explanations: failing to write it fails
    /// nothing.
    pub fn save(&self) {
        let ran = std::mem::take(&mut *self.ran.lock().unwrap_or_else(|p| p.into_inner()));
        if ran.steps.is_empty() {
            return;
        }
        let mut record = self.previous().cloned().unwrap_or_default();
        record.steps.extend(ran.steps);
        let Some(dir) = self.path.parent() else {
            return;
        };
        let Ok(bytes) = serde_json::to_vec(&record) else {
            return;
        };
        let _ = std::fs::create_dir_all(dir).and_then(|()| {
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            std::io::Write::write_all(&mut tmp, &bytes)?;
            tmp.persist(&self.path).map_err(|e| e.error)?;
            Ok(())
        });
    }
}

const EARLIER_STEP: &str = "an earlier step ran: ";

fn stage_name(stage: &Stage) -> String {
    stage
        .name
        .clone()
        .unwrap_or_else(|| stage.index.to_string())
}

/// `sha256:0123456789ab` (the first 12 digits), or the text as it is.
fn short(digest: &str) -> String {
    match digest.strip_prefix("sha256:") {
        Some(hex) if hex.len() > 12 => format!("sha256:{}", &hex[..12]),
        _ => digest.to_string(),
    }
}

fn variable_changes(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Vec<String> {
    let describe = |name: &str| match name.split_once(':') {
        Some(("arg", n)) => format!("build arg {n}"),
        Some(("env", n)) => format!("ENV {n}"),
        _ => name.to_string(),
    };
    let mut out = Vec::new();
    for (name, value) in after {
        match before.get(name) {
            None => out.push(format!("{} was set", describe(name))),
            Some(old) if old != value => out.push(format!("{} changed", describe(name))),
            Some(_) => {}
        }
    }
    for name in before.keys().filter(|n| !after.contains_key(*n)) {
        out.push(format!("{} was unset", describe(name)));
    }
    out
}

/// At most this many files are named; the rest are counted.
const MAX_FILES: usize = 5;

fn source_changes(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
    context: bool,
    dest: Option<String>,
) -> Vec<String> {
    let noun = if context { "context file" } else { "file" };
    // Paths are relative to the destination; "" is the destination itself.
    let shown = |path: &str| match path.split_once('\0') {
        Some((target, "")) => format!("mounted at {target}"),
        Some((target, inner)) => format!("{inner} (mounted at {target})"),
        None if path.is_empty() => dest
            .clone()
            .unwrap_or_else(|| "at the destination".to_string()),
        None => path.to_string(),
    };
    let mut out = Vec::new();
    for (path, now) in after {
        match before.get(path) {
            None => out.push(format!("{noun} {} was added", shown(path))),
            Some(was) if was != now => {
                let field = |s: &str, i: usize| s.split(' ').nth(i).unwrap_or("").to_string();
                let what = if field(was, 0) != field(now, 0) {
                    "changed type".to_string()
                } else if field(was, 3) != field(now, 3) {
                    "changed content".to_string()
                } else if field(was, 1) != field(now, 1) {
                    format!("changed mode ({} → {})", field(was, 1), field(now, 1))
                } else {
                    format!("changed owner ({} → {})", field(was, 2), field(now, 2))
                };
                out.push(format!("{noun} {} {what}", shown(path)));
            }
            Some(_) => {}
        }
    }
    for path in before.keys().filter(|p| !after.contains_key(*p)) {
        out.push(format!("{noun} {} was removed", shown(path)));
    }
    if out.len() > MAX_FILES {
        let more = out.len() - MAX_FILES;
        out.truncate(MAX_FILES);
        out.push(format!("and {more} more files"));
    }
    out
}

/// Which part of an instruction changed: the fields of its canonical JSON that differ.
fn instruction_change(before: &str, after: &str) -> String {
    let parse = |s: &str| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(s);
    let (Ok(before), Ok(after)) = (parse(before), parse(after)) else {
        return "the instruction changed".to_string();
    };
    let changed: Vec<&str> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, _)| k.as_str())
        .chain(
            before
                .keys()
                .filter(|k| !after.contains_key(*k))
                .map(String::as_str),
        )
        .collect();
    match changed.as_slice() {
        ["from"] => "the stage or image it copies from changed".to_string(),
        [] => "the instruction changed".to_string(),
        fields => format!("the instruction changed ({})", fields.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, mode: u32, digest: &str) -> SourceFile {
        SourceFile {
            path: path.into(),
            kind: 'f',
            mode,
            uid: 0,
            gid: 0,
            digest: digest.into(),
            link_target: String::new(),
        }
    }

    fn inputs(files: Vec<SourceFile>, vars: &[(&str, &str)]) -> Inputs {
        Inputs::of(&RawInputs {
            parent: "p".into(),
            instruction: r#"{"copy":"COPY","from":"context"}"#.into(),
            variables: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            sources: Some(files),
        })
    }

    #[test]
    fn each_changed_input_is_named() {
        let before = inputs(
            vec![file("a", 0o644, "sha256:1"), file("b", 0o644, "sha256:2")],
            &[("arg:V", "1"), ("env:E", "x")],
        );
        let after = inputs(
            vec![file("a", 0o755, "sha256:1"), file("c", 0o644, "sha256:3")],
            &[("arg:V", "2"), ("env:E", "x"), ("env:F", "y")],
        );
        assert_eq!(
            variable_changes(&before.variables, &after.variables),
            ["build arg V changed", "ENV F was set"]
        );
        assert_eq!(
            source_changes(
                before.sources.as_ref().unwrap_or_else(|| panic!("sources")),
                after.sources.as_ref().unwrap_or_else(|| panic!("sources")),
                true,
                None
            ),
            [
                "context file a changed mode (644 → 755)",
                "context file c was added",
                "context file b was removed"
            ]
        );
        assert_eq!(
            instruction_change(r#"{"from":"x","dest":"/"}"#, r#"{"from":"y","dest":"/"}"#),
            "the stage or image it copies from changed"
        );
        assert_eq!(instruction_change("a", "b"), "the instruction changed");
    }

    #[test]
    fn a_copied_file_is_named_by_its_destination() {
        let one = |digest: &str| {
            inputs(vec![file("", 0o644, digest)], &[])
                .sources
                .unwrap_or_default()
        };
        assert_eq!(
            source_changes(
                &one("sha256:1"),
                &one("sha256:2"),
                false,
                Some("copied to /app/x".into())
            ),
            ["file copied to /app/x changed content"]
        );
    }

    #[test]
    fn values_are_recorded_as_digests_only() {
        let recorded = inputs(Vec::new(), &[("arg:TOKEN", "very-secret-value")]);
        let json = serde_json::to_string(&recorded).unwrap_or_else(|e| panic!("{e}"));
        assert!(!json.contains("very-secret-value"), "{json}");
    }
}
