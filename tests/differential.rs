//! kiln against another builder: every case in `testdata/differential/` is built by kiln and by
//! buildah (Debian's package; chroot isolation, vfs storage in a temp dir) from the same busybox
//! base, and the two images are compared on their config and on their root filesystem: entry
//! types, modes, owners, sizes, contents, link targets and hard links.
//!
//! buildah is the peer that runs here without a daemon. Where it departs from BuildKit, whose
//! behaviour kiln follows, the comparison says so where it makes the exception.

mod support;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::{KILN, busybox_tar, have_tool, is_root, require};

/// A case's list of the places where buildah is known to depart from BuildKit: one per line,
/// `config FIELD` or an absolute path, then `:` and the reason.
const KNOWN_DIFFERENCES: &str = "buildah-differs";

/// Files buildah leaves behind as mount points of every RUN. BuildKit and kiln keep mount points
/// out of the image.
const RUN_MOUNT_POINTS: [&str; 4] = ["/run", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf"];

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/differential")
}

fn checked(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A kiln store and a buildah store in one temp dir, both holding the busybox base as
/// `busybox:latest`.
struct Builders {
    dir: tempfile::TempDir,
}

impl Builders {
    fn new() -> Option<Builders> {
        let dir = tempfile::tempdir().expect("tempdir");
        let tar = dir.path().join("busybox.tar");
        if !busybox_tar(&tar) {
            return None;
        }
        let builders = Builders { dir };
        builders.kiln(&["import", tar.to_str().unwrap(), "busybox:latest"]);
        // buildah takes the very image kiln holds, config included, through a docker archive.
        let archive = builders.dir.path().join("base.tar");
        builders.kiln(&["save", "-o", archive.to_str().unwrap(), "busybox:latest"]);
        let id = builders.buildah(&[
            "pull",
            "-q",
            &format!("docker-archive:{}", archive.display()),
        ]);
        builders.buildah(&["tag", id.trim(), "busybox:latest"]);
        Some(builders)
    }

    fn kiln(&self, args: &[&str]) -> String {
        let out = Command::new(KILN)
            .arg("--root")
            .arg(self.dir.path().join("kiln"))
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .expect("kiln runs");
        checked(&format!("kiln {}", args.join(" ")), out)
    }

    fn buildah(&self, args: &[&str]) -> String {
        let run = || {
            Command::new("buildah")
                .arg("--root")
                .arg(self.dir.path().join("buildah"))
                .arg("--runroot")
                .arg(self.dir.path().join("buildah-run"))
                .args(["--storage-driver", "vfs"])
                .args(args)
                // ONBUILD triggers run at `buildah from` too; chroot keeps them off the host's
                // OCI runtime, which may not cope with this machine's cgroup setup.
                .env("BUILDAH_ISOLATION", "chroot")
                .output()
                .expect("buildah runs")
        };
        let mut out = run();
        // buildah 1.28's chroot mode now and then fails to seal the copy of itself it runs a
        // step with ("Close_Fd sealing memfd copy: Device or resource busy") when the machine
        // is busy: the peer's hiccup, not a difference, so the build is tried again.
        for _ in 0..2 {
            if out.status.success() || !String::from_utf8_lossy(&out.stderr).contains("memfd") {
                break;
            }
            out = run();
        }
        checked(&format!("buildah {}", args.join(" ")), out)
    }

    /// The case's directory copied into the temp dir, with its `setup.sh` run and removed.
    fn context(&self, case: &Path) -> PathBuf {
        let name = case.file_name().unwrap();
        let ctx = self.dir.path().join("contexts").join(name);
        fs::create_dir_all(ctx.parent().unwrap()).expect("contexts dir");
        checked(
            "copying the case",
            Command::new("cp")
                .arg("-a")
                .arg(case)
                .arg(&ctx)
                .output()
                .expect("cp"),
        );
        let known = ctx.join(KNOWN_DIFFERENCES);
        let _ = fs::remove_file(&known);
        let setup = ctx.join("setup.sh");
        if setup.exists() {
            checked(
                "the case's setup.sh",
                Command::new("sh")
                    .arg(&setup)
                    .current_dir(&ctx)
                    .output()
                    .expect("sh"),
            );
            fs::remove_file(&setup).expect("remove setup.sh");
        }
        ctx
    }

    /// kiln's image: its config and its root filesystem, exported as a directory.
    fn build_with_kiln(&self, name: &str, ctx: &Path) -> (Value, PathBuf) {
        let tag = format!("case-{name}:kiln");
        self.kiln(&["build", "-q", "-t", &tag, ctx.to_str().unwrap()]);
        let rootfs = self.dir.path().join("rootfs-kiln").join(name);
        let output = format!("type=local,dest={}", rootfs.display());
        self.kiln(&["build", "-q", "-o", &output, ctx.to_str().unwrap()]);
        let inspect: Value =
            serde_json::from_str(&self.kiln(&["inspect", &tag])).expect("kiln inspect is JSON");
        (inspect[0]["Config"].clone(), rootfs)
    }

    /// buildah's image: its docker-format config, and its root filesystem copied out of a
    /// working container (vfs keeps it as a plain directory).
    fn build_with_buildah(&self, name: &str, ctx: &Path) -> (Value, PathBuf) {
        let tag = format!("case-{name}:buildah");
        self.buildah(&[
            "bud",
            "--pull=never",
            "--format",
            "docker",
            "-q",
            "-t",
            &tag,
            ctx.to_str().unwrap(),
        ]);
        let inspect: Value =
            serde_json::from_str(&self.buildah(&["inspect", "--type", "image", &tag]))
                .expect("buildah inspect is JSON");
        // Unpacked by umoci rather than through a buildah working container, which would run
        // the image's ONBUILD triggers.
        let layout = self.dir.path().join("buildah-layout");
        self.buildah(&[
            "push",
            "-q",
            &tag,
            &format!("oci:{}:{name}", layout.display()),
        ]);
        let rootfs = self.dir.path().join("rootfs-buildah").join(name);
        fs::create_dir_all(rootfs.parent().unwrap()).expect("rootfs dir");
        checked(
            "umoci raw unpack",
            Command::new("umoci")
                .args(["raw", "unpack", "--image"])
                .arg(format!("{}:{name}", layout.display()))
                .arg(&rootfs)
                .output()
                .expect("umoci"),
        );
        (inspect["Docker"]["config"].clone(), rootfs)
    }
}

/// The config fields an image's behaviour depends on, with absent and empty made one.
fn config_fields(config: &Value) -> BTreeMap<&'static str, Value> {
    const FIELDS: [&str; 12] = [
        "Env",
        "Cmd",
        "Entrypoint",
        "WorkingDir",
        "User",
        "ExposedPorts",
        "Labels",
        "Volumes",
        "StopSignal",
        "Healthcheck",
        "OnBuild",
        "Shell",
    ];
    let mut fields = BTreeMap::new();
    for field in FIELDS {
        let mut value = config.get(field).cloned().unwrap_or(Value::Null);
        if field == "Labels"
            && let Value::Object(labels) = &mut value
        {
            // buildah stamps its own version on every image.
            labels.remove("io.buildah.version");
        }
        let empty = match &value {
            Value::Null => true,
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            _ => false,
        };
        if !empty {
            fields.insert(field, value);
        }
    }
    fields
}

