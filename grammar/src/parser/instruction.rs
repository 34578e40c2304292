//! One logical line → one instruction, with the pest grammar in `dockerfile.pest`.
//!
//! The grammar finds the keyword, the flags and the argument text; this module then applies the
//! argument shape of each instruction (BuildKit's "line parsers"): exec form or shell form,
//! whitespace-separated lists, `key=value` words, HEALTHCHECK's type word, ONBUILD's nested
//! instruction.

use crate::dump::go_quote;
use crate::error::ErrorKind;
use crate::suggest;
use pest::Parser as _;
use pest::iterators::Pair;
use pest_derive::Parser;
use std::ops::Range;

#[derive(Parser)]
#[grammar = "dockerfile.pest"]
struct DockerfileGrammar;

/// An instruction as read from its line, before spans and heredocs are attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Instruction {
    /// Lower-case.
    pub keyword: String,
    /// Where the keyword is in the line (bytes).
    pub keyword_range: Range<usize>,
    pub flags: Vec<String>,
    pub args: Vec<String>,
    pub json: bool,
    pub onbuild: Option<Box<Instruction>>,
    /// The text this instruction was read from.
    pub original: String,
}

/// A refusal, with the byte range of the line it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LineError {
    /// [`ErrorKind::Syntax`] when the text is not an instruction at all,
    /// [`ErrorKind::Instruction`] when it is one but BuildKit's parser refuses its arguments.
    pub kind: ErrorKind,
    pub message: String,
    pub hint: Option<String>,
    pub range: Range<usize>,
}

impl LineError {
    fn new(message: impl Into<String>, range: Range<usize>) -> Self {
        LineError {
            kind: ErrorKind::Instruction,
            message: message.into(),
            hint: None,
            range,
        }
    }

    fn syntax(mut self) -> Self {
        self.kind = ErrorKind::Syntax;
        self
    }

    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// JSON arrays nested deeper than this are refused without being parsed, so that hostile input
/// cannot exhaust the stack. Any nesting at all is refused anyway (arrays must hold strings).
const MAX_JSON_DEPTH: usize = 64;

/// What the exec-form reader found.
enum JsonForm {
    /// A JSON array of strings.
    Strings(Vec<String>),
    /// Not JSON: the caller falls back to the shell form.
    NotJson,
}

/// Where a line is read, for better messages.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Context {
    /// The line was indented in the source (an indented unknown word is most often a
    /// continuation line whose previous line lacks its escape character).
    pub indented: bool,
    /// The line is an ONBUILD trigger.
    in_onbuild: bool,
}

impl Context {
    pub(crate) fn indented(indented: bool) -> Self {
        Context {
            indented,
            in_onbuild: false,
        }
    }
}

