//! Crash consistency: builds SIGKILLed at random moments — while the context is hashed, a RUN
//! runs, a snapshot is diffed, a layer compressed, a blob committed, the image tagged or
//! exported — never leave a store that `kiln fsck` rejects, a kiln mount, files in `tmp/`, or
//! a sandbox process behind; and the next build succeeds and reuses what was committed.
//!
//! `KILN_HARDENING_KILLS` (default 50) and `KILN_HARDENING_SEED` change the run; the seed is
//! printed so that a failure can be replayed.

use std::fs::File;
use std::process::Stdio;
use std::time::{Duration, Instant};

mod hardening_support;
use hardening_support::*;

/// Context hashing, COPY and its diff and compression have a big file to work on; the RUN
/// writes incompressible data so that its diff and compression take time too.
const DOCKERFILE: &str = "FROM busybox
COPY big /big
COPY many /many
ARG N=0
RUN echo \"$N\" > /n && dd if=/dev/urandom of=/rand bs=1M count=4 2>/dev/null && sleep 0.2
RUN cat /n /rand /big | md5sum > /sum
";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Which phase the build was in: the last progress line it printed, classified.
fn phase(log: &str) -> &'static str {
    let last = log
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let l = last.to_lowercase();
    if l.is_empty() {
        // Before the first step prints: planning and hashing the context.
        "context"
    } else if l.contains("naming") {
        "tagging"
    } else if l.contains("writing image") {
        "commit"
    } else if l.contains("export") || l.contains("wrote") {
        "export"
    } else if l.contains(" from ") {
        "base"
    } else if l.contains(" copy ") {
        "copy"
    } else if l.contains(" run ") {
        "run"
    } else if l.contains("done") || l.contains("cached") {
        "between-steps"
    } else {
        "other"
    }
}

/// Cache record names and their inodes: a record rewritten (renamed into place again) has a
/// new inode.
fn records(env: &Env) -> std::collections::BTreeMap<String, u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(env.root().join("cache"))
        .unwrap()
        .flatten()
        .map(|e| {
            let ino = e.metadata().map(|m| m.ino()).unwrap_or(0);
            (e.file_name().to_string_lossy().into_owned(), ino)
        })
        .collect()
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn builds_killed_at_random_moments_leave_a_whole_store() {
    let Some(env) = Env::with_busybox() else {
        return;
    };
    let kills = env_number("KILN_HARDENING_KILLS", 50) as usize;
    let seed = env_number("KILN_HARDENING_SEED", 0x6b69_6c6e);
    eprintln!("seed {seed:#x}, {kills} kills");
    let mut rng = Rng::new(seed);
    let ctx = env.ctx();
    env.dockerfile(DOCKERFILE);
    write_random(&ctx.join("big"), 12 << 20, seed);
    std::fs::create_dir(ctx.join("many")).unwrap();
    for i in 0..200 {
        std::fs::write(ctx.join(format!("many/f{i}")), format!("file {i}\n")).unwrap();
    }
    let build_args = |n: u64| -> Vec<String> {
        [
            "build",
            "--progress=plain",
            "--build-arg",
            &format!("N={n}"),
            "-t",
            &format!("crash:{}", n % 2),
            "-o",
            "type=tar,dest=out.tar",
            "ctx",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };

    // One build to completion: how long a build takes is the window kills are spread over.
    let started = Instant::now();
    env.ok(&as_strs(&build_args(1000)));
    let full = started.elapsed();
    eprintln!(
        "figure: crash full build (12 MB context, 4 MB RUN layer, tar export): {:.2}s",
        full.as_secs_f64()
    );

    let mut phases: std::collections::BTreeMap<&str, usize> = Default::default();
    let mut killed = 0;
    let mut finished_first = 0;
    let mut verified = 0;
    let mut sandboxes_seen = 0;
    let mut attempt = 0u64;
    let test_started = Instant::now();
    while killed < kills {
        attempt += 1;
        assert!(
            attempt < kills as u64 * 4,
            "builds kept finishing before the kill"
        );
        let n = rng.below(6);
        // The context changes every time, so that every phase has work to do: hashing, COPY
        // with its diff and compression, the RUN steps above it, the export.
        let mut head = [0u8; 4096];
        rng.fill(&mut head);
        let big = ctx.join("big");
        let mut bytes = std::fs::read(&big).unwrap();
        bytes[..4096].copy_from_slice(&head);
        std::fs::write(&big, bytes).unwrap();
        let window = full.as_millis() as u64 * 11 / 10 + 50;
        let delay = Duration::from_millis(rng.below(window));
        let args = build_args(n);
        let log_path = env.path("kill.log");
        let mut child = env
            .command(&as_strs(&args))
            .stdout(Stdio::null())
            .stderr(File::create(&log_path).unwrap())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_some() {
            finished_first += 1;
            continue;
        }
        let family = descendants(child.id());
        sandboxes_seen += family
            .iter()
            .filter(|(p, _)| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() == "kiln-sandbox")
            })
            .count();
        child.kill().unwrap();
        child.wait().unwrap();
        killed += 1;
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        assert!(!log.contains("panicked"), "{log}");
        *phases.entry(phase(&log)).or_default() += 1;
        // The sandbox helper notices its caller is gone and takes the sandbox down with it.
        let left = wait_gone(&family, Duration::from_secs(10));
        assert!(
            left.is_empty(),
            "processes of the killed build outlived it: {left:?}"
        );

        env.assert_store_whole();

        // Every few kills, the killed build again, to the end: it succeeds, and steps whose
        // results were committed before the kill are answered from the cache.
        if killed % 10 == 0 || killed == kills {
            let before = records(&env);
            let out = env.run(&as_strs(&args));
            let log = text(&out.stderr);
            assert!(out.status.success(), "{log}");
            let after = records(&env);
            let redone: Vec<&String> = before
                .iter()
                .filter(|(name, ino)| after.get(*name).is_some_and(|now| now != *ino))
                .map(|(name, _)| name)
                .collect();
            assert!(
                redone.is_empty(),
                "steps committed before the kill ran again: {redone:?}\n{log}"
            );
            // And everything is answered from the cache the time after.
            let again = env.run(&as_strs(&args));
            let log = text(&again.stderr);
            assert!(again.status.success(), "{log}");
            assert_eq!(
                after,
                records(&env),
                "a no-op rebuild rewrote records:\n{log}"
            );
            assert_eq!(log.matches("CACHED").count(), 4, "{log}");
            verified += 1;
            env.assert_store_whole();
        }
    }
    let elapsed = test_started.elapsed();
    let spread: Vec<String> = phases.iter().map(|(k, v)| format!("{k}={v}")).collect();
    eprintln!(
        "figure: crash kills survived: {killed} (builds that finished first: {finished_first}; \
         sandboxes killed with their build: {sandboxes_seen}; verified rebuilds: {verified}) \
         phases: {} in {:.1}s",
        spread.join(" "),
        elapsed.as_secs_f64()
    );
    // (A short run, with KILN_HARDENING_KILLS, may land all its kills in one phase.)
    assert!(
        killed < 20 || phases.len() >= 3,
        "kills were not spread over the build: {spread:?}"
    );
}
