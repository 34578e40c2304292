//! `kiln build --secret` and `--ssh` end to end, ONBUILD triggers, ADD of URLs and git
//! repositories, cache explanations and seeded cache mounts: the built binary against a
//! temporary `--root` holding the busybox image. Secret values must reach the RUN that mounts
//! them and nothing else: no layer, config, cache record or output line.

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod support;
use support::{is_root, require};

const FILE_VALUE: &str = "cli-file-secret-93b1e0";
const ENV_VALUE: &str = "cli-env-secret-c4d2f8";

/// A temp dir with a store holding `busybox:latest` and a context directory.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Option<Env> {
        if !require(is_root(), "root (RUN steps run in the sandbox)") {
            return None;
        }
        let env = Env {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir(env.path("ctx")).unwrap();
        let tar = env.path("busybox.tar");
        if !support::busybox_tar(&tar) {
            return None;
        }
        let out = env.run(&["import", tar.to_str().unwrap(), "busybox:latest"], &[]);
        assert!(out.status.success(), "import: {}", stderr(&out));
        Some(env)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn dockerfile(&self, text: &str) {
        std::fs::write(self.path("ctx/Dockerfile"), text).unwrap();
    }

    fn run(&self, args: &[&str], vars: &[(&str, &str)]) -> Output {
        let mut command = support::kiln_command(&self.path("root"), args);
        command
            .current_dir(self.dir.path())
            .env_remove("SSH_AUTH_SOCK");
        for (key, value) in vars {
            command.env(key, value);
        }
        command.output().unwrap()
    }

    /// Builds `ctx` with `flags`, exporting the image's filesystem to `out`.
    fn build(&self, flags: &[&str], vars: &[(&str, &str)]) -> Output {
        let mut args = vec!["build", "--progress=plain", "-o", "type=local,dest=out"];
        args.extend_from_slice(flags);
        args.push("ctx");
        self.run(&args, vars)
    }

    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.path("out").join(path)).unwrap_or_default()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn sha256sum(text: &str) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Every file of the store as stored (its path included, so that a cache key or a snapshot
/// name made from a secret shows), and every blob that is a compressed stream decompressed:
/// the layers of tagged images, of untagged ones and of cache records alike.
fn store_contents(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let kind = entry.file_type().unwrap();
            let name = entry.path().display().to_string();
            out.push((format!("name {name}"), name.clone().into_bytes()));
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                let bytes = std::fs::read(entry.path()).unwrap_or_default();
                out.push((name, bytes));
            } else if kind.is_symlink() {
                let target = std::fs::read_link(entry.path()).unwrap();
                out.push((name, target.into_os_string().into_encoded_bytes()));
            }
        }
    }
    let store = kiln_oci::Store::open(root).unwrap();
    for (digest, _) in store.list_blobs().unwrap() {
        let Ok(mut reader) = kiln_oci::open_layer_blob(&store, &digest) else {
            continue;
        };
        let mut plain = Vec::new();
        if reader.read_to_end(&mut plain).is_ok() {
            out.push((format!("blob {digest} decompressed"), plain));
        }
    }
    out
}

fn holds(bytes: &[u8], value: &str) -> bool {
    bytes.windows(value.len()).any(|w| w == value.as_bytes())
}

