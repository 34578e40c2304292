//! The raw syntax tree: one [`Node`] per instruction, as the Dockerfile wrote it.
//!
//! This level mirrors BuildKit's parser output (the `result` dumps in the conformance corpus):
//! nothing is expanded or validated beyond what the parser itself refuses. Typed, validated
//! instructions are built from nodes in [`crate::instructions`].

use serde::Serialize;

/// A source range, 1-based, inclusive of both ends. Columns count characters, not bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Span {
    pub start_line: usize,
    pub start_col: usize,
    pub end_line: usize,
    pub end_col: usize,
}

impl Span {
    /// A span that covers a single point (used for errors that name one position).
    pub fn point(line: usize, col: usize) -> Self {
        Span {
            start_line: line,
            start_col: col,
            end_line: line,
            end_col: col,
        }
    }
}

/// The parser directives read from the head of the file (`# syntax=`, `# escape=`, `# check=`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Directives {
    pub syntax: Option<String>,
    /// The escape character: `\` (default) or `` ` ``.
    pub escape: char,
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            syntax: None,
            escape: '\\',
            check: None,
        }
    }
}

/// A heredoc attached to an instruction (`RUN <<EOF`, `COPY <<-"EOT" /dst`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heredoc {
    /// The delimiter word, without quotes or the `<<`/`<<-` prefix.
    pub name: String,
    /// The body, each line ending in `\n`; with `<<-`, leading tabs already stripped.
    pub content: String,
    /// False when the delimiter was quoted (`<<"EOF"`, `<<'EOF'`): the body is not expanded.
    pub expand: bool,
    /// True for `<<-`: leading tabs were stripped from the body lines.
    pub chomp: bool,
    /// The file descriptor prefix (`3<<EOF`), if any.
    pub file_descriptor: Option<u32>,
}

/// One instruction as parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// The instruction name, lower-case (`from`, `run`, …).
    pub keyword: String,
    /// `--name[=value]` flags, raw and in source order.
    pub flags: Vec<String>,
    /// The arguments, split the way BuildKit splits them for this instruction
    /// (ENV/LABEL: `key, value, sep` triples; JSON form: one per element; shell form: one string).
    pub args: Vec<String>,
    /// True when the arguments came from the JSON (exec) form.
    pub json: bool,
    pub heredocs: Vec<Heredoc>,
    /// For ONBUILD: the nested instruction.
    pub onbuild: Option<Box<Node>>,
    /// The instruction's logical line: continuation lines joined, comments inside dropped.
    pub original: String,
    pub span: Span,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dockerfile {
    pub directives: Directives,
    pub nodes: Vec<Node>,
    /// Non-fatal findings (for example an empty continuation line), as BuildKit warns.
    pub warnings: Vec<Warning>,
}

/// A non-fatal finding of the parser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub message: String,
    pub span: Span,
}
