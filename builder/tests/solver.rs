//! The solver end to end: Dockerfiles built through `kiln_builder::build` over a busybox image
//! imported into a temporary store. RUN needs the sandbox, which re-executes the running
//! binary: this test binary has its own `main` (no libtest harness) that serves as the sandbox
//! helper when asked to. The tests need root, overlayfs and a static busybox; without them they
//! fail under `CI=true` and are skipped, saying why, otherwise.
//!
//! `cargo test -p kiln-builder --test solver [NAME]` runs the tests whose name contains NAME.

use kiln_builder::events::{Event, Recorder};
use kiln_builder::{BuildOutcome, BuildRequest, Error, SecretSource};
use kiln_grammar::plan::PlanOptions;
use kiln_oci::image::import_rootfs;
use kiln_oci::{Compression, ImageConfig, LayerOptions, Reference, Store};
use kiln_runner::{Isolation, Network};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

type Test = fn(&Fixture);

/// The tests, by name (`stringify!` keeps the names and the functions in step).
macro_rules! tests {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), $name as Test)),*]
    };
}

const TESTS: &[(&str, Test)] = tests![
    run_writes_a_file_into_its_layer,
    config_is_written_as_docker_writes_it,
    args_reach_run_but_not_the_config,
    a_second_build_runs_nothing,
    a_change_invalidates_only_later_steps,
    no_cache_runs_everything,
    a_failing_run_reports_and_leaves_nothing,
    scratch_base_with_workdir,
    stages_build_on_stages,
    heredocs_run_as_scripts,
    a_missing_base_image_is_a_clear_error,
    a_missing_cache_blob_is_a_miss,
    copy_from_context_and_parallel_stages,
    a_failure_stops_parallel_stages,
    no_cache_filter_reruns_named_stages,
    run_mounts_tmpfs_and_stages,
    source_date_epoch_makes_builds_reproducible,
    copy_may_write_where_the_sandbox_mounts,
    run_mounts_the_context,
    cache_mounts_persist_between_builds,
    secrets_reach_run_and_nothing_else,
    missing_secrets_fail_only_when_required,
    ssh_agent_socket_is_mounted,
    onbuild_triggers_run_after_from,
];

fn main() {
    kiln_runner::helper_main_if_requested();
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let Some(busybox_tar) = prerequisites() else {
        return;
    };
    let mut failed = Vec::new();
    let mut ran = 0;
    for (name, test) in TESTS {
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        ran += 1;
        let fixture = Fixture::new(&busybox_tar);
        let result = std::panic::catch_unwind(|| test(&fixture));
        fixture.check_clean(name);
        match result {
            Ok(()) => println!("test {name} ... ok"),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed.push(*name);
            }
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        ran - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        std::process::exit(1);
    }
}

/// Fails under CI, skips (returning false) otherwise.
fn require(ok: bool, why: &str) -> bool {
    if ok {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("prerequisite missing under CI: {why}");
    }
    eprintln!("skipping the solver tests: {why}");
    false
}

/// Root, overlayfs and the busybox root filesystem tar (made once for all tests).
fn prerequisites() -> Option<PathBuf> {
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !require(root, "the solver tests need root (namespaces, mounts)") {
        return None;
    }
    let probe = tempfile::tempdir().expect("tempdir");
    let overlay = kiln_snapshotter::Snapshotter::new(probe.path())
        .is_ok_and(|s| *s.backend() == kiln_snapshotter::Backend::Overlay);
    if !require(overlay, "overlayfs cannot be mounted here") {
        return None;
    }
    // Kept for the whole run: every test imports from it.
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let tar = dir.join("busybox.tar");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/busybox-rootfs.sh");
    let made = Command::new("bash")
        .arg(&script)
        .arg("--tar")
        .arg(&tar)
        .status()
        .is_ok_and(|s| s.success());
    if !require(
        made,
        "testdata/busybox-rootfs.sh failed (apt-get install busybox-static)",
    ) {
        return None;
    }
    Some(tar)
}

struct Fixture {
    dir: tempfile::TempDir,
    store_root: PathBuf,
    context: PathBuf,
}

