//! Finding heredocs (`<<EOF`, `<<-"EOT"`, `3<<EOF`) in an instruction's line.
//!
//! BuildKit splits the whole line into shell words (quotes and escapes kept raw, `$VAR` left as
//! written) and treats every word of the form `[digits]<<[-]name` as a heredoc. The delimiter
//! name is that word's tail with quotes removed; a quoted name turns off expansion of the body.
//! This module reproduces that word splitting for the one purpose of finding heredocs: it is
//! not the word expansion used to run instructions (see `crate::expand`).

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

/// An error in a heredoc word (a word the lexer could not read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeredocWordError {
    pub message: String,
    pub range: Range<usize>,
}

/// The heredocs named in `line`, in order.
pub(crate) fn find(line: &str) -> Result<Vec<HeredocStart>, HeredocWordError> {
    if !line.contains("<<") {
        return Ok(Vec::new());
    }
    let options = Options {
        raw_quotes: true,
        raw_escapes: true,
    };
    // As in BuildKit, a line the lexer cannot split (an unterminated quote, `${`) names no
    // heredocs at all.
    let Ok(words) = Lexer::new(line, options).words() else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    for word in words {
        if let Some(start) = heredoc_from_word(&word.text, word.range.clone())? {
            found.push(start);
        }
    }
    Ok(found)
}

/// Matches `^(\d*)<<(-?)([^<]*)$` and reads the name the way BuildKit does.
fn heredoc_from_word(
    word: &str,
    range: Range<usize>,
) -> Result<Option<HeredocStart>, HeredocWordError> {
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
    let error = |message: String| HeredocWordError {
        message,
        range: range.clone(),
    };
    let unquoted = Lexer::new(
        rest,
        Options {
            raw_quotes: false,
            raw_escapes: false,
        },
    )
    .words()
    .map_err(|e| error(format!("invalid heredoc name {rest:?}: {e}")))?;
    // A name that is several words (`<<"a b" c` cannot happen, but `<<a${x:-b c}` can) is not
    // a heredoc.
    let [name] = unquoted.as_slice() else {
        return Ok(None);
    };
    let raw = Lexer::new(
        rest,
        Options {
            raw_quotes: true,
            raw_escapes: false,
        },
    )
    .words()
    .map_err(|e| error(format!("invalid heredoc name {rest:?}: {e}")))?;
    let [raw_name] = raw.as_slice() else {
        return Err(error(format!("inconsistent heredoc name {rest:?}")));
    };
    // Quotes that survive only in the raw reading were quoting (part of) the name.
    let quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    let file_descriptor = if digits == 0 {
        None
    } else {
        // Out-of-range numbers saturate, like Go's ParseUint does.
        Some(word[..digits].parse::<u32>().unwrap_or(u32::MAX))
    };
    Ok(Some(HeredocStart {
        name: name.text.clone(),
        expand: quotes(&name.text) == quotes(&raw_name.text),
        chomp,
        file_descriptor,
        range,
    }))
}

/// How raw the lexer's output is.
#[derive(Debug, Clone, Copy)]
struct Options {
    /// Keep quote characters in the words.
    raw_quotes: bool,
    /// Keep escape characters in the words (the initial setting; `${…}` operands change it).
    raw_escapes: bool,
}

/// One word and where it started and ended in the input.
#[derive(Debug, Clone)]
struct Word {
    text: String,
    range: Range<usize>,
}

/// Nesting of `${a:-${b:-…}}` deeper than this is refused rather than risking the stack.
const MAX_DEPTH: usize = 64;

/// Words being assembled, as BuildKit's `wordsStruct` does it (its quirks included: an empty
/// quoted string opens a word that whitespace does not close).
#[derive(Default)]
struct WordSplitter {
    words: Vec<Word>,
    word: String,
    start: usize,
    in_word: bool,
}

impl WordSplitter {
    fn add_char(&mut self, c: char, at: usize) {
        if c.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.finish(at);
            }
        } else {
            self.add_raw_char(c, at);
        }
    }

    fn add_raw_char(&mut self, c: char, at: usize) {
        self.begin(at);
        self.word.push(c);
    }

    fn add_string(&mut self, s: &str, at: usize) {
        for c in s.chars() {
            self.add_char(c, at);
        }
    }

    fn add_raw_string(&mut self, s: &str, at: usize) {
        self.begin(at);
        self.word.push_str(s);
    }

    fn begin(&mut self, at: usize) {
        if !self.in_word {
            self.start = at;
        }
        self.in_word = true;
    }

    fn finish(&mut self, end: usize) {
        self.words.push(Word {
            text: std::mem::take(&mut self.word),
            range: self.start..end,
        });
        self.in_word = false;
    }

    fn into_words(mut self, end: usize) -> Vec<Word> {
        if !self.word.is_empty() {
            self.finish(end);
        }
        self.words
    }
}