/// One line per entry of a root filesystem: type, mode, owner, and size plus content digest,
/// link target or the first path of its hard-link group. Times are left out: each builder sets
/// its own.
fn listing(root: &Path) -> BTreeMap<String, String> {
    let mut entries = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), Vec<String>> = HashMap::new();
    walk(root, root, &mut entries, &mut inodes);
    for group in inodes.values().filter(|g| g.len() > 1) {
        let first = group.iter().min().expect("non-empty group");
        for path in group {
            entries
                .get_mut(path)
                .expect("listed")
                .push_str(&format!(" hardlinked-with={first}"));
        }
    }
    entries
}

fn walk(
    root: &Path,
    dir: &Path,
    entries: &mut BTreeMap<String, String>,
    inodes: &mut HashMap<(u64, u64), Vec<String>>,
) {
    let mut children: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    children.sort();
    for path in children {
        let meta = fs::symlink_metadata(&path).expect("lstat");
        let rel = format!("/{}", path.strip_prefix(root).unwrap().display());
        let ft = meta.file_type();
        let head = format!(
            "mode={:o} owner={}:{}",
            meta.permissions().mode() & 0o7777,
            meta.uid(),
            meta.gid()
        );
        let line = if ft.is_symlink() {
            let target = fs::read_link(&path).expect("readlink");
            format!("symlink {head} -> {}", target.display())
        } else if ft.is_dir() {
            walk(root, &path, entries, inodes);
            format!("dir {head}")
        } else if ft.is_file() {
            if meta.nlink() > 1 {
                inodes
                    .entry((meta.dev(), meta.ino()))
                    .or_default()
                    .push(rel.clone());
            }
            format!("file {head} size={} {}", meta.len(), file_digest(&path))
        } else {
            format!("special {head} rdev={:x}", meta.rdev())
        };
        entries.insert(rel, line);
    }
}

