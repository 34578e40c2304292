//! Word expansion: `$VAR`, `${VAR}`, `${VAR:-word}` and friends, quotes, escapes, word splitting.
//!
//! The rules are BuildKit's (`frontend/dockerfile/shell`), case by case, because a Dockerfile that
//! builds with `docker build` must expand to the same words here: the conformance corpus in
//! `shared/conformance/buildkit-shell` is the judge. That includes its quirks, which are kept on
//! purpose and called out where they occur:
//!
//! - `$1`, `$@`, `$#`, … are looked up like any other name (so they expand to "" unless the
//!   environment happens to define them);
//! - patterns (`${v#pat}`, `${v%pat}`, `${v/pat/repl}`) know `*`, `?` and backslash escapes, but
//!   not bracket expressions: `[` and `]` match themselves;
//! - quotes inside a pattern are removed before the pattern is read, so `${v#'*'}` is a wildcard;
//! - `${v//pat/repl}` treats `$0` / `${0}` in the *expanded* replacement as the matched text and
//!   `$$` as `$` (the replacement goes through a regex template in BuildKit);
//! - a byte order mark at the very start of a word or a pattern is ignored.
//!
//! Nothing here recurses without bound: nested `${…}` is capped at [`MAX_NESTING`] levels, and
//! pattern matching is a breadth-first automaton (no backtracking), `O(len(value) × len(pattern))`.
//! The total work of one word is capped at [`MAX_WORK`], so that replacements nested inside
//! replacements cannot grow without bound.

use crate::error::{Error, ErrorKind, Result};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;
use unicode_general_category::{GeneralCategory, get_general_category};

/// How deeply `${…}` may nest (`${a:-${b:-…}}`) before expansion gives up with an error.
pub const MAX_NESTING: usize = 128;

/// What expanding one word may cost before it gives up with an error: characters copied out of
/// variables and produced by `${v/…}`, plus steps of the pattern matcher. Nested replacements
/// multiply (`${V//…/${V//…/…}}` grows as len(V)^depth), so without a bound a short word
/// could ask for gigabytes; no real Dockerfile comes near this.
pub const MAX_WORK: usize = 1 << 25;

/// Where variable values come from.
///
/// Implemented for `BTreeMap<String, String>`, `HashMap<String, String>` and lists of pairs
/// (`[(String, String)]`, `Vec<(String, String)>`), where the last occurrence of a name wins, as
/// with repeated `ENV`/`ARG`.
pub trait Lookup {
    fn lookup(&self, name: &str) -> Option<&str>;
}

impl Lookup for BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl<S: BuildHasher> Lookup for HashMap<String, String, S> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl Lookup for [(String, String)] {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Lookup for Vec<(String, String)> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.as_slice().lookup(name)
    }
}

impl<T: Lookup + ?Sized> Lookup for &T {
    fn lookup(&self, name: &str) -> Option<&str> {
        (**self).lookup(name)
    }
}

/// The word expander. Cheap to build; holds only the escape character and a few switches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lexer {
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
    skip_process_quotes: bool,
    skip_unset_env: bool,
}

impl Default for Lexer {
    fn default() -> Self {
        Lexer::new('\\')
    }
}

impl Lexer {
    /// A lexer for the Dockerfile's escape character: `'\\'` (the default) or `` '`' ``.
    pub fn new(escape: char) -> Lexer {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
        }
    }

    /// The escape character this lexer was built with.
    pub fn escape(&self) -> char {
        self.escape
    }

    /// Keep quote characters in the output (they still group text). BuildKit's `RawQuotes`.
    pub fn raw_quotes(mut self, on: bool) -> Lexer {
        self.raw_quotes = on;
        self
    }

    /// Keep escape characters in the output (they still escape). BuildKit's `RawEscapes`.
    pub fn raw_escapes(mut self, on: bool) -> Lexer {
        self.raw_escapes = on;
        self
    }

    /// Treat quotes as ordinary characters. BuildKit's `SkipProcessQuotes`; BuildKit expands
    /// heredoc bodies with `Lexer::new('\\').skip_process_quotes(true)`, whatever the escape
    /// directive says.
    pub fn skip_process_quotes(mut self, on: bool) -> Lexer {
        self.skip_process_quotes = on;
        self
    }

    /// Leave references to unset variables as written (`$x`, `${x:-y}`). BuildKit's `SkipUnsetEnv`.
    pub fn skip_unset_env(mut self, on: bool) -> Lexer {
        self.skip_unset_env = on;
        self
    }

    /// BuildKit's ProcessWord: one word, quotes removed, no splitting.
    pub fn expand_word(&self, word: &str, env: &dyn Lookup) -> Result<String> {
        self.process(word, env, false).map(|out| out.word)
    }

    /// BuildKit's ProcessWords: expansion that splits into words (as for `ADD a b c`).
    ///
    /// Splitting happens after expansion, on whitespace that is neither quoted nor escaped; text
    /// that came from quotes is never split, text that came from a variable is.
    pub fn expand_words(&self, word: &str, env: &dyn Lookup) -> Result<Vec<String>> {
        self.process(word, env, true).map(|out| out.words)
    }

    /// As [`Lexer::expand_word`], also returning the names of the variables that were looked up
    /// and found (BuildKit's ProcessWordWithMatches), for cache keys and unused-arg warnings.
    pub fn expand_word_with_matches(
        &self,
        word: &str,
        env: &dyn Lookup,
    ) -> Result<(String, BTreeSet<String>)> {
        self.process(word, env, false)
            .map(|out| (out.word, out.matches))
    }

    fn process(&self, word: &str, env: &dyn Lookup, split: bool) -> Result<Processed> {
        let mut chars: Vec<char> = word.chars().collect();
        // Go's text/scanner, which BuildKit reads words with, drops a leading byte order mark.
        if chars.first() == Some(&'\u{feff}') {
            chars.remove(0);
        }
        let mut sw = ShellWord {
            lexer: self,
            env,
            chars,
            pos: 0,
            raw_escapes: self.raw_escapes,
            depth: 0,
            budget: Budget { left: MAX_WORK },
            matches: BTreeSet::new(),
        };
        match sw.process_stop_on(None, self.raw_escapes, split) {
            Ok((word_out, words)) => Ok(Processed {
                word: word_out,
                words,
                matches: sw.matches,
            }),
            Err(fail) => {
                let error = Error::new(
                    ErrorKind::Expansion,
                    format!(
                        "failed to process {:?}: {}",
                        shortened(word),
                        fail.message()
                    ),
                );
                Err(match fail.hint() {
                    Some(hint) => error.with_hint(hint),
                    None => error,
                })
            }
        }
    }
}