impl Fixture {
    fn new(busybox_tar: &Path) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let store_root = dir.path().join("store");
        let context = dir.path().join("context");
        std::fs::create_dir_all(&context).expect("context");
        let store = Store::open(&store_root).expect("store");
        let mut tar = std::fs::File::open(busybox_tar).expect("busybox tar");
        let tag = Reference::parse("busybox:latest").expect("reference");
        import_rootfs(
            &store,
            &mut tar,
            "busybox.tar",
            &[tag],
            LayerOptions::default(),
            None,
        )
        .expect("import busybox");
        Fixture {
            dir,
            store_root,
            context,
        }
    }

    fn request(&self, dockerfile: &str) -> BuildRequest {
        BuildRequest {
            context: self.context.clone(),
            dockerfile_path: None,
            dockerfile_name: "Dockerfile".into(),
            dockerfile: dockerfile.into(),
            plan: PlanOptions::default(),
            tags: vec!["test:latest".into()],
            labels: BTreeMap::new(),
            no_cache: false,
            no_cache_filter: Vec::new(),
            pull: false,
            registry: Default::default(),
            network: Network::None,
            compression: Compression::default(),
            secrets: BTreeMap::new(),
            ssh: BTreeMap::new(),
            cache_from: Vec::new(),
            isolation: Isolation::Namespace,
            limits: Default::default(),
        }
    }

    fn build(&self, request: &BuildRequest) -> (Result<BuildOutcome, Error>, Vec<Event>) {
        let recorder = Recorder::default();
        let result = kiln_builder::build(&self.store(), request, &recorder);
        (result, recorder.events())
    }

    fn build_ok(&self, dockerfile: &str) -> (BuildOutcome, Vec<Event>) {
        let (result, events) = self.build(&self.request(dockerfile));
        match result {
            Ok(outcome) => (outcome, events),
            Err(e) => panic!("build failed: {e}\nevents: {events:#?}"),
        }
    }

    fn store(&self) -> Store {
        Store::open(&self.store_root).expect("store")
    }

    fn config(&self, image: &str) -> ImageConfig {
        self.store().find_image(image).expect("image").config
    }

    /// The files of one layer of `image` (index from the top: 0 is the last layer), as
    /// path → content (directories and links with empty content).
    fn layer_files(&self, image: &str, from_top: usize) -> BTreeMap<String, String> {
        let store = self.store();
        let image = store.find_image(image).expect("image");
        let layers = image.layers().expect("layers");
        let layer = &layers[layers.len() - 1 - from_top];
        let reader = kiln_oci::open_layer_blob(&store, &layer.digest).expect("blob");
        let mut archive = tar::Archive::new(reader);
        let mut files = BTreeMap::new();
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let path = entry.path().expect("path").to_string_lossy().into_owned();
            let mut text = String::new();
            if entry.header().entry_type().is_file() {
                entry.read_to_string(&mut text).expect("content");
            }
            files.insert(path.trim_end_matches('/').to_string(), text);
        }
        files
    }

    /// Nothing of a build may stay mounted or half made.
    fn check_clean(&self, name: &str) {
        let root = self.dir.path().to_string_lossy().into_owned();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        assert!(
            !mounts.contains(&root),
            "{name}: a mount under the test store was left behind"
        );
        let snapshots = self.store_root.join("snapshots");
        for entry in std::fs::read_dir(&snapshots).expect("snapshots").flatten() {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            assert!(
                !file_name.starts_with(".active-") && !file_name.starts_with(".tmp-"),
                "{name}: {file_name} was left in the snapshots"
            );
        }
    }
}

fn started_names(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Started { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect()
}

fn count(events: &[Event], pred: impl Fn(&Event) -> bool) -> usize {
    events.iter().filter(|e| pred(e)).count()
}

fn created_by(config: &ImageConfig) -> Vec<String> {
    config
        .history
        .iter()
        .map(|h| h.created_by.clone().unwrap_or_default())
        .collect()
}

fn run_writes_a_file_into_its_layer(f: &Fixture) {
    let (outcome, events) = f.build_ok("FROM busybox\nRUN echo hi > /hello.txt && echo done\n");
    assert_eq!(outcome.tags, vec!["test:latest".to_string()]);
    assert_eq!(outcome.steps_run, 1);
    let image = f.store().find_image("test:latest").expect("tagged");
    assert_eq!(outcome.image_id, image.id.to_string());
    assert_eq!(outcome.manifest_digest, image.manifest_digest.to_string());
    assert_eq!(image.layers().expect("layers").len(), 2);
    let files = f.layer_files("test:latest", 0);
    assert_eq!(files.get("hello.txt").map(String::as_str), Some("hi\n"));
    // The sandbox's mount points are not part of the layer.
    assert!(
        !files
            .keys()
            .any(|p| p.starts_with("proc/") || p == "etc/hosts")
    );

    assert_eq!(
        started_names(&events),
        [
            "[1/2] FROM docker.io/library/busybox:latest",
            "[2/2] RUN echo hi > /hello.txt && echo done"
        ]
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Log { text, .. } if text == "done"))
    );

    let history = image.config.history.last().expect("history");
    assert_eq!(
        history.created_by.as_deref(),
        Some("RUN /bin/sh -c echo hi > /hello.txt && echo done # buildkit")
    );
    assert_eq!(history.comment.as_deref(), Some("buildkit.dockerfile.v0"));
    assert_eq!(history.empty_layer, None);
}

