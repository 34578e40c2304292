//! Properties of word expansion: no input makes it panic or hang, plain text and escaped text come
//! back unchanged, the three entry points agree, and the pattern operators agree with a
//! brute-force reference.

use kiln_grammar::ErrorKind;
use kiln_grammar::expand::Lexer;
use proptest::prelude::*;
use std::time::{Duration, Instant};

fn env() -> Vec<(String, String)> {
    [
        ("PWD", "/home"),
        ("EMPTY", ""),
        ("SPACES", "  a b  "),
        ("K", "한국어"),
        ("STAR", "*?\\}"),
        ("NL", "a\nb"),
        ("a", "x y"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Fragments that exercise every branch of the lexer when glued together at random.
const SOUP: &[&str] = &[
    "$", "${", "{", "}", ":", "-", "+", "?", "#", "%", "/", "//", "=", "'", "\"", "\\", "`", "*",
    "a", "PWD", "EMPTY", "SPACES", "K", "STAR", "NL", " ", "\t", "\n", "0", "1", "@", "!", "한",
    "\u{feff}", "$$", "${PWD", ":-", ":+", ":?", "##", "%%", "\\}", "\\/", "\\*", "[", "]",
];

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(SOUP), 0..48).prop_map(|parts| parts.concat())
}

/// Runs every entry point with both escape characters, checking that they finish quickly and
/// agree with each other.
fn exercise(input: &str) {
    let env = env();
    for escape in ['\\', '`'] {
        let lexer = Lexer::new(escape);
        let started = Instant::now();
        let word = lexer.expand_word(input, &env);
        let words = lexer.expand_words(input, &env);
        let with_matches = lexer.expand_word_with_matches(input, &env);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "expanding {input:?} took {:?}",
            started.elapsed()
        );
        match (&word, &words, &with_matches) {
            (Ok(w), Ok(_), Ok((w2, found))) => {
                assert_eq!(w, w2);
                for name in found {
                    assert!(
                        env.iter().any(|(k, _)| k == name),
                        "{name:?} reported as found but not in the environment"
                    );
                }
            }
            (Err(a), Err(b), Err(c)) => {
                assert_eq!(a, b);
                assert_eq!(a, c);
                assert_eq!(a.kind, ErrorKind::Expansion);
                assert!(a.span.is_none());
                assert!(!a.message.is_empty());
            }
            _ => panic!(
                "entry points disagree on {input:?}: {word:?} / {words:?} / {with_matches:?}"
            ),
        }
        for lexer in [
            lexer.clone().raw_quotes(true),
            lexer.clone().raw_escapes(true),
            lexer.clone().skip_process_quotes(true),
            lexer.clone().skip_unset_env(true),
        ] {
            let _ = lexer.expand_word(input, &env);
            let _ = lexer.expand_words(input, &env);
        }
    }
}

// ---- a brute-force reference for patterns over the alphabet {a, b, *, ?} ----

/// Whether the whole of `text` matches `pattern` (`*` any run and `?` any one character, neither
/// crossing a newline, as BuildKit's regexes do).
fn full_match(pattern: &[char], text: &[char]) -> bool {
    // reach[j]: the pattern prefix read so far can match text[..j].
    let mut reach = vec![false; text.len() + 1];
    reach[0] = true;
    for &p in pattern {
        let mut next = vec![false; text.len() + 1];
        for j in 0..=text.len() {
            if !reach[j] {
                continue;
            }
            match p {
                '*' => {
                    next[j] = true;
                    let mut k = j;
                    while k < text.len() && text[k] != '\n' {
                        k += 1;
                        next[k] = true;
                    }
                }
                '?' => {
                    if j < text.len() && text[j] != '\n' {
                        next[j + 1] = true;
                    }
                }
                c => {
                    if j < text.len() && text[j] == c {
                        next[j + 1] = true;
                    }
                }
            }
        }
        reach = next;
    }
    reach[text.len()]
}

fn reference_trim_prefix(pattern: &[char], value: &[char], longest: bool) -> String {
    let mut ends: Vec<usize> = (0..=value.len())
        .filter(|&k| full_match(pattern, &value[..k]))
        .collect();
    if longest {
        ends.reverse();
    }
    match ends.first() {
        Some(&k) => value[k..].iter().collect(),
        None => value.iter().collect(),
    }
}

fn reference_trim_suffix(pattern: &[char], value: &[char], longest: bool) -> String {
    let n = value.len();
    let mut lens: Vec<usize> = (0..=n)
        .filter(|&k| full_match(pattern, &value[n - k..]))
        .collect();
    if longest {
        lens.reverse();
    }
    match lens.first() {
        Some(&k) => value[..n - k].iter().collect(),
        None => value.iter().collect(),
    }
}

/// Leftmost start at or after `from`, then the longest end (stars are greedy in `${v/…}`).
fn reference_find(pattern: &[char], value: &[char], from: usize) -> Option<(usize, usize)> {
    (from..=value.len()).find_map(|start| {
        (start..=value.len())
            .rev()
            .find(|&end| full_match(pattern, &value[start..end]))
            .map(|end| (start, end))
    })
}

