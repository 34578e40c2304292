//! BuildKit's AST dump: one `(keyword ["--flag" …] "arg" …)` line per instruction.
//!
//! This is the format of the `result` files in BuildKit's parser test corpus; kiln prints it
//! for `kiln dockerfile parse`-style debugging and tests its parser against the corpus with it.
//! Strings are quoted as Go's `strconv.Quote` quotes them.

use crate::ast::{Dockerfile, Node};
use std::fmt::Write as _;
use unicode_general_category::{GeneralCategory, get_general_category};

/// The dump of a whole file: one line per instruction, each ending in `\n`.
pub fn dump(dockerfile: &Dockerfile) -> String {
    let mut out = String::new();
    for node in &dockerfile.nodes {
        out.push('(');
        dump_node(node, &mut out);
        out.push_str(")\n");
    }
    out
}

/// One node, without the surrounding parentheses.
fn dump_node(node: &Node, out: &mut String) {
    out.push_str(&node.keyword);
    if !node.flags.is_empty() {
        // Go's `%q` of a string slice: `["a" "b"]`.
        out.push_str(" [");
        for (i, flag) in node.flags.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            push_go_quoted(flag, out);
        }
        out.push(']');
    }
    if let Some(child) = &node.onbuild {
        out.push_str(" (");
        dump_node(child, out);
        out.push(')');
    }
    for arg in &node.args {
        out.push(' ');
        push_go_quoted(arg, out);
    }
}

/// `s` quoted as Go's `strconv.Quote` does it.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_go_quoted(s, &mut out);
    out
}

fn push_go_quoted(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if is_go_printable(c) => out.push(c),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
}

/// Go's `unicode.IsPrint`: letters, marks, numbers, punctuation, symbols, and the ASCII space.
fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_ascii() {
        return c.is_ascii_graphic();
    }
    use GeneralCategory as G;
    matches!(
        get_general_category(c),
        G::UppercaseLetter
            | G::LowercaseLetter
            | G::TitlecaseLetter
            | G::ModifierLetter
            | G::OtherLetter
            | G::NonspacingMark
            | G::SpacingMark
            | G::EnclosingMark
            | G::DecimalNumber
            | G::LetterNumber
            | G::OtherNumber
            | G::ConnectorPunctuation
            | G::DashPunctuation
            | G::OpenPunctuation
            | G::ClosePunctuation
            | G::InitialPunctuation
            | G::FinalPunctuation
            | G::OtherPunctuation
            | G::MathSymbol
            | G::CurrencySymbol
            | G::ModifierSymbol
            | G::OtherSymbol
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("\t\n\r\x00\x7f"), r#""\t\n\r\x00\x7f""#);
        assert_eq!(go_quote("♥☃"), "\"♥☃\"");
        assert_eq!(go_quote("\u{a0}\u{ad}\u{200b}"), r#""\u00a0\u00ad\u200b""#);
        assert_eq!(go_quote("\u{e000}\u{10ffff}"), r#""\ue000\U0010ffff""#);
        assert_eq!(go_quote("\x07\x08\x0b\x0c"), r#""\a\b\v\f""#);
    }
}
