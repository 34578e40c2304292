//! Word expansion on arbitrary input: never panics, never overflows the stack, and its three
//! entry points agree. The input is `word \0 value \0 value …`, so the fuzzer also controls the
//! values that patterns (`${V#…}`, `${V//…/…}`) are matched against.
#![no_main]

use kiln_grammar::ErrorKind;
use kiln_grammar::expand::Lexer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.split('\0');
    let word = parts.next().unwrap_or("");
    let mut env: Vec<(String, String)> = ["V", "W", "X"]
        .iter()
        .zip(parts)
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    env.push(("EMPTY".to_string(), String::new()));

    for escape in ['\\', '`'] {
        let lexer = Lexer::new(escape);
        let one = lexer.expand_word(word, &env);
        let split = lexer.expand_words(word, &env);
        let with_matches = lexer.expand_word_with_matches(word, &env);
        match (&one, &split, &with_matches) {
            (Ok(a), Ok(_), Ok((b, found))) => {
                assert_eq!(a, b);
                assert!(found.iter().all(|name| env.iter().any(|(k, _)| k == name)));
            }
            (Err(a), Err(b), Err(c)) => {
                assert_eq!(a, b);
                assert_eq!(a, c);
                assert_eq!(a.kind, ErrorKind::Expansion);
            }
            _ => panic!("entry points disagree on {word:?}"),
        }
        for variant in [
            lexer.clone().raw_quotes(true),
            lexer.clone().raw_escapes(true),
            lexer.clone().skip_process_quotes(true),
            lexer.clone().skip_unset_env(true),
        ] {
            let _ = variant.expand_word(word, &env);
            let _ = variant.expand_words(word, &env);
        }
    }
});