fn config_is_written_as_docker_writes_it(f: &Fixture) {
    let dockerfile = r#"FROM busybox
ENV A=1 B="two words"
ENV C=${A}-x
LABEL org.example.name="demo" version=$A
EXPOSE 80 53/udp 8000-8001
VOLUME /data
WORKDIR /srv
WORKDIR app
USER daemon
STOPSIGNAL SIGINT
HEALTHCHECK --interval=30s --retries=3 CMD wget -q localhost || exit 1
SHELL ["/bin/sh", "-ec"]
CMD echo hello
ENTRYPOINT ["/bin/echo"]
ONBUILD RUN echo child
"#;
    let mut request = f.request(dockerfile);
    request.labels.insert("extra".into(), "yes".into());
    let (result, _) = f.build(&request);
    result.expect("build");
    let config = f.config("test:latest");
    let json = serde_json::to_value(config.config.as_ref().expect("config")).expect("json");
    let expected = serde_json::json!({
        "Env": [
            format!("PATH={}", kiln_runner::DEFAULT_PATH),
            "A=1",
            "B=two words",
            "C=1-x"
        ],
        "Labels": {"org.example.name": "demo", "version": "1", "extra": "yes"},
        "ExposedPorts": {"80/tcp": {}, "53/udp": {}, "8000/tcp": {}, "8001/tcp": {}},
        "Volumes": {"/data": {}},
        "WorkingDir": "/srv/app",
        "User": "daemon",
        "StopSignal": "SIGINT",
        "Healthcheck": {
            "Test": ["CMD-SHELL", "wget -q localhost || exit 1"],
            "Interval": 30_000_000_000i64,
            "Retries": 3
        },
        "Shell": ["/bin/sh", "-ec"],
        "Entrypoint": ["/bin/echo"],
        // Set in this stage, so the ENTRYPOINT after it keeps it; wrapped in the SHELL of its time.
        "Cmd": ["/bin/sh", "-ec", "echo hello"],
        "OnBuild": ["RUN echo child"]
    });
    assert_eq!(json, expected);
    let history = created_by(&config);
    let ours: Vec<&str> = history.iter().skip(1).map(String::as_str).collect();
    assert_eq!(
        ours,
        [
            "ENV A=1 B=two words",
            "ENV C=1-x",
            "LABEL org.example.name=demo version=1",
            // The grammar keeps the ports in the order BuildKit sorts them.
            "EXPOSE 53/udp 80 8000-8001",
            r#"VOLUME ["/data"]"#,
            "WORKDIR /srv",
            "WORKDIR /srv/app",
            "USER daemon",
            "STOPSIGNAL SIGINT",
            r#"HEALTHCHECK &{["CMD-SHELL" "wget -q localhost || exit 1"] "30s" "0s" "0s" "0s" '\x03'}"#,
            r#"SHELL ["/bin/sh" "-ec"]"#,
            r#"CMD ["/bin/sh" "-ec" "echo hello"]"#,
            r#"ENTRYPOINT ["/bin/echo"]"#,
            "ONBUILD RUN echo child",
        ]
    );
    // WORKDIR makes a layer; the config-only steps do not.
    let empty: Vec<bool> = config
        .history
        .iter()
        .skip(1)
        .map(|h| h.empty_layer == Some(true))
        .collect();
    assert_eq!(
        empty,
        [
            true, true, true, true, true, false, false, true, true, true, true, true, true, true
        ]
    );
    assert_eq!(config.rootfs.diff_ids.len(), 3);
    // The WORKDIR layer holds the directory, owned by root (USER came after it).
    let files = f.layer_files("test:latest", 1);
    assert!(files.contains_key("srv"), "{files:?}");
    // An ENTRYPOINT without a CMD of its stage drops the base's CMD.
    let (_, _) = f.build_ok("FROM test:latest\nENTRYPOINT [\"/bin/true\"]\n");
    let derived = f.config("test:latest");
    let c = derived.config.expect("config");
    assert_eq!(c.cmd, None);
    assert_eq!(
        c.on_build, None,
        "triggers are consumed by the stage built on the image"
    );
}

fn args_reach_run_but_not_the_config(f: &Fixture) {
    let dockerfile = "FROM busybox\nARG V=default\nARG W\nENV E=env\nUSER daemon\nWORKDIR /tmp/w\nRUN echo \"$V|$W|$E|$(id -u)|$(pwd)\" > /tmp/w/out\n";
    let mut request = f.request(dockerfile);
    request.plan.build_args.insert("W".into(), "given".into());
    let (result, _) = f.build(&request);
    result.expect("build");
    let config = f.config("test:latest");
    let env = config
        .config
        .as_ref()
        .and_then(|c| c.env.clone())
        .expect("env");
    assert!(
        !env.iter()
            .any(|e| e.starts_with("V=") || e.starts_with("W="))
    );
    let files = f.layer_files("test:latest", 0);
    assert_eq!(
        files.get("tmp/w/out").map(String::as_str),
        Some("default|given|env|1|/tmp/w\n")
    );
    let history = created_by(&config);
    assert_eq!(history[1], "ARG V=default");
    assert_eq!(history[2], "ARG W");
    assert_eq!(
        history.last().map(String::as_str),
        Some(
            "RUN |2 V=default W=given /bin/sh -c echo \"$V|$W|$E|$(id -u)|$(pwd)\" > /tmp/w/out # buildkit"
        )
    );
}

const THREE_STEPS: &str =
    "FROM busybox\nRUN echo one > /one\nENV X=1\nWORKDIR /w\nRUN echo two > /w/two\n";

fn a_second_build_runs_nothing(f: &Fixture) {
    let (first, _) = f.build_ok(THREE_STEPS);
    assert_eq!((first.steps_run, first.steps_cached), (3, 0));
    let (second, events) = f.build_ok(THREE_STEPS);
    assert_eq!((second.steps_run, second.steps_cached), (0, 3));
    assert_eq!(second.image_id, first.image_id);
    assert_eq!(second.manifest_digest, first.manifest_digest);
    assert_eq!(count(&events, |e| matches!(e, Event::Cached { .. })), 3);
    assert_eq!(count(&events, |e| matches!(e, Event::Log { .. })), 0);

    // Snapshots removed (a pruned store) are rebuilt from the cached layers.
    let snapshots = f.store_root.join("snapshots");
    for entry in std::fs::read_dir(&snapshots).expect("snapshots").flatten() {
        std::fs::remove_dir_all(entry.path()).expect("remove snapshot");
    }
    let (third, _) = f.build_ok(&format!(
        "{THREE_STEPS}RUN test -f /one && test -f /w/two\n"
    ));
    assert_eq!((third.steps_run, third.steps_cached), (1, 3));
}

