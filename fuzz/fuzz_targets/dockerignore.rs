//! `.dockerignore` text and a path, as arbitrary bytes: reading the patterns and matching must
//! never panic, and a pattern file that compiles answers every path.
//! The input is `patterns \0 path \0 path …`.
#![no_main]

use kiln_builder::dockerignore::{Matcher, read_patterns};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let patterns = parts.next().unwrap_or("");
    let lines = read_patterns(patterns);
    let Ok(matcher) = Matcher::new(".dockerignore", &lines) else {
        return;
    };
    let same = Matcher::from_text(".dockerignore", patterns).expect("same text, same result");
    for path in parts.take(16) {
        let excluded = matcher.is_excluded(path);
        assert_eq!(excluded, same.is_excluded(path), "{path:?}");
    }
    let _ = matcher.has_exclusions();
    let _ = matcher.is_empty();
});