struct Processed {
    word: String,
    words: Vec<String>,
    matches: BTreeSet<String>,
}

/// Why expansion stopped. Kept apart from [`Error`] so that the "missing `}`" rewrite (which
/// BuildKit applies when an inner error happens at the end of input) never hides the nesting cap.
#[derive(Debug)]
enum Fail {
    Msg(String),
    /// A `${…}` form BuildKit does not implement (`${v:=x}`, `${#v}`, `${v:1:2}`, …).
    Unsupported(String),
    TooDeep,
    TooMuchWork,
}

impl Fail {
    fn msg(text: impl Into<String>) -> Fail {
        Fail::Msg(text.into())
    }

    /// Whether this is an ordinary error that BuildKit reports as the missing `}` when it
    /// happens at the end of the input.
    fn is_plain(&self) -> bool {
        matches!(self, Fail::Msg(_) | Fail::Unsupported(_))
    }

    fn message(&self) -> String {
        match self {
            Fail::Msg(m) | Fail::Unsupported(m) => m.clone(),
            Fail::TooDeep => format!(
                "variable references nested more than {MAX_NESTING} levels deep (${{a:-${{b:-…}}}})"
            ),
            Fail::TooMuchWork => format!(
                "the expansion is too large (over {MAX_WORK} characters of values, replacements \
                 and pattern matching)"
            ),
        }
    }

    fn hint(&self) -> Option<&'static str> {
        match self {
            Fail::Unsupported(_) => Some(
                "the supported forms are $v, ${v}, ${v-x}, ${v:-x}, ${v+x}, ${v:+x}, ${v?x}, \
                 ${v:?x}, ${v#pat}, ${v##pat}, ${v%pat}, ${v%%pat}, ${v/pat/x} and ${v//pat/x}",
            ),
            Fail::TooDeep => Some("split the value over several ARG or ENV instructions"),
            Fail::TooMuchWork => Some("look for ${v//…/…} nested inside another replacement"),
            Fail::Msg(m) if m.contains("bad substitution") => {
                Some("a variable name must follow \"${\"; write \\$ for a literal dollar sign")
            }
            Fail::Msg(_) => None,
        }
    }
}

type Step<T> = std::result::Result<T, Fail>;

/// The work one word's expansion has left (see [`MAX_WORK`]).
struct Budget {
    left: usize,
}

impl Budget {
    fn charge(&mut self, units: usize) -> Step<()> {
        match self.left.checked_sub(units) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => {
                self.left = 0;
                Err(Fail::TooMuchWork)
            }
        }
    }
}

/// Word splitting state: the words so far and the one being built.
///
/// A word ends at unquoted, unescaped whitespace once it has text. Quotes that produce nothing
/// (`""`) therefore make no word, exactly as in BuildKit.
struct Words {
    /// Off for nested words (`${v:-word}`), whose splitting nobody reads.
    enabled: bool,
    words: Vec<String>,
    word: String,
}

impl Words {
    fn new(enabled: bool) -> Words {
        Words {
            enabled,
            words: Vec::new(),
            word: String::new(),
        }
    }

    /// A character subject to splitting (plain text or the value of a variable).
    fn add_char(&mut self, ch: char) {
        if !self.enabled {
            return;
        }
        if !ch.is_whitespace() {
            self.word.push(ch);
        } else if !self.word.is_empty() {
            self.words.push(std::mem::take(&mut self.word));
        }
    }

    /// A character that is part of the word whatever it is (escaped or quoted).
    fn add_raw_char(&mut self, ch: char) {
        if self.enabled {
            self.word.push(ch);
        }
    }

    fn add_string(&mut self, s: &str) {
        for ch in s.chars() {
            self.add_char(ch);
        }
    }

