//! Slash-separated paths as Go's `path` package treats them: BuildKit cleans Dockerfile paths
//! (WORKDIR, COPY sources and destinations, `.dockerignore` patterns) this way, so kiln must too.

/// `a/b`, or whichever is not empty; allocated once at its final size (the context walk and
/// COPY selection make one per file).
pub fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => {
            let mut joined = String::with_capacity(a.len() + 1 + b.len());
            joined.push_str(a);
            joined.push('/');
            joined.push_str(b);
            joined
        }
    }
}

/// Go's `path.Clean` for slash-separated paths: no empty, `.` or resolvable `..` elements, no
/// trailing slash; `""` becomes `"."`.
pub fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                // `..` above the root of an absolute path is the root itself.
                _ if rooted => {}
                _ => parts.push(".."),
            },
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_matches_go() {
        for (input, want) in [
            ("", "."),
            ("a/b/../c", "a/c"),
            ("/../a", "/a"),
            ("../a", "../a"),
            ("a//b/./", "a/b"),
            ("./", "."),
            ("/", "/"),
            ("a/../..", ".."),
        ] {
            assert_eq!(clean(input), want, "clean({input:?})");
        }
    }
}
