//! `kiln build` end to end: the built binary against a temporary `--root` holding the busybox
//! image from `testdata/busybox-rootfs.sh`: progress formats, `-q`, `--iidfile`,
//! `--metadata-file`, every `--output` type, stdin contexts, refused flags and exit codes.

use regex::Regex;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod support;
use support::{KILN, is_root, require};

/// A temp dir with a store holding `busybox:latest`, and a context directory to fill.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    /// `None` (skip) when not root (RUN needs the sandbox) or the fixture cannot be made.
    fn new() -> Option<Env> {
        if !require(is_root(), "root (RUN steps run in the sandbox)") {
            return None;
        }
        let env = Env::bare();
        let tar = env.path("busybox.tar");
        if !support::busybox_tar(&tar) {
            return None;
        }
        env.ok(&["import", tar.to_str().unwrap(), "busybox:latest"]);
        Some(env)
    }

    /// A temp dir and an empty store, for what fails before anything is built.
    fn bare() -> Env {
        let env = Env {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir(env.path("ctx")).unwrap();
        env
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn root(&self) -> PathBuf {
        self.path("root")
    }

    fn context(&self, dockerfile: &str, files: &[(&str, &str)]) -> PathBuf {
        let ctx = self.path("ctx");
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        for (name, text) in files {
            std::fs::write(ctx.join(name), text).unwrap();
        }
        ctx
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = support::kiln_command(&self.root(), args);
        command.current_dir(self.dir.path()).env_remove("NO_COLOR");
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).stdin(Stdio::null()).output().unwrap()
    }

    fn run_with_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        support::output_with_stdin(&mut self.command(args), input)
    }

    /// Runs kiln and returns stdout, failing the test with stderr when it does not succeed.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        succeeded(args, &out)
    }
}

