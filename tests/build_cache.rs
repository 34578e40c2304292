//! `--cache-to` / `--cache-from` end to end: a build exports its cache to a directory, and a
//! build on another, fresh store (holding only the busybox base) reuses it without running the
//! steps it covers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod support;
use support::{have_tool, is_root, require};

const DOCKERFILE: &str = "\
FROM busybox:latest AS build
RUN cat /proc/sys/kernel/random/uuid > /built-at

FROM busybox:latest
COPY a.txt /a.txt
RUN cat /proc/sys/kernel/random/uuid > /stamp && cat /a.txt >> /stamp
COPY b.txt /b.txt
RUN cat /proc/sys/kernel/random/uuid > /stamp-b
COPY --from=build /built-at /built-at
ENV DONE=1
";

const BUILD_RUN: &str = "[build 2/2] RUN cat /proc/sys/kernel/random/uuid > /built-at";
const COPY_A: &str = "[stage-1 2/6] COPY a.txt /a.txt";
const RUN_A: &str =
    "[stage-1 3/6] RUN cat /proc/sys/kernel/random/uuid > /stamp && cat /a.txt >> /stamp";
const COPY_B: &str = "[stage-1 4/6] COPY b.txt /b.txt";
const RUN_B: &str = "[stage-1 5/6] RUN cat /proc/sys/kernel/random/uuid > /stamp-b";
const COPY_FROM: &str = "[stage-1 6/6] COPY --from=build /built-at /built-at";
const LAYER_STEPS: [&str; 6] = [BUILD_RUN, COPY_A, RUN_A, COPY_B, RUN_B, COPY_FROM];

/// A temp dir holding any number of stores, each with busybox imported, and contexts.
struct Dirs {
    dir: tempfile::TempDir,
    busybox: PathBuf,
}

/// What a build with `--progress=rawjson` reported.
struct Built {
    image_id: String,
    /// Step title → `cached` or `done`.
    steps: BTreeMap<String, String>,
    steps_run: u64,
    /// Warnings (rawjson puts them on stdout) and stderr.
    messages: String,
}

impl Dirs {
    fn new() -> Option<Dirs> {
        if !require(is_root(), "root (RUN steps run in the sandbox)") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let busybox = dir.path().join("busybox.tar");
        if !support::busybox_tar(&busybox) {
            return None;
        }
        Some(Dirs { dir, busybox })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A new store named `name` holding `busybox:latest`, the same image (id) in every store,
    /// as a base pulled from one registry would be.
    fn store(&self, name: &str) -> PathBuf {
        let root = self.path(name);
        let out = command(
            &root,
            &["import", self.busybox.to_str().unwrap(), "busybox:latest"],
        )
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        root
    }

    /// A context directory named `name` with the test's Dockerfile.
    fn context(&self, name: &str, a: &str, b: &str) -> PathBuf {
        let ctx = self.path(name);
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
        std::fs::write(ctx.join("a.txt"), a).unwrap();
        std::fs::write(ctx.join("b.txt"), b).unwrap();
        ctx
    }
}

fn command(root: &Path, args: &[&str]) -> Command {
    let mut command = support::kiln_command(root, args);
    command.env_remove("SOURCE_DATE_EPOCH");
    command
}

fn kiln(root: &Path, args: &[&str]) -> Output {
    command(root, args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `kiln build --progress=rawjson [flags] ctx`, which must succeed.
fn build(root: &Path, ctx: &Path, flags: &[&str]) -> Built {
    let mut args = vec!["build", "--progress=rawjson"];
    args.extend_from_slice(flags);
    args.push(ctx.to_str().unwrap());
    let out = kiln(root, &args);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "kiln {args:?} failed:\n{stderr}");
    let mut names = BTreeMap::new();
    let mut steps = BTreeMap::new();
    let mut result = None;
    let mut messages = stderr.clone();
    for line in text(&out.stdout).lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = event["id"].as_u64();
        match event["event"].as_str().unwrap_or_default() {
            "started" => {
                names.insert(id, event["name"].as_str().unwrap_or_default().to_string());
            }
            kind @ ("cached" | "done") => {
                steps.insert(names[&id].clone(), kind.to_string());
            }
            "warning" => {
                messages.push_str(event["message"].as_str().unwrap_or_default());
                messages.push('\n');
            }
            "result" => result = Some(event),
            _ => {}
        }
    }
    let result = result.unwrap_or_else(|| panic!("no result line:\n{stderr}"));
    Built {
        image_id: result["image_id"].as_str().unwrap().to_string(),
        steps,
        steps_run: result["steps_run"].as_u64().unwrap(),
        messages,
    }
}

impl Built {
    fn outcome(&self, step: &str) -> &str {
        self.steps
            .get(step)
            .unwrap_or_else(|| panic!("no step {step:?} in {:?}", self.steps))
    }

