//! A layer tar from arbitrary bytes, applied into a fresh temporary root as an unprivileged
//! applier would (no devices, no chown), with whiteouts as deletions and as overlay markers:
//! never a panic, and nothing written outside the root.
#![no_main]

use kiln_snapshotter::{ApplyOptions, WhiteoutMode, XattrNamespace, apply_layer};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

/// What the sentinel directory beside the root holds: it must not change.
fn sentinel(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out: Vec<_> = walk(dir)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_default();
            (p, bytes)
        })
        .collect();
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).expect("outside");
    std::fs::write(outside.join("victim"), b"keep").expect("victim");
    let before = sentinel(tmp.path());
    for (i, mode) in [
        WhiteoutMode::Delete,
        WhiteoutMode::Overlay(XattrNamespace::User),
    ]
    .into_iter()
    .enumerate()
    {
        let root = tmp.path().join(format!("root{i}"));
        std::fs::create_dir(&root).expect("root");
        let options = ApplyOptions {
            chown: false,
            devices: false,
            ..ApplyOptions::new(mode)
        };
        let _ = apply_layer(data, &root, &options);
    }
    let after: Vec<_> = sentinel(tmp.path())
        .into_iter()
        .filter(|(p, _)| {
            !p.starts_with(tmp.path().join("root0")) && !p.starts_with(tmp.path().join("root1"))
        })
        .collect();
    assert_eq!(before, after, "the layer wrote outside its root");
});
