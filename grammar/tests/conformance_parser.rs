//! BuildKit's parser test corpus (`shared/conformance/buildkit-parser`): kiln must read every
//! Dockerfile exactly as BuildKit does.

mod support;

use std::path::PathBuf;
use support::{case_dirs as cases, diff, read};

fn corpus() -> PathBuf {
    support::conformance("buildkit-parser")
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
