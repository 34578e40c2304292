//! The store commands end to end: the built `kiln` binary against a temporary `--root`, with the
//! busybox root filesystem from `testdata/busybox-rootfs.sh`, checked with skopeo and umoci.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::{KILN, have_tool, is_root, require};

struct Env {
    dir: tempfile::TempDir,
    tar: PathBuf,
}

impl Env {
    /// A temp dir with the busybox rootfs tar, or `None` (skip) when the fixture cannot be made.
    fn new() -> Option<Env> {
        let dir = tempfile::tempdir().unwrap();
        let tar = dir.path().join("busybox.tar");
        if !support::busybox_tar(&tar) {
            return None;
        }
        Some(Env { dir, tar })
    }

    fn root(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn kiln(root: &Path, args: &[&str]) -> Output {
    support::kiln_command(root, args).output().unwrap()
}

/// Runs kiln and returns stdout, failing the test with stderr when it does not succeed.
fn ok(root: &Path, args: &[&str]) -> String {
    let out = kiln(root, args);
    assert!(
        out.status.success(),
        "kiln {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn inspect(root: &Path, name: &str) -> serde_json::Value {
    let text = ok(root, &["inspect", name]);
    let mut all: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(all.len(), 1);
    all.remove(0)
}

/// What `skopeo inspect TARGET` reports (`oci:DIR:TAG`, `docker-archive:FILE`, …).
fn skopeo_inspect(target: &str) -> serde_json::Value {
    let out = Command::new("skopeo")
        .arg("inspect")
        .arg(target)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect {target}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sha256_of(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    format!("sha256:{}", text.split_whitespace().next().unwrap())
}

fn blob_count(root: &Path) -> usize {
    std::fs::read_dir(root.join("blobs/sha256"))
        .unwrap()
        .count()
}

fn import_busybox(env: &Env, root: &Path) -> String {
    let id = ok(root, &["import", env.tar.to_str().unwrap(), "busybox"]);
    id.trim().to_string()
}

#[test]
fn import_list_inspect_tag_history() {
    let Some(env) = Env::new() else { return };
    let root = env.root("store");
    let id = import_busybox(&env, &root);
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");

    let images = ok(&root, &["images"]);
    let mut lines = images.lines();
    let header = lines.next().unwrap();
    for column in ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"] {
        assert!(header.contains(column), "{header}");
    }
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(&row[..3], &["busybox", "latest", &id[7..19]]);

    let info = inspect(&root, "busybox");
    assert_eq!(info["Id"], id.as_str());
    assert_eq!(info["RepoTags"], serde_json::json!(["busybox:latest"]));
    assert_eq!(info["Os"], "linux");
    assert_eq!(info["RootFS"]["Type"], "layers");
    // The layer's diff-id is the sha256 of the very tar we imported.
    assert_eq!(info["RootFS"]["Layers"][0], sha256_of(&env.tar).as_str());
    assert!(info["Size"].as_u64().unwrap() > 100_000);

    ok(&root, &["tag", "busybox", "app:1"]);
    assert_eq!(inspect(&root, "app:1")["Id"], id.as_str());
    assert_eq!(inspect(&root, &id[7..15])["Id"], id.as_str());
    let json = ok(&root, &["images", "--format", "json"]);
    let tags: Vec<String> = json
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!(
                "{}:{}",
                v["Repository"].as_str().unwrap(),
                v["Tag"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(tags, vec!["app:1", "busybox:latest"]);

    let history = ok(&root, &["history", "app:1"]);
    assert!(history.starts_with("IMAGE"), "{history}");
    assert!(history.contains(&id[7..19]), "{history}");
    assert!(history.contains("Imported from"), "{history}");

    // The same tar imported again (reproducible timestamp) is the same image.
    let again = Command::new(KILN)
        .arg("--root")
        .arg(env.root("other"))
        .args(["import", "-", "again"])
        .env("SOURCE_DATE_EPOCH", "0")
        .stdin(std::fs::File::open(&env.tar).unwrap())
        .output()
        .unwrap();
    let first = Command::new(KILN)
        .arg("--root")
        .arg(env.root("third"))
        .args(["import", env.tar.to_str().unwrap(), "x"])
        .env("SOURCE_DATE_EPOCH", "0")
        .output()
        .unwrap();
    assert!(again.status.success() && first.status.success());
    // The history comment names the source, so compare the layer instead of the id.
    let a = inspect(&env.root("other"), "again");
    let b = inspect(&env.root("third"), "x");
    assert_eq!(a["RootFS"], b["RootFS"]);
    assert_eq!(a["Created"], "1970-01-01T00:00:00Z");
}

#[test]
fn import_takes_a_directory_deterministically() {
    let Some(env) = Env::new() else { return };
    let tree = env.path("rootfs");
    assert!(support::busybox_rootfs(&tree));
    let import_into = |store: &str| {
        let out = Command::new(KILN)
            .arg("--root")
            .arg(env.root(store))
            .args(["import", tree.to_str().unwrap(), "fromdir:1"])
            .env("SOURCE_DATE_EPOCH", "0")
            .env_remove("KILN_ROOT")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let first = import_into("a");
    assert_eq!(
        first,
        import_into("b"),
        "the same tree must give the same image"
    );

    // The layer holds the tree: save it and list the layer with GNU tar.
    let saved = env.path("fromdir.tar");
    ok(
        &env.root("a"),
        &["save", "fromdir:1", "-o", saved.to_str().unwrap()],
    );
    let unpacked = env.path("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    let status = Command::new("tar")
        .arg("-xf")
        .arg(&saved)
        .arg("-C")
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(status.success());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(unpacked.join("manifest.json")).unwrap()).unwrap();
    let layers = manifest[0]["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    let listing = Command::new("tar")
        .arg("-tvf")
        .arg(unpacked.join(layers[0].as_str().unwrap()))
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.contains("bin/busybox"), "{listing}");
    assert!(listing.contains("bin/sh -> busybox"), "{listing}");
    assert!(listing.contains("etc/passwd"), "{listing}");
}

#[test]
fn import_refuses_bad_names() {
    let Some(env) = Env::new() else { return };
    let root = env.root("store");
    let out = kiln(&root, &["import", env.tar.to_str().unwrap(), "Bad Name"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid reference"));
    let out = kiln(&root, &["inspect", "missing"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn save_and_load_keep_digests() {
    let Some(env) = Env::new() else { return };
    let root = env.root("store");
    import_busybox(&env, &root);
    let original = inspect(&root, "busybox");
    for format in ["docker", "oci"] {
        let archive = env.path(&format!("busybox-{format}.tar"));
        ok(
            &root,
            &[
                "save",
                "busybox",
                "-o",
                archive.to_str().unwrap(),
                "--format",
                format,
            ],
        );
        let fresh = env.root(&format!("fresh-{format}"));
        let loaded = ok(&fresh, &["load", "-i", archive.to_str().unwrap()]);
        assert_eq!(loaded, "Loaded image: busybox:latest\n");
        let copy = inspect(&fresh, "busybox:latest");
        assert_eq!(copy["Id"], original["Id"], "{format}");
        assert_eq!(
            copy["Descriptor"]["digest"], original["Descriptor"]["digest"],
            "{format}"
        );
        assert!(ok(&fresh, &["fsck"]).contains("store is consistent"));
    }
    let docker = env.path("busybox-docker.tar");
    let listing = Command::new("tar").arg("tf").arg(&docker).output().unwrap();
    let names = String::from_utf8(listing.stdout).unwrap();
    assert!(names.lines().any(|l| l == "manifest.json"), "{names}");
    assert!(names.lines().any(|l| l == "repositories"), "{names}");
    assert!(names.lines().any(|l| l.ends_with("/layer.tar")), "{names}");

    // `docker load` needs a daemon, which is not running here; podman loads both formats
    // without one (vfs storage: nothing is mounted), and must see the same image id.
    if require(have_tool("podman"), "podman") {
        for format in ["docker", "oci"] {
            let podman = |args: &[&str]| {
                let out = Command::new("podman")
                    .arg("--root")
                    .arg(env.path("podman-root"))
                    .arg("--runroot")
                    .arg(env.path("podman-run"))
                    .args(["--storage-driver", "vfs"])
                    .args(args)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "podman {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8(out.stdout).unwrap()
            };
            let archive = env.path(&format!("busybox-{format}.tar"));
            podman(&["load", "-i", archive.to_str().unwrap()]);
            let ids = podman(&["images", "--no-trunc", "--format", "{{.ID}}"]);
            let id = original["Id"].as_str().unwrap();
            assert!(
                ids.lines()
                    .any(|l| id.ends_with(l.trim_start_matches("sha256:"))),
                "{format}: podman sees {ids:?}, kiln wrote {id}"
            );
        }
    }

    // skopeo reads docker-archives as docker and podman do.
    if require(have_tool("skopeo"), "skopeo") {
        let info = skopeo_inspect(&format!("docker-archive:{}", docker.display()));
        assert_eq!(info["Layers"].as_array().unwrap().len(), 1);
        assert_eq!(info["Layers"][0], original["RootFS"]["Layers"][0]);
    }

    // stdin works for load, and a gzipped archive is accepted.
    let gz = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -c {} > {}.gz",
            docker.display(),
            docker.display()
        ))
        .status()
        .unwrap();
    assert!(gz.success());
    let piped = Command::new(KILN)
        .arg("--root")
        .arg(env.root("piped"))
        .arg("load")
        .stdin(std::fs::File::open(env.path("busybox-docker.tar.gz")).unwrap())
        .output()
        .unwrap();
    assert!(
        piped.status.success(),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );
    assert_eq!(inspect(&env.root("piped"), "busybox")["Id"], original["Id"]);
}

#[test]
fn rmi_and_prune_empty_the_store() {
    let Some(env) = Env::new() else { return };
    let root = env.root("store");
    import_busybox(&env, &root);
    ok(&root, &["tag", "busybox", "keep:1"]);
    assert_eq!(blob_count(&root), 3);
    let out = ok(&root, &["rmi", "busybox"]);
    assert_eq!(out, "Untagged: busybox:latest\n");
    ok(&root, &["prune"]);
    assert_eq!(blob_count(&root), 3, "keep:1 still needs every blob");
    let out = ok(&root, &["rmi", "keep:1"]);
    assert!(
        out.contains("Untagged: keep:1") && out.contains("Deleted: sha256:"),
        "{out}"
    );
    let out = ok(&root, &["prune", "--keep-storage", "1GB"]);
    assert!(out.contains("Total reclaimed space"), "{out}");
    assert_eq!(blob_count(&root), 0);
    assert_eq!(ok(&root, &["images", "-q"]), "");

    // A dangling image (its tag moved) is listed as <none> and pruned.
    import_busybox(&env, &root);
    let tar2 = env.path("other.tar");
    let made = Command::new("tar")
        .arg("-cf")
        .arg(&tar2)
        .arg("-C")
        .arg(env.dir.path())
        .arg("busybox.tar")
        .status()
        .unwrap();
    assert!(made.success());
    ok(&root, &["import", tar2.to_str().unwrap(), "busybox"]);
    assert!(ok(&root, &["images"]).contains("<none>"));
    let out = ok(&root, &["prune"]);
    assert!(out.contains("Deleted Images"), "{out}");
    assert!(!ok(&root, &["images"]).contains("<none>"));
    assert_eq!(blob_count(&root), 3);
}

#[test]
fn fsck_passes_after_a_killed_import_and_catches_corruption() {
    let Some(env) = Env::new() else { return };
    let root = env.root("store");
    import_busybox(&env, &root);
    let mut child = Command::new(KILN)
        .arg("--root")
        .arg(&root)
        .args(["import", "-", "killed"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let data = std::fs::read(&env.tar).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&data[..data.len() / 2]).unwrap();
    stdin.flush().unwrap();
    // Wait until the import has started writing its partial layer, then SIGKILL it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let tmp = root.join("tmp");
    loop {
        let busy = std::fs::read_dir(&tmp)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .any(|d| std::fs::read_dir(d.path()).is_ok_and(|mut f| f.next().is_some()));
        if busy || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    assert!(
        std::fs::read_dir(&tmp).unwrap().count() > 0,
        "the killed import left no debris"
    );

    let out = ok(&root, &["fsck"]);
    assert!(out.contains("store is consistent"), "{out}");
    // fsck's own open swept the dead process's files; fsck then cleaned up after itself.
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    assert!(!ok(&root, &["images"]).contains("killed"));

    // Corrupt the layer: reads and fsck notice; --repair removes the damaged image.
    let info = inspect(&root, "busybox");
    let manifest = info["Descriptor"]["digest"].as_str().unwrap().to_string();
    let manifest_path = root.join("blobs/sha256").join(&manifest[7..]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let layer_path = root.join("blobs/sha256").join(&layer[7..]);
    let mut bytes = std::fs::read(&layer_path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&layer_path, &bytes).unwrap();

    let out = kiln(
        &root,
        &["save", "busybox", "-o", env.path("x.tar").to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("corrupt"));
    assert!(
        !env.path("x.tar").exists(),
        "a failed save must not leave an archive"
    );

    let out = kiln(&root, &["fsck"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("corrupt: {layer}")), "{text}");
    assert!(text.contains("broken image: busybox:latest"), "{text}");
    let out = ok(&root, &["fsck", "--repair"]);
    assert!(out.contains("repaired:"), "{out}");
    assert!(ok(&root, &["fsck"]).contains("store is consistent"));
    assert_eq!(ok(&root, &["images", "-q"]), "");
}

#[test]
fn hostile_archives_are_refused() {
    let Some(env) = Env::new() else { return };
    let root = env.root("store");
    let evil = env.path("evil");
    std::fs::create_dir(&evil).unwrap();
    std::fs::write(
        evil.join("manifest.json"),
        r#"[{"Config":"../../../etc/passwd","RepoTags":["evil:1"],"Layers":[]}]"#,
    )
    .unwrap();
    let archive = env.path("evil.tar");
    let made = Command::new("tar")
        .arg("-cf")
        .arg(&archive)
        .arg("-C")
        .arg(&evil)
        .arg("manifest.json")
        .status()
        .unwrap();
    assert!(made.success());
    let out = kiln(&root, &["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'..'"), "{err}");
    let out = kiln(&root, &["load", "-i", env.tar.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an image archive"));
    assert!(ok(&root, &["fsck"]).contains("store is consistent"));
}

#[test]
fn other_oci_tools_read_the_store() {
    let Some(env) = Env::new() else { return };
    let root = env.root("store");
    import_busybox(&env, &root);
    let info = inspect(&root, "busybox");
    if require(have_tool("skopeo"), "skopeo") {
        let seen = skopeo_inspect(&format!("oci:{}:busybox:latest", root.display()));
        assert_eq!(seen["Digest"], info["Descriptor"]["digest"]);
        assert_eq!(seen["Architecture"], info["Architecture"]);
    }
    if require(have_tool("umoci"), "umoci") {
        let bundle = env.path("bundle");
        let mut umoci = Command::new("umoci");
        umoci.arg("unpack");
        // As root umoci restores owners; otherwise it needs its rootless mode.
        if !is_root() {
            umoci.arg("--rootless");
        }
        let out = umoci
            .arg("--image")
            .arg(format!("{}:busybox:latest", root.display()))
            .arg(&bundle)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(bundle.join("rootfs/bin/busybox").is_file());
        assert!(bundle.join("rootfs/etc/passwd").is_file());
        assert!(bundle.join("config.json").is_file());
    }
    // umoci may add blobs of its own; our fsck still accepts the store.
    assert!(ok(&root, &["fsck"]).contains("store is consistent"));
}

#[test]
fn concurrent_imports_and_prunes_share_one_store() {
    let Some(env) = Env::new() else { return };
    let root = env.root("store");
    ok(&root, &["images"]);
    let spawn = |args: &[&str]| {
        Command::new(KILN)
            .arg("--root")
            .arg(&root)
            .args(args)
            .env("SOURCE_DATE_EPOCH", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let tar = env.tar.to_str().unwrap();
    let mut children = Vec::new();
    for i in 0..3 {
        let name = format!("img{i}");
        let compression = ["gzip", "zstd", "none"][i];
        children.push(spawn(&["import", tar, &name, "--compression", compression]));
        children.push(spawn(&["prune"]));
    }
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for i in 0..3 {
        inspect(&root, &format!("img{i}"));
    }
    ok(&root, &["prune"]);
    assert!(ok(&root, &["fsck"]).contains("store is consistent"));
    // Three compressions of one layer: three layer blobs and three manifests, but one config
    // (same diff-id, same timestamp, same history).
    assert_eq!(blob_count(&root), 7);
    assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);
}

/// The layer chain of `image` applied as snapshots (as a build or `kiln run` would), with the
/// store handle closed again so that later commands see no other kiln process.
fn unpack(root: &Path, image: &str) -> kiln_snapshotter::ChainId {
    let store = kiln_oci::Store::open(root).unwrap();
    let snap = copy_snapshotter(root);
    let image = store.find_image(image).unwrap();
    let mut parent = None;
    for (layer, diff_id) in image
        .layers()
        .unwrap()
        .iter()
        .zip(image.diff_ids().unwrap())
    {
        let reader = kiln_oci::open_layer_blob(&store, &layer.digest).unwrap();
        parent = Some(snap.apply_layer(parent.as_ref(), &diff_id, reader).unwrap());
    }
    parent.unwrap()
}

fn copy_snapshotter(root: &Path) -> kiln_snapshotter::Snapshotter {
    let options = kiln_snapshotter::SnapshotterOptions {
        force_copy: true,
        ..Default::default()
    };
    kiln_snapshotter::Snapshotter::with_options(root, options).unwrap()
}

/// A small layer tar of one file, made with tar(1), and its diff-id.
fn small_layer(env: &Env, name: &str) -> (PathBuf, kiln_snapshotter::DiffId) {
    let dir = env.path(&format!("{name}-tree"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), name.repeat(100)).unwrap();
    let tar = env.path(&format!("{name}.tar"));
    let made = Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&dir)
        .arg(name)
        .status()
        .unwrap();
    assert!(made.success());
    let diff_id = kiln_snapshotter::DiffId::parse(&sha256_of(&tar)).unwrap();
    (tar, diff_id)
}

fn apply(
    root: &Path,
    parent: Option<&kiln_snapshotter::ChainId>,
    layer: &(PathBuf, kiln_snapshotter::DiffId),
) -> kiln_snapshotter::ChainId {
    let file = std::fs::File::open(&layer.0).unwrap();
    copy_snapshotter(root)
        .apply_layer(parent, &layer.1, file)
        .unwrap()
}

fn has_snapshot(root: &Path, chain: &kiln_snapshotter::ChainId) -> bool {
    root.join("snapshots").join(chain.hex()).is_dir()
}

/// A cache record as the builder writes it.
fn write_record(root: &Path, key: char, blob: &str, chain: &kiln_snapshotter::ChainId) -> PathBuf {
    let path = root.join("cache").join(key.to_string().repeat(64));
    let record = serde_json::json!({
        "created": "2026-01-01T00:00:00Z",
        "layer": {
            "digest": blob,
            "diff_id": chain.as_str(),
            "size": 1,
            "media_type": "application/vnd.oci.image.layer.v1.tar+gzip",
            "chain_id": chain.as_str(),
        }
    });
    std::fs::write(&path, record.to_string()).unwrap();
    path
}

fn layer_digest(root: &Path, image: &str) -> String {
    let store = kiln_oci::Store::open(root).unwrap();
    let image = store.find_image(image).unwrap();
    image.layers().unwrap()[0].digest.to_string()
}

#[test]
fn prune_collects_snapshots_and_cache_records() {
    let Some(env) = Env::new() else { return };
    let root = env.root("store");
    import_busybox(&env, &root);
    let base = unpack(&root, "busybox");
    let step = apply(&root, Some(&base), &small_layer(&env, "step"));
    let stray = apply(&root, None, &small_layer(&env, "stray"));
    let blob = layer_digest(&root, "busybox");
    let live = write_record(&root, 'a', &blob, &step);
    let missing = format!("sha256:{}", "e".repeat(64));
    let dead = write_record(&root, 'b', &missing, &step);

    ok(&root, &["prune"]);
    assert!(
        has_snapshot(&root, &base),
        "the tagged image's snapshot was removed"
    );
    assert!(
        has_snapshot(&root, &step),
        "the cached step's snapshot was removed"
    );
    assert!(
        !has_snapshot(&root, &stray),
        "an unreferenced snapshot was kept"
    );
    assert!(live.exists());
    assert!(!dead.exists(), "a record whose layer is gone was kept");

    // A cap just above what the image's blobs need: snapshots and cache are counted and go.
    let blobs: u64 = std::fs::read_dir(root.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let cap = (blobs + 512).to_string();
    let out = kiln(&root, &["prune", "--keep-storage", &cap]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("over --keep-storage"), "{stderr}");
    assert!(!has_snapshot(&root, &base) && !has_snapshot(&root, &step));
    assert!(
        live.exists(),
        "a record went though the cap was met without removing it"
    );
    assert_eq!(blob_count(&root), 3);

    // --all removes every record and every snapshot nothing uses; images stay.
    let base = unpack(&root, "busybox");
    let live = write_record(&root, 'a', &blob, &base);
    ok(&root, &["prune", "--all"]);
    assert!(!has_snapshot(&root, &base));
    assert!(!live.exists());
    assert!(ok(&root, &["images"]).contains("busybox"));
    assert!(ok(&root, &["fsck"]).contains("store is consistent"));
}

#[test]
fn fsck_repairs_a_bad_snapshot_and_a_dangling_record() {
    let Some(env) = Env::new() else { return };
    let root = env.root("store");
    import_busybox(&env, &root);
    let base = unpack(&root, "busybox");
    let step = apply(&root, Some(&base), &small_layer(&env, "step"));
    assert!(ok(&root, &["fsck"]).contains("store is consistent"));

    let wrong = format!("sha256:{}", "d".repeat(64));
    std::fs::write(
        root.join("snapshots").join(step.hex()).join("diffid"),
        &wrong,
    )
    .unwrap();
    let missing = format!("sha256:{}", "e".repeat(64));
    write_record(&root, 'b', &missing, &base);

    let out = kiln(&root, &["fsck"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("broken: snapshot {step}: ")) && text.contains(&wrong),
        "{text}"
    );
    assert!(
        text.contains(&format!("broken: cache record {}: ", "b".repeat(64)))
            && text.contains(&missing),
        "{text}"
    );
    assert!(!text.contains("store is consistent"), "{text}");

    let out = ok(&root, &["fsck", "--repair"]);
    assert!(
        out.contains(&format!("repaired: removed broken snapshot {step}")),
        "{out}"
    );
    assert!(out.contains("repaired: removed cache record"), "{out}");
    assert!(ok(&root, &["fsck"]).contains("store is consistent"));
    assert!(has_snapshot(&root, &base));
    assert!(!has_snapshot(&root, &step));
}

#[test]
fn debris_of_a_killed_kiln_is_swept_at_the_next_start() {
    let Some(env) = Env::new() else { return };
    let root = env.root("store");
    import_busybox(&env, &root);
    // A `kiln load` waiting for its archive on stdin has the store open; kill it there.
    let mut child = Command::new(KILN)
        .arg("--root")
        .arg(&root)
        .arg("load")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let tmp = root.join("tmp");
    let deadline = Instant::now() + Duration::from_secs(20);
    let its_dir = loop {
        let dir = std::fs::read_dir(&tmp)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.is_dir());
        if let Some(dir) = dir {
            break dir;
        }
        assert!(
            Instant::now() < deadline,
            "kiln load never opened the store"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // What it had in flight: a half-applied layer and a prepared snapshot.
    let snapshots = root.join("snapshots");
    std::fs::create_dir_all(snapshots.join(".tmp-killed/flat/etc")).unwrap();
    std::fs::write(snapshots.join(".tmp-killed/flat/etc/passwd"), b"half").unwrap();
    std::fs::create_dir_all(snapshots.join(".active-killed/work")).unwrap();
    // And, where mounts are possible, a mount inside its tmp directory showing a directory
    // outside the store, which a careless sweep would empty.
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("precious"), b"keep me").unwrap();
    let mount_point = its_dir.join("rootfs");
    let mounted = require(is_root(), "root, for a bind mount") && {
        std::fs::create_dir(&mount_point).unwrap();
        Command::new("mount")
            .arg("--bind")
            .arg(&outside)
            .arg(&mount_point)
            .status()
            .unwrap()
            .success()
    };
    assert!(mounted || !is_root(), "the bind mount could not be made");
    child.kill().unwrap();
    child.wait().unwrap();

    // Any start detaches a dead process's mounts and removes its directory; a read-only
    // command leaves the snapshot debris to the next writer.
    ok(&root, &["images"]);
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let leftover = mountinfo.contains(&*mount_point.to_string_lossy());
    if leftover {
        let _ = Command::new("umount").arg("-l").arg(&mount_point).status();
    }
    assert!(!leftover, "the killed process's mount is still there");
    assert!(!its_dir.exists());
    assert_eq!(std::fs::read(outside.join("precious")).unwrap(), b"keep me");
    assert!(snapshots.join(".tmp-killed").exists());
    ok(&root, &["tag", "busybox", "swept:1"]);
    assert!(!snapshots.join(".tmp-killed").exists());
    assert!(!snapshots.join(".active-killed").exists());
    assert!(ok(&root, &["fsck"]).contains("store is consistent"));
}
