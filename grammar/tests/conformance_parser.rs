//! BuildKit's parser test corpus (`shared/conformance/buildkit-parser`): kiln must read every
//! Dockerfile exactly as BuildKit does.

use std::fs;
use std::path::{Path, PathBuf};

/// The corpus, next to the repository (`../shared/conformance`). Missing corpus is a failure:
/// these tests are the proof that the parser matches BuildKit.
fn corpus() -> PathBuf {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/buildkit-parser");
    assert!(
        dir.is_dir(),
        "conformance corpus not found at {} (it lives in shared/conformance beside the repository)",
        dir.display()
    );
    dir
}

/// The case directories under `dir`, sorted.
fn cases(dir: &Path) -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_dir())
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no cases in {}", dir.display());
    cases
}

fn read(path: &Path) -> String {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A line-by-line diff, enough to see what differs.
fn diff(expected: &str, actual: &str) -> String {
    let expected: Vec<&str> = expected.lines().collect();
    let actual: Vec<&str> = actual.lines().collect();
    let mut out = String::new();
    for i in 0..expected.len().max(actual.len()) {
        match (expected.get(i), actual.get(i)) {
            (Some(e), Some(a)) if e == a => {}
            (e, a) => {
                if let Some(e) = e {
                    out.push_str(&format!("  -{:>3} {e}\n", i + 1));
                }
                if let Some(a) = a {
                    out.push_str(&format!("  +{:>3} {a}\n", i + 1));
                }
            }
        }
    }
    out
}

#[test]
fn every_testfile_dumps_like_buildkit() {
    let mut failures = Vec::new();
    let all = cases(&corpus().join("testfiles"));
    for case in &all {
        let name = case.file_name().unwrap_or_default().to_string_lossy();
        let source = read(&case.join("Dockerfile"));
        let expected = read(&case.join("result"));
        match kiln_grammar::parse(&source) {
            Ok(dockerfile) => {
                let actual = kiln_grammar::dump::dump(&dockerfile);
                if actual != expected {
                    failures.push(format!(
                        "{name}: dump differs\n{}",
                        diff(&expected, &actual)
                    ));
                }
            }
            Err(e) => failures.push(format!(
                "{name}: refused: {}",
                e.render("Dockerfile", &source)
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases fail:\n\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

#[test]
fn every_negative_testfile_is_refused() {
    let mut accepted = Vec::new();
    let all = cases(&corpus().join("testfiles-negative"));
    for case in &all {
        let name = case.file_name().unwrap_or_default().to_string_lossy();
        let source = read(&case.join("Dockerfile"));
        match kiln_grammar::parse(&source) {
            Ok(dockerfile) => accepted.push(format!(
                "{name}: accepted as\n{}",
                kiln_grammar::dump::dump(&dockerfile)
            )),
            Err(e) => {
                // Every refusal must say where.
                assert!(e.span.is_some(), "{name}: error without a span: {e}");
            }
        }
    }
    assert!(accepted.is_empty(), "accepted:\n{}", accepted.join("\n"));
}

#[test]
fn instruction_lines_match_buildkit() {
    let source = read(&corpus().join("testfile-line/Dockerfile"));
    let dockerfile = kiln_grammar::parse(&source).expect("testfile-line parses");
    let lines: Vec<(usize, usize)> = dockerfile
        .nodes
        .iter()
        .map(|node| (node.span.start_line, node.span.end_line))
        .collect();
    assert_eq!(lines, vec![(5, 5), (11, 12), (17, 31)]);
}
