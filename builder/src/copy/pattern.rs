//! Go's `filepath.Match`, which COPY and ADD use for wildcard sources: `*` and `?` never match
//! `/`, `[...]` classes take ranges and `^` negation, `\` escapes. Unlike `.dockerignore` there
//! is no `**`. A malformed pattern is an error, as in Go, even where a prefix already failed.

/// One element of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Star,
    Any,
    Literal(char),
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

fn compile(pattern: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => {
                // Consecutive stars match what one star matches.
                if out.last() != Some(&Token::Star) {
                    out.push(Token::Star);
                }
            }
            '?' => out.push(Token::Any),
            '\\' => match chars.next() {
                Some(e) => out.push(Token::Literal(e)),
                None => return Err(format!("{pattern:?}: a trailing \\ escapes nothing")),
            },
            '[' => {
                let negated = chars.next_if_eq(&'^').is_some();
                let mut ranges = Vec::new();
                loop {
                    if chars.peek() == Some(&']') && !ranges.is_empty() {
                        chars.next();
                        break;
                    }
                    let lo = class_char(&mut chars, pattern)?;
                    let hi = if chars.next_if_eq(&'-').is_some() {
                        class_char(&mut chars, pattern)?
                    } else {
                        lo
                    };
                    if hi < lo {
                        return Err(format!("{pattern:?}: character range {lo}-{hi} is empty"));
                    }
                    ranges.push((lo, hi));
                }
                out.push(Token::Class { negated, ranges });
            }
            other => out.push(Token::Literal(other)),
        }
    }
    Ok(out)
}

/// One character of a class, as Go's `getEsc` reads it.
fn class_char(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    pattern: &str,
) -> Result<char, String> {
    match chars.next() {
        None => Err(format!("{pattern:?}: unclosed character class [")),
        Some('-') | Some(']') => Err(format!(
            "{pattern:?}: a character class needs a character before - or ]"
        )),
        Some('\\') => chars
            .next()
            .ok_or_else(|| format!("{pattern:?}: unclosed character class [")),
        Some(c) => Ok(c),
    }
}

fn matches(tokens: &[Token], name: &[char]) -> bool {
    let Some((first, rest)) = tokens.split_first() else {
        return name.is_empty();
    };
    match first {
        Token::Star => {
            for skip in 0..=name.len() {
                if matches(rest, &name[skip..]) {
                    return true;
                }
                if name.get(skip) == Some(&'/') {
                    break;
                }
            }
            false
        }
        Token::Any => match name.split_first() {
            Some((c, tail)) if *c != '/' => matches(rest, tail),
            _ => false,
        },
        Token::Literal(l) => match name.split_first() {
            Some((c, tail)) if c == l => matches(rest, tail),
            _ => false,
        },
        Token::Class { negated, ranges } => match name.split_first() {
            Some((c, tail)) if *c != '/' => {
                let inside = ranges.iter().any(|(lo, hi)| lo <= c && c <= hi);
                inside != *negated && matches(rest, tail)
            }
            _ => false,
        },
    }
}

/// Whether `name` matches the Go `filepath.Match` pattern; `Err` for a malformed pattern.
pub fn glob_match(pattern: &str, name: &str) -> Result<bool, String> {
    let tokens = compile(pattern)?;
    let name: Vec<char> = name.chars().collect();
    Ok(matches(&tokens, &name))
}

/// Whether a path component holds an unescaped wildcard (fsutil's `containsWildcards`).
pub(super) fn has_wildcard(component: &str) -> bool {
    let mut chars = component.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '*' | '?' | '[' => return true,
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_like_go() {
        // (pattern, name, matched) — from Go's own filepath.Match test table.
        let cases: &[(&str, &str, bool)] = &[
            ("abc", "abc", true),
            ("*", "abc", true),
            ("*c", "abc", true),
            ("a*", "a", true),
            ("a*", "abc", true),
            ("a*", "ab/c", false),
            ("a*/b", "abc/b", true),
            ("a*/b", "a/c/b", false),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
            ("a*b?c*x", "abxbbxdbxebxczzx", true),
            ("a*b?c*x", "abxbbxdbxebxczzy", false),
            ("ab[c]", "abc", true),
            ("ab[b-d]", "abc", true),
            ("ab[e-g]", "abc", false),
            ("ab[^c]", "abc", false),
            ("ab[^b-d]", "abc", false),
            ("ab[^e-g]", "abc", true),
            ("a\\*b", "a*b", true),
            ("a\\*b", "ab", false),
            ("a?b", "a☺b", true),
            ("a[^a]b", "a☺b", true),
            ("a???b", "a☺b", false),
            ("[a-ζ]*", "α", true),
            ("*[a-ζ]", "A", false),
            ("a?b", "a/b", false),
            ("a*b", "a/b", false),
            ("[\\]a]", "]", true),
            ("[\\-]", "-", true),
            ("[x\\-]", "z", false),
            ("*x", "xxx", true),
        ];
        for (p, n, want) in cases {
            assert_eq!(glob_match(p, n), Ok(*want), "pattern {p:?} name {n:?}");
        }
    }

    #[test]
    fn malformed_patterns_are_errors() {
        for p in [
            "[", "[^", "[^bc", "a[", "[]a]", "[-]", "[x-]", "a\\", "[a-b-c]",
        ] {
            assert!(glob_match(p, "a").is_err(), "{p:?} should be refused");
        }
    }

    #[test]
    fn wildcards_are_found_unless_escaped() {
        assert!(has_wildcard("*.txt"));
        assert!(has_wildcard("a?"));
        assert!(has_wildcard("[ab]"));
        assert!(!has_wildcard("plain"));
        assert!(!has_wildcard("a\\*"));
    }
}
