//! kiln as `docker`, end to end: the built binary through a `docker` symlink (and as
//! `kiln docker …`) against a temporary store holding the busybox image from
//! `testdata/busybox-rootfs.sh`: build output, tag, images, inspect templates, save/load,
//! rmi, run, version/info, buildx builder commands, docker's usage errors, and login, push and
//! pull against a registry on loopback.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod support;
use support::{KILN, is_root, require};

/// A temp dir with a `docker` symlink to kiln and a store holding `busybox:latest`.
struct Env {
    dir: tempfile::TempDir,
    busybox_id: String,
}

impl Env {
    fn new() -> Option<Env> {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(KILN, dir.path().join("docker")).unwrap();
        let tar = dir.path().join("busybox.tar");
        if !support::busybox_tar(&tar) {
            return None;
        }
        let mut env = Env {
            dir,
            busybox_id: String::new(),
        };
        let out = env.kiln(&["import", tar.to_str().unwrap(), "busybox:latest"]);
        env.busybox_id = succeeded("kiln import", &out).trim().to_string();
        Some(env)
    }

    /// With a build context holding `dockerfile`; `None` (skip) without root.
    fn with_context(dockerfile: &str) -> Option<Env> {
        if !require(
            is_root(),
            "root (RUN steps and containers run in the sandbox)",
        ) {
            return None;
        }
        let env = Env::new()?;
        std::fs::create_dir(env.path("ctx")).unwrap();
        std::fs::write(env.path("ctx/Dockerfile"), dockerfile).unwrap();
        Some(env)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `docker ARGS…` through the symlink, the store chosen by `KILN_ROOT`.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(self.path("docker"));
        command
            .args(args)
            .current_dir(self.dir.path())
            .env("KILN_ROOT", self.path("root"))
            .env("DOCKER_CONFIG", self.path("docker-config"))
            .env("KILN_CONFIG", self.path("kiln-config.json"))
            .env_remove("BUILDKIT_PROGRESS")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null());
        command
    }

    fn docker(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn docker_with_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        support::output_with_stdin(&mut self.command(args), input)
    }

    /// `docker ARGS…`, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        succeeded(&format!("docker {args:?}"), &self.docker(args))
    }

    /// `kiln --root ROOT ARGS…`.
    fn kiln(&self, args: &[&str]) -> Output {
        support::kiln_command(&self.path("root"), args)
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }
}