/// Reads the instruction in `line` (a logical line; surrounding whitespace is ignored).
/// `offset` is added to every range reported, `escape` is the Dockerfile's escape character.
pub(crate) fn parse(
    line: &str,
    offset: usize,
    escape: char,
    context: Context,
) -> Result<Instruction, LineError> {
    let trimmed_start = line.len() - line.trim_start().len();
    let text = line.trim();
    let base = offset + trimmed_start;
    let mut pairs = DockerfileGrammar::parse(Rule::instruction, text).map_err(|e| {
        LineError::new(
            format!("cannot read instruction: {}", e.variant.message()),
            base..base + text.len(),
        )
        .syntax()
    })?;
    let instruction = pairs.next().map(Pair::into_inner);

    let mut keyword = String::new();
    let mut keyword_range = base..base;
    let mut flags = Vec::new();
    let mut rest: (&str, usize) = ("", base + text.len());
    for pair in instruction.into_iter().flatten() {
        let span = pair.as_span();
        let range = base + span.start()..base + span.end();
        match pair.as_rule() {
            Rule::known_keyword => {
                keyword = pair.as_str().to_ascii_lowercase();
                keyword_range = range;
            }
            Rule::unknown_keyword => {
                return Err(unknown_instruction(pair.as_str(), range, context.indented));
            }
            Rule::flags => flags = pair.into_inner().filter_map(decode_flag).collect(),
            Rule::rest => rest = (pair.as_str(), range.start),
            _ => {}
        }
    }

    if context.in_onbuild {
        let forbidden = match keyword.as_str() {
            "onbuild" => Some("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
            "from" => Some("FROM isn't allowed as an ONBUILD trigger"),
            "maintainer" => Some("MAINTAINER isn't allowed as an ONBUILD trigger"),
            _ => None,
        };
        if let Some(message) = forbidden {
            return Err(LineError::new(message, keyword_range)
                .hint("ONBUILD takes one ordinary instruction, such as `ONBUILD RUN make`"));
        }
    }

    let mut parsed = Instruction {
        keyword,
        keyword_range,
        flags,
        args: Vec::new(),
        json: false,
        onbuild: None,
        original: line.to_string(),
    };
    let (rest, rest_at) = rest;
    match parsed.keyword.as_str() {
        "add" | "copy" | "volume" => match exec_form(rest, rest_at)? {
            JsonForm::Strings(args) => {
                parsed.args = args;
                parsed.json = true;
            }
            JsonForm::NotJson => parsed.args = blank_words(rest),
        },
        "cmd" | "entrypoint" | "run" | "shell" => {
            (parsed.args, parsed.json) = exec_or_shell_form(rest, rest_at)?;
        }
        "env" | "label" => parsed.args = name_values(&parsed.keyword, rest, rest_at, escape)?,
        "arg" => {
            parsed.args = name_value_words(rest, escape)
                .into_iter()
                .map(|(word, _)| word)
                .collect();
        }
        "expose" | "from" => parsed.args = blank_words(rest),
        "healthcheck" => (parsed.args, parsed.json) = healthcheck(rest, rest_at)?,
        "onbuild" => {
            if !rest.is_empty() {
                let trigger = Context {
                    indented: false,
                    in_onbuild: true,
                };
                parsed.onbuild = Some(Box::new(parse(rest, rest_at, escape, trigger)?));
            }
        }
        // MAINTAINER, STOPSIGNAL, USER, WORKDIR: the text as one argument.
        _ => {
            if !rest.is_empty() {
                parsed.args = vec![rest.to_string()];
            }
        }
    }
    Ok(parsed)
}

fn unknown_instruction(word: &str, range: Range<usize>, indented: bool) -> LineError {
    let error = LineError::new(format!("unknown instruction {}", go_quote(word)), range).syntax();
    if let Some(name) = suggest::instruction(word) {
        return error.hint(format!("did you mean \"{name}\"?"));
    }
    if indented {
        return error.hint(
            "if this line continues the previous instruction, end that line with the escape \
             character (`\\` unless `# escape=` says otherwise)",
        );
    }
    error.hint(format!(
        "instructions are {}",
        suggest::INSTRUCTIONS.join(", ")
    ))
}

/// The text of one flag: quotes removed, escapes applied, `--` kept.
fn decode_flag(flag: Pair<'_, Rule>) -> Option<String> {
    if flag.as_rule() != Rule::flag {
        return None;
    }
    let mut text = String::from("--");
    for part in flag.into_inner().flatten() {
        match part.as_rule() {
            Rule::flag_text | Rule::flag_quoted_text | Rule::flag_escaped => {
                text.push_str(part.as_str())
            }
            _ => {}
        }
    }
    Some(text)
}

/// A whitespace-separated list (`[\t\v\f\r ]`), as BuildKit's `parseStringsWhitespaceDelimited`.
fn blank_words(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return Vec::new();
    }
    match DockerfileGrammar::parse(Rule::blank_words, rest) {
        Ok(pairs) => pairs
            .flatten()
            .filter(|p| p.as_rule() == Rule::blank_word)
            .map(|p| p.as_str().to_string())
            .collect(),
        // The rule accepts any trimmed, non-empty text; keep the text whole if it ever does not.
        Err(_) => vec![rest.to_string()],
    }
}

/// CMD, ENTRYPOINT, RUN, SHELL: the exec form if the text is a JSON array of strings, else the
/// text as one shell-form argument.
fn exec_or_shell_form(rest: &str, rest_at: usize) -> Result<(Vec<String>, bool), LineError> {
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    Ok(match exec_form(rest, rest_at)? {
        JsonForm::Strings(args) => (args, true),
        JsonForm::NotJson => (vec![rest.to_string()], false),
    })
}

