//! Concurrency: builds sharing one store, with the same base, overlapping steps and the same tag,
//! while `kiln prune` runs in a loop beside them. Every build succeeds, the shared tag names one
//! of its two builds' results, and nothing is torn or collected from under a running build.

use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod hardening_support;
use hardening_support::*;

/// Starts `kiln build` of `ctx` (a context directory of the temp dir) with `flags`.
fn spawn_build(env: &Env, ctx: &str, flags: &[&str]) -> Child {
    let iid = format!("{ctx}.iid");
    let mut args = vec!["build", "--progress=plain", "--iidfile", &iid];
    args.extend_from_slice(flags);
    args.push(ctx);
    env.command(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn write_context(env: &Env, ctx: &str, dockerfile: &str) {
    let dir = env.path(ctx);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    std::fs::write(dir.join("data"), ctx.repeat(1000)).unwrap();
}

/// Prunes until `stop` is set, alternating plain and `--all`; every prune must succeed.
fn prune_until(env: &Env, stop: &AtomicBool, count: &AtomicUsize) {
    let mut all = false;
    while !stop.load(Ordering::SeqCst) {
        let args: &[&str] = if all { &["prune", "--all"] } else { &["prune"] };
        env.ok(args);
        count.fetch_add(1, Ordering::SeqCst);
        all = !all;
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_ok(env: &Env, child: Child, what: &str) {
    let out = wait_with_deadline(child, DEADLINE * 2, &[what]);
    assert_no_panic(&out, &[what]);
    assert!(
        out.status.success(),
        "build {what} failed:\n{}",
        text(&out.stderr)
    );
    let _ = env;
}

#[test]
fn four_builds_at_once_with_prune_share_one_store() {
    let Some(env) = Env::with_busybox() else {
        return;
    };
    // Same base; a common first step; the shared tag from a and b, which differ after it.
    let common = "FROM busybox\nRUN echo common > /common && dd if=/dev/zero of=/zero bs=1M count=4 2>/dev/null\n";
    write_context(
        &env,
        "a",
        &format!("{common}COPY data /data\nRUN echo a > /who\n"),
    );
    write_context(
        &env,
        "b",
        &format!("{common}COPY data /data\nRUN echo b > /who\n"),
    );
    write_context(&env, "c", &format!("{common}RUN echo c > /who\n"));
    write_context(
        &env,
        "d",
        "FROM busybox\nCOPY data /data\nRUN cat /data | wc -c > /size\n",
    );

    let stop = AtomicBool::new(false);
    let prunes = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        let pruner = s.spawn(|| prune_until(&env, &stop, &prunes));
        let children = vec![
            ("a", spawn_build(&env, "a", &["-t", "shared:1"])),
            ("b", spawn_build(&env, "b", &["-t", "shared:1"])),
            ("c", spawn_build(&env, "c", &["-t", "c:1"])),
            ("d", spawn_build(&env, "d", &["-t", "d:1"])),
        ];
        for (name, child) in children {
            wait_ok(&env, child, name);
        }
        stop.store(true, Ordering::SeqCst);
        pruner.join().unwrap();
    });
    let elapsed = started.elapsed();
    let id = |ctx: &str| std::fs::read_to_string(env.path(&format!("{ctx}.iid"))).unwrap();
    let shared = image_id(&env, "shared:1");
    assert!(
        shared == id("a") || shared == id("b"),
        "shared:1 is {shared}, neither a's {} nor b's {}",
        id("a"),
        id("b")
    );
    assert_eq!(image_id(&env, "c:1"), id("c"));
    assert_eq!(image_id(&env, "d:1"), id("d"));
    env.assert_store_whole();
    // Nothing torn: every image saves whole (save verifies every blob it reads).
    for tag in ["shared:1", "c:1", "d:1"] {
        env.ok(&["save", tag, "-o", env.path("saved.tar").to_str().unwrap()]);
    }
    eprintln!(
        "figure: concurrent builds: 4 builds with {} prunes beside them in {:.1}s",
        prunes.load(Ordering::SeqCst),
        elapsed.as_secs_f64()
    );
}

fn image_id(env: &Env, name: &str) -> String {
    let all: Vec<serde_json::Value> = serde_json::from_str(&env.ok(&["inspect", name])).unwrap();
    all[0]["Id"].as_str().unwrap().to_string()
}

/// A build reuses cached layers and runs a step on top of them while `prune --all` (which drops
/// every cache record and every snapshot nothing is using) runs in a loop: the build's leases
/// keep the snapshots it is about to mount, its pins the blobs it is about to reference.
#[test]
fn prune_in_a_loop_never_takes_what_a_running_build_uses() {
    let Some(env) = Env::with_busybox() else {
        return;
    };
    env.dockerfile(
        "FROM busybox\nRUN dd if=/dev/zero of=/base bs=1M count=2 2>/dev/null\nCOPY . /ctx\nARG N\nRUN cat /base /ctx/Dockerfile > /dev/null && echo \"$N\" > /n\n",
    );
    let stop = AtomicBool::new(false);
    let prunes = AtomicUsize::new(0);
    let rounds = 12;
    std::thread::scope(|s| {
        let pruner = s.spawn(|| prune_until(&env, &stop, &prunes));
        for n in 0..rounds {
            let out = env.run(&[
                "build",
                "--progress=plain",
                "--build-arg",
                &format!("N={n}"),
                "-t",
                "looped:1",
                "ctx",
            ]);
            if !out.status.success() {
                stop.store(true, Ordering::SeqCst);
                panic!("build {n} failed beside prune:\n{}", text(&out.stderr));
            }
        }
        stop.store(true, Ordering::SeqCst);
        pruner.join().unwrap();
    });
    assert!(prunes.load(Ordering::SeqCst) > 0);
    env.assert_store_whole();
    env.ok(&[
        "save",
        "looped:1",
        "-o",
        env.path("saved.tar").to_str().unwrap(),
    ]);
}