fn succeeded(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

const APP: &str = "FROM busybox:latest\n\
                   ENV GREETING=hello PLACE=kiln\n\
                   LABEL org.example.team=build\n\
                   RUN echo \"$GREETING from $PLACE\" > /greeting.txt\n\
                   CMD [\"cat\", \"/greeting.txt\"]\n";

#[test]
fn build_prints_the_legacy_builders_lines_and_q_the_id() {
    let Some(env) = Env::with_context(APP) else {
        return;
    };
    let out = env.docker(&["build", "--rm", "--force-rm", "-t", "app:1", "ctx"]);
    let stdout = succeeded("docker build", &out);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let short = lines[0]
        .strip_prefix("Successfully built ")
        .unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!(short.len(), 12);
    assert!(short.bytes().all(|b| b.is_ascii_hexdigit()), "{short}");
    assert_eq!(lines[1], "Successfully tagged app:1");
    // The --rm flags are docker's defaults: accepted without a word.
    assert!(!stderr(&out).contains("--rm"), "{}", stderr(&out));

    let id = env.ok(&["build", "-q", "-t", "app:2", "ctx"]);
    let id = id.trim();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
    assert_eq!(&id[7..19], short);

    // Daemon-only flags are accepted with a note; buildx build prints no legacy lines.
    let out = env.docker(&[
        "buildx",
        "build",
        "--memory-swap",
        "1g",
        "--memory",
        "1g",
        "--load",
        "--builder",
        "kiln",
        "-t",
        "app:3",
        "ctx",
    ]);
    let stdout = succeeded("docker buildx build", &out);
    assert!(!stdout.contains("Successfully"), "{stdout}");
    assert!(
        stderr(&out).contains("note: --memory-swap has no effect"),
        "{}",
        stderr(&out)
    );

    // The same through `kiln docker`, with an --iidfile.
    let out = env.kiln(&["docker", "build", "--iidfile", "iid", "-t", "app:4", "ctx"]);
    let stdout = succeeded("kiln docker build", &out);
    assert!(
        stdout.starts_with(&format!("Successfully built {short}\n")),
        "{stdout}"
    );
    assert_eq!(std::fs::read_to_string(env.path("iid")).unwrap(), id);
}

#[test]
fn a_built_image_tags_lists_inspects_runs_and_goes() {
    let Some(env) = Env::with_context(APP) else {
        return;
    };
    let id = env.ok(&["build", "-q", "-t", "app:1", "ctx"]);
    let id = id.trim().to_string();
    env.ok(&["tag", "app:1", "registry.example/team/app:2"]);

    let table = env.ok(&["images"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap()
        .split("   ")
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    assert_eq!(header, ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]);
    let rows: Vec<Vec<String>> = lines
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect();
    assert!(
        rows.iter()
            .any(|r| r[..3] == ["registry.example/team/app", "2", &id[7..19]]),
        "{table}"
    );
    assert!(rows.iter().any(|r| r[..2] == ["app", "1"]), "{table}");

    let listed = env.ok(&[
        "images",
        "--format",
        "{{.Repository}}:{{.Tag}} {{.ID}}",
        "app",
    ]);
    assert_eq!(listed, format!("app:1 {}\n", &id[7..19]));
    let listed = env.ok(&[
        "image",
        "ls",
        "--format",
        "table {{.Repository}}\\t{{.Tag}}",
        "app",
    ]);
    assert_eq!(listed, "REPOSITORY   TAG\napp          1\n");
    let json: serde_json::Value =
        serde_json::from_str(env.ok(&["images", "--format", "json", "app"]).trim()).unwrap();
    assert_eq!(json["Repository"], "app");
    assert_eq!(json["Tag"], "1");
    let quiet = env.ok(&["images", "-q", "--no-trunc", "--filter", "reference=app"]);
    assert_eq!(quiet, format!("{id}\n"));

    // Every template form scripts use.
    let format = |template: &str| env.ok(&["inspect", "-f", template, "app:1"]);
    assert_eq!(format("{{.Id}}"), format!("{id}\n"));
    assert_eq!(format("{{index .RepoTags 0}}"), "app:1\n");
    assert_eq!(format("{{.RepoDigests}}"), "[]\n");
    assert_eq!(
        format("{{.Os}}/{{.Architecture}}"),
        format!("linux/{}\n", go_arch())
    );
    let env_line = format("{{.Config.Env}}");
    assert!(
        env_line.starts_with('[')
            && env_line.contains(" GREETING=hello PLACE=kiln]")
            && !env_line.contains(','),
        "{env_line}"
    );
    assert_eq!(
        format("{{.Config.Labels}}"),
        "map[org.example.team:build]\n"
    );
    assert_eq!(
        format("{{index .Config.Labels \"org.example.team\"}}"),
        "build\n"
    );
    assert_eq!(format("{{.Config.Cmd}}"), "[cat /greeting.txt]\n");
    assert_eq!(
        format("{{json .Config.Cmd}}"),
        "[\"cat\",\"/greeting.txt\"]\n"
    );
    let config: serde_json::Value = serde_json::from_str(&format("{{json .Config}}")).unwrap();
    assert_eq!(config["Labels"]["org.example.team"], "build");
    assert_eq!(
        format("{{range .Config.Env}}{{if eq . \"PLACE=kiln\"}}found {{.}}{{end}}{{end}}"),
        "found PLACE=kiln\n"
    );
    let image = env.ok(&["image", "inspect", "--format", "{{json .}}", "app:1"]);
    let image: serde_json::Value = serde_json::from_str(&image).unwrap();
    assert_eq!(image["Id"], id.as_str());
    assert_eq!(image["RootFS"]["Type"], "layers");
    assert_eq!(image["RootFS"]["Layers"].as_array().unwrap().len(), 2);

    // Without a format: docker's JSON array with its field names.
    let all: serde_json::Value = serde_json::from_str(&env.ok(&["inspect", "app:1"])).unwrap();
    let first = &all[0];
    for key in [
        "Id",
        "RepoTags",
        "RepoDigests",
        "Parent",
        "Created",
        "Config",
        "Architecture",
        "Os",
        "Size",
        "RootFS",
        "Metadata",
    ] {
        assert!(first.get(key).is_some(), "no {key} in {first}");
    }
    assert_eq!(
        first["RepoTags"],
        serde_json::json!(["app:1", "registry.example/team/app:2"])
    );

    // run: the image's CMD, arguments replacing it, the command's exit status.
    let out = env.docker(&["run", "--rm", "app:1"]);
    assert_eq!(succeeded("docker run", &out), "hello from kiln\n");
    let out = env.docker(&[
        "run",
        "--rm",
        "-e",
        "X=1",
        "app:1",
        "sh",
        "-c",
        "echo $X; exit 7",
    ]);
    assert_eq!(code(&out), Some(7), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n");
    let out = env.docker(&["run", "--rm", "no-such-image:1"]);
    assert_eq!(code(&out), Some(125), "{}", stderr(&out));
    let out = env.docker(&["run", "-d", "app:1"]);
    assert_eq!(code(&out), Some(125), "{}", stderr(&out));

    // A kept container: listed, committed to an image, removed.
    env.ok(&[
        "run",
        "--name",
        "keep",
        "app:1",
        "sh",
        "-c",
        "echo changed > /changed.txt",
    ]);
    let ps = env.ok(&["ps", "-a"]);
    assert!(ps.starts_with("CONTAINER ID"), "{ps}");
    assert!(
        ps.lines()
            .any(|l| l.ends_with(" keep") && l.contains("Exited (0)")),
        "{ps}"
    );
    let committed = env.ok(&["commit", "keep", "committed:1"]);
    assert!(committed.starts_with("sha256:"), "{committed}");
    let out = env.docker(&[
        "run",
        "--rm",
        "--entrypoint",
        "cat",
        "committed:1",
        "/changed.txt",
    ]);
    assert_eq!(succeeded("docker run committed", &out), "changed\n");
    assert_eq!(env.ok(&["rm", "-f", "keep"]), "keep\n");
    assert_eq!(env.ok(&["container", "ls", "-a", "-q"]), "");
    env.ok(&["rmi", "committed:1"]);

    // rmi: docker's lines; the image is gone.
    let removed = env.ok(&["rmi", "app:1", "registry.example/team/app:2"]);
    assert!(removed.contains("Untagged: app:1"), "{removed}");
    assert!(removed.contains(&format!("Deleted: {id}")), "{removed}");
    let out = env.docker(&["inspect", "app:1"]);
    assert_eq!(code(&out), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "[]\n");
    assert!(
        stderr(&out).contains("No such object: app:1"),
        "{}",
        stderr(&out)
    );
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[test]
fn templates_render_the_inspect_object_and_report_unknown_fields() {
    let Some(env) = Env::new() else { return };
    let id = env.busybox_id.clone();
    assert_eq!(
        env.ok(&["inspect", "--format", "{{.Id}}", "busybox"]),
        format!("{id}\n")
    );
    assert_eq!(
        env.ok(&[
            "inspect",
            "--type",
            "image",
            "-f",
            "{{.Id}} {{index .RepoTags 0}}",
            "busybox"
        ]),
        format!("{id} busybox:latest\n")
    );
    assert_eq!(
        env.ok(&[
            "inspect",
            "-f",
            "{{range .RepoTags}}{{.}} {{end}}",
            "busybox"
        ]),
        "busybox:latest \n"
    );
    // An image without an Env prints Go's empty slice, not an error.
    assert_eq!(
        env.ok(&["inspect", "-f", "{{.Config.Env}}", "busybox"]),
        "[]\n"
    );
    let rootfs: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", "-f", "{{json .RootFS}}", "busybox"])).unwrap();
    assert_eq!(rootfs["Type"], "layers");
    let whole: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", "-f", "{{json .}}", "busybox"])).unwrap();
    assert_eq!(whole["Id"], id.as_str());
    assert_eq!(whole["RepoTags"], serde_json::json!(["busybox:latest"]));

    let digests = env.ok(&["images", "--digests"]);
    assert!(
        digests.starts_with("REPOSITORY   TAG      DIGEST"),
        "{digests}"
    );
    // Imported here, never pulled or pushed: no repository digest, as docker shows it.
    assert!(!digests.contains("sha256:"), "{digests}");
    assert!(digests.contains(" <none> "), "{digests}");
    assert_eq!(env.ok(&["images", "-q", "--filter", "dangling=true"]), "");
    assert_eq!(
        env.ok(&[
            "images",
            "--filter",
            "reference=busy*",
            "--format",
            "{{.Repository}}"
        ]),
        "busybox\n"
    );
    let out = env.docker(&["images", "--filter", "label=x"]);
    assert_eq!(code(&out), Some(1));

    let out = env.docker(&["inspect", "-f", "{{.Nope}}", "busybox"]);
    assert_eq!(code(&out), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "template parsing error: template: :1:2: executing \"\" at <.Nope>: map has no entry for key \"Nope\""
    );
    let out = env.docker(&["inspect", "-f", "{{.Id", "busybox"]);
    assert_eq!(code(&out), Some(1));
    assert!(stderr(&out).contains("unclosed action"), "{}", stderr(&out));
    let out = env.docker(&["inspect", "--type", "container", "busybox"]);
    assert_eq!(code(&out), Some(1));
    let out = env.docker(&["image", "inspect", "nope:1"]);
    assert_eq!(code(&out), Some(1));
    assert!(
        stderr(&out).contains("No such image: nope:1"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn save_and_load_round_trip_through_files_and_pipes() {
    let Some(env) = Env::new() else { return };
    let id = env.busybox_id.clone();
    env.ok(&["tag", "busybox", "copy:1"]);
    env.ok(&["save", "-o", "saved.tar", "copy:1"]);
    env.ok(&["rmi", "copy:1"]);
    let loaded = env.ok(&["load", "-i", "saved.tar"]);
    assert_eq!(loaded, "Loaded image: copy:1\n");
    assert_eq!(
        env.ok(&["inspect", "-f", "{{.Id}}", "copy:1"]),
        format!("{id}\n")
    );

    // docker save to stdout, docker load from stdin (`image save`/`image load` alike).
    let out = env.docker(&["image", "save", "copy:1"]);
    assert!(out.status.success(), "docker image save: {}", stderr(&out));
    let archive = out.stdout;
    assert!(archive.len() > 1024);
    env.ok(&["image", "rm", "copy:1"]);
    let out = env.docker_with_stdin(&["load"], &archive);
    assert_eq!(succeeded("docker load", &out), "Loaded image: copy:1\n");
    let out = env.docker_with_stdin(&["image", "load", "-q"], &archive);
    assert_eq!(succeeded("docker image load -q", &out), "");
    assert_eq!(
        env.ok(&["images", "-q", "copy"]),
        format!("{}\n", &id[7..19])
    );
    // docker import of a root filesystem tar; its history names it.
    let imported = env.ok(&["import", "-m", "from a tar", "busybox.tar", "imported:1"]);
    let imported = imported.trim();
    assert!(imported.starts_with("sha256:"), "{imported}");
    assert_eq!(
        env.ok(&[
            "image",
            "inspect",
            "-f",
            "{{.Id}} {{.Comment}}",
            "imported:1"
        ]),
        format!("{imported} from a tar\n")
    );
    let history = env.ok(&["history", "imported:1"]);
    assert!(history.starts_with("IMAGE"), "{history}");
    assert!(history.contains("from a tar"), "{history}");
    let out = env.docker(&["import", "--change", "CMD sh", "busybox.tar", "changed:1"]);
    assert_eq!(code(&out), Some(1), "{}", stderr(&out));
}

#[test]
fn version_and_info_name_kiln_in_dockers_shape() {
    let Some(env) = Env::new() else { return };
    let version = env.ok(&["version"]);
    assert!(version.starts_with("Client: kiln\n Version:"), "{version}");
    assert!(version.contains("\nServer: kiln"), "{version}");
    assert!(version.contains(" Engine:\n  Version:"), "{version}");
    assert_eq!(
        env.ok(&["version", "--format", "{{.Server.Version}}"]),
        format!("{}\n", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        env.ok(&["version", "-f", "{{.Client.Os}}/{{.Client.Arch}}"]),
        format!("linux/{}\n", go_arch())
    );
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["version", "--format", "{{json .}}"])).unwrap();
    assert_eq!(json["Client"]["Platform"]["Name"], "kiln");

    let info = env.ok(&["info"]);
    assert!(info.contains("\n Images: 1\n"), "{info}");
    assert!(info.contains(&format!(" Server Version: {}\n", env!("CARGO_PKG_VERSION"))));
    assert!(
        info.contains(&format!(
            " Docker Root Dir: {}\n",
            env.path("root").display()
        )),
        "{info}"
    );
    assert_eq!(env.ok(&["info", "--format", "{{.Images}}"]), "1\n");
    assert_eq!(env.ok(&["info", "-f", "{{.OSType}}"]), "linux\n");
    // What Jib reads from `docker info -f '{{json .}}'`.
    let info: serde_json::Value =
        serde_json::from_str(&env.ok(&["info", "-f", "{{json .}}"])).unwrap();
    assert_eq!(info["OSType"], "linux");
    assert_eq!(info["Architecture"], std::env::consts::ARCH);

    // `kiln docker` is the same front.
    let out = env.kiln(&["docker", "version", "--format", "{{.Client.Version}}"]);
    assert_eq!(
        succeeded("kiln docker version", &out),
        format!("{}\n", env!("CARGO_PKG_VERSION"))
    );
    let out = env.kiln(&["docker", "images", "-q"]);
    assert_eq!(
        succeeded("kiln docker images", &out),
        format!("{}\n", &env.busybox_id[7..19])
    );
}

#[test]
fn usage_errors_are_worded_as_dockers_with_its_exit_status() {
    let Some(env) = Env::new() else { return };
    let out = env.docker(&["build", "--foo", "."]);
    assert_eq!(code(&out), Some(125));
    assert_eq!(
        stderr(&out),
        "unknown flag: --foo\n\nUsage:  docker build [OPTIONS] PATH | URL | -\n\n\
         Run 'docker build --help' for more information\n"
    );
    let out = env.docker(&["images", "-z"]);
    assert_eq!(code(&out), Some(125));
    assert!(
        stderr(&out).starts_with("unknown shorthand flag: 'z' in -z\n"),
        "{}",
        stderr(&out)
    );
    let out = env.kiln(&["docker", "image", "ls", "--nope"]);
    assert_eq!(code(&out), Some(125));
    assert!(
        stderr(&out).contains("Run 'docker image ls --help'"),
        "{}",
        stderr(&out)
    );

    let out = env.docker(&["frobnicate"]);
    assert_eq!(code(&out), Some(1));
    assert!(
        stderr(&out).starts_with("docker: unknown command: docker frobnicate\n"),
        "{}",
        stderr(&out)
    );
    let out = env.docker(&["--bogus", "images"]);
    assert_eq!(code(&out), Some(125));
    // docker's global flags before the command are accepted.
    let out = env.docker(&[
        "--config",
        "cfg",
        "--log-level",
        "warn",
        "-D",
        "images",
        "-q",
    ]);
    assert_eq!(
        succeeded("docker with global flags", &out).lines().count(),
        1
    );

    let out = env.docker(&["run", "--network", "bridge", "busybox", "true"]);
    assert_eq!(code(&out), Some(125));
    assert!(
        stderr(&out).starts_with(
            "invalid argument \"bridge\" for \"--network\" flag: expected one of: none, host\n"
        ),
        "{}",
        stderr(&out)
    );
    let out = env.docker(&["build"]);
    assert_eq!(code(&out), Some(1));
    assert!(
        stderr(&out).starts_with("\"docker build\" requires at least 1 argument."),
        "{}",
        stderr(&out)
    );

    let out = env.docker(&["build", "--help"]);
    assert_eq!(code(&out), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--tag"));
    let out = env.docker(&["rmi", "no-such:image"]);
    assert_eq!(code(&out), Some(1));
}

#[test]
fn buildx_reports_one_ready_builder() {
    let Some(env) = Env::new() else { return };
    assert_eq!(
        env.ok(&[
            "buildx",
            "create",
            "--driver",
            "docker-container",
            "--name",
            "ci",
            "--use"
        ]),
        "ci\n"
    );
    assert_eq!(env.ok(&["buildx", "use", "ci"]), "");
    let inspect = env.ok(&["buildx", "inspect", "--bootstrap", "ci"]);
    assert!(inspect.starts_with("Name:          ci\n"), "{inspect}");
    assert!(inspect.contains("Status:           running\n"), "{inspect}");
    assert!(
        inspect.contains(&format!("Platforms:        linux/{}", go_arch())),
        "{inspect}"
    );
    let ls = env.ok(&["buildx", "ls"]);
    assert!(ls.starts_with("NAME/NODE"), "{ls}");
    assert!(ls.contains("running"), "{ls}");
    let version = env.ok(&["buildx", "version"]);
    assert!(
        version.contains(&format!("v{}", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    assert_eq!(env.ok(&["buildx", "rm", "ci"]), "");
    let out = env.docker(&["buildx", "bake"]);
    assert_eq!(code(&out), Some(1));
}

/// The symlink's name is what matters: the same binary under another name is kiln.
#[test]
fn only_the_name_docker_selects_the_docker_front() {
    let Some(env) = Env::new() else { return };
    std::os::unix::fs::symlink(KILN, env.path("not-docker")).unwrap();
    let out = Command::new(env.path("not-docker"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("kiln "),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = env.docker(&["--version"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("docker-compatible"));
    assert!(Path::new(&env.path("docker")).is_symlink());
}

#[test]
fn a_script_logs_in_builds_pushes_and_pulls_through_a_registry() {
    let Some(env) = Env::with_context(APP) else {
        return;
    };
    let Some(registry) = support::registry::Registry::start(true) else {
        return;
    };
    let host = registry.host();
    let name = format!("{host}/team/app:1");

    // Without credentials the registry refuses the push.
    env.ok(&["build", "-q", "-t", &name, "ctx"]);
    let refused = env.docker(&["push", &name]);
    assert_ne!(code(&refused), Some(0));
    assert!(
        stderr(&refused).contains("kiln login"),
        "{}",
        stderr(&refused)
    );

    let login = env.docker_with_stdin(
        &["login", "-u", "user", "--password-stdin", &host],
        b"secret\n",
    );
    assert!(
        succeeded("docker login", &login).contains("Login Succeeded"),
        "{}",
        stderr(&login)
    );
    let config = std::fs::read_to_string(env.path("docker-config/config.json")).unwrap();
    assert!(config.contains(&host), "{config}");

    let pushed = env.ok(&["push", &name]);
    assert!(pushed.contains("digest: sha256:"), "{pushed}");
    let id = env.ok(&["inspect", "-f", "{{.Id}}", &name]);

    env.ok(&["rmi", &name]);
    let pulled = env.ok(&["pull", &name]);
    assert!(
        pulled.contains(&format!("Downloaded newer image for {name}")),
        "{pulled}"
    );
    assert_eq!(env.ok(&["inspect", "-f", "{{.Id}}", &name]), id);
    assert_eq!(env.ok(&["run", "--rm", &name]), "hello from kiln\n");

    let logout = env.ok(&["logout", &host]);
    assert!(
        logout.contains(&format!("Removing login credentials for {host}")),
        "{logout}"
    );
}
