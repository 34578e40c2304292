//! No input may panic the parser or the dump, and big inputs stay fast.

use kiln_grammar::ast::Dockerfile;
use kiln_grammar::{dump::dump, parse};
use proptest::prelude::*;
use std::time::{Duration, Instant};

/// What must hold for any input: no panic; a result is self-consistent; an error says where.
fn check(source: &str) {
    match parse(source) {
        Ok(dockerfile) => check_tree(source, &dockerfile),
        Err(e) => {
            let span = e.span.expect("every parse error has a span");
            assert!(span.start_line >= 1 && span.start_col >= 1, "{span:?}");
            // Rendering must not panic either, whatever the span.
            let _ = e.render("Dockerfile", source);
        }
    }
}

fn check_tree(source: &str, dockerfile: &Dockerfile) {
    let text = dump(dockerfile);
    assert_eq!(text.lines().count(), dockerfile.nodes.len());
    assert!(text.ends_with('\n'));
    let line_count = source.split_inclusive('\n').count();
    let mut previous_end = 0;
    for node in &dockerfile.nodes {
        let span = node.span;
        assert!(span.start_line >= 1 && span.start_col >= 1, "{span:?}");
        assert!(
            (span.start_line, span.start_col) <= (span.end_line, span.end_col),
            "{span:?}"
        );
        assert!(
            span.end_line <= line_count,
            "{span:?} past line {line_count}"
        );
        assert!(span.start_line > previous_end, "nodes overlap: {span:?}");
        previous_end = span.end_line;
        assert!(!node.keyword.is_empty());
        assert_eq!(node.keyword, node.keyword.to_ascii_lowercase());
    }
}

/// Pieces that exercise every corner of the grammar when glued together at random.
const TOKENS: &[&str] = &[
    "FROM ",
    "RUN ",
    "CMD ",
    "COPY ",
    "ADD ",
    "ENV ",
    "LABEL ",
    "ARG ",
    "ONBUILD ",
    "HEALTHCHECK ",
    "SHELL ",
    "EXPOSE ",
    "VOLUME ",
    "USER ",
    "WORKDIR ",
    "STOPSIGNAL ",
    "MAINTAINER ",
    "ENTRYPOINT ",
    "from ",
    "rUn ",
    "FRM ",
    "--mount=type=cache,target=/x ",
    "--from=a ",
    "--",
    "-- ",
    "--\"\" ",
    "--x='a b' ",
    "[",
    "]",
    "[\"a\", \"b\"]",
    "[1]",
    "[[",
    "{",
    "}",
    ",",
    "\"",
    "'",
    "\\",
    "`",
    "\\\n",
    "`\n",
    "\n",
    "\r\n",
    "\r",
    " ",
    "\t",
    "\u{a0}",
    "\u{b}",
    "\u{feff}",
    "<<EOF",
    "<<-EOF",
    "<<'EOF'",
    "<<\"EOF\"",
    "3<<EOF",
    "<<",
    "<<<",
    "EOF",
    "\tEOF",
    "EOF\n",
    "# escape=`\n",
    "# escape=\\\n",
    "# syntax=x\n",
    "# check=skip=all\n",
    "#",
    "# c\n",
    "=",
    "a=b ",
    "k v ",
    "${x:-y}",
    "${",
    "$",
    "\\u0000",
    "\\ud800",
    "1e999",
    "null",
    "true",
    "é",
    "😀",
    "\0",
    "CMD\n",
    "NONE",
    "AS ",
];

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..60).prop_map(|tokens| tokens.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_strings_do_not_panic(source in any::<String>()) {
        check(&source);
    }

    #[test]
    fn arbitrary_bytes_do_not_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn dockerfile_shaped_soup_does_not_panic(source in token_soup()) {
        check(&source);
    }

    #[test]
    fn instruction_lines_survive_any_argument(
        keyword in prop::sample::select(&TOKENS[..18]),
        rest in "[ -~\t\\\\`\"'\\[\\]]{0,80}",
    ) {
        check(&format!("FROM x\n{keyword}{rest}\n"));
    }
}