fn file_digest(path: &Path) -> String {
    let mut file = fs::File::open(path).expect("open");
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = file.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// What differs between kiln's image and buildah's, one line each.
fn differences(case: &Path, kiln: (&Value, &Path), buildah: (&Value, &Path)) -> Vec<String> {
    let known: Vec<String> = fs::read_to_string(case.join(KNOWN_DIFFERENCES))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.split_once(':')
                .map(|(key, _reason)| key.trim().to_string())
        })
        .collect();
    let mut found = Vec::new();
    let (kc, bc) = (config_fields(kiln.0), config_fields(buildah.0));
    for field in kc
        .keys()
        .chain(bc.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        if kc.get(field) != bc.get(field) && !known.contains(&format!("config {field}")) {
            found.push(format!(
                "config {field}: kiln {} / buildah {}",
                kc.get(field).unwrap_or(&Value::Null),
                bc.get(field).unwrap_or(&Value::Null)
            ));
        }
    }
    let (kl, mut bl) = (listing(kiln.1), listing(buildah.1));
    // buildah also leaves the mount points of `RUN --mount` targets (and the directories made
    // for them) where BuildKit removes them.
    let dockerfile = fs::read_to_string(case.join("Dockerfile")).expect("Dockerfile");
    let mount_targets: Vec<&str> = dockerfile
        .split([' ', ','])
        .filter_map(|word| word.strip_prefix("target="))
        .collect();
    let is_mount_point = |path: &str| {
        RUN_MOUNT_POINTS.contains(&path)
            || mount_targets
                .iter()
                .any(|t| Path::new(t).starts_with(path) && t.len() >= path.len())
    };
    bl.retain(|path, line| {
        let debris = (line.starts_with("dir ") || line.contains(" size=0 "))
            && !kl.contains_key(path)
            && is_mount_point(path);
        !debris
    });
    for path in kl
        .keys()
        .chain(bl.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        if known.contains(path) {
            continue;
        }
        match (kl.get(path), bl.get(path)) {
            (Some(k), Some(b)) if k == b => {}
            (k, b) => found.push(format!(
                "{path}: kiln {} / buildah {}",
                k.map_or("absent", String::as_str),
                b.map_or("absent", String::as_str)
            )),
        }
    }
    found
}

#[test]
fn kiln_and_buildah_build_the_same_images() {
    if !require(
        is_root(),
        "root, to build with RUN steps and compare owners",
    ) || !require(
        have_tool("buildah"),
        "buildah (apt-get install buildah) as the peer builder",
    ) {
        return;
    }
    let Some(builders) = Builders::new() else {
        return;
    };
    let mut cases: Vec<PathBuf> = fs::read_dir(cases_dir())
        .expect("testdata/differential")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("Dockerfile").is_file())
        .collect();
    cases.sort();
    assert!(cases.len() >= 25, "the corpus has {} cases", cases.len());
    // `KILN_DIFFERENTIAL_CASES=a,b` narrows a run to some cases while working on them.
    if let Ok(only) = std::env::var("KILN_DIFFERENTIAL_CASES") {
        let only: Vec<&str> = only.split(',').collect();
        cases.retain(|c| only.iter().any(|o| c.ends_with(o)));
    }

    let mut report = Map::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_str().unwrap().to_string();
        let ctx = builders.context(case);
        let kiln = builders.build_with_kiln(&name, &ctx);
        let buildah = builders.build_with_buildah(&name, &ctx);
        let found = differences(case, (&kiln.0, &kiln.1), (&buildah.0, &buildah.1));
        if !found.is_empty() {
            report.insert(name, Value::from(found));
        }
    }
    assert!(
        report.is_empty(),
        "kiln and buildah differ on {} of {} cases:\n{}",
        report.len(),
        cases.len(),
        serde_json::to_string_pretty(&report).unwrap()
    );
}