fn succeeded(args: &[&str], out: &Output) -> String {
    assert!(
        out.status.success(),
        "kiln {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every pattern (multi-line mode) must match somewhere in `text`.
fn assert_lines_match(text: &str, patterns: &[&str]) {
    for want in patterns {
        assert!(
            Regex::new(want).unwrap().is_match(text),
            "{want} not in\n{text}"
        );
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn image_id_line(stdout: &str) -> String {
    let re = Regex::new(r"^sha256:[0-9a-f]{64}\n$").unwrap();
    assert!(
        re.is_match(stdout),
        "stdout is not one image id line: {stdout:?}"
    );
    stdout.trim_end().to_string()
}

fn tar_names(bytes: &[u8]) -> BTreeSet<String> {
    tar::Archive::new(bytes)
        .entries()
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let path = entry.path().unwrap();
            path.to_string_lossy().trim_end_matches('/').to_string()
        })
        .collect()
}

const TWO_RUNS: &str = "FROM busybox:latest\n\
                        RUN echo hello from run && echo to stderr >&2\n\
                        RUN echo built > /built.txt\n\
                        LABEL stage=test\n";

#[test]
fn plain_progress_is_buildkits_format() {
    let Some(env) = Env::new() else { return };
    env.context(TWO_RUNS, &[]);
    let args = ["build", "--progress=plain", "-t", "plain:1", "ctx"];
    let out = env.run(&args);
    let stdout = succeeded(&args, &out);
    image_id_line(&stdout);
    let text = stderr(&out);
    assert!(!text.contains('\r'), "a carriage return in {text:?}");
    let line = Regex::new(
        r"^(#\d+ (\[.+\] .+|\d+\.\d{3} .*|CACHED|DONE \d+\.\d+s|ERROR: .+|why: .+|\.\.\.|exporting to .+)|WARNING: .+)$",
    )
    .unwrap();
    for l in text.lines().filter(|l| !l.is_empty()) {
        assert!(line.is_match(l), "not a plain progress line: {l:?}\n{text}");
    }
    assert_lines_match(
        &text,
        &[
            r"(?m)^#(\d+) \[2/3\] RUN echo hello from run && echo to stderr >&2$",
            r"(?m)^#\d+ why: no earlier build of plain:1$",
            r"(?m)^#\d+ \d+\.\d{3} hello from run$",
            r"(?m)^#\d+ \d+\.\d{3} to stderr$",
            r"(?m)^#\d+ DONE \d+\.\d+s$",
            r"(?m)^#\d+ exporting to image$",
            r"(?m)^#\d+ \d+\.\d{3} naming to plain:1 done$",
        ],
    );
    // Vertices are separated by one blank line, as BuildKit prints them.
    assert!(
        Regex::new(r"DONE \d+\.\d+s\n\n#\d+ ")
            .unwrap()
            .is_match(&text),
        "{text}"
    );

    // The same build again is answered from the cache; `tty` on a pipe falls back to plain.
    let args = ["build", "--progress=tty", "-t", "plain:1", "ctx"];
    let again = env.run(&args);
    let text = stderr(&again);
    assert_eq!(succeeded(&args, &again), stdout);
    assert!(
        Regex::new(r"(?m)^#\d+ CACHED$").unwrap().is_match(&text),
        "{text}"
    );
    assert!(
        text.starts_with("warning: --progress=tty: stderr is not a terminal"),
        "{text}"
    );
}

#[test]
fn rawjson_writes_the_documented_objects() {
    let Some(env) = Env::new() else { return };
    env.context(TWO_RUNS, &[]);
    let args = ["build", "--progress=rawjson", "-t", "json:1", "ctx"];
    let out = env.run(&args);
    let stdout = succeeded(&args, &out);
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let mut started = BTreeSet::new();
    let mut ended = BTreeSet::new();
    for event in &events {
        let kind = event["event"].as_str().unwrap();
        let fields: BTreeSet<&str> = event
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        let want: &[&str] = match kind {
            "started" if event.get("line").is_some() => &["event", "id", "name", "line"],
            "started" => &["event", "id", "name"],
            "log" => &["event", "id", "stream", "elapsed", "text"],
            "cached" => &["event", "id"],
            "explained" => &["event", "id", "reasons"],
            "done" => &["event", "id", "elapsed"],
            "failed" => &["event", "id", "elapsed", "message"],
            "warning" => &["event", "message"],
            "result" => &[
                "event",
                "image_id",
                "manifest_digest",
                "tags",
                "steps_run",
                "steps_cached",
            ],
            other => panic!("undocumented event {other:?}"),
        };
        assert_eq!(fields, want.iter().copied().collect(), "{event}");
        match kind {
            "started" => assert!(started.insert(event["id"].as_u64().unwrap())),
            "cached" | "done" | "failed" => assert!(ended.insert(event["id"].as_u64().unwrap())),
            "log" => {
                assert!(["stdout", "stderr"].contains(&event["stream"].as_str().unwrap()));
                assert!(event["elapsed"].is_f64() || event["elapsed"].is_u64());
            }
            _ => {}
        }
    }
    assert_eq!(started, ended, "every step that starts ends");
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "log" && e["text"] == "hello from run")
    );
    let result = events.last().unwrap();
    assert_eq!(result["event"], "result");
    assert_eq!(result["tags"], serde_json::json!(["json:1"]));
    let id = result["image_id"].as_str().unwrap();
    image_id_line(&format!("{id}\n"));
    // Nothing but JSON on stdout, so no image id line either.
    assert!(!stdout.lines().any(|l| l == id));
}

