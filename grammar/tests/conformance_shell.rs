//! BuildKit's own word-expansion cases (`frontend/dockerfile/shell`: `envVarTest`, `wordsTest`),
//! run against kiln's lexer. Every mismatch is collected and printed before the test fails, so
//! one run shows the whole picture.

use kiln_grammar::expand::Lexer;

mod support;

fn corpus(name: &str) -> String {
    support::read(&support::conformance("buildkit-shell").join(name))
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `MODES | input | expected`: A and U lines (W is Windows-only), fields trimmed,
/// `error` meaning the expansion must fail.
fn env_var_mismatches() -> (usize, Vec<String>) {
    let text = corpus("envVarTest");
    let env = pairs(&[
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]);
    let lexer = Lexer::new('\\');
    let mut checked = 0;
    let mut bad = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        if raw.starts_with('#') || raw.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = raw.split('|').map(str::trim).collect();
        let [mode, input, expected] = fields[..] else {
            bad.push(format!(
                "envVarTest:{line_no}: malformed line (want 3 fields): {raw:?}"
            ));
            continue;
        };
        match mode {
            "A" | "U" => {}
            "W" => continue,
            other => {
                bad.push(format!("envVarTest:{line_no}: unknown mode {other:?}"));
                continue;
            }
        }
        checked += 1;
        let got = match lexer.expand_word(input, &env) {
            Ok(word) => word,
            Err(_) => "error".to_string(),
        };
        if got != expected {
            bad.push(format!(
                "envVarTest:{line_no}: {input:?} expanded to {got:?}, expected {expected:?}"
            ));
        }
    }
    (checked, bad)
}

/// `input | word1,word2…` with `ENV k=v` lines adding to the environment of later lines.
fn words_mismatches() -> (usize, Vec<String>) {
    let text = corpus("wordsTest");
    let lexer = Lexer::new('\\');
    let mut env: Vec<(String, String)> = Vec::new();
    let mut checked = 0;
    let mut bad = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        if raw.starts_with('#') || raw.trim().is_empty() {
            continue;
        }
        if let Some(rest) = raw.strip_prefix("ENV ") {
            // Trailing blanks of the value are part of it (the corpus tests them).
            let assignment = rest.trim_start_matches(' ');
            let (key, value) = assignment.split_once('=').unwrap_or((assignment, ""));
            env.push((key.to_string(), value.to_string()));
            continue;
        }
        let Some((input, expected)) = raw.split_once('|') else {
            bad.push(format!(
                "wordsTest:{line_no}: malformed line (want one |): {raw:?}"
            ));
            continue;
        };
        checked += 1;
        let input = input.trim();
        let expected: Vec<&str> = expected.trim_start_matches(' ').split(',').collect();
        let got = match lexer.expand_words(input, &env) {
            Ok(words) => words,
            Err(_) => vec!["error".to_string()],
        };
        if got != expected {
            bad.push(format!(
                "wordsTest:{line_no}: {input:?} split into {got:?}, expected {expected:?}"
            ));
        }
    }
    (checked, bad)
}

#[test]
fn buildkit_shell_corpus() {
    let (env_checked, mut bad) = env_var_mismatches();
    let (words_checked, words_bad) = words_mismatches();
    bad.extend(words_bad);
    // Guard against a truncated corpus silently passing.
    assert!(
        env_checked > 200,
        "only {env_checked} envVarTest cases were read"
    );
    assert!(
        words_checked > 20,
        "only {words_checked} wordsTest cases were read"
    );
    if !bad.is_empty() {
        for line in &bad {
            eprintln!("{line}");
        }
        panic!(
            "{} of {} BuildKit shell cases differ (listed above)",
            bad.len(),
            env_checked + words_checked
        );
    }
    println!("{env_checked} envVarTest and {words_checked} wordsTest cases agree with BuildKit");
}
