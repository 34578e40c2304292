//! Physical lines → logical lines, the way BuildKit's scanner reads a Dockerfile.
//!
//! The escape character is known only after the parser directives, so continuation lines are
//! joined here rather than in the grammar. Each logical line keeps a map back to the source
//! (which line and column each piece came from), so every span points at the real text.

use crate::ast::{Span, Warning};

/// The source split into physical lines, each with its line ending (BuildKit's `scanLines`).
pub(crate) struct Source<'a> {
    lines: Vec<&'a str>,
}

impl<'a> Source<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Source {
            lines: text.split_inclusive('\n').collect(),
        }
    }

    /// The number of physical lines.
    pub(crate) fn len(&self) -> usize {
        self.lines.len()
    }

    /// Line `index` (0-based) without its line ending.
    pub(crate) fn text(&self, index: usize) -> &'a str {
        self.lines
            .get(index)
            .map(|raw| trim_newline(raw))
            .unwrap_or("")
    }

    /// Line `index` (0-based) with its line ending, as a heredoc body keeps it.
    pub(crate) fn raw(&self, index: usize) -> &'a str {
        self.lines.get(index).copied().unwrap_or("")
    }
}

/// Strip every trailing `\r` and `\n` (Go's `bytes.TrimRight(line, "\r\n")`).
pub(crate) fn trim_newline(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

/// One piece of a logical line copied from a source line.
#[derive(Debug, Clone, Copy)]
struct Segment {
    /// Byte offset of the piece in the logical line.
    logical: usize,
    /// 0-based source line.
    line: usize,
    /// 1-based column (in characters) where the piece starts in the source line.
    col: usize,
}

/// An instruction's text with continuation lines joined and comment lines dropped.
#[derive(Debug, Clone)]
pub(crate) struct LogicalLine {
    pub(crate) text: String,
    segments: Vec<Segment>,
    /// 1-based position of the last character of the instruction in the source.
    pub(crate) end: (usize, usize),
    /// The first line was indented.
    pub(crate) indented: bool,
}

impl LogicalLine {
    /// The 1-based (line, column) in the source of the character at byte `offset` of the text.
    /// An offset at the very end maps just past the last character.
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let index = self
            .segments
            .partition_point(|seg| seg.logical <= offset)
            .saturating_sub(1);
        let Some(seg) = self.segments.get(index) else {
            return self.end;
        };
        let start = seg.logical.min(self.text.len());
        let offset = offset.clamp(start, self.text.len());
        let chars = self
            .text
            .get(start..offset)
            .map_or(0, |piece| piece.chars().count());
        (seg.line + 1, seg.col + chars)
    }

    /// The span of the text between byte offsets `start` and `end` (exclusive).
    pub(crate) fn span(&self, start: usize, end: usize) -> Span {
        let (start_line, start_col) = self.position(start);
        // The last character is the one that begins before `end`.
        let last = self
            .text
            .get(..end.min(self.text.len()))
            .and_then(|head| head.char_indices().next_back())
            .map_or(start, |(i, _)| i.max(start));
        let (end_line, end_col) = self.position(last);
        Span {
            start_line,
            start_col,
            end_line,
            end_col,
        }
    }
}

/// Reads logical lines off the source, one instruction at a time.
pub(crate) struct Scanner<'s, 'a> {
    source: &'s Source<'a>,
    escape: char,
    /// The next physical line to read (0-based).
    next: usize,
}

impl<'s, 'a> Scanner<'s, 'a> {
    pub(crate) fn new(source: &'s Source<'a>, escape: char) -> Self {
        Scanner {
            source,
            escape,
            next: 0,
        }
    }

    /// The 1-based number of the last line read.
    pub(crate) fn line_number(&self) -> usize {
        self.next
    }

    /// The next physical line (0-based index and its text with the line ending), consumed.
    pub(crate) fn next_raw(&mut self) -> Option<(usize, &'a str)> {
        (self.next < self.source.len()).then(|| {
            let index = self.next;
            self.next += 1;
            (index, self.source.raw(index))
        })
    }