fn a_change_invalidates_only_later_steps(f: &Fixture) {
    f.build_ok(THREE_STEPS);
    let changed = THREE_STEPS.replace("ENV X=1", "ENV X=2");
    let (outcome, events) = f.build_ok(&changed);
    // RUN one is before the change; WORKDIR and RUN two are after it.
    assert_eq!((outcome.steps_run, outcome.steps_cached), (2, 1));
    let names = started_names(&events);
    let cached_ids: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            Event::Cached { id } => Some(*id),
            _ => None,
        })
        .collect();
    let cached_names: Vec<&String> = events
        .iter()
        .filter_map(|e| match e {
            Event::Started { id, name, .. } if cached_ids.contains(id) => Some(name),
            _ => None,
        })
        .collect();
    assert_eq!(cached_names, ["[2/4] RUN echo one > /one"], "{names:?}");
}

fn no_cache_runs_everything(f: &Fixture) {
    f.build_ok(THREE_STEPS);
    let mut request = f.request(THREE_STEPS);
    request.no_cache = true;
    let (result, _) = f.build(&request);
    let outcome = result.expect("build");
    assert_eq!((outcome.steps_run, outcome.steps_cached), (3, 0));
}

fn a_failing_run_reports_and_leaves_nothing(f: &Fixture) {
    let dockerfile = "FROM busybox\nRUN echo fine\nRUN echo oops; echo 'to stderr' >&2; exit 3\nRUN echo never\n";
    let (result, events) = f.build(&f.request(dockerfile));
    match result {
        Err(Error::StepFailed {
            location,
            code,
            output,
            command,
            ..
        }) => {
            assert_eq!(location, "Dockerfile:3");
            assert_eq!(code, 3);
            assert_eq!(
                command,
                "/bin/sh -c echo oops; echo 'to stderr' >&2; exit 3"
            );
            assert!(output.contains(&"oops".to_string()), "{output:?}");
            assert!(output.contains(&"to stderr".to_string()), "{output:?}");
        }
        other => panic!("expected a failed step, got {other:?}"),
    }
    assert_eq!(count(&events, |e| matches!(e, Event::Failed { .. })), 1);
    assert!(!started_names(&events).iter().any(|n| n.contains("never")));
    assert!(
        f.store().find_image("test:latest").is_err(),
        "no tag for a failed build"
    );
}

fn scratch_base_with_workdir(f: &Fixture) {
    let (outcome, events) =
        f.build_ok("FROM scratch\nENV A=1\nWORKDIR /app/sub\nCMD [\"/app/run\"]\n");
    assert_eq!(outcome.steps_run, 1);
    assert_eq!(started_names(&events), ["[1/1] WORKDIR /app/sub"]);
    let config = f.config("test:latest");
    assert_eq!(config.rootfs.diff_ids.len(), 1);
    let c = config.config.as_ref().expect("config");
    assert_eq!(
        c.env,
        Some(vec![
            format!("PATH={}", kiln_runner::DEFAULT_PATH),
            "A=1".into()
        ])
    );
    assert_eq!(c.working_dir.as_deref(), Some("/app/sub"));
    let files = f.layer_files("test:latest", 0);
    assert_eq!(files.keys().collect::<Vec<_>>(), ["app", "app/sub"]);
}

fn stages_build_on_stages(f: &Fixture) {
    let dockerfile = "FROM busybox AS base\nENV FROM_BASE=1\nRUN echo base > /base\n\nFROM base AS next\nRUN cat /base > /next && echo $FROM_BASE >> /next\n";
    let (outcome, events) = f.build_ok(dockerfile);
    assert_eq!(outcome.steps_run, 2);
    assert_eq!(
        started_names(&events),
        [
            "[base 1/2] FROM docker.io/library/busybox:latest",
            "[base 2/2] RUN echo base > /base",
            // Titles show variables expanded, as BuildKit's do.
            "[next 1/1] RUN cat /base > /next && echo 1 >> /next"
        ]
    );
    let files = f.layer_files("test:latest", 0);
    assert_eq!(files.get("next").map(String::as_str), Some("base\n1\n"));
    let mut request = f.request(dockerfile);
    request.plan.target = Some("base".into());
    let (result, _) = f.build(&request);
    let base = result.expect("build base");
    assert_eq!(base.steps_cached, 1);
    assert_eq!(f.config("test:latest").rootfs.diff_ids.len(), 2);
}

fn heredocs_run_as_scripts(f: &Fixture) {
    let dockerfile = "FROM busybox\nRUN <<EOF\necho one > /one\necho two >> /one\nEOF\nRUN <<EOF\n#!/bin/sh\necho \"$0\" > /script\nEOF\nRUN cat <<EOF > /three\nthree\nEOF\n";
    let (_, events) = f.build_ok(dockerfile);
    assert_eq!(
        started_names(&events)[1..],
        [
            "[2/4] RUN <<EOF (echo one > /one...)",
            "[3/4] RUN <<EOF (#!/bin/sh...)",
            "[4/4] RUN cat <<EOF > /three"
        ]
    );
    let one = f.layer_files("test:latest", 2);
    assert_eq!(one.get("one").map(String::as_str), Some("one\ntwo\n"));
    let script = f.layer_files("test:latest", 1);
    assert_eq!(
        script.get("script").map(String::as_str),
        Some("/dev/pipes/EOF\n")
    );
    let three = f.layer_files("test:latest", 0);
    assert_eq!(three.get("three").map(String::as_str), Some("three\n"));
}

