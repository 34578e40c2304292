//! Dockerfile text → [`Dockerfile`]: BuildKit's parse, with source spans.
//!
//! Reading happens in layers:
//! 1. [`crate::directives`] reads the parser directives at the head (the escape character
//!    decides what a line continuation is); a BOM is dropped first;
//! 2. [`lines`] joins continuation lines into one logical line per instruction, dropping comment
//!    and blank lines inside, and remembers where each piece came from;
//! 3. [`instruction`] reads the logical line with the pest grammar (`dockerfile.pest`):
//!    keyword, `--flags`, and the arguments in the form the instruction takes;
//! 4. for RUN, COPY and ADD in shell form (also as ONBUILD triggers), [`heredoc`] finds the
//!    `<<EOF` markers and each body is read from the following lines up to its delimiter line.

mod heredoc;
mod instruction;
mod lines;

use crate::ast::{Dockerfile, Heredoc, Node, Span};
use crate::dump::go_quote;
use crate::error::{Error, ErrorKind, Result};
use instruction::{Instruction, LineError};
use lines::{LogicalLine, Scanner, Source};

/// Parse a whole Dockerfile.
///
/// Refuses what BuildKit's parser refuses (a bad or repeated directive, a file with no
/// instructions, `ENV key` without a value, a JSON array of non-strings, an unterminated
/// heredoc) and, beyond that, unknown instructions and ONBUILD triggers that can never work;
/// every error has a span and, where one helps, a hint.
pub fn parse(source: &str) -> Result<Dockerfile> {
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    let lines = Source::new(source);
    let directives = crate::directives::read((0..lines.len()).map(|index| lines.text(index)))?;
    let mut scanner = Scanner::new(&lines, directives.escape);
    let mut nodes = Vec::new();
    let mut warnings = Vec::new();
    while let Some(logical) = scanner.next_logical(&mut warnings) {
        if logical.text.trim().is_empty() {
            // A line of nothing but an escape character continued into nothing.
            continue;
        }
        let context = instruction::Context::indented(logical.indented);
        let parsed = instruction::parse(&logical.text, 0, directives.escape, context)
            .map_err(|e| line_error(e, &logical))?;
        let (heredocs, end) = read_heredocs(&parsed, &logical, &mut scanner)?;
        nodes.push(to_node(parsed, &logical, end, heredocs));
    }
    if nodes.is_empty() {
        return Err(Error::new(ErrorKind::Syntax, "file with no instructions")
            .at(Span::point(lines.len().max(1), 1))
            .with_hint("a Dockerfile needs at least a FROM instruction"));
    }
    Ok(Dockerfile {
        directives,
        nodes,
        warnings,
    })
}

/// An error about part of a logical line → an [`Error`] pointing into the source.
fn line_error(error: LineError, logical: &LogicalLine) -> Error {
    let out =
        Error::new(error.kind, error.message).at(logical.span(error.range.start, error.range.end));
    match error.hint {
        Some(hint) => out.with_hint(hint),
        None => out,
    }
}

/// Whether BuildKit looks for heredocs in this instruction: RUN, COPY and ADD (also as an
/// ONBUILD trigger), in shell form.
fn can_contain_heredoc(parsed: &Instruction) -> bool {
    let target = parsed.onbuild.as_deref().unwrap_or(parsed);
    matches!(target.keyword.as_str(), "run" | "copy" | "add") && !target.json
}

/// Read the bodies of the heredocs the instruction names from the lines after it.
///
/// Returns them and where the instruction ends: the last closing delimiter line, or the end of
/// the logical line when there are none.
fn read_heredocs(
    parsed: &Instruction,
    logical: &LogicalLine,
    scanner: &mut Scanner<'_, '_>,
) -> Result<(Vec<Heredoc>, (usize, usize))> {
    let mut end = logical.end;
    if !can_contain_heredoc(parsed) || !logical.text.contains("<<") {
        return Ok((Vec::new(), end));
    }
    let starts = heredoc::find(&logical.text).map_err(|e| {
        Error::new(ErrorKind::Syntax, e.message).at(logical.span(e.range.start, e.range.end))
    })?;
    let mut heredocs = Vec::with_capacity(starts.len());
    for start in starts {
        let mut content = String::new();
        let mut closed = None;
        while let Some((index, raw)) = scanner.next_raw() {
            let text = lines::trim_newline(raw);
            let candidate = if start.chomp {
                text.trim_start_matches('\t')
            } else {
                text
            };
            if candidate == start.name {
                closed = Some((index + 1, text.chars().count().max(1)));
                break;
            }
            // The body keeps its line endings, as BuildKit's does; `<<-` strips leading tabs.
            content.push_str(if start.chomp {
                raw.trim_start_matches('\t')
            } else {
                raw
            });
        }
        let Some(closed_at) = closed else {
            let dash = if start.chomp { "-" } else { "" };
            return Err(Error::new(
                ErrorKind::Syntax,
                format!("unterminated heredoc <<{dash}{}", start.name),
            )
            .at(logical.span(start.range.start, start.range.end))
            .with_hint(format!(
                "end the heredoc with a line that is exactly {} (the file ended at line {})",
                go_quote(&start.name),
                scanner.line_number()
            )));
        };
        end = closed_at;
        heredocs.push(Heredoc {
            name: start.name,
            content,
            expand: start.expand,
            chomp: start.chomp,
            file_descriptor: start.file_descriptor,
        });
    }
    Ok((heredocs, end))
}

/// The node of an instruction read from `logical`, ending at `end`. Heredoc bodies belong to
/// the instruction that runs them: the ONBUILD trigger when there is one.
fn to_node(
    parsed: Instruction,
    logical: &LogicalLine,
    end: (usize, usize),
    heredocs: Vec<Heredoc>,
) -> Node {
    let (start_line, start_col) = logical.position(parsed.keyword_range.start);
    let (own, trigger) = match parsed.onbuild {
        Some(child) => (
            Vec::new(),
            Some(Box::new(to_node(*child, logical, end, heredocs))),
        ),
        None => (heredocs, None),
    };
    Node {
        keyword: parsed.keyword,
        flags: parsed.flags,
        args: parsed.args,
        json: parsed.json,
        heredocs: own,
        onbuild: trigger,
        original: parsed.original,
        span: Span {
            start_line,
            start_col,
            end_line: end.0,
            end_col: end.1,
        },
    }
}
