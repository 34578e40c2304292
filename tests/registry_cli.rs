//! Registries end to end: `kiln push`, `pull`, `login`, `logout` and `build --push` against
//! Debian's `docker-registry` on a free loopback port (storage in a temp dir; once open, once
//! behind htpasswd basic auth), checked with skopeo; and against a tiny hostile HTTP server for
//! what a real registry never sends.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod support;
use support::registry::Registry;
use support::{have_tool, require, wait_until};

/// A temp dir holding stores, a docker config dir and the busybox rootfs tar.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Option<Env> {
        let dir = tempfile::tempdir().unwrap();
        if !support::busybox_tar(&dir.path().join("busybox.tar")) {
            return None;
        }
        Some(Env { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn docker_config(&self) -> PathBuf {
        self.path("docker/config.json")
    }

    /// kiln with the store `root` and its own docker and kiln config files.
    fn kiln(&self, root: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let mut command = support::kiln_command(&self.path(root), args);
        command
            .env("DOCKER_CONFIG", self.path("docker"))
            .env("KILN_CONFIG", self.path("kiln-config.json"))
            .env("HOME", self.dir.path());
        support::output_with_stdin(&mut command, stdin.unwrap_or("").as_bytes())
    }

    /// Runs kiln and returns stdout, failing the test with stderr when it does not succeed.
    fn ok(&self, root: &str, args: &[&str]) -> String {
        let out = self.kiln(root, args, None);
        assert!(
            out.status.success(),
            "kiln {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs kiln expecting exit status 1; returns stderr.
    fn fails(&self, root: &str, args: &[&str]) -> String {
        let out = self.kiln(root, args, None);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(1), "kiln {args:?}: {stderr}");
        stderr
    }

    /// Imports the busybox rootfs as `name` into `root`.
    fn import(&self, root: &str, name: &str) {
        let tar = self.path("busybox.tar");
        self.ok(root, &["import", tar.to_str().unwrap(), name]);
    }

    /// Imports the busybox rootfs as `base:1` into the store `a` and saves it as an OCI
    /// archive; returns the archive's path.
    fn base_archive(&self) -> PathBuf {
        self.import("a", "base:1");
        let archive = self.path("base.tar");
        self.ok(
            "a",
            &[
                "save",
                "--format",
                "oci",
                "-o",
                archive.to_str().unwrap(),
                "base:1",
            ],
        );
        archive
    }

    fn inspect(&self, root: &str, name: &str) -> serde_json::Value {
        let text = self.ok(root, &["inspect", name]);
        let mut all: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        all.remove(0)
    }

    /// The blob `digest` of the store `root`.
    fn blob(&self, root: &str, digest: &str) -> Vec<u8> {
        let hex = digest.trim_start_matches("sha256:");
        std::fs::read(self.path(root).join("blobs/sha256").join(hex)).unwrap()
    }

    fn blob_count(&self, root: &str) -> usize {
        std::fs::read_dir(self.path(root).join("blobs/sha256"))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

/// The [`Env`] and a registry a scenario runs against (`auth`: behind basic auth), after
/// checking for skopeo when the scenario uses it; `None` (skip) when something is missing.
fn scenario(auth: bool, skopeo: bool) -> Option<(Env, Registry)> {
    let env = Env::new()?;
    if skopeo && !require(have_tool("skopeo"), "skopeo") {
        return None;
    }
    let registry = Registry::start(auth)?;
    Some((env, registry))
}

fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

/// The digest `kiln push` printed (`TAG: digest: sha256:… size: N`).
fn pushed_digest(out: &str) -> String {
    let line = out.lines().find(|l| l.contains(": digest: ")).unwrap();
    line.split_whitespace().nth(2).unwrap().to_string()
}

/// The digest `kiln pull` printed (`Digest: sha256:…`).
fn pulled_digest(out: &str) -> String {
    let line = out.lines().find(|l| l.starts_with("Digest: ")).unwrap();
    line["Digest: ".len()..].trim().to_string()
}

/// An image's RepoDigests as `kiln inspect` shows them.
fn repo_digests(image: &serde_json::Value) -> Vec<String> {
    image["RepoDigests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect()
}

fn sha256(bytes: &[u8]) -> String {
    let out = support::output_with_stdin(&mut Command::new("sha256sum"), bytes);
    let text = String::from_utf8(out.stdout).unwrap();
    format!("sha256:{}", text.split_whitespace().next().unwrap())
}

fn native_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[test]
fn push_gives_the_registry_the_store_s_exact_bytes() {
    let Some((env, registry)) = scenario(false, true) else {
        return;
    };
    let name = format!("{}/x:1", registry.host());
    env.import("a", &name);
    let out = env.ok("a", &["push", &name]);
    assert!(out.contains(&format!(
        "The push refers to repository [{}/x]",
        registry.host()
    )));
    assert!(out.contains(": Pushed"), "{out}");
    let digest = pushed_digest(&out);
    let image = env.inspect("a", &name);
    assert_eq!(image["Descriptor"]["digest"], digest.as_str());
    let in_x = format!("{}/x@{digest}", registry.host());
    assert_eq!(repo_digests(&image), std::slice::from_ref(&in_x));
    // docker's `images --digests` shows it in the DIGEST column of that repository's row.
    let listed = env.ok("a", &["docker", "images", "--digests"]);
    let row = listed.lines().find(|l| l.contains("/x ")).unwrap();
    assert!(row.contains(&digest), "{listed}");
    let templated = env.ok("a", &["docker", "inspect", "-f", "{{.RepoDigests}}", &name]);
    assert_eq!(templated, format!("[{in_x}]\n"));

    let layout = env.path("layout");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{name}"),
        &format!("oci:{}:x", layout.display()),
    ]);
    let index = json(&std::fs::read(layout.join("index.json")).unwrap());
    assert_eq!(index["manifests"][0]["digest"], digest.as_str());
    let manifest_bytes =
        std::fs::read(layout.join("blobs/sha256").join(&digest["sha256:".len()..])).unwrap();
    assert_eq!(
        manifest_bytes,
        env.blob("a", &digest),
        "manifest bytes differ"
    );
    let manifest = json(&manifest_bytes);
    assert_eq!(manifest["config"]["digest"], image["Id"]);
    let mut blobs = vec![manifest["config"]["digest"].as_str().unwrap().to_string()];
    for layer in manifest["layers"].as_array().unwrap() {
        blobs.push(layer["digest"].as_str().unwrap().to_string());
    }
    for blob in &blobs {
        let copied = std::fs::read(layout.join("blobs/sha256").join(&blob["sha256:".len()..]));
        assert_eq!(copied.unwrap(), env.blob("a", blob), "blob {blob} differs");
    }

    // Everything is there now: a second push uploads nothing.
    let again = env.ok("a", &["push", &name]);
    assert!(!again.contains(": Pushed"), "{again}");
    assert_eq!(again.matches("Layer already exists").count(), blobs.len());
    assert_eq!(pushed_digest(&again), digest);
    // Another repository of the same registry gets the blobs by mounting them.
    let other = format!("{}/y:2", registry.host());
    env.ok("a", &["tag", &name, &other]);
    let mounted = env.ok("a", &["push", "-q", &other]);
    assert_eq!(mounted.trim(), digest);
    let mounted = env.ok("a", &["push", &other]);
    assert!(!mounted.contains(": Pushed"), "{mounted}");
    let in_y = format!("{}/y@{digest}", registry.host());
    assert_eq!(
        repo_digests(&env.inspect("a", &name)),
        [in_x.clone(), in_y.clone()]
    );

    // A changed image pushed under the same name has its own digest there; the old image
    // keeps the one it was pushed with, as docker's does, and loses it only with the image.
    std::fs::create_dir_all(env.path("ctx")).unwrap();
    std::fs::write(
        env.path("ctx/Dockerfile"),
        format!("FROM {name}\nENV CHANGED=1\n"),
    )
    .unwrap();
    let old_id = image["Id"].as_str().unwrap().to_string();
    env.ok(
        "a",
        &[
            "build",
            "-q",
            "-t",
            &name,
            env.path("ctx").to_str().unwrap(),
        ],
    );
    assert_eq!(repo_digests(&env.inspect("a", &name)), Vec::<String>::new());
    let changed = pushed_digest(&env.ok("a", &["push", &name]));
    assert_ne!(changed, digest);
    assert_eq!(
        repo_digests(&env.inspect("a", &name)),
        [format!("{}/x@{changed}", registry.host())]
    );
    assert_eq!(repo_digests(&env.inspect("a", &old_id)), [in_x, in_y]);
    // The record is no damage to fsck.
    let fsck = env.kiln("a", &["fsck"], None);
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stderr)
    );
    // Untagging keeps the digests while the image stays; removing it drops them.
    env.ok("a", &["tag", &old_id, "keep:1"]);
    env.ok("a", &["rmi", &other]);
    assert_eq!(repo_digests(&env.inspect("a", &old_id)).len(), 2);
    env.ok("a", &["rmi", "keep:1"]);
    assert!(
        env.fails("a", &["inspect", &old_id])
            .contains("no such image")
    );
    let index = std::fs::read_to_string(env.path("a").join("index.json")).unwrap();
    assert!(!index.contains(&digest), "{index}");
}

#[test]
fn pull_fetches_what_skopeo_pushed_and_only_what_is_missing() {
    let Some((env, registry)) = scenario(false, true) else {
        return;
    };
    let archive = env.base_archive();
    let name = format!("{}/base:1", registry.host());
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci-archive:{}", archive.display()),
        &format!("docker://{name}"),
    ]);
    let out = env.ok("b", &["pull", &name]);
    assert!(out.contains("Pull complete"), "{out}");
    assert!(out.contains(&format!("Status: Downloaded newer image for {name}")));
    assert_eq!(out.lines().last(), Some(name.as_str()));
    let pulled = env.inspect("b", &name);
    assert_eq!(pulled["Id"], env.inspect("a", "base:1")["Id"]);
    let base_digest = pulled_digest(&out);
    assert_eq!(
        repo_digests(&pulled),
        [format!("{}/base@{base_digest}", registry.host())]
    );

    // Everything present: nothing is fetched.
    let blobs = env.blob_count("b");
    let again = env.ok("b", &["pull", &name]);
    assert!(!again.contains("Pull complete"), "{again}");
    assert!(again.contains("Already exists"), "{again}");
    assert!(again.contains(&format!("Status: Image is up to date for {name}")));
    assert_eq!(env.blob_count("b"), blobs);
    assert_eq!(env.ok("b", &["pull", "-q", &name]).trim(), name);

    // A build on top, pushed: pulling it fetches its own layer and config, not the base's.
    std::fs::create_dir_all(env.path("ctx")).unwrap();
    std::fs::write(
        env.path("ctx/Dockerfile"),
        format!("FROM {name}\nLABEL built=yes\nENV A=1\n"),
    )
    .unwrap();
    let app = format!("{}/app:2", registry.host());
    let metadata = env.path("metadata.json");
    // The build pulls its base into a fresh store, then pushes.
    env.ok(
        "c",
        &[
            "build",
            "--progress=plain",
            "-t",
            &app,
            "--push",
            "--metadata-file",
            metadata.to_str().unwrap(),
            env.path("ctx").to_str().unwrap(),
        ],
    );
    let metadata = json(&std::fs::read(&metadata).unwrap());
    let remote = skopeo(&["inspect", "--tls-verify=false", &format!("docker://{app}")]);
    assert_eq!(
        json(remote.as_bytes())["Digest"],
        metadata["containerimage.digest"]
    );
    // The base pulled for the build and the pushed result both know where they came from.
    assert_eq!(
        repo_digests(&env.inspect("c", &name)),
        [format!("{}/base@{base_digest}", registry.host())]
    );
    assert_eq!(
        repo_digests(&env.inspect("c", &app)),
        [format!(
            "{}/app@{}",
            registry.host(),
            metadata["containerimage.digest"].as_str().unwrap()
        )]
    );
    let out = env.ok("b", &["pull", &app]);
    assert!(out.contains("Already exists"), "{out}");
    assert_eq!(
        out.matches("Pull complete").count(),
        1,
        "only the config: {out}"
    );
    assert_eq!(env.inspect("b", &app)["Config"]["Labels"]["built"], "yes");

    // The base moves on in the registry; store "b" still has the old one. A build uses the
    // store's, unless --pull asks the registry.
    env.ok("c", &["tag", &app, &name]);
    env.ok("c", &["push", &name]);
    std::fs::write(
        env.path("ctx/Dockerfile"),
        format!("FROM {name}\nENV B=2\n"),
    )
    .unwrap();
    let ctx = env.path("ctx");
    let build = |extra: &[&str]| {
        let mut args = vec!["build", "-q"];
        args.extend_from_slice(extra);
        args.push(ctx.to_str().unwrap());
        let id = env.ok("b", &args).trim().to_string();
        env.inspect("b", &id)["Config"]["Labels"]["built"].clone()
    };
    assert_eq!(build(&[]), serde_json::Value::Null);
    assert_eq!(build(&["--pull"]), "yes");

    // COPY --from an image the store does not have pulls it too.
    std::fs::write(
        env.path("ctx/Dockerfile"),
        format!("FROM scratch\nCOPY --from={name} /bin/busybox /busybox\n"),
    )
    .unwrap();
    let id = env.ok("d", &["build", "-q", ctx.to_str().unwrap()]);
    assert_eq!(
        env.inspect("d", id.trim())["RootFS"]["Layers"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert!(
        env.ok("d", &["images"])
            .contains(&format!("{}/base", registry.host()))
    );
}

#[test]
fn docker_hub_names_are_pulled_through_a_mirror() {
    let Some((env, mirror)) = scenario(false, false) else {
        return;
    };
    // The mirror holds library/alpine, as a pull-through cache of Docker Hub would.
    let on_mirror = format!("{}/library/alpine:latest", mirror.host());
    env.import("a", &on_mirror);
    env.ok("a", &["push", &on_mirror]);
    std::fs::write(
        env.path("kiln-config.json"),
        format!(r#"{{"registry-mirrors": ["http://{}"]}}"#, mirror.host()),
    )
    .unwrap();

    let out = env.ok("b", &["pull", "alpine"]);
    assert!(out.starts_with("Using default tag: latest\n"), "{out}");
    assert!(
        out.ends_with("\ndocker.io/library/alpine:latest\n"),
        "{out}"
    );
    let id = env.inspect("a", &on_mirror)["Id"].clone();
    // Tagged under the full name, found by the short one as well.
    for reference in [
        "docker.io/library/alpine:latest",
        "alpine",
        "library/alpine:latest",
    ] {
        assert_eq!(env.inspect("b", reference)["Id"], id, "{reference}");
    }
    let images = env.ok("b", &["images"]);
    assert!(images.contains("docker.io/library/alpine"), "{images}");
}

/// An OCI layout at `dir` whose tag `multi` is an index of the busybox image for this machine
/// and the same layers with `other_arch` in its config.
fn multi_platform_layout(env: &Env, dir: &Path, other_arch: &str) -> (String, String) {
    let archive = env.base_archive();
    std::fs::create_dir_all(dir).unwrap();
    let status = Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
    let blobs = dir.join("blobs/sha256");
    let write = |bytes: &[u8]| {
        let digest = sha256(bytes);
        std::fs::write(blobs.join(&digest["sha256:".len()..]), bytes).unwrap();
        digest
    };
    let read = |digest: &str| std::fs::read(blobs.join(&digest["sha256:".len()..])).unwrap();
    let index = json(&std::fs::read(dir.join("index.json")).unwrap());
    let native_desc = index["manifests"][0].clone();
    let native_digest = native_desc["digest"].as_str().unwrap().to_string();
    let mut manifest = json(&read(&native_digest));
    let mut config = json(&read(manifest["config"]["digest"].as_str().unwrap()));
    config["architecture"] = other_arch.into();
    let config_bytes = serde_json::to_vec(&config).unwrap();
    manifest["config"]["digest"] = write(&config_bytes).into();
    manifest["config"]["size"] = config_bytes.len().into();
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    let other_digest = write(&manifest_bytes);
    let entry = |digest: &str, size: u64, arch: &str| {
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest, "size": size,
            "platform": {"os": "linux", "architecture": arch}
        })
    };
    let multi = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            entry(&native_digest, native_desc["size"].as_u64().unwrap(), native_arch()),
            entry(&other_digest, manifest_bytes.len() as u64, other_arch),
        ]
    });
    let multi_bytes = serde_json::to_vec(&multi).unwrap();
    let multi_digest = write(&multi_bytes);
    let layout_index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": multi_digest, "size": multi_bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": "multi"}
        }]
    });
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&layout_index).unwrap(),
    )
    .unwrap();
    (native_digest, other_digest)
}