/// Parsing `source` must finish within `limit` (generous for debug builds on a shared machine;
/// quadratic behaviour on these sizes would take minutes).
fn parse_within(source: &str, limit: Duration) -> Result<Dockerfile, kiln_grammar::Error> {
    let started = Instant::now();
    let result = parse(source);
    let elapsed = started.elapsed();
    assert!(elapsed < limit, "parsing took {elapsed:?}");
    result
}

const LIMIT: Duration = Duration::from_secs(10);

#[test]
fn a_one_megabyte_line_is_fast() {
    let body = "a".repeat(1 << 20);
    let file = parse_within(&format!("FROM x\nRUN {body}\n"), LIMIT).expect("parses");
    assert_eq!(file.nodes[1].args[0].len(), 1 << 20);
    assert_eq!(file.nodes[1].span.end_col, 4 + (1 << 20));
    assert_eq!(
        dump(&file).len(),
        "(from \"x\")\n(run \"\")\n".len() + (1 << 20)
    );
}

#[test]
fn long_lines_of_every_shape_are_fast() {
    // A quarter of a megabyte each: quadratic behaviour would still take minutes.
    let mb = 1 << 18;
    let shapes = [
        format!("ENV {}", "k=v ".repeat(mb / 4)),
        format!("ENV key {}", "v ".repeat(mb / 2)),
        format!("ARG {}", "\"a b\" ".repeat(mb / 6)),
        format!("CMD [{}\"x\"]", "\"a\", ".repeat(mb / 5)),
        format!("CMD {}", "[".repeat(mb)),
        format!("CMD [\"{}", "\\\"".repeat(mb / 2)),
        format!("COPY {} /dst", "a ".repeat(mb / 2)),
        format!("RUN {}", "<<".repeat(mb / 2)),
        format!("RUN <<{}", "${a:-".repeat(mb / 5)),
        format!("RUN {} x", " ".repeat(mb)),
        format!("RUN --a {} b", "\u{a0}".repeat(mb / 2)),
        format!("COPY {}a b", "--f ".repeat(mb / 4)),
        format!("HEALTHCHECK CMD {}", "é".repeat(mb / 2)),
        format!("{} x", "X".repeat(mb)),
        format!("RUN a {}", "\\\n".repeat(mb / 2)),
        format!("# escape={}", " ".repeat(mb)),
    ];
    for shape in shapes {
        let source = format!("FROM x\n{shape}\n");
        let started = Instant::now();
        check(&source);
        let elapsed = started.elapsed();
        assert!(
            elapsed < LIMIT,
            "{elapsed:?} for {:?}…",
            &shape[..shape.len().min(40)]
        );
    }
}

#[test]
fn ten_thousand_instructions_are_fast() {
    let mut source = String::from("FROM alpine AS base\n");
    for i in 0..10_000 {
        match i % 5 {
            0 => source.push_str(&format!("RUN echo {i} \\\n  && true\n")),
            1 => source.push_str(&format!("ENV K{i}=v{i} OTHER=\"x y\"\n")),
            2 => source.push_str(&format!("COPY --chown=1:1 [\"a{i}\", \"/b\"]\n")),
            3 => source.push_str(&format!("RUN <<EOF\necho {i}\nEOF\n")),
            _ => source.push_str(&format!("LABEL n{i} value\n")),
        }
    }
    let file = parse_within(&source, LIMIT).expect("parses");
    assert_eq!(file.nodes.len(), 10_001);
    let last = file.nodes.last().expect("nodes");
    assert_eq!(last.keyword, "label");
    assert_eq!(last.span.start_line, source.lines().count());
}

#[test]
fn deep_nesting_does_not_overflow_the_stack() {
    let deep = 200_000;
    for source in [
        format!("FROM x\nCMD {}\n", "[".repeat(deep)),
        format!(
            "FROM x\nCMD [\"a\", {}{}]\n",
            "[".repeat(deep),
            "]".repeat(deep)
        ),
        format!("FROM x\nRUN <<{}\n", "${a:-".repeat(deep)),
        format!("FROM x\n{}RUN x\n", "ONBUILD ".repeat(deep)),
    ] {
        check(&source);
    }
}
