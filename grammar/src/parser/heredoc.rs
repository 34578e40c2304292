//! Finding heredocs (`<<EOF`, `<<-"EOT"`, `3<<EOF`) in an instruction's line.
//!
//! BuildKit splits the whole logical line into shell words with its word lexer (quotes and
//! escapes kept raw, unset `$VAR`s left as written, `\` as the escape character whatever the
//! escape directive says) and treats every word of the form `^(\d*)<<(-?)([^<]*)$` as a heredoc.
//! The delimiter is that word's tail read as a shell word; quotes anywhere in it turn off
//! expansion of the body. The lexer is the word expander of [`crate::expand`], in those modes.

use crate::expand::Lexer;
use std::ops::Range;

/// A heredoc named in an instruction's line; its body is read from the lines that follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeredocStart {
    pub name: String,
    pub expand: bool,
    pub chomp: bool,
    pub file_descriptor: Option<u32>,
    /// Where the `<<…` word is in the line (bytes), for error messages.
    pub range: Range<usize>,
}

/// An error in a heredoc word (a delimiter the lexer cannot read, such as `<<${`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeredocWordError {
    pub message: String,
    pub range: Range<usize>,
}

/// No variables are known while parsing: unset ones stay as written.
const NO_ENV: &[(String, String)] = &[];

/// The heredocs named in `line`, in order.
pub(crate) fn find(line: &str) -> Result<Vec<HeredocStart>, HeredocWordError> {
    if !line.contains("<<") {
        return Ok(Vec::new());
    }
    let lexer = Lexer::new('\\')
        .raw_quotes(true)
        .raw_escapes(true)
        .skip_unset_env(true);
    // As in BuildKit, a line the lexer cannot split (an unterminated quote, a bad `${`) names
    // no heredocs at all.
    let Ok(words) = lexer.expand_words(line, &NO_ENV) else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    let mut cursor = 0;
    for word in words {
        // The raw words are the line's own text; find each one after the previous, for spans.
        let range = match line.get(cursor..).and_then(|tail| tail.find(word.as_str())) {
            Some(at) => cursor + at..cursor + at + word.len(),
            None => 0..line.len(),
        };
        cursor = range.end.max(cursor);
        if let Some(start) = from_word(&word, range)? {
            found.push(start);
        }
    }
    Ok(found)
}

/// Matches `^(\d*)<<(-?)([^<]*)$` and reads the name the way BuildKit does.
fn from_word(word: &str, range: Range<usize>) -> Result<Option<HeredocStart>, HeredocWordError> {
    let digits = word.bytes().take_while(u8::is_ascii_digit).count();
    let Some(after) = word[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match after.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, after),
    };
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    let error = |e: crate::Error| HeredocWordError {
        message: format!("invalid heredoc delimiter {rest:?}: {}", e.message),
        range: range.clone(),
    };
    let lexer = Lexer::new('\\').skip_unset_env(true);
    let unquoted = lexer.expand_words(rest, &NO_ENV).map_err(error)?;
    // `<<""` reads as no word at all; such a word is not a heredoc.
    let [name] = unquoted.as_slice() else {
        return Ok(None);
    };
    let raw = lexer
        .raw_quotes(true)
        .expand_words(rest, &NO_ENV)
        .map_err(error)?;
    let [raw_name] = raw.as_slice() else {
        return Err(HeredocWordError {
            message: format!("inconsistent heredoc delimiter {rest:?}"),
            range,
        });
    };
    // Quotes that survive only in the raw reading were quoting (part of) the name.
    let quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    let file_descriptor = if digits == 0 {
        None
    } else {
        // Out-of-range numbers saturate, as Go's ParseUint does.
        Some(word[..digits].parse::<u32>().unwrap_or(u32::MAX))
    };
    Ok(Some(HeredocStart {
        name: name.clone(),
        expand: quotes(name) == quotes(raw_name),
        chomp,
        file_descriptor,
        range,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(line: &str) -> Vec<(String, bool, bool, Option<u32>)> {
        find(line)
            .unwrap()
            .into_iter()
            .map(|h| (h.name, h.expand, h.chomp, h.file_descriptor))
            .collect()
    }

    fn heredoc(
        name: &str,
        expand: bool,
        chomp: bool,
        fd: Option<u32>,
    ) -> (String, bool, bool, Option<u32>) {
        (name.to_string(), expand, chomp, fd)
    }

    #[test]
    fn finds_every_kind_of_heredoc() {
        assert_eq!(names("RUN <<EOF"), [heredoc("EOF", true, false, None)]);
        assert_eq!(names("RUN <<-EOF"), [heredoc("EOF", true, true, None)]);
        assert_eq!(names("RUN <<\"EOF\""), [heredoc("EOF", false, false, None)]);
        assert_eq!(names("RUN <<'EOF'"), [heredoc("EOF", false, false, None)]);
        assert_eq!(names("RUN <<E\"O\"F"), [heredoc("EOF", false, false, None)]);
        assert_eq!(
            names("RUN 3<<EOF cat /proc/self/fd/3"),
            [heredoc("EOF", true, false, Some(3))]
        );
        assert_eq!(
            names("COPY <<a <<-\"b\" /dst/"),
            [
                heredoc("a", true, false, None),
                heredoc("b", false, true, None)
            ]
        );
        assert_eq!(
            names("RUN 99999999999<<EOF"),
            [heredoc("EOF", true, false, Some(u32::MAX))]
        );
    }

    #[test]
    fn reports_where_the_word_is() {
        let found = find("RUN cat <<EOF <<-'X' >out").unwrap();
        assert_eq!(found[0].range, 8..13);
        assert_eq!(found[1].range, 14..20);
    }

    #[test]
    fn ignores_what_is_not_a_heredoc_word() {
        for line in [
            "RUN echo '<<EOF'",
            "RUN echo \"<<EOF\"",
            "RUN cat<<EOF",
            "RUN cat <<<EOF",
            "RUN cat <<",
            "RUN cat <<EOF 'unterminated",
            "RUN cat <<\"\"",
            "RUN cat <<a<b",
        ] {
            assert!(names(line).is_empty(), "{line}");
        }
    }

    #[test]
    fn keeps_unset_variables_as_written() {
        assert_eq!(names("RUN <<$END"), [heredoc("$END", true, false, None)]);
        assert_eq!(
            names("RUN <<${END}"),
            [heredoc("${END}", true, false, None)]
        );
    }

    #[test]
    fn survives_deep_nesting() {
        let line = format!("RUN <<{}", "${a:-".repeat(10_000));
        assert!(find(&line).unwrap().is_empty());
    }
}