    fn assert_cached(&self, wanted: &[&str]) {
        for step in LAYER_STEPS {
            let want = if wanted.contains(&step) {
                "cached"
            } else {
                "done"
            };
            assert_eq!(self.outcome(step), want, "{step}: {:?}", self.steps);
        }
    }
}

/// The manifest digest `index.json` of a layout directory names.
fn exported_manifest(dir: &Path) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "{index}");
    assert_eq!(
        manifests[0]["annotations"]["org.opencontainers.image.ref.name"],
        "latest"
    );
    manifests[0]["digest"].as_str().unwrap().to_string()
}

fn blob(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

fn manifest_layers(dir: &Path) -> Vec<String> {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(dir, &exported_manifest(dir))).unwrap())
            .unwrap();
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.kiln.cache.config.v1+json"
    );
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_fresh_store_reuses_an_exported_cache_and_reruns_only_what_changed() {
    let Some(dirs) = Dirs::new() else {
        return;
    };
    let first = dirs.store("first");
    let ctx = dirs.context("ctx", "a\n", "b\n");
    let max = dirs.path("cache-max");
    let original = build(
        &first,
        &ctx,
        &[
            "--cache-to",
            &format!("type=local,dest={},mode=max", max.display()),
        ],
    );
    assert_eq!(original.steps_run, LAYER_STEPS.len() as u64);
    // Every layer of every stage is in the export, and the same records export to the same
    // bytes.
    assert_eq!(manifest_layers(&max).len(), LAYER_STEPS.len());
    let again = dirs.path("cache-max-again");
    let rebuilt = build(
        &first,
        &ctx,
        &[
            "--cache-to",
            &format!("type=local,dest={},mode=max", again.display()),
        ],
    );
    assert_eq!(rebuilt.image_id, original.image_id);
    assert_eq!(exported_manifest(&again), exported_manifest(&max));

    // Another store, another context directory with the same files: nothing runs, and the
    // image is the same bytes (every RUN writes the time, so a step that ran would change it).
    let second = dirs.store("second");
    let moved = dirs.context("elsewhere/ctx", "a\n", "b\n");
    let from = format!("type=local,src={}", max.display());
    let reused = build(&second, &moved, &["--cache-from", &from]);
    assert_eq!(reused.steps_run, 0, "{:?}", reused.steps);
    reused.assert_cached(&LAYER_STEPS);
    assert_eq!(reused.image_id, original.image_id);
    let fsck = kiln(&second, &["fsck"]);
    assert!(fsck.status.success(), "{}", text(&fsck.stdout));

    // A changed file reruns the step that copies it and what follows; the rest still comes
    // from the export.
    std::fs::write(moved.join("b.txt"), "b changed\n").unwrap();
    let third = dirs.store("third");
    let changed = build(&third, &moved, &["--cache-from", &from]);
    changed.assert_cached(&[BUILD_RUN, COPY_A, RUN_A]);
    assert_ne!(changed.image_id, original.image_id);
}

#[test]
fn an_export_copied_by_another_oci_tool_still_serves() {
    let Some(dirs) = Dirs::new() else {
        return;
    };
    if !require(have_tool("skopeo"), "skopeo") {
        return;
    }
    let first = dirs.store("first");
    let ctx = dirs.context("ctx", "a\n", "b\n");
    let cache = dirs.path("cache");
    let original = build(
        &first,
        &ctx,
        &[
            "--cache-to",
            &format!("type=local,dest={},mode=max", cache.display()),
        ],
    );
    // What a registry round trip does: another tool copies the manifest and its blobs.
    let copy = dirs.path("copy");
    let out = Command::new("skopeo")
        .args(["copy", "-q"])
        .arg(format!("oci:{}:latest", cache.display()))
        .arg(format!("oci:{}:latest", copy.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));

    let second = dirs.store("second");
    let from = format!("type=local,src={}", copy.display());
    let reused = build(&second, &ctx, &["--cache-from", &from]);
    assert_eq!(reused.steps_run, 0, "{:?}", reused.steps);
    assert_eq!(reused.image_id, original.image_id);
}