    fn add_raw_string(&mut self, s: &str) {
        if self.enabled {
            self.word.push_str(s);
        }
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

struct ShellWord<'a> {
    lexer: &'a Lexer,
    env: &'a dyn Lookup,
    chars: Vec<char>,
    pos: usize,
    /// Whether escape characters are kept: on inside patterns, off elsewhere (unless the lexer
    /// says otherwise). Saved and restored around each nested word.
    raw_escapes: bool,
    /// How many `${` are open around the current position.
    depth: usize,
    budget: Budget,
    matches: BTreeSet<String>,
}

impl ShellWord<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let ch = self.peek();
        if ch.is_some() {
            self.pos += 1;
        }
        ch
    }

    fn get_env(&mut self, name: &str) -> Step<Option<String>> {
        match self.env.lookup(name) {
            Some(value) => {
                self.budget.charge(value.len())?;
                self.matches.insert(name.to_string());
                Ok(Some(value.to_string()))
            }
            None => Ok(None),
        }
    }

    /// Reads text up to `stop` (consumed) or the end of input when `stop` is `None`.
    /// Returns the expanded text and, when `split` is set, the words it splits into.
    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
        split: bool,
    ) -> Step<(String, Vec<String>)> {
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let out = self.stop_on_inner(stop, split);
        self.raw_escapes = saved;
        out
    }

    fn stop_on_inner(&mut self, stop: Option<char>, split: bool) -> Step<(String, Vec<String>)> {
        let mut result = String::new();
        let mut words = Words::new(split);
        let quotes = !self.lexer.skip_process_quotes;
        let escape = self.lexer.escape;

        while let Some(ch) = self.peek() {
            if stop == Some(ch) {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            if ch == '$' {
                let value = self.process_dollar()?;
                // Every copy of a value into an enclosing word counts, so that a large value
                // carried up through many levels of `${…}` is paid for at each level.
                self.budget.charge(value.len())?;
                result.push_str(&value);
                words.add_string(&value);
                continue;
            }
            if quotes && (ch == '\'' || ch == '"') {
                let value = if ch == '\'' {
                    self.process_single_quote()?
                } else {
                    self.process_double_quote()?
                };
                // Not charged: quoted text is the input itself, and the values inside double
                // quotes were charged as they were copied in.
                result.push_str(&value);
                words.add_raw_string(&value);
                continue;
            }
            self.pos += 1;
            if ch == escape {
                if self.raw_escapes {
                    words.add_raw_char(ch);
                    result.push(ch);
                }
                // The escape escapes the next character; at the end of the word it is dropped.
                let Some(escaped) = self.next() else {
                    break;
                };
                words.add_raw_char(escaped);
                result.push(escaped);
            } else {
                words.add_char(ch);
                result.push(ch);
            }
        }
        if let Some(stop) = stop {
            return Err(Fail::msg(format!(
                "unexpected end of statement while looking for matching {stop}"
            )));
        }
        Ok((result, words.finish()))
    }

    /// `'…'`: everything is literal up to the next `'`; there is no way to escape one.
    fn process_single_quote(&mut self) -> Step<String> {
        let mut result = String::new();
        let open = self.next();
        if self.lexer.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.next() {
                None => {
                    return Err(Fail::msg(
                        "unexpected end of statement while looking for matching single-quote",
                    ));
                }
                Some('\'') => {
                    if self.lexer.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(ch) => result.push(ch),
            }
        }
    }

    /// `"…"`: literal except `$`, and the escape character before `"`, `$` or itself.
    fn process_double_quote(&mut self) -> Step<String> {
        let mut result = String::new();
        let open = self.next();
        if self.lexer.raw_quotes {
            result.extend(open);
        }
        let escape = self.lexer.escape;
        loop {
            match self.peek() {
                None => {
                    return Err(Fail::msg(
                        "unexpected end of statement while looking for matching double-quote",
                    ));
                }
                Some('"') => {
                    self.pos += 1;
                    if self.lexer.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let value = self.process_dollar()?;
                    self.budget.charge(value.len())?;
                    result.push_str(&value);
                }
                Some(mut ch) => {
                    self.pos += 1;
                    if ch == escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            // An escape right before the end: dropped, and the loop then reports
                            // the missing closing quote.
                            None => continue,
                            Some(next) if next == '"' || next == '$' || next == escape => {
                                self.pos += 1;
                                ch = next;
                            }
                            // Any other escape stays as written (`"a\tb"` is `a\tb`). With raw
                            // escapes on, BuildKit writes it twice; so do we.
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    /// `$name`, `${name}` or `${name<modifier>…}`, starting at the `$`.
    fn process_dollar(&mut self) -> Step<String> {
        self.pos += 1; // the `$`

        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                // `$` before something that cannot start a name is a literal `$`.
                return Ok("$".to_string());
            }
            return Ok(match self.get_env(&name)? {
                Some(value) => value,
                None if self.lexer.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }

        self.pos += 1; // the `{`
        match self.peek() {
            None => return Err(Fail::msg("syntax error: missing '}'")),
            Some('{' | '}' | ':') => return Err(Fail::msg("syntax error: bad substitution")),
            Some(_) => {}
        }
        if self.depth >= MAX_NESTING {
            return Err(Fail::TooDeep);
        }
        self.depth += 1;
        let out = self.process_braced();
        self.depth -= 1;
        out
    }

    /// The part of `${…}` after the `{`.
    fn process_braced(&mut self) -> Step<String> {
        let name = self.process_name();
        let Some(mut ch) = self.next() else {
            return Err(Fail::msg("syntax error: missing '}'"));
        };
        let mut modifier = ch.to_string();

        match ch {
            '}' => Ok(match self.get_env(&name)? {
                Some(value) => value,
                None if self.lexer.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' | '+' | '-' | '?' | '#' | '%' => {
                let null_is_unset = ch == ':';
                if null_is_unset {
                    // `${v:` then the real modifier. Whatever follows is read as the word; an
                    // unknown modifier is refused only after the word is read, as BuildKit does
                    // (so `${v:=x` reports the missing `}` first).
                    let Some(after) = self.next() else {
                        return Err(Fail::msg("syntax error: missing '}'"));
                    };
                    ch = after;
                    modifier.push(ch);
                }
                // Patterns keep their escapes so that `\*` can mean a literal star.
                let raw = ch == '#' || ch == '%';
                let (word, _) = self.braced_word('}', raw)?;

                let value = self.get_env(&name)?;
                let Some(value) = value else {
                    if self.lexer.skip_unset_env {
                        return Ok(format!("${{{name}{modifier}{word}}}"));
                    }
                    return self.apply_modifier(ch, &modifier, &name, None, word, null_is_unset);
                };
                self.apply_modifier(ch, &modifier, &name, Some(value), word, null_is_unset)
            }
            '/' => {
                let replace_all = self.peek() == Some('/');
                if replace_all {
                    self.pos += 1;
                }
                let pattern = match self.process_stop_on(Some('/'), true, false) {
                    Ok((p, _)) => p,
                    Err(e) if e.is_plain() && self.peek().is_none() => {
                        return Err(Fail::msg("syntax error: missing '/' in ${}"));
                    }
                    Err(e) => return Err(e),
                };
                let (replacement, _) = self.braced_word('}', true)?;
                let value = self.get_env(&name)?;
                let Some(value) = value else {
                    if self.lexer.skip_unset_env {
                        let slashes = if replace_all { "//" } else { "/" };
                        return Ok(format!("${{{name}{slashes}{pattern}/{replacement}}}"));
                    }
                    return replace(&pattern, "", &replacement, replace_all, &mut self.budget);
                };
                replace(
                    &pattern,
                    &value,
                    &replacement,
                    replace_all,
                    &mut self.budget,
                )
            }
            _ => Err(Fail::Unsupported(format!(
                "unsupported modifier ({modifier}) in substitution"
            ))),
        }
    }

    /// The word inside `${v<mod>word}` up to `stop`; an error at the end of input is reported
    /// as the missing `}` (the real cause, whatever the inner reader saw).
    fn braced_word(&mut self, stop: char, raw: bool) -> Step<(String, Vec<String>)> {
        match self.process_stop_on(Some(stop), raw, false) {
            Ok(w) => Ok(w),
            Err(e) if e.is_plain() && self.peek().is_none() => {
                Err(Fail::msg("syntax error: missing '}'"))
            }
            Err(e) => Err(e),
        }
    }

    fn apply_modifier(
        &mut self,
        ch: char,
        modifier: &str,
        name: &str,
        value: Option<String>,
        word: String,
        null_is_unset: bool,
    ) -> Step<String> {
        let set = value.is_some();
        let value = value.unwrap_or_default();
        let unset_or_null = !set || (null_is_unset && value.is_empty());
        match ch {
            '-' => Ok(if unset_or_null { word } else { value }),
            '+' => Ok(if unset_or_null { String::new() } else { word }),
            '?' => {
                if !set {
                    let message = if word.is_empty() {
                        "is not allowed to be unset"
                    } else {
                        &word
                    };
                    return Err(Fail::msg(format!("{name}: {message}")));
                }
                if null_is_unset && value.is_empty() {
                    let message = if word.is_empty() {
                        "is not allowed to be empty"
                    } else {
                        &word
                    };
                    return Err(Fail::msg(format!("{name}: {message}")));
                }
                Ok(value)
            }
            '#' | '%' => {
                // `#`/`%` remove the shortest match, `##`/`%%` the longest. The doubled character
                // is recognised after expansion and quote removal, as BuildKit does.
                let (pattern, greedy) = match word.strip_prefix(ch) {
                    Some(rest) => (rest, true),
                    None => (word.as_str(), false),
                };
                if ch == '%' {
                    trim_suffix(pattern, &value, greedy, &mut self.budget)
                } else {
                    trim_prefix(pattern, &value, greedy, &mut self.budget)
                }
            }
            _ => Err(Fail::Unsupported(format!(
                "unsupported modifier ({modifier}) in substitution"
            ))),
        }
    }

    /// A name: letters, digits and `_`; or a run of digits (positional parameter); or one special
    /// parameter character (`@ * # ? - $ ! 0`). Empty when none starts here.
    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && is_go_digit(ch) {
                while let Some(d) = self.peek().filter(|&d| is_go_digit(d)) {
                    self.pos += 1;
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && is_special_param(ch) {
                self.pos += 1;
                name.push(ch);
                return name;
            }
            if !is_go_letter(ch) && !is_go_digit(ch) && ch != '_' {
                break;
            }
            self.pos += 1;
            name.push(ch);
        }
        name
    }
}

/// POSIX special parameters; they are never set in a Dockerfile, so they expand to "".
fn is_special_param(ch: char) -> bool {
    matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

/// Go's `unicode.IsLetter`: general category L (Lu, Ll, Lt, Lm, Lo). Rust's `is_alphabetic`
/// would also take letter numbers and combining vowel signs, which end a name in BuildKit.
fn is_go_letter(ch: char) -> bool {
    if ch.is_ascii() {
        return ch.is_ascii_alphabetic();
    }
    matches!(
        get_general_category(ch),
        GeneralCategory::UppercaseLetter
            | GeneralCategory::LowercaseLetter
            | GeneralCategory::TitlecaseLetter
            | GeneralCategory::ModifierLetter
            | GeneralCategory::OtherLetter
    )
}

/// Go's `unicode.IsDigit`: general category Nd (decimal digits of any script).
fn is_go_digit(ch: char) -> bool {
    if ch.is_ascii() {
        return ch.is_ascii_digit();
    }
    get_general_category(ch) == GeneralCategory::DecimalNumber
}

// ---------------------------------------------------------------------------------------------
// Patterns
// ---------------------------------------------------------------------------------------------

/// One element of a compiled shell pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `?`: any one character except a newline (BuildKit's pattern becomes a Go regex `.`).
    Any,
    /// `*`: any run of characters without a newline (regex `.*` or `.*?`).
    Star,
}

/// Reads a shell pattern as BuildKit's `convertShellPatternToRegex` does. The backslash is the
/// pattern escape whatever the Dockerfile's escape character: `\*`, `\?`, `\\` are literal, `\}`
/// and `\/` are the brace or slash, any other escape is an error.
///
/// `shown` is the pattern as the user wrote it, for messages (`%` reads a reversed pattern).
fn compile_pattern(pattern: &str, shown: &str) -> Step<Vec<Tok>> {
    let mut chars = pattern.chars().peekable();
    if chars.peek() == Some(&'\u{feff}') {
        chars.next();
    }
    let mut toks = Vec::with_capacity(pattern.len());
    while let Some(ch) = chars.next() {
        match ch {
            // A run of stars matches what one star matches (same span, same preference), and
            // collapsing it keeps `***…` from costing time per star.
            '*' if toks.last() == Some(&Tok::Star) => {}
            '*' => toks.push(Tok::Star),
            '?' => toks.push(Tok::Any),
            '\\' => match chars.peek().copied() {
                // The escape only hid the character from `${…}` parsing; it is not part of the
                // pattern, and the character itself is read next, as a literal.
                Some('}' | '/') => {}
                Some(c @ ('*' | '?' | '\\')) => {
                    chars.next();
                    toks.push(Tok::Lit(c));
                }
                Some(c) => {
                    return Err(Fail::msg(format!(
                        "invalid pattern ({shown}) in substitution: invalid escape '\\{c}'"
                    )));
                }
                None => {
                    return Err(Fail::msg(format!(
                        "invalid pattern ({shown}) in substitution: invalid escape '\\' at the end"
                    )));
                }
            },
            c => toks.push(Tok::Lit(c)),
        }
    }
    Ok(toks)
}

/// `${v#pat}` / `${v##pat}`: remove the shortest / longest prefix matching `pat`.
fn trim_prefix(pattern: &str, value: &str, greedy: bool, budget: &mut Budget) -> Step<String> {
    trim_prefix_shown(pattern, pattern, value, greedy, budget)
}

fn trim_prefix_shown(
    pattern: &str,
    shown: &str,
    value: &str,
    greedy: bool,
    budget: &mut Budget,
) -> Step<String> {
    // Reading the pattern and the value is work too, whatever the matcher does after.
    budget.charge(pattern.len() + value.len())?;
    let toks = compile_pattern(pattern, shown)?;
    let text: Vec<char> = value.chars().collect();
    Ok(
        match Matcher::new(&toks, greedy).find(&text, 0, true, budget)? {
            Some((_, end)) => text[end..].iter().collect(),
            None => value.to_string(),
        },
    )
}

/// `${v%pat}` / `${v%%pat}`: remove the shortest / longest suffix matching `pat`. Done as a
/// prefix trim of the reversed value with the reversed pattern, as BuildKit does (escapes stay in
/// front of the character they escape).
fn trim_suffix(pattern: &str, value: &str, greedy: bool, budget: &mut Budget) -> Step<String> {
    let reversed_value: String = value.chars().rev().collect();
    let reversed_pattern = reverse_pattern(pattern);
    let trimmed = trim_prefix_shown(&reversed_pattern, pattern, &reversed_value, greedy, budget)?;
    Ok(trimmed.chars().rev().collect())
}

fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut units: Vec<&[char]> = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        let len = if chars[i] == '\\' && i + 1 < chars.len() {
            2
        } else {
            1
        };
        units.push(&chars[i..i + len]);
        i += len;
    }
    units.iter().rev().flat_map(|u| u.iter()).collect()
}

/// `${v/pat/repl}` (first match) and `${v//pat/repl}` (every match). Stars are greedy.
fn replace(
    pattern: &str,
    value: &str,
    replacement: &str,
    all: bool,
    budget: &mut Budget,
) -> Step<String> {
    budget.charge(pattern.len() + value.len() + replacement.len())?;
    let toks = compile_pattern(pattern, pattern)?;
    let mut matcher = Matcher::new(&toks, true);
    let text: Vec<char> = value.chars().collect();
    if !all {
        return Ok(match matcher.find(&text, 0, false, budget)? {
            Some((start, end)) => {
                budget.charge(replacement.len())?;
                let mut out: String = text[..start].iter().collect();
                out.push_str(replacement);
                out.extend(&text[end..]);
                out
            }
            None => value.to_string(),
        });
    }

    // Go's `Regexp.ReplaceAllString`: every leftmost-first match from where the last one ended,
    // an empty match right after a match is not replaced, and the search always moves on.
    let template: Vec<char> = replacement.chars().collect();
    let mut out = String::new();
    let mut last_end = 0;
    let mut search = 0;
    while search <= text.len() {
        let Some((start, end)) = matcher.find(&text, search, false, budget)? else {
            break;
        };
        out.extend(&text[last_end..start]);
        if end > last_end || start == 0 {
            expand_template(&template, &text[start..end], &mut out, budget)?;
        }
        last_end = end;
        search = if search + 1 > end { search + 1 } else { end };
    }
    out.extend(&text[last_end.min(text.len())..]);
    Ok(out)
}

/// Go's `Regexp.Expand` for a pattern without groups: `$$` is `$`, `$0` / `${0}` is the match,
/// any other `$name` / `${name}` is empty, and a `$` that starts no name is kept.
fn expand_template(
    template: &[char],
    matched: &[char],
    out: &mut String,
    budget: &mut Budget,
) -> Step<()> {
    budget.charge(template.len())?;
    let mut i = 0;
    while i < template.len() {
        let ch = template[i];
        i += 1;
        if ch != '$' {
            out.push(ch);
            continue;
        }
        if template.get(i) == Some(&'$') {
            out.push('$');
            i += 1;
            continue;
        }
        let brace = template.get(i) == Some(&'{');
        let name_start = if brace { i + 1 } else { i };
        let mut j = name_start;
        while j < template.len()
            && (is_go_letter(template[j]) || is_go_digit(template[j]) || template[j] == '_')
        {
            j += 1;
        }
        let name = &template[name_start..j];
        let closed = !brace || template.get(j) == Some(&'}');
        if name.is_empty() || !closed {
            out.push('$');
            continue;
        }
        if name == ['0'] {
            budget.charge(matched.len())?;
            out.extend(matched);
        }
        i = if brace { j + 1 } else { j };
    }
    Ok(())
}

/// A leftmost-first matcher for compiled patterns: a Pike VM (threads in priority order, one per
/// pattern position), so it agrees with the Go regex BuildKit builds while never backtracking.
/// Its buffers are kept between searches: `${v//…}` searches once per match.
struct Matcher<'p> {
    toks: &'p [Tok],
    greedy: bool,
    /// `marks[state] == generation` when `state` is already in the list being built.
    marks: Vec<u32>,
    generation: u32,
    /// Threads as `(state, start)`, highest priority first; `current` is at the position being
    /// read, `next` at the one after it.
    current: Vec<(usize, usize)>,
    next: Vec<(usize, usize)>,
}

impl<'p> Matcher<'p> {
    fn new(toks: &'p [Tok], greedy: bool) -> Self {
        Matcher {
            toks,
            greedy,
            marks: vec![0; toks.len() + 1],
            generation: 0,
            current: Vec::new(),
            next: Vec::new(),
        }
    }

    /// Starts a new thread list: every state is unmarked again.
    fn next_generation(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            // Wrapped (after four billion lists): clear the marks rather than trust old ones.
            self.marks.iter_mut().for_each(|m| *m = 0);
            self.generation = 1;
        }
    }

    /// The leftmost-first match starting at or after `from` (exactly at `from` when `anchored`),
    /// as `(start, end)` character indices.
    fn find(
        &mut self,
        text: &[char],
        from: usize,
        anchored: bool,
        budget: &mut Budget,
    ) -> Step<Option<(usize, usize)>> {
        let matched = self.toks.len();
        let mut best = None;
        let mut current = std::mem::take(&mut self.current);
        let mut next = std::mem::take(&mut self.next);
        current.clear();
        self.next_generation();
        self.add(&mut current, 0, from);
        let mut pos = from;
        let outcome = loop {
            if current.is_empty() && (best.is_some() || anchored) {
                break Ok(());
            }
            // One unit per thread stepped, plus one for the position itself.
            if let Err(e) = budget.charge(current.len() + 1) {
                break Err(e);
            }
            self.next_generation();
            next.clear();
            let ch = text.get(pos).copied();
            for &(state, start) in &current {
                if state == matched {
                    // A match; threads after this one have lower priority and are dropped.
                    best = Some((start, pos));
                    break;
                }
                let Some(ch) = ch else { continue };
                let target = match self.toks[state] {
                    Tok::Lit(c) if c == ch => state + 1,
                    Tok::Any if ch != '\n' => state + 1,
                    Tok::Star if ch != '\n' => state,
                    _ => continue,
                };
                self.add(&mut next, target, start);
            }
            if pos >= text.len() {
                break Ok(());
            }
            pos += 1;
            if best.is_none() && !anchored {
                // A new attempt starting here, behind every attempt that started earlier.
                self.add(&mut next, 0, pos);
            }
            std::mem::swap(&mut current, &mut next);
        };
        self.current = current;
        self.next = next;
        outcome.map(|()| best)
    }

    /// Adds the thread at `state` and what it reaches without reading a character, in priority
    /// order. A `Star` entry in the list is the thread that reads one more character for that
    /// star; skipping the star comes after it when greedy, before it when not. Runs of stars
    /// were collapsed when the pattern was compiled, so one step reaches everything.
    fn add(&mut self, list: &mut Vec<(usize, usize)>, state: usize, start: usize) {
        if self.marks[state] == self.generation {
            return;
        }
        self.marks[state] = self.generation;
        if self.toks.get(state) != Some(&Tok::Star) {
            list.push((state, start));
            return;
        }
        let after = state + 1;
        let after_is_new = self.marks[after] != self.generation;
        if after_is_new {
            self.marks[after] = self.generation;
        }
        if self.greedy {
            list.push((state, start));
        }
        if after_is_new {
            list.push((after, start));
        }
        if !self.greedy {
            list.push((state, start));
        }
    }
}

/// The word as an error message quotes it: whole, or for a huge word its start and its end
/// (a 1 MB word must not become a 1 MB message).
fn shortened(word: &str) -> std::borrow::Cow<'_, str> {
    const KEEP: usize = 100;
    if word.chars().count() <= 2 * KEEP {
        return word.into();
    }
    let head: String = word.chars().take(KEEP).collect();
    let tail: String = {
        let mut t: Vec<char> = word.chars().rev().take(KEEP).collect();
        t.reverse();
        t.into_iter().collect()
    };
    format!("{head}…{tail}").into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<(String, String)> {
        [
            ("PWD", "/home"),
            ("SHELL", "bash"),
            ("NULL", ""),
            ("FILE", "archive.tar.gz"),
            ("PATHV", "/usr/local/bin/tool"),
            ("SPACED", " a  b "),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn word(input: &str) -> Result<String> {
        Lexer::new('\\').expand_word(input, &env())
    }

    fn ok(input: &str) -> String {
        match word(input) {
            Ok(w) => w,
            Err(e) => panic!("{input:?} failed: {e}"),
        }
    }

    fn err(input: &str) -> String {
        match word(input) {
            Ok(w) => panic!("{input:?} expanded to {w:?}, expected an error"),
            Err(e) => {
                assert_eq!(e.kind, ErrorKind::Expansion);
                assert!(e.span.is_none());
                e.message
            }
        }
    }

    #[test]
    fn plain_names_and_braces() {
        assert_eq!(ok("$PWD/x"), "/home/x");
        assert_eq!(ok("${PWD}x"), "/homex");
        assert_eq!(ok("$UNSET-x"), "-x");
        assert_eq!(ok("a$"), "a$");
        assert_eq!(ok("$/"), "$/");
    }

    #[test]
    fn prefix_patterns_shortest_and_longest() {
        assert_eq!(ok("${FILE#*.}"), "tar.gz");
        assert_eq!(ok("${FILE##*.}"), "gz");
        assert_eq!(ok("${PATHV#/*/}"), "local/bin/tool");
        assert_eq!(ok("${PATHV##/*/}"), "tool");
        assert_eq!(ok("${FILE#arch}"), "ive.tar.gz");
        assert_eq!(ok("${FILE#nomatch}"), "archive.tar.gz");
        assert_eq!(ok("${FILE#?}"), "rchive.tar.gz");
        assert_eq!(ok("${FILE#}"), "archive.tar.gz");
        assert_eq!(ok("${UNSET#*}"), "");
    }

    #[test]
    fn suffix_patterns_shortest_and_longest() {
        assert_eq!(ok("${FILE%.*}"), "archive.tar");
        assert_eq!(ok("${FILE%%.*}"), "archive");
        assert_eq!(ok("${PATHV%/*}"), "/usr/local/bin");
        assert_eq!(ok("${PATHV%%/*}"), "");
        assert_eq!(ok("${FILE%gz}"), "archive.tar.");
        assert_eq!(ok("${FILE%??}"), "archive.tar.");
    }

    #[test]
    fn escaped_glob_characters_are_literal() {
        let env: Vec<(String, String)> = vec![("V".into(), "a*b?c\\d".into())];
        let lx = Lexer::new('\\');
        assert_eq!(lx.expand_word("${V#a\\*}", &env).unwrap(), "b?c\\d");
        assert_eq!(lx.expand_word("${V#*\\?}", &env).unwrap(), "c\\d");
        assert_eq!(lx.expand_word("${V%\\\\d}", &env).unwrap(), "a*b?c");
        assert_eq!(lx.expand_word("${V%%\\**}", &env).unwrap(), "a");
        // Brackets are not character classes in BuildKit: they match themselves.
        let env: Vec<(String, String)> = vec![("V".into(), "[ab]c".into())];
        assert_eq!(lx.expand_word("${V#[ab]}", &env).unwrap(), "c");
        assert_eq!(lx.expand_word("${V#[a]}", &env).unwrap(), "[ab]c");
    }

    #[test]
    fn invalid_pattern_escape_is_an_error() {
        let message = err("${FILE#\\a}");
        assert!(message.contains("invalid escape"), "{message}");
        // The message shows the pattern as written, even where it is matched reversed.
        let message = err("${FILE%x\\ay}");
        assert!(message.contains("invalid pattern (x\\ay)"), "{message}");
        assert!(message.contains("invalid escape '\\a'"), "{message}");
        assert!(err("${FILE/\\q/x}").contains("invalid escape"));
    }

    #[test]
    fn quotes_inside_patterns_are_removed_first() {
        // BuildKit removes the quotes before reading the pattern, so a quoted star still globs.
        assert_eq!(ok("${FILE#'*.'}"), "tar.gz");
        assert_eq!(ok("${FILE#\"arch\"}"), "ive.tar.gz");
    }

    #[test]
    fn replace_first_and_all() {
        assert_eq!(ok("${FILE/a/X}"), "Xrchive.tar.gz");
        assert_eq!(ok("${FILE//a/X}"), "Xrchive.tXr.gz");
        assert_eq!(ok("${FILE/.*/}"), "archive");
        assert_eq!(ok("${FILE//?/-}"), "--------------");
        assert_eq!(ok("${FILE/zzz/X}"), "archive.tar.gz");
        assert_eq!(ok("${PATHV//\\//:}"), ":usr:local:bin:tool");
        assert_eq!(ok("${UNSET/a/b}"), "");
        // An unset variable is matched as "": a pattern that matches nothing is replaced.
        assert_eq!(ok("${UNSET/*/b}"), "b");
        assert_eq!(ok("${UNSET//*/b}"), "b");
        // Unlike bash, the replacement part is required.
        assert!(err("${FILE//a}").contains("missing '/'"));
        assert_eq!(ok("${FILE//a/}"), "rchive.tr.gz");
    }

    #[test]
    fn replace_all_with_empty_matches_inserts_between_characters() {
        let env: Vec<(String, String)> = vec![("V".into(), "abc".into())];
        let lx = Lexer::new('\\');
        // Stars in replacements are greedy: `*` takes the whole value once, and the empty match
        // at the end, right after it, is not replaced again. An empty pattern matches between
        // every two characters.
        assert_eq!(lx.expand_word("${V//*/-}", &env).unwrap(), "-");
        assert_eq!(lx.expand_word("${V///-}", &env).unwrap(), "-a-b-c-");
        assert_eq!(lx.expand_word("${V//b*/-}", &env).unwrap(), "a-");
    }

    #[test]
    fn replace_all_template_dollar_zero_is_the_match() {
        let env: Vec<(String, String)> = vec![("V".into(), "abc".into())];
        let lx = Lexer::new('\\');
        assert_eq!(lx.expand_word("${V//b/'<$0>'}", &env).unwrap(), "a<b>c");
        assert_eq!(lx.expand_word("${V//b/'${0}'}", &env).unwrap(), "abc");
        assert_eq!(lx.expand_word("${V//b/'$$'}", &env).unwrap(), "a$c");
        assert_eq!(lx.expand_word("${V//b/'$x'}", &env).unwrap(), "ac");
        assert_eq!(lx.expand_word("${V//b/'$.'}", &env).unwrap(), "a$.c");
        // The single replacement is literal.
        assert_eq!(lx.expand_word("${V/b/'$0'}", &env).unwrap(), "a$0c");
    }

    #[test]
    fn newlines_stop_wildcards() {
        let env: Vec<(String, String)> = vec![("V".into(), "a\nb.c".into())];
        let lx = Lexer::new('\\');
        assert_eq!(lx.expand_word("${V#*.}", &env).unwrap(), "a\nb.c");
        assert_eq!(lx.expand_word("${V%.*}", &env).unwrap(), "a\nb");
    }

    #[test]
    fn unicode_values_and_patterns() {
        let env: Vec<(String, String)> = vec![("K".into(), "한국어.텍스트".into())];
        let lx = Lexer::new('\\');
        assert_eq!(lx.expand_word("${K%.*}", &env).unwrap(), "한국어");
        assert_eq!(lx.expand_word("${K#?}", &env).unwrap(), "국어.텍스트");
        assert_eq!(lx.expand_word("${K//국/-}", &env).unwrap(), "한-어.텍스트");
        assert_eq!(lx.expand_word("$K", &env).unwrap(), "한국어.텍스트");
    }

    #[test]
    fn backtick_escape_character() {
        let lx = Lexer::new('`');
        let env = env();
        assert_eq!(lx.expand_word("a`$PWD", &env).unwrap(), "a$PWD");
        assert_eq!(
            lx.expand_word("C:\\dir\\$PWD", &env).unwrap(),
            "C:\\dir\\/home"
        );
        assert_eq!(lx.expand_word("\"a`\"b\"", &env).unwrap(), "a\"b");
        assert_eq!(lx.expand_word("\"x\\y\"", &env).unwrap(), "x\\y");
        assert_eq!(lx.expand_word("\"x``y\"", &env).unwrap(), "x`y");
        assert_eq!(lx.expand_word("a``", &env).unwrap(), "a`");
        assert_eq!(lx.expand_word("end`", &env).unwrap(), "end");
        assert_eq!(
            lx.expand_words("a` b c", &env).unwrap(),
            vec!["a b".to_string(), "c".to_string()]
        );
        // The backslash is still the escape of patterns, and the backtick is kept in them.
        assert!(lx.expand_word("${PWD#/\\h}", &env).is_err());
        assert_eq!(lx.expand_word("${PWD#/h*}", &env).unwrap(), "ome");
        assert_eq!(lx.expand_word("${PWD##/h*}", &env).unwrap(), "");
    }

    #[test]
    fn error_on_unset_or_empty_names_the_variable_and_message() {
        let message = err("${UNSET:?you must set UNSET}");
        assert!(message.contains("UNSET: you must set UNSET"), "{message}");
        let message = err("${NULL:?needs a value}");
        assert!(message.contains("NULL: needs a value"), "{message}");
        assert!(err("${UNSET?}").contains("UNSET: is not allowed to be unset"));
        assert!(err("${NULL:?}").contains("NULL: is not allowed to be empty"));
        assert_eq!(ok("${NULL?}"), "");
    }

    #[test]
    fn malformed_forms_are_errors_with_clear_messages() {
        assert!(err("${PWD:=x}").contains("unsupported modifier (:=)"));
        assert!(err("${PWD=x}").contains("unsupported modifier (=)"));
        assert!(err("${#PWD}").contains("unsupported modifier (P)"));
        assert!(err("${PWD").contains("missing '}'"));
        assert!(err("${PWD:").contains("missing '}'"));
        assert!(err("${PWD:-x").contains("missing '}'"));
        assert!(err("${PWD:-\"x}").contains("missing '}'"));
        assert!(err("${PWD/x").contains("missing '/'"));
        assert!(err("${PWD/x/y").contains("missing '}'"));
        assert!(err("${}").contains("bad substitution"));
        assert!(err("${:-x}").contains("bad substitution"));
        assert!(err("\"abc").contains("double-quote"));
        assert!(err("'abc").contains("single-quote"));
        assert!(err("${").contains("missing '}'"));
        // The whole word is named in the message.
        assert!(err("x${").starts_with("failed to process \"x${\""));
    }

    #[test]
    fn unsupported_forms_carry_a_hint() {
        let e = word("${PWD:=x}").unwrap_err();
        assert!(e.hint.as_deref().unwrap_or("").contains("${v:-x}"), "{e:?}");
        let e = word("${}").unwrap_err();
        assert!(
            e.hint.as_deref().unwrap_or("").contains("literal dollar"),
            "{e:?}"
        );
        assert_eq!(word("${PWD").unwrap_err().hint, None);
    }

    #[test]
    fn nesting_resolves_inner_first() {
        assert_eq!(ok("${A:-${B:-${C:-deep}}}"), "deep");
        assert_eq!(ok("${A:-${PWD:+in${SHELL}}}"), "inbash");
        assert_eq!(ok("${PWD#${NULL}/}"), "home");
        assert_eq!(ok("${FILE%${UNSET:-.gz}}"), "archive.tar");
    }

    #[test]
    fn nesting_is_capped_with_a_clear_error() {
        let depth_ok = MAX_NESTING;
        let input = format!("{}x{}", "${a:-".repeat(depth_ok), "}".repeat(depth_ok));
        assert_eq!(word(&input).unwrap(), "x");

        let too_deep = MAX_NESTING + 1;
        let input = format!("{}x{}", "${a:-".repeat(too_deep), "}".repeat(too_deep));
        let message = err(&input);
        assert!(message.contains("nested more than 128 levels"), "{message}");

        // Far deeper, and unterminated: still an error, not a stack overflow.
        let input = "${a:-\"".repeat(100_000);
        assert!(err(&input).contains("nested"));
    }

    #[test]
    fn nested_replacements_cannot_grow_without_bound() {
        // Each level multiplies the length by len(V): 64^5 characters would be a gigabyte.
        let env: Vec<(String, String)> = vec![("V".into(), "v".repeat(64))];
        let lx = Lexer::new('\\');
        let mut input = "x".to_string();
        for _ in 0..5 {
            input = format!("${{V///{input}}}");
        }
        let e = lx.expand_word(&input, &env).unwrap_err();
        assert!(e.message.contains("too large"), "{e:?}");
        assert!(e.hint.is_some());
        // Two levels are fine.
        let two = "${V///${V///x}}";
        // The inner one gives 65 x around 64 v (129 characters); the outer puts that around each v.
        assert_eq!(lx.expand_word(two, &env).unwrap().len(), 65 * 129 + 64);
    }

    #[test]
    fn large_text_and_values_stay_within_the_work_limit() {
        // Plain and quoted text is never charged; a value is charged per copy.
        let big = "x".repeat(3 << 20);
        let env: Vec<(String, String)> = vec![("V".into(), "v".repeat(4 << 20))];
        let lx = Lexer::new('\\');
        let quoted = format!("\"{big}\" '{big}' {big}");
        assert_eq!(
            lx.expand_word(&quoted, &env).unwrap().len(),
            3 * big.len() + 2
        );
        assert_eq!(lx.expand_word("$V${V}", &env).unwrap().len(), 8 << 20);
        assert_eq!(lx.expand_word("${V%v}", &env).unwrap().len(), (4 << 20) - 1);
    }

    #[test]
    fn huge_star_patterns_do_not_overflow_or_hang() {
        let env: Vec<(String, String)> = vec![("V".into(), "a".repeat(2000))];
        let lx = Lexer::new('\\');
        let pattern = "*".repeat(100_000);
        assert_eq!(
            lx.expand_word(&format!("${{V##{pattern}}}"), &env).unwrap(),
            ""
        );
        assert_eq!(
            lx.expand_word(&format!("${{V#{}b}}", "*a".repeat(500)), &env)
                .unwrap(),
            "a".repeat(2000)
        );
    }

    #[test]
    fn words_split_values_but_not_quotes() {
        let lx = Lexer::new('\\');
        let env = env();
        assert_eq!(
            lx.expand_words("x${SPACED}y", &env).unwrap(),
            vec!["x", "a", "b", "y"]
        );
        assert_eq!(
            lx.expand_words("x\"${SPACED}\"y z", &env).unwrap(),
            vec!["x a  b y", "z"]
        );
        assert_eq!(lx.expand_words("  a\\  b ", &env).unwrap(), vec!["a ", "b"]);
        assert_eq!(
            lx.expand_words("\"\" '' ", &env).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(lx.expand_words("", &env).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn matches_lists_found_names_only() {
        let lx = Lexer::new('\\');
        let (out, found) = lx
            .expand_word_with_matches("$PWD ${NOPE:-$SHELL} ${NULL:+x} '$FILE'", &env())
            .unwrap();
        assert_eq!(out, "/home bash  $FILE");
        let found: Vec<&str> = found.iter().map(String::as_str).collect();
        assert_eq!(found, vec!["NULL", "PWD", "SHELL"]);
    }

    #[test]
    fn special_and_positional_parameters_expand_to_nothing() {
        for p in [
            "$1", "$@", "$*", "$#", "$$", "$?", "$!", "$-", "$0", "${10}", "${#}",
        ] {
            assert_eq!(ok(p), "", "{p}");
        }
        assert_eq!(ok("$12ab"), "ab");
        assert_eq!(ok("$$$$"), "");
    }

    #[test]
    fn lookups_from_all_sources_agree() {
        let mut b = BTreeMap::new();
        b.insert("A".to_string(), "1".to_string());
        let mut h = HashMap::new();
        h.insert("A".to_string(), "1".to_string());
        let v = vec![
            ("A".to_string(), "0".to_string()),
            ("A".to_string(), "1".to_string()),
        ];
        let lx = Lexer::new('\\');
        assert_eq!(lx.expand_word("$A", &b).unwrap(), "1");
        assert_eq!(lx.expand_word("$A", &h).unwrap(), "1");
        assert_eq!(lx.expand_word("$A", &v).unwrap(), "1");
        assert_eq!(lx.expand_word("$A", &v.as_slice()).unwrap(), "1");
    }

    #[test]
    fn switches_for_raw_and_unexpanded_forms() {
        let env = env();
        let lx = Lexer::new('\\').raw_quotes(true);
        assert_eq!(lx.expand_word("'a'\"$PWD\"", &env).unwrap(), "'a'\"/home\"");
        let lx = Lexer::new('\\').raw_escapes(true);
        assert_eq!(lx.expand_word("a\\$PWD", &env).unwrap(), "a\\$PWD");
        let lx = Lexer::new('\\').skip_process_quotes(true);
        assert_eq!(lx.expand_word("'$PWD'", &env).unwrap(), "'/home'");
        let lx = Lexer::new('\\').skip_unset_env(true);
        assert_eq!(
            lx.expand_word("$X ${Y} ${Z:-d} ${W/a/b} $PWD", &env)
                .unwrap(),
            "$X ${Y} ${Z:-d} ${W/a/b} /home"
        );
    }

    #[test]
    fn names_end_where_go_letters_and_digits_end() {
        let env: Vec<(String, String)> = vec![
            ("한국".into(), "K".into()),
            ("x٣".into(), "ARABIC-INDIC".into()),
            ("٣".into(), "three".into()),
            ("a".into(), "A".into()),
        ];
        let lx = Lexer::new('\\');
        assert_eq!(lx.expand_word("$한국어", &env).unwrap(), "");
        assert_eq!(lx.expand_word("${한국}!", &env).unwrap(), "K!");
        assert_eq!(lx.expand_word("$x٣.", &env).unwrap(), "ARABIC-INDIC.");
        // A leading digit of any script starts a positional parameter: all digits, then stop.
        assert_eq!(lx.expand_word("$٣a", &env).unwrap(), "threea");
        // A Roman numeral (a letter number, not a letter) and a combining vowel sign end a name.
        assert_eq!(lx.expand_word("$a\u{2160}", &env).unwrap(), "A\u{2160}");
        assert_eq!(lx.expand_word("$a\u{093e}", &env).unwrap(), "A\u{093e}");
    }

    #[test]
    fn leading_byte_order_mark_is_ignored() {
        assert_eq!(ok("\u{feff}$PWD"), "/home");
        assert_eq!(ok("a\u{feff}"), "a\u{feff}");
    }

    #[test]
    fn reverse_pattern_keeps_escapes_in_front() {
        assert_eq!(reverse_pattern("a\\*c"), "c\\*a");
        assert_eq!(reverse_pattern("\\\\*"), "*\\\\");
        assert_eq!(reverse_pattern("ab\\"), "\\ba");
    }
}
