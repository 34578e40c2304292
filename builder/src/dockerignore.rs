//! `.dockerignore`: which context paths a build may not see, with Docker's exact rules.
//!
//! Docker reads the file line by line (comments start at column one, blanks are trimmed, `!`
//! re-includes, paths are cleaned and made relative) and matches with Go's `filepath.Match`
//! syntax plus `**`, turned into a regular expression per pattern. A path is excluded when the last
//! pattern that matches it or one of its parent directories is not a `!` pattern. `globset` and
//! `ignore` follow gitignore's rules, which differ, so the matcher is ours.

use crate::error::{Error, Result};
use crate::path::clean;
use regex::Regex;

/// One pattern as written, with the line it came from (for error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternLine {
    pub line: usize,
    pub pattern: String,
}

/// Read `.dockerignore` text into patterns as Docker's `ignorefile.ReadAll` does.
pub fn read_patterns(text: &str) -> Vec<PatternLine> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for (index, raw) in text.split('\n').enumerate() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        // A comment only when `#` is the very first character: ` #x` is a pattern.
        if raw.starts_with('#') {
            continue;
        }
        let mut pattern = raw.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut cleaned = String::new();
        if !pattern.is_empty() {
            cleaned = clean(pattern);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
        }
        if invert {
            cleaned.insert(0, '!');
        }
        out.push(PatternLine {
            line: index + 1,
            pattern: cleaned,
        });
    }
    out
}

/// How one pattern is matched: most patterns need no regular expression at all.
#[derive(Debug, Clone)]
enum Match {
    /// The path equals the pattern.
    Exact(String),
    /// The pattern ends in `**`: the path starts with what comes before it.
    Prefix(String),
    /// The pattern starts with `**`: the path ends with what follows it.
    Suffix(String),
    Regex(Regex),
}

#[derive(Debug, Clone)]
struct Pattern {
    matcher: Match,
    exclusion: bool,
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match &self.matcher {
            Match::Exact(p) => path == p,
            Match::Prefix(p) => path.starts_with(p.as_str()),
            Match::Suffix(suffix) => {
                // `**/foo` also matches `foo` itself.
                path.ends_with(suffix.as_str())
                    || suffix.strip_prefix('/').is_some_and(|rest| path == rest)
            }
            Match::Regex(re) => re.is_match(path),
        }
    }
}

/// The compiled patterns of one `.dockerignore`.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
}

impl Matcher {
    /// Compile patterns read by [`read_patterns`]; `file` names the ignore file in errors.
    pub fn new(file: &str, lines: &[PatternLine]) -> Result<Matcher> {
        let mut matcher = Matcher::default();
        for PatternLine { line, pattern } in lines {
            let bad = |reason: &str| Error::IgnorePattern {
                file: file.to_string(),
                line: *line,
                pattern: pattern.clone(),
                reason: reason.to_string(),
            };
            let trimmed = pattern.trim();
            if trimmed.is_empty() {
                continue;
            }
            let mut p = clean(trimmed);
            let exclusion = p.starts_with('!');
            if exclusion {
                if p.len() == 1 {
                    return Err(bad("a lone \"!\" excludes nothing"));
                }
                p.remove(0);
                matcher.exclusions = true;
            }
            validate_glob(&p).map_err(|reason| bad(&reason))?;
            let compiled = compile(&p).map_err(|reason| bad(&reason))?;
            matcher.patterns.push(Pattern {
                matcher: compiled,
                exclusion,
            });
        }
        Ok(matcher)
    }

    /// Parse and compile `.dockerignore` text.
    pub fn from_text(file: &str, text: &str) -> Result<Matcher> {
        Matcher::new(file, &read_patterns(text))
    }