/// BuildKit's shell lexer restricted to what heredoc detection needs: no variables are set and
/// unset ones are left as written, the escape character is always `\`.
struct Lexer<'a> {
    input: &'a str,
    pos: usize,
    raw_quotes: bool,
    raw_escapes: bool,
}

impl<'a> Lexer<'a> {
    fn new(input: &'a str, options: Options) -> Self {
        Lexer {
            input,
            pos: 0,
            raw_quotes: options.raw_quotes,
            raw_escapes: options.raw_escapes,
        }
    }

    fn peek(&self) -> Option<char> {
        self.input[self.pos..].chars().next()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn words(mut self) -> Result<Vec<Word>, String> {
        let raw_escapes = self.raw_escapes;
        let (_, words) = self.process_until(None, raw_escapes, 0)?;
        Ok(words)
    }

    /// Reads up to `stop` (consumed) or the end; returns the text and its words.
    fn process_until(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
        depth: usize,
    ) -> Result<(String, Vec<Word>), String> {
        if depth > MAX_DEPTH {
            return Err("substitutions nested too deeply".to_string());
        }
        let mut result = String::new();
        let mut words = WordSplitter::default();
        while let Some(c) = self.peek() {
            let at = self.pos;
            if stop == Some(c) {
                self.next();
                return Ok((result, words.into_words(at)));
            }
            match c {
                '$' => {
                    let text = self.process_dollar(depth)?;
                    result.push_str(&text);
                    words.add_string(&text, at);
                }
                '\'' => {
                    let text = self.process_single_quote()?;
                    result.push_str(&text);
                    words.add_raw_string(&text, at);
                }
                '"' => {
                    let text = self.process_double_quote(raw_escapes, depth)?;
                    result.push_str(&text);
                    words.add_raw_string(&text, at);
                }
                _ => {
                    self.next();
                    if c == '\\' {
                        if raw_escapes {
                            words.add_raw_char(c, at);
                            result.push(c);
                        }
                        let Some(escaped) = self.next() else {
                            break;
                        };
                        words.add_raw_char(escaped, at);
                        result.push(escaped);
                    } else {
                        words.add_char(c, at);
                        result.push(c);
                    }
                }
            }
        }
        if let Some(stop) = stop {
            return Err(format!(
                "unexpected end of statement while looking for matching {stop}"
            ));
        }
        Ok((result, words.into_words(self.pos)))
    }

    fn process_single_quote(&mut self) -> Result<String, String> {
        let mut result = String::new();
        self.next();
        if self.raw_quotes {
            result.push('\'');
        }
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .to_string(),
                    );
                }
                Some('\'') => {
                    if self.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self, raw_escapes: bool, depth: usize) -> Result<String, String> {
        let mut result = String::new();
        self.next();
        if self.raw_quotes {
            result.push('"');
        }
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .to_string(),
                    );
                }
                Some('"') => {
                    self.next();
                    if self.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let text = self.process_dollar(depth)?;
                    result.push_str(&text);
                }
                Some(_) => {
                    let mut c = self.next().unwrap_or('\\');
                    if c == '\\' {
                        if raw_escapes {
                            result.push(c);
                        }
                        match self.peek() {
                            // A trailing escape is dropped; the missing quote is reported next.
                            None => continue,
                            Some('"' | '$' | '\\') => c = self.next().unwrap_or('\\'),
                            Some(_) => {}
                        }
                    }
                    result.push(c);
                }
            }
        }
    }

    /// `$name`, `${name}`, `${name:-word}` …, all left as written since nothing is set.
    fn process_dollar(&mut self, depth: usize) -> Result<String, String> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.process_name();
            return Ok(format!("${name}"));
        }
        self.next();
        match self.peek() {
            None => return Err("syntax error: missing '}'".to_string()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".to_string()),
            Some(_) => {}
        }
        let name = self.process_name();
        let modifier = self.next();
        match modifier {
            Some('}') => Ok(format!("${{{name}}}")),
            Some(':' | '+' | '-' | '?' | '#' | '%') => {
                let mut modifier_text = String::new();
                let mut operator = modifier;
                if modifier == Some(':') {
                    modifier_text.push(':');
                    operator = self.next();
                }
                if let Some(op) = operator {
                    modifier_text.push(op);
                }
                let raw = matches!(operator, Some('#' | '%'));
                let (word, _) = self
                    .process_until(Some('}'), raw, depth + 1)
                    .map_err(|e| self.missing_brace_or(e))?;
                Ok(format!("${{{name}{modifier_text}{word}}}"))
            }
            Some('/') => {
                if self.peek() == Some('/') {
                    self.next();
                }
                let (pattern, _) = self
                    .process_until(Some('/'), true, depth + 1)
                    .map_err(|e| {
                        if self.peek().is_none() {
                            "syntax error: missing '/' in ${}".to_string()
                        } else {
                            e
                        }
                    })?;
                let (replacement, _) = self
                    .process_until(Some('}'), true, depth + 1)
                    .map_err(|e| self.missing_brace_or(e))?;
                Ok(format!("${{{name}/{pattern}/{replacement}}}"))
            }
            other => Err(format!(
                "unsupported modifier ({}) in substitution",
                other.map_or_else(|| "EOF".to_string(), String::from)
            )),
        }
    }

    fn missing_brace_or(&self, error: String) -> String {
        if self.peek().is_none() {
            "syntax error: missing '}'".to_string()
        } else {
            error
        }
    }

    /// A variable name: digits, one special parameter, or letters/digits/underscores.
    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && is_decimal_digit(c) {
                while let Some(d) = self.peek().filter(|&d| is_decimal_digit(d)) {
                    self.next();
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                name.push(c);
                return name;
            }
            if !(is_letter(c) || is_decimal_digit(c) || c == '_') {
                break;
            }
            self.next();
            name.push(c);
        }
        name
    }
}