/// Reads `rest` as a JSON array, the way Go's `encoding/json` does. Valid JSON that is not an
/// array of strings (`[1]`, `["a", ["b"]]`) is an error; anything else that is not valid JSON
/// is not the exec form.
fn exec_form(rest: &str, rest_at: usize) -> Result<JsonForm, LineError> {
    let text = rest.trim_start();
    let text_at = rest_at + (rest.len() - text.len());
    if !text.starts_with('[') {
        return Ok(JsonForm::NotJson);
    }
    let not_strings = |range: Range<usize>| {
        LineError::new(
            "when using JSON array syntax, arrays must be comprised of strings only",
            range,
        )
        .hint("quote every element, as in [\"echo\", \"hello\"], or drop the brackets to use the shell form")
    };
    let (deepest, closed) = json_depth(text);
    if deepest > MAX_JSON_DEPTH {
        // Too deep to parse safely. Balanced brackets are most likely valid JSON, which would
        // hold a non-string; an array that never closes is not JSON, so it is shell form.
        return if closed {
            Err(not_strings(text_at..text_at + text.len()))
        } else {
            Ok(JsonForm::NotJson)
        };
    }
    let Ok(mut pairs) = DockerfileGrammar::parse(Rule::json_args, text) else {
        return Ok(JsonForm::NotJson);
    };
    let Some(array) = pairs.next().and_then(|args| args.into_inner().next()) else {
        return Ok(JsonForm::NotJson);
    };
    // Go's decoder refuses numbers beyond float64 (the whole value then is not JSON to BuildKit),
    // before it looks at the element types.
    let too_big = array.clone().into_inner().flatten().any(|p| {
        p.as_rule() == Rule::json_number && p.as_str().parse::<f64>().is_ok_and(f64::is_infinite)
    });
    if too_big {
        return Ok(JsonForm::NotJson);
    }
    let mut strings = Vec::new();
    for element in array.into_inner() {
        match element.as_rule() {
            Rule::json_string => strings.push(decode_json_string(element)),
            _ => {
                let span = element.as_span();
                return Err(not_strings(text_at + span.start()..text_at + span.end()));
            }
        }
    }
    Ok(JsonForm::Strings(strings))
}

/// The deepest nesting of `[`/`{` outside JSON strings in the first value of `text`, and
/// whether that value closes (a cheap scan before the real parse; what follows the first value
/// is ignored, as Go's decoder ignores it).
fn json_depth(text: &str) -> (usize, bool) {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return (deepest, true);
                }
            }
            _ => {}
        }
    }
    (deepest, false)
}

/// The value of a `json_string` pair, with Go's handling of `\u` escapes (a lone surrogate
/// becomes U+FFFD).
fn decode_json_string(pair: Pair<'_, Rule>) -> String {
    let mut out = String::new();
    let mut pending_high: Option<u32> = None;
    for part in pair.into_inner() {
        let unit = match part.as_rule() {
            Rule::json_unicode => part
                .clone()
                .into_inner()
                .next()
                .and_then(|hex| u32::from_str_radix(hex.as_str(), 16).ok()),
            _ => None,
        };
        if let Some(high) = pending_high.take() {
            match unit {
                Some(low @ 0xDC00..=0xDFFF) => {
                    let c = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                    out.push(char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER));
                    continue;
                }
                _ => out.push(char::REPLACEMENT_CHARACTER),
            }
        }
        match unit {
            Some(high @ 0xD800..=0xDBFF) => pending_high = Some(high),
            Some(code) => out.push(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER)),
            None => match part.as_str() {
                "\\\"" => out.push('"'),
                "\\\\" => out.push('\\'),
                "\\/" => out.push('/'),
                "\\b" => out.push('\x08'),
                "\\f" => out.push('\x0c'),
                "\\n" => out.push('\n'),
                "\\r" => out.push('\r'),
                "\\t" => out.push('\t'),
                text => out.push_str(text),
            },
        }
    }
    if pending_high.is_some() {
        out.push(char::REPLACEMENT_CHARACTER);
    }
    out
}

/// The raw words of ENV, LABEL and ARG, with their byte offsets in `rest`.
fn name_value_words(rest: &str, escape: char) -> Vec<(String, usize)> {
    read_words(rest, escape, Rule::name_value_words)
}

/// The first of the words of `rest` (ENV and LABEL decide their form on it alone).
fn first_word(rest: &str, escape: char) -> Option<String> {
    read_words(rest, escape, Rule::name_value_first)
        .into_iter()
        .next()
        .map(|(word, _)| word)
}

/// Words of `rest` with the grammar's `rule` (all of them, or only the first).
fn read_words(rest: &str, escape: char, rule: Rule) -> Vec<(String, usize)> {
    if rest.is_empty() {
        return Vec::new();
    }
    // The grammar reads the escape character from the head of its input (see the grammar).
    let mut input = String::with_capacity(rest.len() + 1);
    input.push(escape);
    input.push_str(rest);
    let prefix = escape.len_utf8();
    let Ok(pairs) = DockerfileGrammar::parse(rule, &input) else {
        return vec![(rest.to_string(), 0)];
    };
    pairs
        .flatten()
        .filter(|p| p.as_rule() == Rule::nv_word)
        .map(|word| {
            let at = word.as_span().start().saturating_sub(prefix);
            // The word's parts, without a dropped trailing escape character.
            let text: String = word.into_inner().map(|part| part.as_str()).collect();
            (text, at)
        })
        .collect()
}