fn a_missing_base_image_is_a_clear_error(f: &Fixture) {
    // Not in the store, so pulled: from a registry that is not there (a closed loopback port).
    let (result, _) = f.build(&f.request("FROM 127.0.0.1:9/alpine:3\nRUN true\n"));
    let message = result.expect_err("no registry").to_string();
    assert!(message.starts_with("127.0.0.1:9: "), "{message}");
    let (result, _) =
        f.build(&f.request("FROM busybox\nRUN --mount=type=secret,id=x,required true\n"));
    let message = result.expect_err("a required secret").to_string();
    assert!(
        message.starts_with("Dockerfile:2: secret \"x\" is required"),
        "{message}"
    );
    let (result, events) = f.build(&f.request("FROM busybox\nCOPY missing.txt /\n"));
    let message = result.expect_err("a missing source").to_string();
    assert!(message.starts_with("Dockerfile:2: "), "{message}");
    assert!(message.contains("missing.txt"), "{message}");
    assert_eq!(
        started_names(&events).last().map(String::as_str),
        Some("[2/2] COPY missing.txt /")
    );
    assert_eq!(count(&events, |e| matches!(e, Event::Failed { .. })), 1);
}

fn a_missing_cache_blob_is_a_miss(f: &Fixture) {
    let (first, _) = f.build_ok("FROM busybox\nRUN echo x > /x\n");
    let store = f.store();
    let image = store.find_image(&first.image_id).expect("image");
    let top = image
        .layers()
        .expect("layers")
        .last()
        .expect("layer")
        .digest
        .clone();
    // Untag and remove the layer's blob, as a prune would.
    store.remove_image("test:latest", true).expect("rmi");
    let _ = std::fs::remove_file(store.blob_path(&top));
    let (second, _) = f.build_ok("FROM busybox\nRUN echo x > /x\n");
    assert_eq!((second.steps_run, second.steps_cached), (1, 0));
}

fn copy_from_context_and_parallel_stages(f: &Fixture) {
    std::fs::write(f.context.join("hello.txt"), "from the context\n").expect("write");
    // Each stage sleeps, so that stages built one after the other would show in the events.
    let dockerfile = "FROM busybox AS a\nRUN sleep 1; echo a > /a\n\nFROM busybox AS b\nRUN sleep 1; echo b > /b\n\nFROM busybox\nCOPY hello.txt /srv/\nCOPY --from=a /a /a\nCOPY --from=b /b /b\nRUN cat /srv/hello.txt /a /b > /all\n";
    let (outcome, events) = f.build_ok(dockerfile);
    assert_eq!(outcome.steps_run, 6);
    let files = f.layer_files("test:latest", 0);
    assert_eq!(
        files.get("all").map(String::as_str),
        Some("from the context\na\nb\n")
    );
    // Both stages ran, with their own step ids.
    let ids: std::collections::BTreeSet<u32> = events
        .iter()
        .filter_map(|e| match e {
            Event::Started { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), started_names(&events).len());
    // The two stages are one plan group: both RUNs start before either ends.
    let position = |pred: &dyn Fn(&Event) -> bool| events.iter().position(pred).expect("event");
    let id_of = |title: &str| {
        events
            .iter()
            .find_map(|e| match e {
                Event::Started { id, name, .. } if name.starts_with(title) => Some(*id),
                _ => None,
            })
            .expect("step")
    };
    let (run_a, run_b) = (id_of("[a 2/2] RUN"), id_of("[b 2/2] RUN"));
    let last_start = position(&|e| matches!(e, Event::Started { id, .. } if *id == run_a)).max(
        position(&|e| matches!(e, Event::Started { id, .. } if *id == run_b)),
    );
    let first_done =
        position(&|e| matches!(e, Event::Done { id, .. } if *id == run_a || *id == run_b));
    assert!(
        last_start < first_done,
        "the stages ran one after the other: {events:#?}"
    );
    let (again, _) = f.build_ok(dockerfile);
    assert_eq!((again.steps_run, again.steps_cached), (0, 6));
    std::fs::write(f.context.join("hello.txt"), "changed\n").expect("write");
    let (changed, _) = f.build_ok(dockerfile);
    // The two stages and the COPYs from them stay cached; the context COPY and what follows it run.
    assert_eq!(changed.steps_run, 4);
}

fn a_failure_stops_parallel_stages(f: &Fixture) {
    let dockerfile = "FROM busybox AS slow\nRUN sleep 60\n\nFROM busybox AS broken\nRUN sleep 1; exit 7\n\nFROM busybox\nCOPY --from=slow /etc/passwd /a\nCOPY --from=broken /etc/passwd /b\n";
    let started = std::time::Instant::now();
    let (result, events) = f.build(&f.request(dockerfile));
    match result {
        Err(Error::StepFailed { code, location, .. }) => {
            assert_eq!(code, 7);
            assert_eq!(location, "Dockerfile:5");
        }
        other => panic!("expected the broken stage's failure, got {other:?}"),
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "the slow stage was not stopped"
    );
    assert_eq!(count(&events, |e| matches!(e, Event::Failed { .. })), 2);
    assert!(f.store().find_image("test:latest").is_err());
}

fn no_cache_filter_reruns_named_stages(f: &Fixture) {
    let dockerfile =
        "FROM busybox AS deps\nRUN echo deps > /deps\n\nFROM deps\nRUN echo app > /app\n";
    f.build_ok(dockerfile);
    let mut request = f.request(dockerfile);
    request.no_cache_filter = vec!["deps".into()];
    let (result, events) = f.build(&request);
    let outcome = result.expect("build");
    // The filtered stage runs again. The stage after it runs again only if that produced
    // different bytes (the file's mtime may or may not have moved on by a second).
    let deps_run = events
        .iter()
        .find_map(|e| match e {
            Event::Started { id, name, .. } if name.starts_with("[deps 2/2] RUN") => Some(*id),
            _ => None,
        })
        .expect("deps step");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Done { id, .. } if *id == deps_run))
    );
    assert!(outcome.steps_run >= 1);
    assert_eq!(outcome.steps_run + outcome.steps_cached, 2);
}

