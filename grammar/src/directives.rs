//! Parser directives: `# syntax=…`, `# escape=…`, `# check=…` at the head of a Dockerfile.
//!
//! As BuildKit reads them: each leading line (white space before the `#` allowed) of the form
//! `#name=value` with a known name is a directive; the first line that is anything else — an
//! instruction, a blank line, an ordinary comment, an unknown directive — ends the head, and
//! directives after it are plain comments. Names are case-insensitive; each may appear once.

use crate::ast::{Directives, Span};
use crate::error::{Error, ErrorKind, Result};

/// One directive line, recognised.
struct Directive<'a> {
    name: String,
    value: &'a str,
    /// Byte offset of the value in the (left-trimmed) line.
    value_at: usize,
}

/// Read the directives from the head of `lines` (line texts without line endings, BOM removed).
pub fn read<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<Directives> {
    let mut directives = Directives::default();
    let mut seen: Vec<String> = Vec::new();
    for (index, text) in lines.into_iter().enumerate() {
        let trimmed = text.trim_start();
        let lead = text.len() - trimmed.len();
        let Some(directive) = recognise(trimmed) else {
            break;
        };
        let line = index + 1;
        let column = |offset: usize| text[..lead + offset].chars().count() + 1;
        let span = Span {
            start_line: line,
            start_col: column(0),
            end_line: line,
            end_col: text.chars().count().max(1),
        };
        if !matches!(directive.name.as_str(), "syntax" | "escape" | "check") {
            break;
        }
        if seen.contains(&directive.name) {
            return Err(Error::new(
                ErrorKind::Directive,
                format!("only one {} parser directive can be used", directive.name),
            )
            .at(span)
            .with_hint("remove the repeated directive"));
        }
        seen.push(directive.name.clone());
        match directive.name.as_str() {
            "syntax" => directives.syntax = Some(directive.value.to_string()),
            "check" => directives.check = Some(directive.value.to_string()),
            _ => {
                directives.escape = match directive.value {
                    "\\" => '\\',
                    "`" => '`',
                    other => {
                        let at = column(directive.value_at);
                        return Err(Error::new(
                            ErrorKind::Directive,
                            format!("invalid escape token '{other}' does not match ` or \\"),
                        )
                        .at(Span {
                            start_line: line,
                            start_col: at,
                            end_line: line,
                            end_col: at + other.chars().count().saturating_sub(1),
                        })
                        .with_hint("use `# escape=\\` (the default) or `# escape=`` (backtick)"));
                    }
                };
            }
        }
    }
    Ok(directives)
}

/// Go's regexp `\s`: the white space of the directive syntax.
fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0c' | '\r')
}

/// Match `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` (the line already left-trimmed).
fn recognise(line: &str) -> Option<Directive<'_>> {
    let after_hash = line.strip_prefix('#')?.trim_start_matches(is_blank);
    let name_len = after_hash
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(after_hash.len(), |(i, _)| i);
    if name_len == 0 {
        return None;
    }
    let name = after_hash[..name_len].to_ascii_lowercase();
    let rest = after_hash[name_len..]
        .trim_start_matches(is_blank)
        .strip_prefix('=')?;
    let trimmed = rest.trim_matches(is_blank);
    let value = if trimmed.is_empty() {
        // The lazy `(.+?)` still takes one character: of a run of blanks, the last.
        let (at, c) = rest.char_indices().next_back()?;
        &rest[at..at + c.len_utf8()]
    } else {
        trimmed
    };
    let value_at = value.as_ptr() as usize - line.as_ptr() as usize;
    Some(Directive {
        name,
        value,
        value_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_text(text: &str) -> Result<Directives> {
        read(text.lines())
    }

    #[test]
    fn reads_all_three_case_insensitively() {
        let d =
            read_text("# syntax = docker/dockerfile:1 \n#ESCAPE=`\n  # Check=skip=all\nFROM x\n")
                .unwrap();
        assert_eq!(d.syntax.as_deref(), Some("docker/dockerfile:1"));
        assert_eq!(d.escape, '`');
        assert_eq!(d.check.as_deref(), Some("skip=all"));
    }

    #[test]
    fn stops_at_the_first_other_line() {
        for text in [
            "# comment\n# escape=`\n",
            "\n# escape=`\n",
            "# unknown=1\n# escape=`\n",
            "FROM x\n# escape=`\n",
        ] {
            assert_eq!(read_text(text).unwrap().escape, '\\', "{text:?}");
        }
    }

    #[test]
    fn repeated_directive_is_an_error() {
        let err = read_text("# escape=`\n# Escape=`\n").unwrap_err();
        assert_eq!(err.kind, ErrorKind::Directive);
        assert_eq!(err.message, "only one escape parser directive can be used");
        assert_eq!(err.span.map(|s| s.start_line), Some(2));
    }

    #[test]
    fn invalid_escape_is_an_error_pointing_at_the_value() {
        let err = read_text("# escape = x\n").unwrap_err();
        assert_eq!(
            err.message,
            "invalid escape token 'x' does not match ` or \\"
        );
        assert_eq!(err.span, Some(Span::point(1, 12)));
        let err = read_text("# escape= \t\n").unwrap_err();
        assert_eq!(
            err.message,
            "invalid escape token '\t' does not match ` or \\"
        );
    }
}