/// ENV and LABEL: `key value` (legacy, one pair) or `key=value …`, as `key, value, sep` triples.
fn name_values(
    keyword: &str,
    rest: &str,
    rest_at: usize,
    escape: char,
) -> Result<Vec<String>, LineError> {
    let Some(first) = first_word(rest, escape) else {
        return Ok(Vec::new());
    };
    let upper = keyword.to_ascii_uppercase();
    if !first.contains('=') {
        // The legacy form: the first word is the key, everything after it the value.
        let is_blank = |c: char| matches!(c, ' ' | '\t' | '\x0b' | '\x0c' | '\r');
        let Some(key_end) = rest.find(is_blank) else {
            return Err(LineError::new(
                format!("{upper} must have two arguments"),
                rest_at..rest_at + rest.len(),
            )
            .hint(format!(
                "give {rest} a value: `{upper} {rest}=value` (an empty value is `{upper} {rest}=`)"
            )));
        };
        let value = rest[key_end..].trim_start_matches(is_blank);
        return Ok(vec![
            rest[..key_end].to_string(),
            value.to_string(),
            String::new(),
        ]);
    }
    let words = name_value_words(rest, escape);
    let mut args = Vec::with_capacity(words.len() * 3);
    for (word, at) in words {
        let Some((key, value)) = word.split_once('=') else {
            return Err(LineError::new(
                format!(
                    "Syntax error - can't find = in {}. Must be of the form: name=value",
                    go_quote(&word)
                ),
                rest_at + at..rest_at + at + word.len(),
            )
            .hint(format!(
                "in the `{upper} key=value` form every word is a pair; quote values with spaces"
            )));
        };
        args.extend([key.to_string(), value.to_string(), "=".to_string()]);
    }
    Ok(args)
}

