//! The one error type of `kiln-grammar`: what went wrong, where, and how to fix it.

use crate::ast::Span;
use std::fmt::Write as _;

/// Which stage of reading a Dockerfile refused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A parser directive at the head of the file (`# escape=x`).
    Directive,
    /// The text does not form instructions (unknown instruction, unterminated heredoc, …).
    Syntax,
    /// An instruction is well-formed text but not valid (wrong argument count, unknown flag, …).
    Instruction,
    /// Word expansion (`${v:?msg}`, a bad substitution, …).
    Expansion,
    /// The stage graph (unknown stage, cycle, unknown `--target`, …).
    Plan,
}

/// An error with its location in the Dockerfile and, where one helps, a hint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    pub span: Option<Span>,
    pub hint: Option<String>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A message that quotes a huge piece of its input (a 1 MB word) keeps its start and its end.
fn bounded(message: &str) -> std::borrow::Cow<'_, str> {
    const KEEP: usize = 400;
    let count = message.chars().count();
    if count <= 2 * KEEP {
        return message.into();
    }
    let head: String = message.chars().take(KEEP).collect();
    let tail: String = message.chars().skip(count - KEEP).collect();
    format!("{head}…{tail}").into()
}

/// How many characters of a long source line an error shows around its caret.
const SHOWN_CHARS: usize = 120;

/// The part of `line` an error shows: all of it, or for a long line the characters around the
/// caret with `…` where it was cut. Returns the text, the caret's column in it and the
/// underline's width (cut to the text).
fn window(line: &str, caret_at: usize, width: usize) -> (String, usize, usize) {
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= SHOWN_CHARS {
        return (line.to_string(), caret_at, width);
    }
    let end = (caret_at.saturating_sub(SHOWN_CHARS / 4) + SHOWN_CHARS).min(chars.len());
    let start = end.saturating_sub(SHOWN_CHARS);
    let mut text = String::new();
    if start > 0 {
        text.push('…');
    }
    text.extend(&chars[start..end]);
    if end < chars.len() {
        text.push('…');
    }
    let caret = caret_at.clamp(start, end) - start + usize::from(start > 0);
    let width = width.min(end.saturating_sub(caret_at)).max(1);
    (text, caret, width)
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            span: None,
            hint: None,
        }
    }

    pub fn at(mut self, span: Span) -> Self {
        self.span = Some(span);
        self
    }

    /// Attach a span only when the error has none yet (inner errors know better).
    pub fn or_at(mut self, span: Span) -> Self {
        if self.span.is_none() {
            self.span = Some(span);
        }
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// `Dockerfile:3:1: message`, then the source line with a caret under the column, then the hint.
    ///
    /// `file_name` is what the user called the file; `source` is its text (used only to show the line).
    pub fn render(&self, file_name: &str, source: &str) -> String {
        let mut out = String::new();
        match self.span {
            Some(span) => {
                let _ = write!(
                    out,
                    "{file_name}:{}:{}: {}",
                    span.start_line,
                    span.start_col,
                    bounded(&self.message)
                );
                let source = source.strip_prefix('\u{feff}').unwrap_or(source);
                if let Some(line) = source.lines().nth(span.start_line.saturating_sub(1)) {
                    let number = span.start_line.to_string();
                    let pad = " ".repeat(number.len());
                    // Tabs would misalign the caret; show them as single spaces.
                    let shown: String = line
                        .chars()
                        .map(|c| if c == '\t' { ' ' } else { c })
                        .collect();
                    let caret_at = span.start_col.saturating_sub(1).min(shown.chars().count());
                    let width =
                        if span.end_line == span.start_line && span.end_col > span.start_col {
                            (span.end_col - span.start_col + 1)
                                .min(shown.chars().count() - caret_at)
                        } else {
                            1
                        }
                        .max(1);
                    let (shown, caret_at, width) = window(&shown, caret_at, width);
                    let _ = write!(
                        out,
                        "\n {number} | {shown}\n {pad} | {}{}",
                        " ".repeat(caret_at),
                        "^".repeat(width)
                    );
                }
            }
            None => {
                let _ = write!(out, "{file_name}: {}", bounded(&self.message));
            }
        }
        if let Some(hint) = &self.hint {
            let _ = write!(out, "\nhint: {hint}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_names_file_line_column_and_points_at_the_text() {
        let err = Error::new(ErrorKind::Syntax, "unknown instruction \"FRM\"")
            .at(Span {
                start_line: 2,
                start_col: 1,
                end_line: 2,
                end_col: 3,
            })
            .with_hint("did you mean \"FROM\"?");
        let text = err.render("Dockerfile", "# c\nFRM busybox\nRUN x\n");
        assert_eq!(
            text,
            "Dockerfile:2:1: unknown instruction \"FRM\"\n 2 | FRM busybox\n   | ^^^\nhint: did you mean \"FROM\"?"
        );
    }

    #[test]
    fn render_without_span_still_names_the_file() {
        let err = Error::new(ErrorKind::Plan, "no FROM instruction");
        assert_eq!(
            err.render("x/Dockerfile", ""),
            "x/Dockerfile: no FROM instruction"
        );
    }

    #[test]
    fn render_of_a_huge_line_stays_short() {
        let line = format!("LABEL a=\"{}", "x".repeat(1 << 20));
        let err = Error::new(ErrorKind::Syntax, format!("bad {line}")).at(Span {
            start_line: 1,
            start_col: 1,
            end_line: 1,
            end_col: line.len(),
        });
        let text = err.render("D", &line);
        assert!(text.len() < 4096, "{} bytes", text.len());
        assert!(text.starts_with("D:1:1: bad LABEL"), "{text}");
        assert!(text.contains("…\n"), "{text}");
    }

    #[test]
    fn render_survives_spans_past_the_end() {
        let err = Error::new(ErrorKind::Syntax, "unterminated heredoc").at(Span::point(99, 40));
        assert_eq!(err.render("D", "a\n"), "D:99:40: unterminated heredoc");
    }
}