#[test]
fn quiet_prints_only_the_image_id_and_files_record_it() {
    let Some(env) = Env::new() else { return };
    env.context(TWO_RUNS, &[]);
    let args = [
        "build",
        "-q",
        "-t",
        "app:1",
        "-t",
        "app:latest",
        "--iidfile",
        "iid",
        "--metadata-file",
        "meta.json",
        "--label",
        "built.by=kiln",
        "ctx",
    ];
    let out = env.run(&args);
    let id = image_id_line(&succeeded(&args, &out));
    assert_eq!(stderr(&out), "", "-q prints nothing on stderr");
    assert_eq!(
        std::fs::read_to_string(env.path("iid")).unwrap(),
        id,
        "no newline, like docker"
    );

    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.path("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["containerimage.config.digest"], id.as_str());
    let manifest = meta["containerimage.digest"].as_str().unwrap();
    assert!(
        Regex::new(r"^sha256:[0-9a-f]{64}$")
            .unwrap()
            .is_match(manifest)
    );
    assert_ne!(manifest, id);
    assert_eq!(meta["containerimage.descriptor"]["digest"], manifest);
    assert_eq!(meta["image.name"], "app:1,app:latest");

    let inspect: serde_json::Value = serde_json::from_str(&env.ok(&["inspect", "app:1"])).unwrap();
    assert_eq!(inspect[0]["Id"], id.as_str());
    assert_eq!(inspect[0]["Config"]["Labels"]["built.by"], "kiln");
    assert_eq!(inspect[0]["Config"]["Labels"]["stage"], "test");
}

#[test]
fn every_output_type_holds_the_image() {
    let Some(env) = Env::new() else { return };
    env.context(TWO_RUNS, &[]);
    let args = [
        "build",
        "-q",
        "-t",
        "out:1",
        "-o",
        "type=local,dest=rootfs",
        "-o",
        "type=tar,dest=rootfs.tar",
        "-o",
        "type=oci,dest=oci.tar",
        "-o",
        "type=docker,dest=docker.tar",
        "-o",
        "shorthand",
        "ctx",
    ];
    let id = image_id_line(&env.ok(&args));

    for dir in ["rootfs", "shorthand"] {
        let root = env.path(dir);
        assert!(root.join("bin/busybox").is_file(), "{dir}/bin/busybox");
        assert_eq!(
            std::fs::read_to_string(root.join("built.txt")).unwrap(),
            "built\n"
        );
    }
    let tar = std::fs::read(env.path("rootfs.tar")).unwrap();
    let names = tar_names(&tar);
    assert!(
        names.contains("bin/busybox") && names.contains("built.txt"),
        "{names:?}"
    );

    for archive in ["oci.tar", "docker.tar"] {
        let fresh = env.path(&format!("fresh-{archive}"));
        let out = Command::new(KILN)
            .arg("--root")
            .arg(&fresh)
            .args(["load", "-i"])
            .arg(env.path(archive))
            .env_remove("KILN_ROOT")
            .output()
            .unwrap();
        succeeded(&["load", archive], &out);
        let out = Command::new(KILN)
            .arg("--root")
            .arg(&fresh)
            .args(["inspect", "out:1"])
            .env_remove("KILN_ROOT")
            .output()
            .unwrap();
        let inspect: serde_json::Value =
            serde_json::from_str(&succeeded(&["inspect", archive], &out)).unwrap();
        assert_eq!(
            inspect[0]["Id"],
            id.as_str(),
            "{archive} loads back as the same image"
        );
    }

    // `-o -` is the root filesystem as a tar on stdout, and then stdout carries nothing else.
    let args = ["build", "--progress=plain", "-o", "-", "ctx"];
    let out = env.run(&args);
    succeeded(&args, &out);
    let names = tar_names(&out.stdout);
    assert!(names.contains("bin/busybox"), "{names:?}");
    assert_eq!(out.stdout, tar, "the same image gives the same tar");
    let out = env.run(&["build", "-q", "-o", "type=oci,dest=-", "ctx"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(&out.stdout[257..262], b"ustar", "an archive, not an id");
}

#[test]
fn contexts_come_from_stdin() {
    let Some(env) = Env::new() else { return };
    // A tar of the context with its Dockerfile.
    let mut builder = tar::Builder::new(Vec::new());
    for (name, text) in [
        (
            "Dockerfile",
            "FROM busybox:latest\nRUN echo piped > /piped.txt\n",
        ),
        ("data.txt", "unused\n"),
    ] {
        let mut header = tar::Header::new_ustar();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        builder
            .append_data(&mut header, name, text.as_bytes())
            .unwrap();
    }
    let alt = "FROM busybox:latest\nRUN echo alt > /alt.txt\n";
    let mut header = tar::Header::new_ustar();
    header.set_size(alt.len() as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    builder
        .append_data(&mut header, "build/Dockerfile.alt", alt.as_bytes())
        .unwrap();
    // A Dockerfile that is a link to a file of the host must not be read.
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_size(0);
    header.set_mode(0o777);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    builder
        .append_link(&mut header, "Evil", "/etc/hostname")
        .unwrap();
    let tar = builder.into_inner().unwrap();

    let args = [
        "build",
        "-q",
        "-f",
        "build/Dockerfile.alt",
        "-o",
        "alt",
        "-",
    ];
    let out = env.run_with_stdin(&args, &tar);
    image_id_line(&succeeded(&args, &out));
    assert!(
        env.path("alt/alt.txt").is_file(),
        "-f names a file inside the tar"
    );

    let out = env.run_with_stdin(&["build", "-f", "Evil", "-"], &tar);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("leads out of the context"), "{text}");

    let args = ["build", "-q", "-o", "fromtar", "-"];
    let out = env.run_with_stdin(&args, &tar);
    image_id_line(&succeeded(&args, &out));
    assert_eq!(
        std::fs::read_to_string(env.path("fromtar/piped.txt")).unwrap(),
        "piped\n"
    );

    // Text instead of a tar: the Dockerfile, with an empty context.
    let args = ["build", "-q", "-o", "fromtext", "-"];
    let out = env.run_with_stdin(&args, b"FROM busybox:latest\nRUN echo text > /text.txt\n");
    image_id_line(&succeeded(&args, &out));
    assert!(env.path("fromtext/text.txt").is_file());

    // `-f -` with a context directory.
    env.context("FROM scratch\n", &[]);
    let args = ["build", "-q", "-f", "-", "-o", "fromflag", "ctx"];
    let out = env.run_with_stdin(&args, b"FROM busybox:latest\nRUN echo flag > /flag.txt\n");
    image_id_line(&succeeded(&args, &out));
    assert!(env.path("fromflag/flag.txt").is_file());

    // Both from stdin cannot be.
    let out = env.run_with_stdin(&["build", "-f", "-", "-"], b"");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn unsupported_and_bad_flags_exit_2_with_a_reason() {
    let env = Env::bare();
    env.context("FROM busybox:latest\n", &[]);
    let native_is_amd64 = cfg!(target_arch = "x86_64");
    let foreign = if native_is_amd64 {
        "linux/arm64"
    } else {
        "linux/amd64"
    };
    let cases: &[(&[&str], &str)] = &[
        (&["--secret", "id=token,src=t"], "--secret"),
        (&["--ssh", "default=/nonexistent/agent.sock"], "--ssh"),
        (&["--cache-from", "type=gha"], "--cache-from"),
        (&["--cache-to", "type=local"], "dest="),
        (&["--cache-to", "type=local,dest=c,mode=all"], "--cache-to"),
        (&["--push"], "--push"),
        (&["--platform", foreign], "--platform"),
        (&["--platform", "linux/amd64,linux/arm64"], "multi-platform"),
        (
            &["-o", "type=registry"],
            "--push (type=registry) needs a name",
        ),
        (&["-o", "type=zip,dest=x"], "--output"),
        (&["-o", "type=local"], "dest="),
        (&["--progress", "fancy"], "--progress"),
        (
            &["--progress", "rawjson", "-o", "type=tar,dest=-"],
            "rawjson",
        ),
        (&["--network", "bridge"], "--network"),
        (&["--compression", "lz4"], "--compression"),
        (&["--build-arg", "=x"], "--build-arg"),
        (&["--push"], "needs a name"),
    ];
    for (flags, mentions) in cases {
        let mut args = vec!["build"];
        args.extend_from_slice(flags);
        args.push("ctx");
        let out = env.run(&args);
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {text}");
        assert!(
            text.starts_with("error: ") && text.contains(mentions),
            "{args:?}: {text}"
        );
    }
    let out = env.run(&["build", "no-such-dir"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn a_dockerfile_error_exits_1_with_its_place() {
    let env = Env::bare();
    env.context("FROM busybox:latest\nFRM oops\n", &[]);
    let out = env.run(&["build", "--progress=plain", "ctx"]);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        Regex::new(r"Dockerfile:2:1: ").unwrap().is_match(&text),
        "{text}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn a_failing_run_exits_1_and_shows_its_output() {
    let Some(env) = Env::new() else { return };
    env.context("FROM busybox:latest\nRUN echo last words && exit 3\n", &[]);
    let out = env.run(&["build", "--progress=plain", "--iidfile", "iid", "ctx"]);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        Regex::new(r"(?m)^#\d+ \d+\.\d{3} last words$")
            .unwrap()
            .is_match(&text),
        "{text}"
    );
    assert!(
        Regex::new(r"(?m)^#\d+ ERROR: ").unwrap().is_match(&text),
        "{text}"
    );
    assert!(text.contains("exit code: 3"), "{text}");
    assert!(out.stdout.is_empty());
    assert!(!env.path("iid").exists(), "no iidfile for a failed build");
}

#[test]
fn the_hello_example_builds_end_to_end() {
    let Some(env) = Env::new() else { return };
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/examples/hello");
    let example = example.to_str().unwrap();
    let args = [
        "build",
        "--progress=plain",
        "-t",
        "hello:1",
        "-o",
        "type=local,dest=hello",
        example,
    ];
    let out = env.run(&args);
    let id = image_id_line(&succeeded(&args, &out));
    let text = stderr(&out);
    assert_lines_match(
        &text,
        &[
            r"(?m)^#\d+ \[build 4/4\] RUN <<EOF",
            r"(?m)^#\d+ \[stage-1 2/4\] COPY --from=build /out/hello /usr/local/bin/hello$",
            r"(?m)^#\d+ \[stage-1 4/4\] RUN hello > /hello.txt$",
            r"(?m)^#\d+ exporting to client directory hello$",
        ],
    );

    let tree = env.path("hello");
    let greeting = std::fs::read_to_string(Path::new(example).join("greeting.txt")).unwrap();
    assert_eq!(
        std::fs::read_to_string(tree.join("usr/share/hello/greeting.txt")).unwrap(),
        greeting
    );
    // The program from the build stage ran in the final stage with its ENV.
    assert_eq!(
        std::fs::read_to_string(tree.join("hello.txt")).unwrap(),
        format!("{}, kiln\n", greeting.trim_end())
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(tree.join("usr/local/bin/hello"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    assert!(tree.join("bin/busybox").is_file());
    assert!(
        !tree.join("out").exists() && !tree.join("src").exists(),
        "only the final stage"
    );

    let inspect: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", "hello:1"])).unwrap();
    let config = &inspect[0]["Config"];
    assert_eq!(inspect[0]["Id"], id.as_str());
    assert_eq!(config["Cmd"], serde_json::json!(["hello"]));
    assert!(
        config["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "NAME=kiln"),
        "{config}"
    );
    assert_eq!(config["Labels"]["org.opencontainers.image.title"], "hello");

    // --target stops at the build stage; --build-arg reaches its FROM.
    let args = [
        "build",
        "-q",
        "--target",
        "build",
        "--build-arg",
        "BASE=busybox:latest",
        "-o",
        "target",
        example,
    ];
    env.ok(&args);
    assert!(env.path("target/out/hello").is_file());
    assert!(!env.path("target/hello.txt").exists());

    // Built again: every step from the cache, the same image.
    let again = env.run(&["build", "--progress=plain", "-t", "hello:1", example]);
    assert_eq!(image_id_line(&succeeded(&args, &again)), id);
    let text = stderr(&again);
    let cached = Regex::new(r"(?m)^#\d+ CACHED$")
        .unwrap()
        .find_iter(&text)
        .count();
    assert!(cached >= 6, "{text}");
}

#[test]
fn clean_builds_in_two_stores_make_the_same_image() {
    let Some(fixture) = Env::new() else { return };
    // Two empty stores given the same base image (its import time fixed), and one context for
    // both, so that its files' times are the same.
    let tar = fixture.path("busybox.tar");
    let store = || {
        let env = Env::bare();
        let args = ["import", tar.to_str().unwrap(), "busybox:latest"];
        let out = env
            .command(&args)
            .env("SOURCE_DATE_EPOCH", "0")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        succeeded(&args, &out);
        env
    };
    let ctx = fixture.context(
        "FROM busybox\nCOPY greeting.txt /greeting.txt\nRUN echo built > /run.txt\n",
        &[("greeting.txt", "hello\n")],
    );
    let build = |env: &Env, epoch: Option<&str>| {
        let args = ["build", "-q", ctx.to_str().unwrap()];
        let mut command = env.command(&args);
        match epoch {
            Some(value) => command.env("SOURCE_DATE_EPOCH", value),
            None => command.env_remove("SOURCE_DATE_EPOCH"),
        };
        let out = command.stdin(Stdio::null()).output().unwrap();
        image_id_line(&succeeded(&args, &out))
    };
    let layers = |env: &Env, id: &str| -> Vec<String> {
        let store = kiln_oci::Store::open(env.root()).unwrap();
        let image = store.find_image(id).unwrap();
        image
            .layers()
            .unwrap()
            .iter()
            .map(|l| l.digest.to_string())
            .collect()
    };

    // Without SOURCE_DATE_EPOCH, creation times differ, and so do the RUN layer's file times;
    // the base and COPY layers are the same bytes.
    let (a, b) = (store(), store());
    let (first, second) = (build(&a, None), build(&b, None));
    let (in_a, in_b) = (layers(&a, &first), layers(&b, &second));
    assert_eq!(in_a.len(), in_b.len());
    assert_eq!(in_a[..in_a.len() - 1], in_b[..in_b.len() - 1]);

    // With it, two clean stores make the very same image.
    let (a, b) = (store(), store());
    let (first, second) = (build(&a, Some("1700000000")), build(&b, Some("1700000000")));
    assert_eq!(first, second);
    assert_eq!(layers(&a, &first), layers(&b, &second));
}