/// HEALTHCHECK: the type word, then the command in exec or shell form.
fn healthcheck(rest: &str, rest_at: usize) -> Result<(Vec<String>, bool), LineError> {
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    let Ok(pairs) = DockerfileGrammar::parse(Rule::health_args, rest) else {
        return Ok((vec![rest.to_string()], false));
    };
    let mut args = Vec::new();
    let mut json = false;
    for pair in pairs.flatten() {
        match pair.as_rule() {
            Rule::health_type => args.push(pair.as_str().to_string()),
            Rule::health_command => {
                let at = rest_at + pair.as_span().start();
                let (command, is_json) = exec_or_shell_form(pair.as_str(), at)?;
                args.extend(command);
                json = is_json;
            }
            _ => {}
        }
    }
    Ok((args, json))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> (Vec<String>, Vec<String>, bool) {
        let i = parse(line, 0, '\\', Context::default()).unwrap();
        (i.flags, i.args, i.json)
    }

    #[test]
    fn flags_are_decoded_and_kept_in_order() {
        let (flags, args, _) = args(r#"COPY --chown="a b" --from=x\ y -- --not-a-flag /d"#);
        assert_eq!(flags, vec!["--chown=a b", "--from=x y"]);
        assert_eq!(args, vec!["--not-a-flag", "/d"]);
    }

    #[test]
    fn exec_form_and_fallbacks() {
        assert_eq!(args(r#"CMD ["a", "b"]"#).1, vec!["a", "b"]);
        assert!(args(r#"CMD ["a", "b"]"#).2);
        assert_eq!(args("CMD ['a']").1, vec!["['a']"]);
        assert!(!args("CMD ['a']").2);
        assert_eq!(args("CMD [1e999]").1, vec!["[1e999]"]);
        assert_eq!(
            args(r#"CMD ["\ud83d\ude00", "\ud800x"]"#).1,
            vec!["😀", "\u{fffd}x"]
        );
        let err = parse(r#"CMD ["a", 1]"#, 0, '\\', Context::default()).unwrap_err();
        assert!(err.message.contains("strings only"));
        assert_eq!(err.range, 10..11);
    }

    /// BuildKit's `json_test.go` cases.
    #[test]
    fn json_arrays_as_buildkit_reads_them() {
        let valid: &[(&str, &[&str])] = &[
            ("[]", &[]),
            (r#"[""]"#, &[""]),
            (r#"["a"]"#, &["a"]),
            (r#"["a","b"]"#, &["a", "b"]),
            (r#"[ "a", "b" ]"#, &["a", "b"]),
            ("[\t\"a\",\t\"b\"\t]", &["a", "b"]),
            ("\t[\t\"a\",\t\"b\"\t]\t", &["a", "b"]),
            (
                r#"["abc 123", "♥", "☃", "\" \\ \/ \b \f \n \r \t \u0000"]"#,
                &["abc 123", "♥", "☃", "\" \\ / \u{8} \u{c} \n \r \t \0"],
            ),
        ];
        for (json, expected) in valid {
            let (_, args, is_json) = args(&format!("CMD {json}"));
            assert_eq!(args, *expected, "{json}");
            assert!(is_json, "{json}");
        }
        for json in [
            r#"["a",42,"b"]"#,
            r#"["a",123.456,"b"]"#,
            r#"["a",{},"b"]"#,
            r#"["a",{"c": "d"},"b"]"#,
            r#"["a",["c"],"b"]"#,
            r#"["a",true,"b"]"#,
            r#"["a",false,"b"]"#,
            r#"["a",null,"b"]"#,
        ] {
            let err = parse(&format!("CMD {json}"), 0, '\\', Context::default()).unwrap_err();
            assert!(err.message.contains("strings only"), "{json}");
            assert_eq!(err.kind, ErrorKind::Instruction);
        }
    }

    #[test]
    fn deep_json_is_read_without_recursion() {
        let deep = 100_000;
        // Balanced: an array holding an array, refused.
        let line = format!("CMD {}{}", "[".repeat(deep), "]".repeat(deep));
        assert!(parse(&line, 0, '\\', Context::default()).is_err());
        // Never closed: not JSON, so the shell form.
        let line = format!("CMD {}", "[".repeat(deep));
        let i = parse(&line, 0, '\\', Context::default()).unwrap();
        assert!(!i.json && i.args.len() == 1);
        // Only the first value counts.
        let line = format!("CMD [\"a\"] {}", "[".repeat(deep));
        assert_eq!(args(&line).1, ["a"]);
    }

    #[test]
    fn env_forms() {
        assert_eq!(args("ENV a b c").1, vec!["a", "b c", ""]);
        assert_eq!(
            args(r#"ENV a="x y" b=z\ w"#).1,
            vec!["a", "\"x y\"", "=", "b", "z\\ w", "="]
        );
        let err = parse("ENV a=1 b", 0, '\\', Context::default()).unwrap_err();
        assert_eq!(
            err.message,
            "Syntax error - can't find = in \"b\". Must be of the form: name=value"
        );
        assert_eq!(err.range, 8..9);
        let err = parse("ENV PATH", 0, '\\', Context::default()).unwrap_err();
        assert_eq!(err.message, "ENV must have two arguments");
    }

    #[test]
    fn backtick_escape_in_words() {
        let i = parse("ENV a=x`\"y b=z", 0, '`', Context::default()).unwrap();
        assert_eq!(i.args, vec!["a", "x`\"y", "=", "b", "z", "="]);
    }

    #[test]
    fn unknown_instruction_suggests() {
        let err = parse("FRM busybox", 0, '\\', Context::default()).unwrap_err();
        assert_eq!(err.message, "unknown instruction \"FRM\"");
        assert_eq!(err.hint.as_deref(), Some("did you mean \"FROM\"?"));
        assert_eq!(err.range, 0..3);
    }

    #[test]
    fn onbuild_nests_one_instruction() {
        let i = parse("ONBUILD RUN echo hi", 0, '\\', Context::default()).unwrap();
        let child = i.onbuild.unwrap();
        assert_eq!(child.keyword, "run");
        assert_eq!(child.args, vec!["echo hi"]);
        assert_eq!(child.keyword_range, 8..11);
        for bad in [
            "ONBUILD ONBUILD RUN x",
            "ONBUILD FROM x",
            "onbuild maintainer me",
        ] {
            assert!(parse(bad, 0, '\\', Context::default()).is_err(), "{bad}");
        }
    }

    #[test]
    fn healthcheck_shapes() {
        assert_eq!(args("HEALTHCHECK NONE").1, vec!["NONE"]);
        assert_eq!(
            args("HEALTHCHECK --interval=5s CMD [\"a\"]"),
            (
                vec!["--interval=5s".to_string()],
                vec!["CMD".to_string(), "a".to_string()],
                true
            )
        );
    }
}