/// Go's `unicode.IsDigit` (category Nd).
fn is_decimal_digit(c: char) -> bool {
    use unicode_general_category::{GeneralCategory, get_general_category};
    c.is_ascii_digit()
        || (!c.is_ascii() && get_general_category(c) == GeneralCategory::DecimalNumber)
}

/// Go's `unicode.IsLetter` (category L).
fn is_letter(c: char) -> bool {
    use unicode_general_category::{GeneralCategory as G, get_general_category};
    c.is_ascii_alphabetic()
        || (!c.is_ascii()
            && matches!(
                get_general_category(c),
                G::UppercaseLetter
                    | G::LowercaseLetter
                    | G::TitlecaseLetter
                    | G::ModifierLetter
                    | G::OtherLetter
            ))
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

    #[test]
    fn finds_every_kind_of_heredoc() {
        assert_eq!(
            names("RUN <<EOF"),
            vec![("EOF".to_string(), true, false, None)]
        );
        assert_eq!(
            names("RUN <<-EOF"),
            vec![("EOF".to_string(), true, true, None)]
        );
        assert_eq!(
            names("RUN <<\"EOF\""),
            vec![("EOF".to_string(), false, false, None)]
        );
        assert_eq!(
            names("RUN <<'EOF'"),
            vec![("EOF".to_string(), false, false, None)]
        );
        assert_eq!(
            names("RUN 3<<EOF cat /proc/self/fd/3"),
            vec![("EOF".to_string(), true, false, Some(3))]
        );
        assert_eq!(
            names("COPY <<a <<-\"b\" /dst/"),
            vec![
                ("a".to_string(), true, false, None),
                ("b".to_string(), false, true, None)
            ]
        );
    }

    #[test]
    fn ignores_what_is_not_a_heredoc_word() {
        assert!(names("RUN echo '<<EOF'").is_empty());
        assert!(names("RUN echo \"<<EOF\"").is_empty());
        assert!(names("RUN cat<<EOF").is_empty());
        assert!(names("RUN cat <<<EOF").is_empty());
        assert!(names("RUN cat <<").is_empty());
        assert!(names("RUN cat <<EOF 'unterminated").is_empty());
        assert!(names("RUN cat <<\"\"").is_empty());
    }

    #[test]
    fn keeps_unset_variables_as_written() {
        assert_eq!(
            names("RUN <<$END"),
            vec![("$END".to_string(), true, false, None)]
        );
        assert_eq!(
            names("RUN <<${END:-x}"),
            vec![("${END:-x}".to_string(), true, false, None)]
        );
    }

    #[test]
    fn survives_deep_nesting() {
        let line = format!("RUN <<{}", "${a:-".repeat(10_000));
        assert!(find(&line).unwrap().is_empty());
    }
}