    /// Whether any pattern re-includes (`!pattern`): then an excluded directory may still hold
    /// included files, and a walk cannot skip it whole.
    pub fn has_exclusions(&self) -> bool {
        self.exclusions
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether the context path `path` (slash-separated, relative, clean) is excluded, by itself
    /// or through one of its parent directories. The context root `.` is never excluded.
    pub fn is_excluded(&self, path: &str) -> bool {
        // Most contexts have no `.dockerignore`, and the walk asks about every path.
        if self.patterns.is_empty() {
            return false;
        }
        let path = clean(path);
        if path == "." {
            return false;
        }
        let parent_dirs: Vec<&str> = match path.rfind('/') {
            Some(at) => path[..at].split('/').collect(),
            None => Vec::new(),
        };
        let mut matched = false;
        for pattern in &self.patterns {
            // An include that already matched, or an exclusion with nothing to undo: no change.
            if pattern.exclusion != matched {
                continue;
            }
            let mut hit = pattern.matches(&path);
            if !hit {
                // A pattern naming a directory excludes everything under it.
                let mut prefix = String::new();
                for dir in &parent_dirs {
                    if !prefix.is_empty() {
                        prefix.push('/');
                    }
                    prefix.push_str(dir);
                    if pattern.matches(&prefix) {
                        hit = true;
                        break;
                    }
                }
            }
            if hit {
                matched = !pattern.exclusion;
            }
        }
        matched
    }
}

/// Go's `filepath.Match` refuses malformed patterns (an unclosed `[`, an empty class, a trailing
/// `\`); Docker checks every pattern that way before using it.
fn validate_glob(pattern: &str) -> std::result::Result<(), String> {
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars
                    .next()
                    .ok_or_else(|| "a trailing \\ escapes nothing".to_string())?;
            }
            '[' => {
                if chars.peek() == Some(&'^') {
                    chars.next();
                }
                let mut ranges = 0;
                loop {
                    match chars.peek() {
                        None => return Err("unclosed character class [".into()),
                        Some(']') if ranges > 0 => {
                            chars.next();
                            break;
                        }
                        _ => {}
                    }
                    class_char(&mut chars)?;
                    if chars.peek() == Some(&'-') {
                        chars.next();
                        class_char(&mut chars)?;
                    }
                    ranges += 1;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// One (possibly escaped) character inside `[...]`, as Go's `getEsc` reads it.
fn class_char(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
) -> std::result::Result<(), String> {
    match chars.next() {
        None => Err("unclosed character class [".into()),
        Some('-') | Some(']') => Err("a character class needs a character before - or ]".into()),
        Some('\\') => match chars.next() {
            None => Err("unclosed character class [".into()),
            Some(_) => Ok(()),
        },
        Some(_) => {
            if chars.peek().is_none() {
                Err("unclosed character class [".into())
            } else {
                Ok(())
            }
        }
    }
}

/// Turn one cleaned pattern into its matcher, exactly as Docker's pattern compiler does.
fn compile(pattern: &str) -> std::result::Result<Match, String> {
    #[derive(PartialEq)]
    enum Kind {
        Exact,
        Prefix,
        Suffix,
        Regex,
    }
    let mut re = String::from("^");
    let mut kind = Kind::Exact;
    let mut chars = pattern.chars().peekable();
    let mut first = true;
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                // `**/` is the same as `**`.
                if chars.peek() == Some(&'/') {
                    chars.next();
                }
                if chars.peek().is_none() {
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        re.push_str(".*");
                        kind = Kind::Regex;
                    }
                } else {
                    // Any number of directories, even none.
                    re.push_str("(.*/)?");
                    kind = Kind::Regex;
                }
                if first {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                re.push_str("[^/]*");
                kind = Kind::Regex;
            }
            '?' => {
                re.push_str("[^/]");
                kind = Kind::Regex;
            }
            '.' | '+' | '(' | ')' | '|' | '{' | '}' | '$' => {
                re.push('\\');
                re.push(c);
            }
            '\\' => match chars.next() {
                Some(next) => {
                    re.push('\\');
                    re.push(next);
                    kind = Kind::Regex;
                }
                None => re.push_str("\\\\"),
            },
            '[' | ']' => {
                re.push(c);
                kind = Kind::Regex;
            }
            other => re.push(other),
        }
        first = false;
    }
    Ok(match kind {
        Kind::Exact => Match::Exact(pattern.to_string()),
        Kind::Prefix => Match::Prefix(pattern[..pattern.len() - 2].to_string()),
        Kind::Suffix => Match::Suffix(pattern[2..].to_string()),
        Kind::Regex => {
            re.push('$');
            Match::Regex(Regex::new(&re).map_err(|e| format!("not a valid pattern ({e})"))?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn excluded(patterns: &[&str], path: &str) -> bool {
        let text = patterns.join("\n");
        Matcher::from_text(".dockerignore", &text)
            .unwrap_or_else(|e| panic!("{e}"))
            .is_excluded(path)
    }

    #[test]
    fn read_patterns_follows_docker() {
        let lines = read_patterns(
            "\u{feff}# comment\n  \n /abs/x/ \n !  keep.txt\n #not-a-comment\r\na/../b\n!\n",
        );
        let got: Vec<(usize, &str)> = lines.iter().map(|p| (p.line, p.pattern.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (3, "abs/x"),
                (4, "!keep.txt"),
                (5, "#not-a-comment"),
                (6, "b"),
                (7, "!")
            ]
        );
    }

    #[test]
    fn table_of_matches() {
        // (patterns, path, excluded) — cases from Docker's documented behaviour.
        let cases: &[(&[&str], &str, bool)] = &[
            (&["*.md"], "README.md", true),
            (&["*.md"], "docs/README.md", false),
            (&["**/*.md"], "docs/deep/README.md", true),
            (&["**/*.md"], "README.md", true),
            (&["temp?"], "temp1", true),
            (&["temp?"], "temp12", false),
            (&["*/temp*"], "src/temporary", true),
            (&["*/*/temp*"], "a/b/temp.txt", true),
            (&["node_modules"], "node_modules/x/y.js", true),
            (&["node_modules"], "src/node_modules/x", false),
            (&["**/node_modules"], "src/node_modules/x", true),
            (&["build/**"], "build/a/b", true),
            (&["build/**"], "build", false),
            (&["**"], "anything/at/all", true),
            (&["*", "!keep"], "keep", false),
            (&["*", "!keep"], "other", true),
            (&["*.txt", "!important.txt"], "important.txt", false),
            (&["!important.txt", "*.txt"], "important.txt", true),
            // A parent directory matched by a pattern excludes its files, unless re-included.
            (&["docs", "!docs/keep.md"], "docs/keep.md", false),
            (&["docs", "!docs/keep.md"], "docs/other.md", true),
            (&["a/b"], "a/b/c/d", true),
            (&["/abs"], "abs", true),
            (&["x/../y"], "y", true),
            (&["[a-c].txt"], "b.txt", true),
            (&["[a-c].txt"], "d.txt", false),
            (&["[^a-c].txt"], "d.txt", true),
            (&["file\\*"], "file*", true),
            (&["file\\*"], "filex", false),
            (&["a.b"], "axb", false),
            (&["(x)"], "(x)", true),
            (&["Dockerfile"], "dockerfile", false),
        ];
        for (patterns, path, want) in cases {
            assert_eq!(
                excluded(patterns, path),
                *want,
                "patterns {patterns:?}, path {path:?}"
            );
        }
    }

    #[test]
    fn context_root_is_never_excluded() {
        assert!(!excluded(&["*", "**", "."], "."));
    }

    #[test]
    fn malformed_patterns_are_refused_with_their_line() {
        for bad in ["[abc", "[]", "x\\", "!", "[a-]", "[z-"] {
            let text = format!("ok\n{bad}\n");
            match Matcher::from_text(".dockerignore", &text) {
                Err(Error::IgnorePattern { line, .. }) => assert_eq!(line, 2, "{bad:?}"),
                other => panic!("{bad:?} should be refused, got {other:?}"),
            }
        }
    }

    #[test]
    fn exclusions_are_reported() {
        let m = Matcher::from_text("f", "a\n!a/b\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(m.has_exclusions());
        let m = Matcher::from_text("f", "a\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(!m.has_exclusions());
    }
}