fn run_mounts_tmpfs_and_stages(f: &Fixture) {
    let dockerfile = "FROM busybox AS tools\nRUN mkdir -p /opt/tools && echo tool > /opt/tools/t\n\nFROM busybox\nWORKDIR /work\nRUN --mount=type=bind,from=tools,source=/opt/tools,target=/mnt/tools \\\n    --mount=type=tmpfs,target=scratch \\\n    cat /mnt/tools/t > /work/out && ! touch /mnt/tools/x 2>/dev/null && \\\n    echo temp > /work/scratch/tmp && grep -q ' /work/scratch tmpfs' /proc/mounts\nRUN --mount=type=bind,from=tools,target=/t,rw touch /t/written && ls /t/opt/tools > /work/listing\n";
    let (outcome, _) = f.build_ok(dockerfile);
    assert_eq!(outcome.steps_run, 4);
    let with_tool = f.layer_files("test:latest", 1);
    assert_eq!(
        with_tool.get("work/out").map(String::as_str),
        Some("tool\n")
    );
    // Neither the tmpfs's content nor the mount points are part of the layer.
    assert!(
        !with_tool
            .keys()
            .any(|p| p.starts_with("work/scratch") || p.starts_with("mnt")),
        "{with_tool:?}"
    );
    let listing = f.layer_files("test:latest", 0);
    assert_eq!(listing.get("work/listing").map(String::as_str), Some("t\n"));
    assert!(
        !listing.keys().any(|p| p.starts_with("t/") || p == "t"),
        "{listing:?}"
    );
    // A writable bind mount's changes are thrown away with its snapshot.
    let (again, _) = f.build_ok(dockerfile);
    assert_eq!(again.steps_run, 0);
}

fn source_date_epoch_makes_builds_reproducible(f: &Fixture) {
    let dockerfile = "FROM busybox\nENV A=1\nRUN mkdir -p /srv && echo hi > /srv/x\nWORKDIR /app\n";
    let mut request = f.request(dockerfile);
    request.no_cache = true;
    // SAFETY: the tests run one at a time on the main thread, and no build is running here:
    // nothing else reads the environment while it changes.
    unsafe { std::env::set_var("SOURCE_DATE_EPOCH", "1700000000") };
    let first = f.build(&request).0;
    let second = f.build(&request).0;
    // SAFETY: as above.
    unsafe { std::env::remove_var("SOURCE_DATE_EPOCH") };
    let (first, second) = (first.expect("first"), second.expect("second"));
    assert_eq!(second.steps_run, 2);
    assert_eq!(
        first.image_id, second.image_id,
        "the same bytes from two runs"
    );
    let config = f.config("test:latest");
    assert_eq!(config.created.as_deref(), Some("2023-11-14T22:13:20Z"));
    assert!(
        config
            .history
            .iter()
            .skip(1)
            .all(|h| h.created.as_deref() == Some("2023-11-14T22:13:20Z"))
    );
}

fn copy_may_write_where_the_sandbox_mounts(f: &Fixture) {
    // Only RUN leaves its sandbox's mount points out of the layer; a COPY writes what it says.
    std::fs::write(f.context.join("hosts"), "10.0.0.1 db\n").expect("write");
    f.build_ok("FROM busybox\nCOPY hosts /etc/hosts\n");
    let files = f.layer_files("test:latest", 0);
    assert_eq!(
        files.get("etc/hosts").map(String::as_str),
        Some("10.0.0.1 db\n")
    );
}

fn run_mounts_the_context(f: &Fixture) {
    std::fs::create_dir_all(f.context.join("src")).expect("mkdir");
    std::fs::write(f.context.join("src/main.txt"), "main\n").expect("write");
    std::fs::write(f.context.join("secret.txt"), "secret\n").expect("write");
    std::fs::write(f.context.join(".dockerignore"), "secret.txt\n").expect("write");
    let dockerfile = "FROM busybox\nRUN --mount=type=bind,target=/ctx \\\n    --mount=type=bind,source=src/main.txt,target=/main.txt \\\n    cat /ctx/src/main.txt /main.txt > /out && test ! -e /ctx/secret.txt && ! touch /ctx/x 2>/dev/null\n";
    let (first, _) = f.build_ok(dockerfile);
    assert_eq!(first.steps_run, 1);
    let files = f.layer_files("test:latest", 0);
    assert_eq!(files.get("out").map(String::as_str), Some("main\nmain\n"));
    assert!(
        !files
            .keys()
            .any(|p| p.starts_with("ctx") || p == "main.txt"),
        "{files:?}"
    );
    // Ignored files are not inputs; mounted ones are.
    std::fs::write(f.context.join("secret.txt"), "changed\n").expect("write");
    let (same, _) = f.build_ok(dockerfile);
    assert_eq!(same.steps_cached, 1);
    std::fs::write(f.context.join("src/main.txt"), "new\n").expect("write");
    let (changed, _) = f.build_ok(dockerfile);
    assert_eq!(changed.steps_run, 1);
    let files = f.layer_files("test:latest", 0);
    assert_eq!(files.get("out").map(String::as_str), Some("new\nnew\n"));
}

