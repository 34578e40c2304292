//! "Did you mean …?" for misspelt words, by edit distance.

/// The Dockerfile instruction names, upper-case as users write them.
pub const INSTRUCTIONS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// The Levenshtein distance between `a` and `b`, comparing characters case-insensitively.
///
/// Two rows of the table only; `b` is expected to be short (a candidate name), so a long `a`
/// costs `O(len(a) · len(b))`, which callers bound by refusing absurdly long words first.
pub fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().flat_map(char::to_lowercase).collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.chars().flat_map(char::to_lowercase).enumerate() {
        current[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// The closest of `candidates` to `word`, if it is close enough to be a plausible typo: at
/// most two edits, and fewer edits than the word has characters (so `AS` suggests nothing).
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let length = word.chars().count();
    // Typos of instruction names are short; a long word is not one of them.
    if length == 0 || length > 32 {
        return None;
    }
    candidates
        .iter()
        .map(|&candidate| (levenshtein(word, candidate), candidate))
        .filter(|&(distance, _)| distance <= 2 && distance < length)
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate)
}

/// The instruction name closest to `word` (see [`closest`]).
pub fn instruction(word: &str) -> Option<&'static str> {
    closest(word, INSTRUCTIONS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_basics() {
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("FRM", "FROM"), 1);
        assert_eq!(levenshtein("from", "FROM"), 0);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
    }

    #[test]
    fn suggests_close_instruction_names() {
        assert_eq!(instruction("FRM"), Some("FROM"));
        assert_eq!(instruction("frm"), Some("FROM"));
        assert_eq!(instruction("RUNN"), Some("RUN"));
        assert_eq!(instruction("ENTRYPIONT"), Some("ENTRYPOINT"));
        assert_eq!(instruction("WORKDIRR"), Some("WORKDIR"));
        assert_eq!(instruction("apt-get"), None);
        assert_eq!(instruction("AS"), None);
    }
}