#[test]
fn a_multi_platform_image_is_pulled_for_the_platform_asked() {
    let Some((env, registry)) = scenario(false, true) else {
        return;
    };
    let other_arch = if native_arch() == "arm64" {
        "s390x"
    } else {
        "arm64"
    };
    let layout = env.path("layout");
    let (native, other) = multi_platform_layout(&env, &layout, other_arch);
    let name = format!("{}/multi:1", registry.host());
    skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci:{}:multi", layout.display()),
        &format!("docker://{name}"),
    ]);

    let out = env.ok("b", &["pull", &name]);
    let image = env.inspect("b", &name);
    assert_eq!(image["Architecture"], native_arch());
    assert_eq!(image["Descriptor"]["digest"], native.as_str());
    // RepoDigests name the index the registry served, as docker's do.
    let index_digest = pulled_digest(&out);
    assert_ne!(index_digest, native);
    assert_eq!(
        repo_digests(&image),
        [format!("{}/multi@{index_digest}", registry.host())]
    );

    env.ok(
        "c",
        &["pull", "--platform", &format!("linux/{other_arch}"), &name],
    );
    let image = env.inspect("c", &name);
    assert_eq!(image["Architecture"], other_arch);
    assert_eq!(image["Descriptor"]["digest"], other.as_str());

    let err = env.fails("d", &["pull", "--platform", "linux/mips64le", &name]);
    assert!(err.contains("no image for linux/mips64le"), "{err}");
    assert!(
        err.contains(&format!("linux/{}", native_arch()))
            && err.contains(&format!("linux/{other_arch}")),
        "{err}"
    );
    assert!(err.contains("hint: "), "{err}");
    assert_eq!(env.ok("d", &["images", "-q"]).trim(), "");

    // Pushed back to that repository alone, the image is the platform's manifest there: the
    // repository's entry is replaced, not doubled.
    let pushed = pushed_digest(&env.ok("b", &["push", &name]));
    assert_eq!(pushed, native);
    assert_eq!(
        repo_digests(&env.inspect("b", &name)),
        [format!("{}/multi@{native}", registry.host())]
    );
}

