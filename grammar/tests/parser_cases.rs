//! kiln's own parser cases in `testdata/dockerfiles/`, laid out like BuildKit's corpus:
//! `testfiles/<case>/Dockerfile` with its expected dump in `result`, and
//! `testfiles-negative/<case>/Dockerfile` with the expected rendered error in `error`.
//!
//! The dumps only show what BuildKit's dump shows; the tests below them check the rest of the
//! tree (heredoc bodies, directives, spans, warnings) on the same files.
//!
//! `KILN_BLESS=1 cargo test --test parser_cases` rewrites the expected files from the current
//! output (review the diff before keeping it).

use kiln_grammar::ast::{Dockerfile, Heredoc, Node, Span};
use kiln_grammar::{ErrorKind, dump::dump, parse};
use std::fs;
use std::path::{Path, PathBuf};

mod support;
use support::{case_dirs, read};

fn testdata() -> PathBuf {
    support::testdata("dockerfiles")
}

fn bless() -> bool {
    std::env::var_os("KILN_BLESS").is_some_and(|v| v == "1")
}

/// Compare `actual` with the file `expected`, or rewrite it in bless mode.
fn check(expected: &Path, actual: &str, failures: &mut Vec<String>) {
    if bless() {
        fs::write(expected, actual)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", expected.display()));
        return;
    }
    let wanted = read(expected);
    if wanted != actual {
        failures.push(format!(
            "{}:\n--- expected\n{wanted}--- actual\n{actual}",
            expected.display()
        ));
    }
}