#[test]
fn secrets_from_files_and_env_reach_run_and_nothing_else() {
    let Some(env) = Env::new() else { return };
    std::fs::write(env.path("token"), FILE_VALUE).unwrap();
    env.dockerfile(
        "FROM busybox\n\
         RUN --mount=type=secret,id=tok sha256sum /run/secrets/tok | cut -d' ' -f1 > /file.sum\n\
         RUN --mount=type=secret,id=API_KEY,env=KEY printf %s \"$KEY\" | sha256sum | cut -d' ' -f1 > /env.sum\n\
         RUN --mount=type=secret,id=other,target=/s cat /s > /other.txt\n",
    );
    let out = env.build(
        &[
            "--secret",
            "id=tok,src=token",
            // A bare id reads the variable of that name.
            "--secret",
            "id=API_KEY",
            "--secret",
            "id=other,env=OTHER_VALUE",
        ],
        &[("API_KEY", ENV_VALUE), ("OTHER_VALUE", "not-secret-here")],
    );
    let text = stderr(&out);
    assert!(out.status.success(), "{text}");
    assert_eq!(env.read("file.sum").trim(), sha256sum(FILE_VALUE));
    assert_eq!(env.read("env.sum").trim(), sha256sum(ENV_VALUE));
    assert_eq!(env.read("other.txt"), "not-secret-here");
    assert!(!env.path("out/run/secrets").exists());
    for value in [FILE_VALUE, ENV_VALUE] {
        assert!(!text.contains(value) && !holds(&out.stdout, value));
        for (name, bytes) in store_contents(&env.path("root")) {
            assert!(!holds(&bytes, value), "{name} holds a secret value");
        }
    }
}

/// A secret used in a build stage whose image is never tagged, and by steps answered from the
/// cache the second time: neither the untagged stage's layers, the cache records, nor the
/// rawjson event stream hold it.
#[test]
fn secrets_stay_out_of_intermediate_stages_cache_and_event_streams() {
    let Some(env) = Env::new() else { return };
    std::fs::write(env.path("token"), FILE_VALUE).unwrap();
    env.dockerfile(
        "FROM busybox AS build\n\
         RUN --mount=type=secret,id=tok cp /run/secrets/tok /copy && sha256sum /copy | cut -c1-64 > /sum && rm /copy\n\
         RUN --mount=type=secret,id=tok,env=TOK echo \"length ${#TOK}\" > /length\n\
         FROM busybox\n\
         COPY --from=build /sum /length /\n",
    );
    let args = [
        "build",
        "--progress=rawjson",
        "-o",
        "type=local,dest=out",
        "--secret",
        "id=tok,src=token",
        "ctx",
    ];
    for round in 0..2 {
        let out = env.run(&args, &[]);
        assert!(out.status.success(), "round {round}: {}", stderr(&out));
        assert_eq!(env.read("sum").trim(), sha256sum(FILE_VALUE));
        assert_eq!(
            env.read("length").trim(),
            format!("length {}", FILE_VALUE.len())
        );
        assert!(!holds(&out.stdout, FILE_VALUE) && !holds(&out.stderr, FILE_VALUE));
        if round == 1 {
            assert!(holds(&out.stdout, "\"steps_run\":0"), "round 1 ran again");
        }
        for (name, bytes) in store_contents(&env.path("root")) {
            assert!(!holds(&bytes, FILE_VALUE), "{name} holds the secret value");
        }
    }
}