#[test]
fn login_and_logout_with_basic_auth() {
    let Some((env, registry)) = scenario(true, false) else {
        return;
    };
    let host = registry.host();
    let name = format!("{host}/private:1");
    env.import("a", &name);

    let err = env.fails("a", &["push", &name]);
    assert!(err.contains("authentication"), "{err}");
    assert!(
        err.contains(&format!("hint: log in with `kiln login {host}`")),
        "{err}"
    );

    let wrong = env.kiln(
        "a",
        &["login", "-u", "user", "--password-stdin", &host],
        Some("nope\n"),
    );
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        !env.docker_config().exists(),
        "refused credentials are not saved"
    );

    let login = env.kiln(
        "a",
        &["login", "-u", "user", "--password-stdin", &host],
        Some("secret\n"),
    );
    let stdout = String::from_utf8_lossy(&login.stdout);
    assert!(
        login.status.success(),
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );
    assert_eq!(stdout, "Login Succeeded\n");
    let config = json(&std::fs::read(env.docker_config()).unwrap());
    // base64("user:secret")
    assert_eq!(config["auths"][&host]["auth"], "dXNlcjpzZWNyZXQ=");

    env.ok("a", &["push", &name]);
    env.ok("b", &["pull", &name]);
    assert_eq!(env.inspect("b", &name)["Id"], env.inspect("a", &name)["Id"]);

    let out = env.ok("a", &["logout", &host]);
    assert_eq!(out, format!("Removing login credentials for {host}\n"));
    let config = json(&std::fs::read(env.docker_config()).unwrap());
    assert!(config["auths"].get(&host).is_none(), "{config}");
    assert_eq!(
        env.ok("a", &["logout", &host]),
        format!("Not logged in to {host}\n")
    );
    env.fails("c", &["pull", &name]);
}