#[test]
fn every_case_dumps_as_expected() {
    let mut failures = Vec::new();
    for case in case_dirs(&testdata().join("testfiles")) {
        let source = read(&case.join("Dockerfile"));
        match parse(&source) {
            Ok(dockerfile) => check(&case.join("result"), &dump(&dockerfile), &mut failures),
            Err(e) => failures.push(format!(
                "{}: refused:\n{}",
                case.display(),
                e.render("Dockerfile", &source)
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_negative_case_fails_with_the_expected_error() {
    let mut failures = Vec::new();
    for case in case_dirs(&testdata().join("testfiles-negative")) {
        let source = read(&case.join("Dockerfile"));
        match parse(&source) {
            Ok(dockerfile) => failures.push(format!(
                "{}: accepted as\n{}",
                case.display(),
                dump(&dockerfile)
            )),
            Err(e) => {
                assert!(e.span.is_some(), "{}: error without a span", case.display());
                let rendered = format!("{}\n", e.render("Dockerfile", &source));
                check(&case.join("error"), &rendered, &mut failures);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn parse_case(name: &str) -> Dockerfile {
    let path = testdata().join("testfiles").join(name).join("Dockerfile");
    let source = read(&path);
    parse(&source).unwrap_or_else(|e| panic!("{name}: {}", e.render("Dockerfile", &source)))
}

fn heredoc(name: &str, content: &str, expand: bool, chomp: bool, fd: Option<u32>) -> Heredoc {
    Heredoc {
        name: name.to_string(),
        content: content.to_string(),
        expand,
        chomp,
        file_descriptor: fd,
    }
}

fn span(start_line: usize, start_col: usize, end_line: usize, end_col: usize) -> Span {
    Span {
        start_line,
        start_col,
        end_line,
        end_col,
    }
}

fn spans(nodes: &[Node]) -> Vec<Span> {
    nodes.iter().map(|node| node.span).collect()
}

#[test]
fn heredocs_in_run() {
    let file = parse_case("heredoc-run");
    let n = &file.nodes;
    assert_eq!(
        n[1].heredocs,
        [heredoc(
            "EOF",
            "echo hello\necho world\n",
            true,
            false,
            None
        )]
    );
    assert_eq!(
        n[2].heredocs,
        [heredoc(
            "EOF",
            "  set -e\n  echo \"$HOME\"\n",
            true,
            false,
            None
        )]
    );
    assert_eq!(
        n[3].heredocs,
        [heredoc("EOF", "welcome\n", true, false, None)]
    );
    assert!(n[4].heredocs.is_empty());
    // A heredoc instruction ends on the line that closes its last heredoc.
    assert_eq!(
        spans(n),
        [
            span(1, 1, 1, 11),
            span(2, 1, 5, 3),
            span(6, 1, 9, 3),
            span(10, 1, 12, 3),
            span(13, 1, 13, 13)
        ]
    );
}

#[test]
fn heredocs_in_copy_and_add() {
    let file = parse_case("heredoc-copy");
    let n = &file.nodes;
    assert_eq!(
        n[1].heredocs,
        [heredoc("EOF", "key=value\n", true, false, None)]
    );
    assert_eq!(
        n[2].heredocs,
        [heredoc(
            "EOT",
            "#!/bin/sh\necho \"$1\"\n",
            false,
            false,
            None
        )]
    );
    assert_eq!(
        n[3].heredocs,
        [
            heredoc("a", "first\n", true, false, None),
            heredoc("b", "second\n", true, false, None)
        ]
    );
    assert_eq!(n[3].span, span(9, 1, 13, 1));
    // The exec form has no heredocs.
    assert!(n[4].json && n[4].heredocs.is_empty());
}

#[test]
fn heredocs_of_every_kind() {
    let file = parse_case("heredoc-kinds");
    let n = &file.nodes;
    assert_eq!(
        n[1].heredocs,
        [heredoc("EOF", "echo tabs\necho nested\n", true, true, None)]
    );
    assert_eq!(n[1].span, span(2, 1, 5, 4));
    assert_eq!(
        n[2].heredocs,
        [heredoc("EOF", "echo $NOT_EXPANDED\n", false, false, None)]
    );
    assert_eq!(
        n[3].heredocs,
        [heredoc("EOF", "three\n", true, false, Some(3))]
    );
    assert_eq!(
        n[4].heredocs,
        [
            heredoc("A", "a body\n", true, false, None),
            heredoc("B", "b body\n", false, true, None)
        ]
    );
    assert_eq!(
        n[5].heredocs,
        [heredoc(
            "PY",
            "print(\"<<not a heredoc>>\")\n",
            true,
            false,
            None
        )]
    );
    // Quoted `<<EOF` is an argument, not a heredoc.
    assert!(n[6].heredocs.is_empty());
    assert_eq!(n.len(), 7);
}

#[test]
fn onbuild_heredoc_belongs_to_the_trigger() {
    let file = parse_case("onbuild-heredoc");
    let onbuild = &file.nodes[1];
    assert!(onbuild.heredocs.is_empty());
    let trigger = onbuild.onbuild.as_deref().expect("trigger");
    assert_eq!(trigger.keyword, "run");
    assert_eq!(
        trigger.heredocs,
        [heredoc("EOF", "echo later\n", true, false, None)]
    );
    assert_eq!(onbuild.span, span(2, 1, 4, 3));
    assert_eq!(trigger.span, span(2, 9, 4, 3));
}

#[test]
fn check_and_syntax_directives() {
    let file = parse_case("check-directive");
    assert_eq!(
        file.directives.syntax.as_deref(),
        Some("docker/dockerfile:1.7")
    );
    assert_eq!(
        file.directives.check.as_deref(),
        Some("skip=JSONArgsRecommended;error=true")
    );
    assert_eq!(file.directives.escape, '\\');
    assert_eq!(file.nodes[0].span.start_line, 4);
}

#[test]
fn backtick_escape() {
    let file = parse_case("escape-backtick");
    assert_eq!(file.directives.escape, '`');
    let n = &file.nodes;
    assert_eq!(n[2].args, ["dir C:\\     && echo done"]);
    assert_eq!(n[2].span, span(5, 1, 6, 16));
    assert_eq!(n[3].span, span(7, 1, 8, 20));
}

#[test]
fn crlf_line_endings() {
    let file = parse_case("crlf");
    let n = &file.nodes;
    assert_eq!(n[1].args, ["a", "b", "=", "c", "d", "="]);
    assert_eq!(n[2].args, ["echo one   && echo two"]);
    // Like BuildKit, the body keeps the line endings it was written with.
    assert_eq!(
        n[3].heredocs,
        [heredoc("EOF", "echo crlf\r\n", true, false, None)]
    );
    assert_eq!(n[4].args, ["sh", "-c", "echo hi"]);
    assert_eq!(
        spans(n),
        [
            span(1, 1, 1, 11),
            span(2, 1, 3, 9),
            span(5, 1, 6, 13),
            span(7, 1, 9, 3),
            span(10, 1, 10, 27)
        ]
    );
}

#[test]
fn empty_continuation_lines_warn() {
    let file = parse_case("empty-continuation");
    assert_eq!(file.nodes[1].args, ["echo a     && echo b     && echo c"]);
    assert_eq!(file.warnings.len(), 1);
    assert_eq!(file.warnings[0].span, Span::point(3, 1));
    assert_eq!(file.nodes[1].span, span(2, 1, 6, 13));
}

#[test]
fn byte_order_mark_is_ignored() {
    let file = parse_case("bom");
    assert_eq!(file.directives.escape, '`');
    assert_eq!(file.nodes[1].args, ["echo a   b"]);
    assert_eq!(file.nodes[0].span, span(2, 1, 2, 11));
}

#[test]
fn original_is_the_joined_line() {
    let file = parse_case("empty-continuation");
    assert_eq!(
        file.nodes[1].original,
        "RUN echo a     && echo b     && echo c"
    );
    let file = parse_case("from-as");
    assert_eq!(
        file.nodes[3].original,
        "from --platform=$BUILDPLATFORM alpine:3.20   AS   tools"
    );
}

#[test]
fn error_kinds() {
    let kind = |source: &str| parse(source).map(|_| ()).unwrap_err().kind;
    assert_eq!(kind("FRM x\n"), ErrorKind::Syntax);
    assert_eq!(kind("# escape=x\nFROM x\n"), ErrorKind::Directive);
    assert_eq!(kind("FROM x\nENV PATH\n"), ErrorKind::Instruction);
    assert_eq!(kind("FROM x\nONBUILD FROM y\n"), ErrorKind::Instruction);
    assert_eq!(kind("FROM x\nRUN <<EOF\n"), ErrorKind::Syntax);
}

/// BuildKit's own heredoc test (`parser_heredoc_test.go`), with kiln's AST: `<<-` bodies come
/// with their leading tabs already stripped.
#[test]
fn heredocs_as_buildkit_reads_them() {
    let file = parse_case("heredoc-buildkit");
    let found: Vec<Vec<Heredoc>> = file.nodes[1..]
        .iter()
        .map(|node| node.heredocs.clone())
        .collect();
    let expected = vec![
        vec![],
        vec![],
        vec![heredoc("EMPTY", "", true, false, None)],
        vec![heredoc("EMPTY2", "", true, false, Some(3))],
        vec![],
        vec![heredoc("INDENT", "\tfoo\n\tbar\n", true, false, None)],
        vec![heredoc("UNINDENT", "baz\nquux\n", true, true, None)],
        vec![heredoc("UNINDENT2", "baz\nquux\n", true, true, None)],
        vec![heredoc("EXPAND", "expand $NAME\n", true, true, None)],
        vec![heredoc(
            "NOEXPAND",
            "don't expand $NAME\n",
            false,
            true,
            None,
        )],
        vec![heredoc(
            "COPY",
            "echo hello world\necho foo bar\n",
            true,
            false,
            None,
        )],
        vec![heredoc(
            "COMMENT",
            "# internal comment\necho hello world\necho foo bar # trailing comment\n",
            true,
            false,
            None,
        )],
        vec![heredoc("MOUNT", "echo hello\n", true, false, None)],
        vec![
            heredoc("FILE1", "content 1\n", true, false, None),
            heredoc("FILE2", "content 2\n", true, false, None),
        ],
        vec![
            heredoc("X", "Y\n", true, false, None),
            heredoc("Y", "X\n", true, false, None),
        ],
        vec![],
        vec![],
        vec![],
    ];
    assert_eq!(found, expected);
}

/// BuildKit's `TestParseWarnsOnEmptyContinutationLine`: blank lines inside a continuation warn,
/// comment lines inside one do not.
#[test]
fn empty_continuation_warnings_as_buildkit() {
    let source = "\nFROM alpine:3.6\n\nRUN something \\\n\n    following \\\n\n    more\n\nRUN another \\\n\n    thing\nRUN non-indented \\\n# this is a comment\n   after-comment\n\nRUN indented \\\n    # this is an indented comment\n    comment\n\t";
    let file = parse(source).expect("parses");
    assert_eq!(
        dump(&file),
        "(from \"alpine:3.6\")\n(run \"something     following     more\")\n(run \"another     thing\")\n(run \"non-indented    after-comment\")\n(run \"indented     comment\")\n"
    );
    let lines: Vec<usize> = file.warnings.iter().map(|w| w.span.start_line).collect();
    assert_eq!(lines, [5, 11]);
    assert!(file.warnings[0].message.contains("empty continuation line"));
    assert_eq!(
        spans(&file.nodes)[1..],
        [
            span(4, 1, 8, 8),
            span(10, 1, 12, 9),
            span(13, 1, 15, 16),
            span(17, 1, 19, 11)
        ]
    );
}