fn reference_replace(pattern: &[char], value: &[char], with: &str, all: bool) -> String {
    if !all {
        return match reference_find(pattern, value, 0) {
            Some((s, e)) => {
                let mut out: String = value[..s].iter().collect();
                out.push_str(with);
                out.extend(&value[e..]);
                out
            }
            None => value.iter().collect(),
        };
    }
    // Go's ReplaceAllString loop.
    let mut out = String::new();
    let (mut last_end, mut search) = (0, 0);
    while search <= value.len() {
        let Some((s, e)) = reference_find(pattern, value, search) else {
            break;
        };
        out.extend(&value[last_end..s]);
        if e > last_end || s == 0 {
            out.push_str(with);
        }
        last_end = e;
        search = if search + 1 > e { search + 1 } else { e };
    }
    out.extend(&value[last_end..]);
    out
}

fn pattern_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!['a', 'b', '*', '?']), 0..6)
        .prop_map(|v| v.into_iter().collect())
}

fn value_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!['a', 'b', '\n', '한']), 0..10)
        .prop_map(|v| v.into_iter().collect())
}

proptest! {
    // No regression files: a failure prints its minimal input, which belongs in a unit test.
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_never_panic(input in any::<String>()) {
        exercise(&input);
    }

    #[test]
    fn token_soup_never_panics_or_hangs(input in soup()) {
        exercise(&input);
    }

    #[test]
    fn deep_soup_never_overflows(depth in 0usize..400, tail in soup()) {
        let input = format!("{}{tail}{}", "${a:-\"".repeat(depth), "\"}".repeat(depth / 2));
        exercise(&input);
    }

    #[test]
    // A leading byte order mark is dropped (as Go's scanner does), so it is not plain text.
    fn plain_text_is_unchanged(input in "[^$'\"\\\\`\u{feff}]*") {
        let env = env();
        prop_assert_eq!(Lexer::new('\\').expand_word(&input, &env).unwrap(), input.clone());
        let words = Lexer::new('\\').expand_words(&input, &env).unwrap();
        let expected: Vec<&str> = input.split_whitespace().collect();
        prop_assert_eq!(words, expected);
    }

    #[test]
    fn escaping_every_character_gives_it_back(input in any::<String>()) {
        let env = env();
        for escape in ['\\', '`'] {
            let escaped: String = input.chars().flat_map(|c| [escape, c]).collect();
            let lexer = Lexer::new(escape);
            prop_assert_eq!(lexer.expand_word(&escaped, &env).unwrap(), input.clone());
            let words = lexer.expand_words(&escaped, &env).unwrap();
            if input.is_empty() {
                prop_assert!(words.is_empty());
            } else {
                prop_assert_eq!(words, vec![input.clone()]);
            }
        }
    }

    #[test]
    fn single_quotes_are_literal(input in "[^']*") {
        let env = env();
        let quoted = format!("'{input}'");
        prop_assert_eq!(Lexer::new('\\').expand_word(&quoted, &env).unwrap(), input.clone());
    }

    #[test]
    fn a_variable_expands_to_its_value(value in any::<String>()) {
        let env = vec![("V".to_string(), value.clone())];
        let lexer = Lexer::new('\\');
        for form in ["$V", "${V}", "${V:-x}", "${V-x}", "${V#}", "${V%}", "\"$V\""] {
            let (got, found) = lexer.expand_word_with_matches(form, &env).unwrap();
            let expected = if form == "${V:-x}" && value.is_empty() { "x" } else { value.as_str() };
            prop_assert_eq!(got, expected, "{}", form);
            prop_assert!(found.contains("V"));
        }
    }

    #[test]
    fn prefix_and_suffix_trims_match_the_reference(pattern in pattern_strategy(), value in value_strategy()) {
        let env = vec![("V".to_string(), value.clone())];
        let lexer = Lexer::new('\\');
        let p: Vec<char> = pattern.chars().collect();
        let v: Vec<char> = value.chars().collect();
        prop_assert_eq!(
            lexer.expand_word(&format!("${{V#{pattern}}}"), &env).unwrap(),
            reference_trim_prefix(&p, &v, false), "#{}", pattern
        );
        prop_assert_eq!(
            lexer.expand_word(&format!("${{V##{pattern}}}"), &env).unwrap(),
            reference_trim_prefix(&p, &v, true), "##{}", pattern
        );
        prop_assert_eq!(
            lexer.expand_word(&format!("${{V%{pattern}}}"), &env).unwrap(),
            reference_trim_suffix(&p, &v, false), "%{}", pattern
        );
        prop_assert_eq!(
            lexer.expand_word(&format!("${{V%%{pattern}}}"), &env).unwrap(),
            reference_trim_suffix(&p, &v, true), "%%{}", pattern
        );
    }

    #[test]
    fn replacements_match_the_reference(pattern in pattern_strategy(), value in value_strategy()) {
        let env = vec![("V".to_string(), value.clone())];
        let lexer = Lexer::new('\\');
        let p: Vec<char> = pattern.chars().collect();
        let v: Vec<char> = value.chars().collect();
        // `${V/-}` would read as `${V//…`: a single replacement needs a non-empty pattern.
        if !pattern.is_empty() {
            prop_assert_eq!(
                lexer.expand_word(&format!("${{V/{pattern}/-}}"), &env).unwrap(),
                reference_replace(&p, &v, "-", false), "/{}", pattern
            );
        }
        prop_assert_eq!(
            lexer.expand_word(&format!("${{V//{pattern}/-}}"), &env).unwrap(),
            reference_replace(&p, &v, "-", true), "//{}", pattern
        );
    }
}