/// A credential helper (`docker-credential-file`) keeping one credential in `DIR/secret.json`.
const FILE_HELPER: &str = r#"#!/bin/sh
dir=$(dirname "$0")
case "$1" in
  store) cat > "$dir/secret.json" ;;
  get) read server; if [ -f "$dir/secret.json" ]; then cat "$dir/secret.json"; else echo "credentials not found in native keychain"; exit 1; fi ;;
  erase) read server; rm -f "$dir/secret.json" ;;
esac
"#;

#[test]
fn login_uses_the_configured_credential_store() {
    use std::os::unix::fs::PermissionsExt;
    let Some((env, registry)) = scenario(true, false) else {
        return;
    };
    let host = registry.host();
    let bin = env.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-file");
    std::fs::write(&helper, FILE_HELPER).unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(env.path("docker")).unwrap();
    std::fs::write(env.docker_config(), r#"{"credsStore": "file"}"#).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let kiln = |root: &str, args: &[&str], stdin: Option<&str>| {
        let mut command = support::kiln_command(&env.path(root), args);
        command
            .env("DOCKER_CONFIG", env.path("docker"))
            .env("KILN_CONFIG", env.path("kiln-config.json"))
            .env("PATH", &path);
        let out = support::output_with_stdin(&mut command, stdin.unwrap_or("").as_bytes());
        assert!(
            out.status.success(),
            "kiln {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let name = format!("{host}/kept:1");
    env.import("a", &name);
    let out = kiln(
        "a",
        &["login", "-u", "user", "--password-stdin", &host],
        Some("secret"),
    );
    assert_eq!(out, "Login Succeeded\n");
    let stored = json(&std::fs::read(bin.join("secret.json")).unwrap());
    assert_eq!(stored["ServerURL"], host.as_str());
    assert_eq!(stored["Username"], "user");
    assert_eq!(stored["Secret"], "secret");
    let config = std::fs::read_to_string(env.docker_config()).unwrap();
    assert!(
        !config.contains("auths"),
        "the password stays out of the file: {config}"
    );

    // The helper's credential is what push and pull use.
    kiln("a", &["push", &name], None);
    kiln("b", &["pull", &name], None);
    let out = kiln("a", &["logout", &host], None);
    assert_eq!(out, format!("Removing login credentials for {host}\n"));
    assert!(!bin.join("secret.json").exists());
}

/// What kiln showed on a terminal, typed answers included, and its exit status.
struct Terminal {
    shown: String,
    status: Option<i32>,
    /// Whether the terminal echoed input again once kiln was done (`stty -a` run after it).
    echo_after: bool,
}

/// `kiln --root ROOT ARGS…` on a pseudo-terminal from script(1), with the [`Env`]'s config
/// files: each `(prompt, keys)` types `keys` once `prompt` has shown (after the previous one),
/// so nothing is typed before kiln has turned the echo off. `stty -a` runs after kiln on the
/// same terminal, to see the settings kiln left. `None` (skip) without script(1).
fn on_a_terminal(env: &Env, root: &str, args: &[&str], typed: &[(&str, &str)]) -> Option<Terminal> {
    use std::io::Read;
    use std::process::Stdio;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    if !require(
        have_tool("script"),
        "script(1) from util-linux, for a terminal",
    ) {
        return None;
    }
    let quote = |arg: &str| format!("'{}'", arg.replace('\'', r"'\''"));
    let mut line = vec![
        quote(support::KILN),
        "--root".into(),
        quote(env.path(root).to_str().unwrap()),
    ];
    line.extend(args.iter().map(|a| quote(a)));
    // The shell ignores nothing, so kiln gets Ctrl-C's SIGINT with its default disposition; the
    // trap only keeps the shell itself going to report.
    let inner = format!(
        "trap 'echo interrupted' INT; {}; echo \"status=$?\"; stty -a",
        line.join(" ")
    );
    // CI runs without SHELL; script(1) runs `$SHELL -c`.
    let mut child = Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .env("SHELL", "/bin/sh")
        .env("DOCKER_CONFIG", env.path("docker"))
        .env("KILN_CONFIG", env.path("kiln-config.json"))
        .env("HOME", env.dir.path())
        .env_remove("KILN_ROOT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting script(1)");
    let shown = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = child.stdout.take().unwrap();
    let reader = {
        let shown = Arc::clone(&shown);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                shown.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let text = |shown: &Mutex<Vec<u8>>| String::from_utf8_lossy(&shown.lock().unwrap()).to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut keyboard = child.stdin.take().unwrap();
    let mut seen = 0;
    for (prompt, keys) in typed {
        loop {
            let now = text(&shown);
            if let Some(at) = now[seen..].find(prompt) {
                seen += at + prompt.len();
                break;
            }
            if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no {prompt:?} on the terminal; it showed:\n{now}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        keyboard.write_all(keys.as_bytes()).unwrap();
        keyboard.flush().unwrap();
    }
    let exited = wait_until(&mut child, deadline, || {
        format!(
            "kiln did not finish; the terminal showed:\n{}",
            text(&shown)
        )
    });
    drop(keyboard);
    reader.join().unwrap();
    let shown = text(&shown);
    assert!(exited.success(), "stty failed after kiln: {shown}");
    let status = shown
        .lines()
        .find_map(|l| l.trim().strip_prefix("status="))
        .and_then(|s| s.parse().ok());
    let stty = &shown[shown.rfind("status=").unwrap_or(0)..];
    let echo_after = stty.split_whitespace().any(|w| w == "echo")
        && !stty.split_whitespace().any(|w| w == "-echo");
    Some(Terminal {
        shown,
        status,
        echo_after,
    })
}

#[test]
fn login_asks_on_a_terminal_without_echoing_the_password() {
    let Some(registry) = Registry::start(true) else {
        return;
    };
    let env = Env {
        dir: tempfile::tempdir().unwrap(),
    };
    let host = registry.host();
    let Some(first) = on_a_terminal(
        &env,
        "a",
        &["login", &host],
        &[("Username: ", "user\n"), ("Password: ", "secret\n")],
    ) else {
        return;
    };
    assert_eq!(first.status, Some(0), "{}", first.shown);
    assert!(first.shown.contains("Username: user"), "{}", first.shown);
    assert!(first.shown.contains("Login Succeeded"), "{}", first.shown);
    assert!(!first.shown.contains("secret"), "echoed: {}", first.shown);
    assert!(first.echo_after, "echo left off: {}", first.shown);
    let config = json(&std::fs::read(env.docker_config()).unwrap());
    // base64("user:secret")
    assert_eq!(config["auths"][&host]["auth"], "dXNlcjpzZWNyZXQ=");

    // The stored username is offered and an empty answer keeps it; a refused password leaves
    // the terminal as it was, and the stored credentials too.
    let refused = on_a_terminal(
        &env,
        "a",
        &["login", &host],
        &[("Username (user): ", "\n"), ("Password: ", "wrong\n")],
    )
    .unwrap();
    assert_eq!(refused.status, Some(1), "{}", refused.shown);
    assert!(
        !refused.shown.contains("wrong"),
        "echoed: {}",
        refused.shown
    );
    assert!(refused.echo_after, "echo left off: {}", refused.shown);
    let config = json(&std::fs::read(env.docker_config()).unwrap());
    assert_eq!(config["auths"][&host]["auth"], "dXNlcjpzZWNyZXQ=");

    // Ctrl-C at the password prompt ends kiln by SIGINT with the echo back on.
    let interrupted = on_a_terminal(
        &env,
        "a",
        &["docker", "login", "-u", "user", &host],
        &[("Password: ", "sec\x03")],
    )
    .unwrap();
    assert_eq!(interrupted.status, Some(130), "{}", interrupted.shown);
    assert!(
        !interrupted.shown.contains("sec"),
        "echoed: {}",
        interrupted.shown
    );
    assert!(
        interrupted.echo_after,
        "echo left off: {}",
        interrupted.shown
    );
}

#[test]
fn login_without_a_terminal_needs_username_and_password() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let mut command = support::kiln_command(&dir.path().join("root"), args);
        command
            .env("DOCKER_CONFIG", dir.path().join("docker"))
            .env("HOME", dir.path());
        let out = support::output_with_stdin(&mut command, b"secret\n");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let no_tty = "Cannot perform an interactive login from a non TTY device";
    for args in [
        &["login", "127.0.0.1:1"][..],
        &["login", "-u", "user", "127.0.0.1:1"],
        &["login", "-p", "secret", "127.0.0.1:1"],
        &["docker", "login", "127.0.0.1:1"],
    ] {
        let (code, stderr) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with(&format!("error: {no_tty}\n")),
            "{args:?}: {stderr}"
        );
    }
    for args in [
        &["login", "--password-stdin", "127.0.0.1:1"][..],
        &["docker", "login", "--password-stdin", "127.0.0.1:1"],
    ] {
        let (code, stderr) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("error: Must provide --username with --password-stdin"),
            "{args:?}: {stderr}"
        );
    }
    assert!(!dir.path().join("docker").exists());
}

#[test]
fn a_tampered_blob_is_refused_and_nothing_is_stored() {
    let Some((env, registry)) = scenario(false, false) else {
        return;
    };
    let name = format!("{}/t:1", registry.host());
    env.import("a", &name);
    env.ok("a", &["push", &name]);
    let digest = env.inspect("a", &name)["Descriptor"]["digest"].clone();
    let manifest = json(&env.blob("a", digest.as_str().unwrap()));
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let file = registry.blob_file(&layer);
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();

    let err = env.fails("b", &["pull", &name]);
    assert!(err.contains(&format!("blob {layer}")), "{err}");
    assert!(err.to_lowercase().contains("digest"), "{err}");
    assert_eq!(env.ok("b", &["images", "-q"]).trim(), "");
    let hex = &layer["sha256:".len()..];
    assert!(!env.path("b/blobs/sha256").join(hex).exists());
}

/// A server that answers every request from `answer(path)` (raw HTTP response bytes).
fn hostile_server(answer: fn(&str, u16) -> Vec<u8>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .to_string();
            let _ = stream.write_all(&answer(&path, port));
            let _ = stream.flush();
        }
    });
    port
}

