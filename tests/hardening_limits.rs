//! Resource exhaustion: a store on a full disk fails the build with "no space left" and stays
//! whole; a RUN that forks without bound is stopped by `--pids-limit`, one that fills memory is
//! killed by `--memory` and reported as such.

use std::path::Path;
use std::process::Command;

mod hardening_support;
use hardening_support::*;

/// A tmpfs mounted at a directory for the life of the value; unmounted however the test ends.
struct Tmpfs<'a>(&'a Path);

impl<'a> Tmpfs<'a> {
    fn mount(dir: &'a Path, size: &str) -> Option<Tmpfs<'a>> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        require(ok, "a tmpfs mount").then_some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs<'_> {
    fn drop(&mut self) {
        // Lazily, so that a failing test still leaves nothing mounted.
        let _ = Command::new("umount").arg("-l").arg(self.0).status();
    }
}

#[test]
fn a_full_disk_fails_the_build_and_leaves_a_whole_store() {
    if !require(is_root(), "root (tmpfs mounts, RUN in the sandbox)") {
        return;
    }
    let env = Env::bare();
    let tar = env.path("busybox.tar");
    if !busybox_tar(&tar) {
        return;
    }
    let root = env.root();
    let Some(tmpfs) = Tmpfs::mount(&root, "20m") else {
        return;
    };
    env.ok(&["import", tar.to_str().unwrap(), "busybox:latest"]);
    // The RUN itself fits (12 of 20 MiB, with the base); the snapshot applied from its layer
    // does not, however much of the compressed blob is still in memory at that point.
    env.dockerfile(
        "FROM busybox\nRUN dd if=/dev/urandom of=/data bs=1M count=12 2>/dev/null\nRUN echo after\n",
    );
    let out = env.run(&["build", "--progress=plain", "-t", "full:1", "ctx"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.to_lowercase().contains("no space left"), "{err}");
    assert!(
        err.lines().any(|l| l.starts_with("error:")),
        "kiln did not say what failed:\n{err}"
    );
    assert!(!env.ok(&["images"]).contains("full"));
    env.assert_store_whole();
    // With the space back (the failed step's debris gone), the store still builds.
    env.dockerfile("FROM busybox\nRUN echo small > /small\n");
    env.ok(&["build", "--progress=plain", "-t", "small:1", "ctx"]);
    env.assert_store_whole();
    drop(tmpfs);
    assert!(mounts_below(env.dir.path()).is_empty());
}

#[test]
fn pids_limit_stops_a_fork_loop() {
    let Some(env) = Env::with_busybox() else {
        return;
    };
    env.dockerfile("FROM busybox\nRUN for i in $(seq 1 200); do sleep 30 & done; wait\n");
    let started = std::time::Instant::now();
    let err = env.fails(
        &["build", "--progress=plain", "--pids-limit", "20", "ctx"],
        "can't fork",
    );
    // The 20 sleeps that did start died with the step: no 30-second wait.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(25),
        "{err}"
    );
    let out = env.run(&["build", "--pids-limit", "0", "ctx"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    env.assert_store_whole();
}

#[test]
fn memory_limit_kills_a_step_and_says_so() {
    let Some(env) = Env::with_busybox() else {
        return;
    };
    env.dockerfile("FROM busybox\nRUN x=$(head -c 300m /dev/zero | tr '\\0' a); echo ${#x}\n");
    let err = env.fails(
        &["build", "--progress=plain", "--memory", "64m", "ctx"],
        "memory limit",
    );
    assert!(err.contains("exit code: 137"), "{err}");
    env.assert_store_whole();
}