fn cache_mounts_persist_between_builds(f: &Fixture) {
    let dockerfile = "FROM busybox\nRUN --mount=type=cache,target=/var/cache/app,uid=1,sharing=locked \\\n    echo run >> /var/cache/app/log && wc -l < /var/cache/app/log > /runs && stat -c %u /var/cache/app > /owner\n";
    let mut request = f.request(dockerfile);
    request.no_cache = true;
    for expected in ["1\n", "2\n"] {
        let (result, _) = f.build(&request);
        result.expect("build");
        let files = f.layer_files("test:latest", 0);
        assert_eq!(files.get("runs").map(String::as_str), Some(expected));
        assert_eq!(files.get("owner").map(String::as_str), Some("1\n"));
        assert!(
            !files.keys().any(|p| p.starts_with("var/cache")),
            "{files:?}"
        );
    }
}

/// Every file under `dir`, decompressed when it is a gzip or zstd blob, as bytes.
fn every_file_decompressed(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(dir).into_iter().flatten() {
        if !entry.file_type().is_file() {
            continue;
        }
        let raw = std::fs::read(entry.path()).expect("read");
        let mut plain = Vec::new();
        if raw.starts_with(&[0x1f, 0x8b]) {
            flate2::read::GzDecoder::new(raw.as_slice())
                .read_to_end(&mut plain)
                .expect("gunzip");
        } else if raw.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            plain = zstd::decode_all(raw.as_slice()).expect("unzstd");
        }
        out.push((entry.path().to_path_buf(), raw));
        if !plain.is_empty() {
            out.push((entry.path().to_path_buf(), plain));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

fn secrets_reach_run_and_nothing_else(f: &Fixture) {
    const FILE_VALUE: &str = "kiln-file-secret-5e1d9a";
    const ENV_VALUE: &str = "kiln-env-secret-0b77c4";
    let secret_file = f.dir.path().join("token.txt");
    std::fs::write(&secret_file, FILE_VALUE).expect("write");
    // SAFETY: the tests run one at a time on the main thread; no build runs while it changes.
    unsafe { std::env::set_var("KILN_TEST_SECRET", ENV_VALUE) };
    let dockerfile = "FROM busybox\n\
        RUN --mount=type=secret,id=tok sha256sum /run/secrets/tok | cut -d' ' -f1 > /file.sum && \\\n    \
            stat -c %a /run/secrets/tok > /file.mode && ! sh -c 'echo x >> /run/secrets/tok' 2>/dev/null\n\
        RUN --mount=type=secret,id=envtok,target=/etc/app/key,mode=0440,gid=1 \\\n    \
            sha256sum /etc/app/key | cut -d' ' -f1 > /env.sum && stat -c %a:%g /etc/app/key > /env.mode\n\
        RUN --mount=type=secret,id=tok,env=TOKEN printf %s \"$TOKEN\" | sha256sum | cut -d' ' -f1 > /var.sum && \\\n    \
            test ! -e /run/secrets/tok\n";
    let mut request = f.request(dockerfile);
    request
        .secrets
        .insert("tok".into(), SecretSource::File(secret_file.clone()));
    request.secrets.insert(
        "envtok".into(),
        SecretSource::Env("KILN_TEST_SECRET".into()),
    );
    let (result, events) = f.build(&request);
    if let Err(e) = result {
        panic!("build failed: {e}\nevents: {events:#?}");
    }
    let file_step = f.layer_files("test:latest", 2);
    assert_eq!(file_step["file.sum"].trim(), sha256_hex(FILE_VALUE));
    assert_eq!(file_step["file.mode"].trim(), "400");
    let env_step = f.layer_files("test:latest", 1);
    assert_eq!(env_step["env.sum"].trim(), sha256_hex(ENV_VALUE));
    assert_eq!(env_step["env.mode"].trim(), "440:1");
    let var_step = f.layer_files("test:latest", 0);
    assert_eq!(var_step["var.sum"].trim(), sha256_hex(FILE_VALUE));
    // The mount points the secrets needed are not part of any layer.
    for files in [&file_step, &env_step, &var_step] {
        assert!(
            !files
                .keys()
                .any(|p| p.starts_with("run/secrets") || p.starts_with("etc/app")),
            "{files:?}"
        );
    }
    // Neither value is anywhere in the store (blobs decompressed, cache records, snapshots),
    // nor in any event.
    for (path, bytes) in every_file_decompressed(&f.store_root) {
        for value in [FILE_VALUE, ENV_VALUE] {
            assert!(
                !contains(&bytes, value),
                "{} holds a secret",
                path.display()
            );
        }
    }
    let shown = format!("{events:?}");
    assert!(!shown.contains(FILE_VALUE) && !shown.contains(ENV_VALUE));
    // The key sees the secret's id, not its value: another value is still a cache hit.
    std::fs::write(&secret_file, "another-value").expect("write");
    let (again, _) = f.build(&request);
    assert_eq!(again.expect("rebuild").steps_cached, 3);
    // SAFETY: as above.
    unsafe { std::env::remove_var("KILN_TEST_SECRET") };
}

fn missing_secrets_fail_only_when_required(f: &Fixture) {
    let (skipped, _) = f.build_ok(
        "FROM busybox\nRUN --mount=type=secret,id=absent --mount=type=ssh \\\n    \
         test ! -e /run/secrets/absent && test -z \"$SSH_AUTH_SOCK\" && touch /ran\n",
    );
    assert_eq!(skipped.steps_run, 1);
    assert!(f.layer_files("test:latest", 0).contains_key("ran"));

    let (result, _) =
        f.build(&f.request("FROM busybox\nRUN --mount=type=secret,id=needed,required true\n"));
    let err = result.expect_err("a required secret that is missing fails the build");
    assert!(matches!(err, Error::MountSource { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("\"needed\"") && message.contains("Dockerfile:2"),
        "{message}"
    );
    let (result, _) =
        f.build(&f.request("FROM busybox\nRUN --mount=type=ssh,id=deploy,required=true true\n"));
    let message = result.expect_err("required agent").to_string();
    assert!(message.contains("\"deploy\""), "{message}");
}

fn ssh_agent_socket_is_mounted(f: &Fixture) {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("agent.sock");
    // Bound is enough: the step only looks at the socket, it does not talk to an agent.
    let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let dockerfile = "FROM busybox\nRUN --mount=type=ssh test -S /run/buildkit/ssh_agent.0 && \\\n    \
        test \"$SSH_AUTH_SOCK\" = /run/buildkit/ssh_agent.0 && touch /default-ok\n\
        RUN --mount=type=ssh,id=other,target=/tmp/agent test -S /tmp/agent && echo $SSH_AUTH_SOCK > /other\n";
    let mut request = f.request(dockerfile);
    request.ssh.insert("default".into(), socket.clone());
    request.ssh.insert("other".into(), socket);
    let (result, events) = f.build(&request);
    if let Err(e) = result {
        panic!("build failed: {e}\nevents: {events:#?}");
    }
    let first = f.layer_files("test:latest", 1);
    assert!(first.contains_key("default-ok"), "{first:?}");
    assert!(
        !first.keys().any(|p| p.starts_with("run/buildkit")),
        "{first:?}"
    );
    let second = f.layer_files("test:latest", 0);
    assert_eq!(second["other"], "/tmp/agent\n");
    assert!(!second.contains_key("tmp/agent"), "{second:?}");
    // The agent's environment is the step's, not the image's.
    let env = f
        .config("test:latest")
        .config
        .and_then(|c| c.env)
        .unwrap_or_default();
    assert!(
        !env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK")),
        "{env:?}"
    );
}

fn onbuild_triggers_run_after_from(f: &Fixture) {
    std::fs::write(f.context.join("x"), "from the context\n").expect("write");
    let mut base = f.request(
        "FROM busybox\nONBUILD RUN echo hi > /onbuild\nONBUILD COPY x /x\nONBUILD ENV FROM_TRIGGER=1\n",
    );
    base.tags = vec!["base:latest".into()];
    f.build(&base).0.expect("base");
    let base_config = f.config("base:latest").config.expect("config");
    assert_eq!(base_config.on_build.map(|t| t.len()), Some(3));

    let (outcome, events) = f.build_ok("FROM base\nRUN cat /onbuild /x > /both\n");
    assert_eq!(outcome.steps_run, 3);
    let files = f.layer_files("test:latest", 0);
    assert_eq!(files["both"], "hi\nfrom the context\n");
    let config = f.config("test:latest");
    let container = config.config.as_ref().expect("config");
    // Triggers run once: they are not handed on to the child's children.
    assert_eq!(container.on_build, None);
    assert!(
        container
            .env
            .iter()
            .flatten()
            .any(|e| e == "FROM_TRIGGER=1")
    );
    let names = started_names(&events);
    assert!(
        names.iter().any(|n| n.ends_with("RUN echo hi > /onbuild")),
        "{names:?}"
    );
    assert!(
        !events.iter().any(|e| matches!(e, Event::Warning { .. })),
        "{events:?}"
    );

    // `ONBUILD COPY --from=NAME` names a stage of the Dockerfile being built, even one that
    // nothing else needs.
    let mut base = f.request("FROM busybox\nONBUILD COPY --from=tools /t /t\n");
    base.tags = vec!["base2:latest".into()];
    f.build(&base).0.expect("base2");
    f.build_ok("FROM busybox AS tools\nRUN echo tool > /t\n\nFROM base2\nRUN cat /t > /copied\n");
    assert_eq!(f.layer_files("test:latest", 0)["copied"], "tool\n");
    f.build_ok(
        "FROM busybox AS tools\nRUN echo staged > /t\n\nFROM busybox AS base\n\
         ONBUILD COPY --from=tools /t /t\n\nFROM base\nRUN cat /t > /copied\n",
    );
    assert_eq!(f.layer_files("test:latest", 0)["copied"], "staged\n");

    // A base stage's triggers run in the stage built on it, and a failing trigger names itself.
    let (result, _) = f.build(
        &f.request("FROM busybox AS base\nONBUILD RUN exit 3\n\nFROM base\nRUN touch /never\n"),
    );
    let message = result.expect_err("failing trigger").to_string();
    assert!(
        message.contains("ONBUILD trigger \"RUN exit 3\"") && message.contains("Dockerfile:4"),
        "{message}"
    );
}