fn response(status: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

fn hostile(path: &str, port: u16) -> Vec<u8> {
    let ok = |body: &[u8]| {
        response(
            "200 OK",
            &[
                (
                    "Content-Type",
                    "application/vnd.oci.image.manifest.v1+json".into(),
                ),
                ("Content-Length", body.len().to_string()),
            ],
            body,
        )
    };
    let fake = |c: char| format!("sha256:{}", c.to_string().repeat(64));
    match path {
        "/v2/" => ok(b"{}"),
        "/v2/big/manifests/1" => ok(&vec![b' '; 5 << 20]),
        "/v2/loop/manifests/1" => response(
            "302 Found",
            &[
                (
                    "Location",
                    format!("http://127.0.0.1:{port}/v2/loop/manifests/1"),
                ),
                ("Content-Length", "0".into()),
            ],
            b"",
        ),
        "/v2/broken/manifests/1" => response(
            "500 Internal Server Error",
            &[("Content-Length", "4".into())],
            b"boom",
        ),
        "/v2/short/manifests/1" => {
            let manifest = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": fake('c'), "size": 1000},
                "layers": []
            });
            ok(&serde_json::to_vec(&manifest).unwrap())
        }
        // 1000 bytes promised, 500 sent.
        p if p.starts_with("/v2/short/blobs/") => {
            response("200 OK", &[("Content-Length", "1000".into())], &[b'x'; 500])
        }
        _ => response("404 Not Found", &[("Content-Length", "0".into())], b""),
    }
}

