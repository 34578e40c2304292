//! What the grammar's test files share: finding the corpora and case directories, reading files,
//! and showing how two texts differ.
// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

/// A corpus under `shared/conformance/`, beside the repository. A missing corpus is a failure:
/// these tests are the proof that kiln reads Dockerfiles and words as BuildKit does.
pub fn conformance(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/conformance")
        .join(name);
    assert!(
        dir.exists(),
        "conformance corpus not found at {} (it lives in shared/conformance beside the repository)",
        dir.display()
    );
    dir
}

/// kiln's own cases, `testdata/` in the repository.
pub fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(name)
}

/// The case directories under `dir`, sorted; none at all is a failure.
pub fn case_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_dir())
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no cases in {}", dir.display());
    cases
}

/// A file's text; invalid UTF-8 is replaced, as the parser is fed text.
pub fn read(path: &Path) -> String {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A line-by-line diff, enough to see what differs.
pub fn diff(expected: &str, actual: &str) -> String {
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