#[test]
fn min_mode_exports_only_the_final_images_steps() {
    let Some(dirs) = Dirs::new() else {
        return;
    };
    let first = dirs.store("first");
    let ctx = dirs.context("ctx", "a\n", "b\n");
    let min = dirs.path("cache-min");
    build(
        &first,
        &ctx,
        &["--cache-to", &format!("type=local,dest={}", min.display())],
    );
    // The build stage's layer is not in the final image, so not in a min export.
    assert_eq!(manifest_layers(&min).len(), LAYER_STEPS.len() - 1);

    let second = dirs.store("second");
    let from = format!("type=local,src={}", min.display());
    let reused = build(&second, &ctx, &["--cache-from", &from]);
    // The intermediate stage runs again and writes another time: the copy of its file has
    // other input and runs too.
    reused.assert_cached(&[COPY_A, RUN_A, COPY_B, RUN_B]);
}

#[test]
fn a_tampered_blob_is_refused_and_its_step_runs() {
    let Some(dirs) = Dirs::new() else {
        return;
    };
    let first = dirs.store("first");
    let ctx = dirs.context("ctx", "a\n", "b\n");
    let max = dirs.path("cache-max");
    let min = dirs.path("cache-min");
    build(
        &first,
        &ctx,
        &[
            "--cache-to",
            &format!("type=local,dest={},mode=max", max.display()),
            "--cache-to",
            &format!("type=local,dest={},mode=min", min.display()),
        ],
    );
    // The one layer of the max export that the min export lacks is the build stage's.
    let in_min = manifest_layers(&min);
    let only_max: Vec<String> = manifest_layers(&max)
        .into_iter()
        .filter(|l| !in_min.contains(l))
        .collect();
    assert_eq!(only_max.len(), 1, "{only_max:?}");
    let path = blob(&max, &only_max[0]);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();

    let second = dirs.store("second");
    let from = format!("type=local,src={}", max.display());
    let out = build(&second, &ctx, &["--cache-from", &from]);
    assert!(
        out.messages.contains("does not match its digest"),
        "{}",
        out.messages
    );
    out.assert_cached(&[COPY_A, RUN_A, COPY_B, RUN_B]);
    let fsck = kiln(&second, &["fsck"]);
    assert!(fsck.status.success(), "{}", text(&fsck.stdout));
}

#[test]
fn an_unreadable_cache_source_is_a_warning() {
    let Some(dirs) = Dirs::new() else {
        return;
    };
    let root = dirs.store("store");
    let ctx = dirs.context("ctx", "a\n", "b\n");
    let missing = format!("type=local,src={}", dirs.path("no-such-cache").display());
    let out = build(
        &root,
        &ctx,
        &[
            "--cache-from",
            &missing,
            "--cache-from",
            "127.0.0.1:9/app:cache",
        ],
    );
    assert_eq!(out.steps_run, LAYER_STEPS.len() as u64);
    assert!(
        out.messages.contains("no-such-cache") && out.messages.contains("127.0.0.1:9/app:cache"),
        "{}",
        out.messages
    );

    // An export that fails is an error, unless it may fail.
    let blocked = dirs.path("blocked");
    std::fs::write(&blocked, "a file, not a directory").unwrap();
    let to = format!("type=local,dest={}", blocked.display());
    let failed = kiln(&root, &["build", "--cache-to", &to, ctx.to_str().unwrap()]);
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed.stderr));
    let ignored = build(
        &root,
        &ctx,
        &["--cache-to", &format!("{to},ignore-error=true")],
    );
    assert!(
        ignored.messages.contains("exporting cache"),
        "{}",
        ignored.messages
    );
    let registry = build(
        &root,
        &ctx,
        &[
            "--cache-to",
            "type=registry,ref=127.0.0.1:9/app:cache,ignore-error=true",
        ],
    );
    assert!(
        registry.messages.contains("127.0.0.1:9/app:cache"),
        "{}",
        registry.messages
    );
}