#[test]
fn hostile_registry_answers_are_clear_errors_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env { dir };
    let port = hostile_server(hostile);
    let host = format!("127.0.0.1:{port}");
    for (repo, expected) in [
        ("big", "manifests are at most 4194304"),
        ("loop", "redirect"),
        ("broken", "500"),
        ("short", "after 500 of its 1000 bytes"),
    ] {
        let err = env.fails("s", &["pull", &format!("{host}/{repo}:1")]);
        assert!(err.contains(expected), "{repo}: {err}");
        assert!(err.starts_with("error: "), "{repo}: {err}");
        assert_eq!(env.ok("s", &["images", "-q"]).trim(), "", "{repo}");
        assert_eq!(env.blob_count("s"), 0, "{repo}");
    }
}

#[test]
fn build_cache_travels_through_the_registry() {
    let Some((env, registry)) = scenario(false, false) else {
        return;
    };
    // Both stores take the base from the registry, so its image id is the same in both.
    let base = format!("{}/base:1", registry.host());
    env.import("seed", &base);
    env.ok("seed", &["push", "-q", &base]);

    let ctx = env.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("a.txt"), "a\n").unwrap();
    // Each RUN leaves a timestamp: a step that ran again would give another image.
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {base} AS tool\nRUN date +%s%N > /tool-stamp\n\
             FROM {base}\nCOPY --from=tool /tool-stamp /\nCOPY a.txt /\n\
             RUN date +%s%N > /stamp && cat /a.txt >> /stamp\n"
        ),
    )
    .unwrap();
    let cache = format!("{}/app:buildcache", registry.host());
    let ctx_arg = ctx.to_str().unwrap();
    let first = env.ok(
        "a",
        &[
            "build",
            "-q",
            "--cache-to",
            &format!("type=registry,ref={cache},mode=max"),
            ctx_arg,
        ],
    );
    let manifest = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{cache}"),
    ]);
    assert!(
        manifest.contains("application/vnd.kiln.cache.config.v1+json"),
        "{manifest}"
    );

    // A fresh store: every step comes from the registry's cache, nothing runs.
    let out = env.kiln(
        "b",
        &["build", "--progress=plain", "--cache-from", &cache, ctx_arg],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), first.trim());
    assert!(stderr.contains("CACHED"), "{stderr}");
    assert!(!stderr.contains("date +%s%N > /stamp\n#"), "{stderr}");

    // An edit reruns only what depends on it: the tool stage still comes from the cache.
    std::fs::write(ctx.join("a.txt"), "changed\n").unwrap();
    let edited = env.ok("c", &["build", "-q", "--cache-from", &cache, ctx_arg]);
    assert_ne!(edited.trim(), first.trim());
    let stamp_a = env.ok("a", &["run", "--rm", first.trim(), "cat", "/tool-stamp"]);
    let stamp_c = env.ok("c", &["run", "--rm", edited.trim(), "cat", "/tool-stamp"]);
    assert_eq!(stamp_a, stamp_c);
}

