//! The Maven and Gradle examples, run as a user runs them: `mvn package` and `gradle docker`
//! with kiln installed as `docker` (a symlink first on PATH), offline, from Debian's packaged
//! Maven plugins and Gradle. Each builds the jar, a Java runtime base image from the host's JDK
//! (`examples/jre-base.sh`) and the app image; the image must then be in the store and run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod support;
use support::{KILN, have_tool, is_root, require};

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    /// `None` (skip) without root (the image runs in the sandbox) or the tools named.
    fn new(tools: &[&str], extra: &[(&str, bool)]) -> Option<Env> {
        if !require(is_root(), "root (the example's image runs in the sandbox)") {
            return None;
        }
        for tool in tools.iter().chain(&["jlink", "ldd"]) {
            if !require(
                have_tool(tool),
                &format!("{tool} (scripts/install-test-deps installs it)"),
            ) {
                return None;
            }
        }
        for (what, present) in extra {
            if !require(*present, what) {
                return None;
            }
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        std::os::unix::fs::symlink(KILN, dir.path().join("bin/docker")).unwrap();
        Some(Env { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `program ARGS…` with the `docker` symlink first on PATH and the store at `root`.
    fn tool(&self, program: &str, args: &[&str], cwd: &Path) -> Output {
        let path = format!(
            "{}:{}",
            self.path("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Command::new(program)
            .args(args)
            .current_dir(cwd)
            .env("PATH", path)
            .env("KILN_ROOT", self.path("root"))
            .env_remove("BUILDKIT_PROGRESS")
            .output()
            .unwrap()
    }

    fn kiln(&self, args: &[&str]) -> Output {
        Command::new(KILN)
            .arg("--root")
            .arg(self.path("root"))
            .args(args)
            .output()
            .unwrap()
    }
}

fn succeeded(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

/// The image is in the store, built on the base, and runs the app.
fn check_image(env: &Env, image: &str, greeting: &str) {
    let inspect = succeeded(
        "kiln inspect",
        &env.kiln(&[
            "docker",
            "inspect",
            "-f",
            "{{json .Config.Entrypoint}}",
            image,
        ]),
    );
    assert_eq!(inspect, "[\"java\",\"-jar\",\"/app/hello.jar\"]\n");
    let out = succeeded("kiln run", &env.kiln(&["run", "--rm", image]));
    assert!(
        out.starts_with(&format!("{greeting}, on Java ")),
        "unexpected output of {image}: {out:?}"
    );
    let out = succeeded("kiln run", &env.kiln(&["run", "--rm", image, "CI"]));
    assert!(out.starts_with("Hello from CI, on Java "), "{out:?}");
}

#[test]
fn maven_package_builds_the_image_with_kiln_as_docker() {
    let exec_plugin = Path::new("/usr/share/maven-repo/org/codehaus/mojo/exec-maven-plugin/3.1.0");
    let Some(env) = Env::new(
        &["mvn"],
        &[(
            "Debian's exec-maven-plugin (apt-get install libexec-maven-plugin-java)",
            exec_plugin.is_dir(),
        )],
    ) else {
        return;
    };
    let project = example("maven");
    let had_outputs = project.join("target").exists();
    let repo = format!("-Dmaven.repo.local={}", env.path("m2").display());
    let build_dir = format!("-Dbuild.dir={}", env.path("target").display());
    let out = env.tool(
        "mvn",
        &[
            "-B",
            "-s",
            "debian-offline-settings.xml",
            &repo,
            &build_dir,
            "package",
        ],
        &project,
    );
    let log = succeeded("mvn package", &out);
    assert!(log.contains("BUILD SUCCESS"), "{log}");
    assert!(env.path("target/hello-kiln.jar").is_file());
    assert_eq!(
        project.join("target").exists(),
        had_outputs,
        "outputs stay out of the source tree"
    );
    check_image(&env, "hello-kiln:1.0", "Hello from kiln");
}

#[test]
fn gradle_docker_builds_the_image_with_kiln_as_docker() {
    let Some(env) = Env::new(&["gradle"], &[]) else {
        return;
    };
    let project = example("gradle");
    let had_outputs = project.join("build").exists();
    let build_dir = format!("-PkilnBuildDir={}", env.path("build").display());
    let home = env.path("gradle-home");
    let cache = env.path("gradle-cache");
    let out = env.tool(
        "gradle",
        &[
            "--offline",
            "--no-daemon",
            "-g",
            home.to_str().unwrap(),
            "--project-cache-dir",
            cache.to_str().unwrap(),
            &build_dir,
            "dockerTag",
        ],
        &project,
    );
    let log = succeeded("gradle dockerTag", &out);
    // `docker build` prints the legacy builder's lines, which tools parse.
    assert!(
        log.contains("Successfully tagged hello-kiln-gradle:1.0"),
        "{log}"
    );
    assert!(env.path("build/docker/hello-kiln.jar").is_file());
    assert_eq!(
        project.join("build").exists(),
        had_outputs,
        "outputs stay out of the source tree"
    );
    check_image(&env, "hello-kiln-gradle:1.0", "Hello from kiln and Gradle");
    check_image(
        &env,
        "hello-kiln-gradle:latest",
        "Hello from kiln and Gradle",
    );
}