#[test]
fn a_required_secret_that_is_missing_fails_naming_it() {
    let Some(env) = Env::new() else { return };
    env.dockerfile(
        "FROM busybox\nRUN --mount=type=secret,id=absent touch /ran\n\
         RUN --mount=type=secret,id=needed,required cat /run/secrets/needed\n",
    );
    let out = env.build(&[], &[]);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("\"needed\"") && text.contains("--secret"),
        "{text}"
    );
    // A file that is not there is a usage error before anything runs.
    let out = env.build(&["--secret", "id=needed,src=missing-file"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn ssh_default_forwards_the_agent_socket() {
    let Some(env) = Env::new() else { return };
    let socket = env.path("agent.sock");
    // Bound is enough: the step looks at the socket, it does not talk to an agent.
    let _listener = UnixListener::bind(&socket).unwrap();
    env.dockerfile(
        "FROM busybox\nRUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && echo \"$SSH_AUTH_SOCK\" > /sock\n",
    );
    let out = env.build(
        &["--ssh", "default"],
        &[("SSH_AUTH_SOCK", socket.to_str().unwrap())],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.read("sock"), "/run/buildkit/ssh_agent.0\n");
    assert!(!env.path("out/run/buildkit").exists());
    // Without an agent, `--ssh default` is a usage error.
    let out = env.build(&["--ssh", "default"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn onbuild_triggers_of_the_base_run_in_the_child() {
    let Some(env) = Env::new() else { return };
    std::fs::write(env.path("ctx/x"), "x from the context\n").unwrap();
    env.dockerfile("FROM busybox\nONBUILD RUN echo hi > /onbuild\nONBUILD COPY x /x\n");
    let out = env.run(&["build", "-q", "-t", "base", "ctx"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    env.dockerfile("FROM base\nRUN cat /onbuild /x > /both\n");
    let out = env.run(&["build", "-q", "-t", "child", "ctx"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let store = kiln_oci::Store::open(env.path("root")).unwrap();
    let config = store.find_image("child").unwrap().config;
    assert_eq!(config.config.and_then(|c| c.on_build), None);
    let out = env.build(&[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.read("both"), "hi\nx from the context\n");
}

/// A loopback HTTP server with canned answers, for ADD of URLs. `body` is what `/dir/file.txt`
/// serves (changeable between builds); it carries a Last-Modified time.
struct HttpServer {
    port: u16,
    body: std::sync::Arc<std::sync::Mutex<String>>,
}

/// The Last-Modified time `/dir/file.txt` is served with, and the same in seconds.
const LAST_MODIFIED: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
const LAST_MODIFIED_SECS: i64 = 784_111_777;

impl HttpServer {
    fn start() -> HttpServer {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let body = std::sync::Arc::new(std::sync::Mutex::new("first\n".to_string()));
        let shared = body.clone();
        // The thread ends with the test process; it only ever answers on loopback.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut line = String::new();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                // The rest of the request head.
                loop {
                    let mut header = String::new();
                    match reader.read_line(&mut header) {
                        Ok(n) if n > 2 => continue,
                        _ => break,
                    }
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (status, headers, text) = match path.as_str() {
                    "/dir/file.txt" => (
                        "200 OK",
                        format!("Last-Modified: {LAST_MODIFIED}\r\n"),
                        shared.lock().unwrap().clone(),
                    ),
                    "/" => ("200 OK", String::new(), "root\n".to_string()),
                    "/moved" => (
                        "302 Found",
                        "Location: /dir/file.txt\r\n".to_string(),
                        String::new(),
                    ),
                    "/loop" => (
                        "302 Found",
                        "Location: /loop\r\n".to_string(),
                        String::new(),
                    ),
                    "/silent" => {
                        std::thread::sleep(std::time::Duration::from_secs(30));
                        continue;
                    }
                    _ => ("404 Not Found", String::new(), "no\n".to_string()),
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
            }
        });
        HttpServer { port, body }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

#[test]
fn add_of_urls_fetches_verifies_and_caches_by_content() {
    use std::os::unix::fs::MetadataExt;
    let Some(env) = Env::new() else { return };
    let server = HttpServer::start();
    let file = server.url("/dir/file.txt");
    env.dockerfile(&format!(
        "FROM busybox\nADD {file} /a/\nADD --checksum=sha256:{} {} /b\nADD {} /c/\n",
        sha256sum("first\n"),
        server.url("/moved"),
        server.url("/"),
    ));
    let out = env.build(&[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.read("a/file.txt"), "first\n");
    let meta = std::fs::metadata(env.path("out/a/file.txt")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert_eq!(meta.mtime(), LAST_MODIFIED_SECS);
    assert_eq!(env.read("b"), "first\n");
    assert_eq!(env.read("c/__unnamed__"), "root\n");

    // Unchanged content: every ADD is answered from the cache. Changed content: the ADDs of
    // that URL run again.
    let out = env.build(&[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).matches("CACHED").count(),
        3,
        "{}",
        stderr(&out)
    );
    *server.body.lock().unwrap() = "second\n".to_string();
    env.dockerfile(&format!("FROM busybox\nADD {file} /a/\n"));
    let out = env.build(&[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("CACHED"), "{}", stderr(&out));
    assert_eq!(env.read("a/file.txt"), "second\n");
}

#[test]
fn add_of_urls_fails_clearly() {
    let Some(env) = Env::new() else { return };
    let server = HttpServer::start();
    let cases = [
        (
            format!("ADD {} /x", server.url("/nothing")),
            "404 Not Found",
        ),
        (
            format!(
                "ADD --checksum=sha256:{} {} /x",
                "0".repeat(64),
                server.url("/dir/file.txt")
            ),
            "checksum mismatch",
        ),
        (
            format!("ADD {} /x", server.url("/loop")),
            "more than 10 redirects",
        ),
        (
            format!("ADD {} /x", server.url("/silent")),
            "timed out after 1s",
        ),
        (
            format!("ADD local.txt {} /x/", server.url("/dir/file.txt")),
            "\"local.txt\" is a path",
        ),
    ];
    for (line, want) in cases {
        env.dockerfile(&format!("FROM busybox\n{line}\n"));
        let out = env.build(&[], &[("KILN_HTTP_TIMEOUT", "1")]);
        assert_eq!(out.status.code(), Some(1), "{line}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(want),
            "{line}: want {want:?} in {}",
            stderr(&out)
        );
        assert!(stderr(&out).contains("Dockerfile:2"), "{}", stderr(&out));
    }
}

/// A git daemon on loopback serving the repositories below `base` (it ends with the test).
struct GitDaemon {
    child: std::process::Child,
    port: u16,
}

impl GitDaemon {
    fn start(base: &Path) -> GitDaemon {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("git")
            .args([
                "daemon",
                "--export-all",
                "--reuseaddr",
                "--listen=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        GitDaemon { child, port }
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=kiln",
            "-c",
            "user.email=kiln@example.invalid",
        ])
        .args(["-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn add_of_a_git_repository_checks_out_refs_and_subdirs() {
    if !require(support::have_tool("git"), "git (apt-get install git)") {
        return;
    }
    let Some(env) = Env::new() else { return };
    let work = env.path("work");
    std::fs::create_dir_all(work.join("sub")).unwrap();
    git(&work, &["init", "-q"]);
    std::fs::write(work.join("top.txt"), "v1\n").unwrap();
    std::fs::write(work.join("sub/inner.txt"), "inner\n").unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "one"]);
    git(&work, &["tag", "v1"]);
    let first = git(&work, &["rev-parse", "HEAD"]);
    std::fs::write(work.join("top.txt"), "v2\n").unwrap();
    git(&work, &["commit", "-q", "-am", "two"]);
    let served = env.path("served");
    std::fs::create_dir(&served).unwrap();
    git(
        &served,
        &["clone", "-q", "--bare", work.to_str().unwrap(), "repo.git"],
    );
    let daemon = GitDaemon::start(&served);
    let repo = format!("git://127.0.0.1:{}/repo.git", daemon.port);

    env.dockerfile(&format!(
        "FROM busybox\nADD {repo} /head/\nADD {repo}#v1 /tag/\nADD {repo}#main:sub /sub/\n\
         ADD --keep-git-dir {repo}#{first} /commit/\nADD --checksum={first} {repo}#v1 /checked/\n"
    ));
    let out = env.build(&[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.read("head/top.txt"), "v2\n");
    assert!(!env.path("out/head/.git").exists());
    assert_eq!(env.read("tag/top.txt"), "v1\n");
    assert_eq!(env.read("sub/inner.txt"), "inner\n");
    assert!(!env.path("out/sub/top.txt").exists());
    assert_eq!(env.read("commit/top.txt"), "v1\n");
    assert!(env.path("out/commit/.git").is_dir());
    assert_eq!(env.read("checked/top.txt"), "v1\n");

    env.dockerfile(&format!(
        "FROM busybox\nADD --checksum=0000000 {repo}#v1 /x/\n"
    ));
    let out = env.build(&[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("checksum mismatch"),
        "{}",
        stderr(&out)
    );
    env.dockerfile(&format!("FROM busybox\nADD {repo}#no-such-branch /x/\n"));
    let out = env.build(&[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no-such-branch"), "{}", stderr(&out));
}

/// The `why:` lines of plain progress, as `(step title, reason)`.
fn explanations(out: &Output) -> Vec<(String, String)> {
    let text = stderr(out);
    let mut names = std::collections::BTreeMap::new();
    let mut found = Vec::new();
    for line in text.lines() {
        let Some((id, rest)) = line.split_once(' ') else {
            continue;
        };
        if let Some(reason) = rest.strip_prefix("why: ") {
            let name: &String = names.get(id).unwrap();
            found.push((name.clone(), reason.to_string()));
        } else if rest.starts_with('[') && id.starts_with('#') {
            names
                .entry(id.to_string())
                .or_insert_with(|| rest.to_string());
        }
    }
    found
}

#[track_caller]
fn assert_explained(out: &Output, step: &str, reason: &str) {
    assert!(out.status.success(), "{}", stderr(out));
    let found = explanations(out);
    assert!(
        found
            .iter()
            .any(|(s, r)| s.contains(step) && r.contains(reason)),
        "no {step:?} explained by {reason:?} in {found:#?}"
    );
}

#[test]
fn explanations_name_the_input_that_changed() {
    use std::os::unix::fs::PermissionsExt;
    let Some(env) = Env::new() else { return };
    std::fs::write(env.path("ctx/a.txt"), "a\n").unwrap();
    std::fs::write(env.path("ctx/b.txt"), "b\n").unwrap();
    let dockerfile = |e: &str| {
        env.dockerfile(&format!(
            "FROM busybox\nARG V=1\nENV E={e}\nCOPY *.txt /c/\nRUN echo \"$V $E\" > /v\n"
        ))
    };
    dockerfile("1");
    let build = |extra: &[&str]| {
        let mut flags = vec!["-t", "app"];
        flags.extend_from_slice(extra);
        env.build(&flags, &[])
    };
    let out = build(&[]);
    assert_explained(&out, "COPY *.txt /c/", "no earlier build of app:latest");
    // Nothing changed: nothing runs and nothing is explained.
    let out = build(&[]);
    assert!(explanations(&out).is_empty(), "{}", stderr(&out));

    std::fs::write(env.path("ctx/a.txt"), "a, edited\n").unwrap();
    let out = build(&[]);
    assert_explained(&out, "COPY *.txt /c/", "context file a.txt changed content");
    assert_explained(
        &out,
        "RUN echo",
        "an earlier step ran: [2/3] COPY *.txt /c/",
    );

    std::fs::set_permissions(
        env.path("ctx/b.txt"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let out = build(&[]);
    assert_explained(&out, "COPY", "context file b.txt changed mode (644 → 755)");

    std::fs::write(env.path("ctx/new.txt"), "new\n").unwrap();
    let out = build(&[]);
    assert_explained(&out, "COPY", "context file new.txt was added");
    // (Removing new.txt again would be a hit: the cache has that state from before.)
    std::fs::remove_file(env.path("ctx/b.txt")).unwrap();
    let out = build(&[]);
    assert_explained(&out, "COPY", "context file b.txt was removed");

    let out = build(&["--build-arg", "V=2"]);
    assert_explained(&out, "RUN echo", "build arg V changed");
    assert_eq!(env.read("v"), "2 1\n");

    dockerfile("2");
    let out = build(&["--build-arg", "V=2"]);
    assert_explained(&out, "RUN echo", "ENV E changed");
    assert_explained(&out, "COPY", "an earlier step ran: ENV E=2");

    let out = build(&["--build-arg", "V=2", "--no-cache"]);
    assert_explained(&out, "COPY", "--no-cache");

    // --explain repeats the reasons after the build.
    std::fs::write(env.path("ctx/a.txt"), "a, again\n").unwrap();
    let out = env.run(
        &[
            "build",
            "-q",
            "--explain",
            "-t",
            "app",
            "--build-arg",
            "V=2",
            "ctx",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(text.starts_with("Why steps ran:\n"), "{text}");
    assert!(
        text.contains("COPY *.txt /c/\n    context file a.txt changed content\n"),
        "{text}"
    );
}

#[test]
fn explanations_name_a_changed_base_image() {
    let Some(env) = Env::new() else { return };
    env.dockerfile("FROM busybox\nRUN echo one > /x\n");
    let out = env.run(&["build", "-q", "-t", "base", "ctx"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let first = String::from_utf8_lossy(&out.stdout).trim().to_string();
    env.dockerfile("FROM base\nRUN cat /x > /y\n");
    let out = env.build(&["-t", "child"], &[]);
    assert_explained(&out, "RUN cat /x", "no earlier build of child:latest");

    env.dockerfile("FROM busybox\nRUN echo two > /x\n");
    let out = env.run(&["build", "-q", "-t", "base", "ctx"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let second = String::from_utf8_lossy(&out.stdout).trim().to_string();
    env.dockerfile("FROM base\nRUN cat /x > /y\n");
    let out = env.build(&["-t", "child"], &[]);
    let short = |id: &str| id[..19].to_string();
    assert_explained(
        &out,
        "RUN cat /x",
        &format!(
            "the base image base changed: {} → {}",
            short(&first),
            short(&second)
        ),
    );
    assert_eq!(env.read("y"), "two\n");

    // A stage a COPY --from reads was rebuilt with other content.
    env.dockerfile(
        "FROM busybox AS b\nARG X=1\nRUN echo $X > /x\nFROM busybox\nCOPY --from=b /x /x\n",
    );
    let out = env.build(&["-t", "multi"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.build(&["-t", "multi", "--build-arg", "X=2"], &[]);
    assert_explained(
        &out,
        "COPY --from=b /x /x",
        "file /x (copied to /x) changed content",
    );
    assert_explained(
        &out,
        "COPY --from=b /x /x",
        "the stage or image it copies from changed",
    );
}

#[test]
fn ssh_key_files_are_served_by_an_agent_that_ends_with_the_build() {
    if !require(
        support::have_tool("ssh-agent") && support::have_tool("ssh-keygen"),
        "ssh-agent and ssh-keygen (apt-get install openssh-client)",
    ) {
        return;
    }
    let Some(env) = Env::new() else { return };
    let key = env.path("id_test");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(made.success());
    let tmp = env.path("tmp");
    std::fs::create_dir(&tmp).unwrap();
    env.dockerfile(
        "FROM busybox\nRUN --mount=type=ssh,id=deploy,mode=0640,uid=1,gid=2,target=/run/agent \
         test -S /run/agent && stat -c '%a %u %g' /run/agent > /owner && echo \"$SSH_AUTH_SOCK\" > /sock\n",
    );
    let spec = format!("deploy={}", key.display());
    let out = env.build(&["--ssh", &spec], &[("TMPDIR", tmp.to_str().unwrap())]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.read("owner"), "640 1 2\n");
    assert_eq!(env.read("sock"), "/run/agent\n");
    // The agent's private directory went with it.
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);

    let out = env.build(&["--ssh", "deploy=/no/such/key"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("neither an agent socket nor a key file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn cache_mounts_seed_from_a_stage_and_prune_removes_them() {
    let Some(env) = Env::new() else { return };
    env.dockerfile(
        "FROM busybox AS seed\nRUN mkdir -p /s && echo seeded > /s/file\n\
         FROM busybox\n\
         RUN --mount=type=cache,target=/c,from=seed,source=/s cat /c/file > /first && echo kept > /c/added\n\
         RUN --mount=type=cache,target=/c,from=seed,source=/s cat /c/file /c/added > /second\n\
         RUN --mount=type=cache,target=/c ls /c > /plain\n",
    );
    let out = env.build(&[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.read("first"), "seeded\n");
    assert_eq!(env.read("second"), "seeded\nkept\n");
    // A cache without from= with the same target is another cache, and starts empty.
    assert_eq!(env.read("plain"), "");
    let mounts = env.path("root/cache-mounts");
    let dirs = || {
        std::fs::read_dir(&mounts)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().is_dir())
                    .count()
            })
            .unwrap_or(0)
    };
    assert_eq!(dirs(), 2);

    // A size cap alone keeps them; plain prune removes them.
    let out = env.run(&["prune", "--keep-storage", "100GB"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(dirs(), 2);
    let out = env.run(&["prune"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Deleted cache mounts: 2"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(dirs(), 0);
}