    /// The next instruction's logical line, or `None` at the end of the file.
    ///
    /// Blank lines and comment lines between instructions are skipped. Inside a continuation,
    /// comment lines are dropped and blank lines are dropped with a warning, as BuildKit does.
    pub(crate) fn next_logical(&mut self, warnings: &mut Vec<Warning>) -> Option<LogicalLine> {
        loop {
            let index = self.next;
            if index >= self.source.len() {
                return None;
            }
            self.next += 1;
            let text = self.source.text(index);
            // The first line of an instruction loses its leading white space; a comment line
            // is then nothing at all (a trailing escape on it continues nothing).
            let trimmed = text.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let lead = text.len() - trimmed.len();
            let col = text[..lead].chars().count() + 1;
            let mut line = LogicalLine {
                text: String::new(),
                segments: Vec::new(),
                end: last_char_position(index, text).unwrap_or((index + 1, col)),
                indented: lead > 0,
            };
            let mut continues = self.append(&mut line, index, trimmed, col);
            let mut empty_continuation: Option<usize> = None;
            while continues && self.next < self.source.len() {
                let index = self.next;
                self.next += 1;
                let text = self.source.text(index);
                let trimmed = text.trim_start();
                if trimmed.starts_with('#') {
                    continue;
                }
                if trimmed.is_empty() {
                    empty_continuation.get_or_insert(index);
                    continue;
                }
                if let Some(end) = last_char_position(index, text) {
                    line.end = end;
                }
                continues = self.append(&mut line, index, text, 1);
            }
            if let Some(blank) = empty_continuation {
                warnings.push(Warning {
                    message: "empty continuation line: empty continuation lines will become \
                              errors in a future release"
                        .to_string(),
                    span: Span::point(blank + 1, 1),
                });
            }
            return Some(line);
        }
    }

    /// Add one source line's text to `line`; true when it ends with a line continuation.
    fn append(&self, line: &mut LogicalLine, index: usize, text: &str, col: usize) -> bool {
        let (piece, continues) = match strip_continuation(text, self.escape) {
            Some(piece) => (piece, true),
            None => (text, false),
        };
        if !piece.is_empty() {
            line.segments.push(Segment {
                logical: line.text.len(),
                line: index,
                col,
            });
            line.text.push_str(piece);
        } else if line.segments.is_empty() {
            // Keep a position for an instruction whose first line is only an escape.
            line.segments.push(Segment {
                logical: 0,
                line: index,
                col,
            });
        }
        continues
    }
}

/// The 1-based position of the last non-blank character of a line, if it has one.
fn last_char_position(index: usize, text: &str) -> Option<(usize, usize)> {
    let trimmed = text.trim_end();
    (!trimmed.is_empty()).then(|| (index + 1, trimmed.chars().count()))
}

/// BuildKit's line-continuation test: the line ends with the escape character (then only spaces
/// or tabs), and that escape character is either the whole line or not itself escaped
/// (`([^E])E[ \t]*$|^E[ \t]*$`). Returns the line without the escape and the blanks after it.
pub(crate) fn strip_continuation(line: &str, escape: char) -> Option<&str> {
    let body = line.trim_end_matches([' ', '\t']);
    let head = body.strip_suffix(escape)?;
    match head.chars().next_back() {
        None => Some(head),
        Some(previous) if previous != escape => Some(head),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logical(text: &str) -> Vec<String> {
        let source = Source::new(text);
        let mut scanner = Scanner::new(&source, '\\');
        let mut warnings = Vec::new();
        std::iter::from_fn(|| scanner.next_logical(&mut warnings))
            .map(|line| line.text)
            .collect()
    }

    #[test]
    fn continuation_needs_an_unescaped_escape() {
        assert_eq!(strip_continuation("a \\", '\\'), Some("a "));
        assert_eq!(strip_continuation("a\\ \t", '\\'), Some("a"));
        assert_eq!(strip_continuation("\\", '\\'), Some(""));
        assert_eq!(strip_continuation("a\\\\", '\\'), None);
        assert_eq!(strip_continuation("a`", '`'), Some("a"));
        assert_eq!(strip_continuation("a\\", '`'), None);
        assert_eq!(strip_continuation("", '\\'), None);
    }

    #[test]
    fn joins_continuations_and_drops_comments_and_blanks() {
        assert_eq!(
            logical("RUN a \\\n# c\n\n  b \\\n\nc\n# x\nRUN d\n"),
            ["RUN a   b c", "RUN d"]
        );
    }

    #[test]
    fn positions_map_back_to_the_source() {
        let source = Source::new("  RUN a \\\n   bé c\n");
        let mut scanner = Scanner::new(&source, '\\');
        let line = scanner.next_logical(&mut Vec::new()).unwrap();
        assert_eq!(line.text, "RUN a    bé c");
        assert_eq!(line.position(0), (1, 3));
        let c = line.text.find('c').unwrap();
        assert_eq!(line.position(c), (2, 7));
        assert_eq!(line.end, (2, 7));
    }
}