#[test]
fn run_pulls_an_image_it_does_not_have() {
    let Some((env, registry)) = scenario(false, false) else {
        return;
    };
    let name = format!("{}/tools:1", registry.host());
    env.import("seed", &name);
    env.ok("seed", &["push", "-q", &name]);

    // `--pull never` keeps to the store, as docker's does.
    let never = env.kiln(
        "fresh",
        &["run", "--rm", "--pull", "never", &name, "true"],
        None,
    );
    assert_eq!(never.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&never.stderr).contains("no such image"));

    // Missing: pulled first, with the pull's messages on stderr; stdout is the container's.
    let out = env.kiln("fresh", &["run", "--rm", &name, "echo", "hello"], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    assert!(
        stderr.contains(&format!("Unable to find image '{name}' locally")),
        "{stderr}"
    );
    assert!(stderr.contains("Pull complete"), "{stderr}");
    assert_eq!(
        env.inspect("fresh", &name)["Id"],
        env.inspect("seed", &name)["Id"]
    );
    assert_eq!(
        repo_digests(&env.inspect("fresh", &name)),
        repo_digests(&env.inspect("seed", &name))
    );

    // Present: nothing is pulled.
    let again = env.kiln("fresh", &["run", "--rm", &name, "true"], None);
    assert!(again.status.success());
    assert!(!String::from_utf8_lossy(&again.stderr).contains("Pulling"));
}
