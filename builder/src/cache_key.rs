//! The cache key of a build step.
//!
//! `sha256(parent key ‖ canonical instruction after expansion ‖ the build args and env it can see ‖
//! for COPY/ADD: every selected source — path, type, mode, owner after --chown, content digest,
//! link target)`. Every field is length-prefixed, so no two different inputs can encode to the same
//! bytes (`"ab" ‖ "c"` versus `"a" ‖ "bc"`).

use sha2::{Digest as _, Sha256};

/// One source file of a COPY or ADD, as it will land in the layer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SourceFile {
    /// The path relative to the source root (context, stage or image), slash-separated.
    pub path: String,
    /// `f`, `d`, `l` (symlink) — what the copy creates.
    pub kind: char,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// `sha256:<hex>` of the content for files; empty for directories and links.
    pub digest: String,
    /// The target of a symlink; empty otherwise.
    pub link_target: String,
}

/// Builds the key of one step. Feed the parts in the order the step defines them.
#[derive(Clone)]
pub struct CacheKey {
    hasher: Sha256,
    /// Encoded fields not yet hashed: a COPY of many files feeds several small fields per
    /// file, which hash faster in large pieces.
    pending: Vec<u8>,
    /// What was fed, kept for explaining a miss (see [`crate::explain`]).
    inputs: crate::explain::RawInputs,
}

impl CacheKey {
    /// Start from the parent step's key (the base image's config digest for the first step).
    pub fn new(parent: &str) -> CacheKey {
        let mut key = CacheKey {
            hasher: Sha256::new(),
            pending: Vec::new(),
            inputs: crate::explain::RawInputs {
                parent: parent.to_string(),
                ..Default::default()
            },
        };
        key.field(b"kiln-cache-v1");
        key.field(parent.as_bytes());
        key
    }

    /// The instruction after expansion, in a canonical form (for example its JSON encoding).
    pub fn instruction(mut self, canonical: &str) -> CacheKey {
        self.field(b"instruction");
        self.field(canonical.as_bytes());
        self.inputs.instruction.push_str(canonical);
        self
    }

    /// The variables the step can see: build args in scope and the environment. Order does not
    /// matter (they are sorted here); a variable set to "" differs from one that is unset.
    pub fn variables<'a>(mut self, vars: impl IntoIterator<Item = (&'a str, &'a str)>) -> CacheKey {
        let mut vars: Vec<(&str, &str)> = vars.into_iter().collect();
        vars.sort_unstable();
        vars.dedup();
        self.inputs.variables = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.field(b"variables");
        self.count(vars.len());
        for (name, value) in vars {
            self.field(name.as_bytes());
            self.field(value.as_bytes());
        }
        self
    }

    /// The sources a COPY or ADD selected. Order does not matter (sorted here). Taken by value:
    /// they are kept as the key's inputs, and a large COPY has one per file.
    pub fn sources(mut self, mut files: Vec<SourceFile>) -> CacheKey {
        files.sort_unstable();
        self.field(b"sources");
        self.count(files.len());
        for f in &files {
            self.field(f.path.as_bytes());
            let mut kind = [0u8; 4];
            self.field(f.kind.encode_utf8(&mut kind).as_bytes());
            self.field(&f.mode.to_be_bytes());
            self.field(&f.uid.to_be_bytes());
            self.field(&f.gid.to_be_bytes());
            self.field(f.digest.as_bytes());
            self.field(f.link_target.as_bytes());
        }
        self.inputs.sources = Some(files);
        self
    }

    /// `sha256:<hex>`.
    pub fn finish(self) -> String {
        self.finish_explained().key
    }

    /// The key with what it was made from, so that a miss can say which input changed.
    pub fn finish_explained(self) -> crate::explain::StepKey {
        let CacheKey {
            mut hasher,
            pending,
            inputs,
        } = self;
        hasher.update(&pending);
        crate::explain::StepKey {
            key: format!("sha256:{}", hex::encode(hasher.finalize())),
            inputs: Some(Box::new(inputs)),
        }
    }

    fn count(&mut self, n: usize) {
        self.feed(&(n as u64).to_be_bytes());
    }

    fn field(&mut self, bytes: &[u8]) {
        self.count(bytes.len());
        self.feed(bytes);
    }

    fn feed(&mut self, bytes: &[u8]) {
        const PIECE: usize = 64 * 1024;
        if self.pending.len() + bytes.len() > PIECE {
            self.hasher.update(&self.pending);
            self.pending.clear();
        }
        if bytes.len() > PIECE {
            self.hasher.update(bytes);
        } else {
            self.pending.extend_from_slice(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, digest: &str) -> SourceFile {
        SourceFile {
            path: path.into(),
            kind: 'f',
            mode: 0o644,
            uid: 0,
            gid: 0,
            digest: digest.into(),
            link_target: String::new(),
        }
    }

    #[test]
    fn every_input_changes_the_key_and_nothing_else_does() {
        let base = || {
            CacheKey::new("sha256:parent")
                .instruction("RUN make")
                .variables([("A", "1"), ("B", "")])
                .sources(vec![file("x", "sha256:1"), file("y", "sha256:2")])
                .finish()
        };
        let same_reordered = CacheKey::new("sha256:parent")
            .instruction("RUN make")
            .variables([("B", ""), ("A", "1")])
            .sources(vec![file("y", "sha256:2"), file("x", "sha256:1")])
            .finish();
        assert_eq!(base(), same_reordered);
        assert_eq!(base(), base());

        let variants = [
            CacheKey::new("sha256:other")
                .instruction("RUN make")
                .variables([("A", "1"), ("B", "")])
                .sources(vec![file("x", "sha256:1"), file("y", "sha256:2")])
                .finish(),
            CacheKey::new("sha256:parent")
                .instruction("RUN make all")
                .variables([("A", "1"), ("B", "")])
                .sources(vec![file("x", "sha256:1"), file("y", "sha256:2")])
                .finish(),
            // B unset differs from B empty.
            CacheKey::new("sha256:parent")
                .instruction("RUN make")
                .variables([("A", "1")])
                .sources(vec![file("x", "sha256:1"), file("y", "sha256:2")])
                .finish(),
            CacheKey::new("sha256:parent")
                .instruction("RUN make")
                .variables([("A", "1"), ("B", "")])
                .sources(vec![file("x", "sha256:1"), file("y", "sha256:3")])
                .finish(),
            CacheKey::new("sha256:parent")
                .instruction("RUN make")
                .variables([("A", "1"), ("B", "")])
                .sources(vec![
                    SourceFile {
                        mode: 0o755,
                        ..file("x", "sha256:1")
                    },
                    file("y", "sha256:2"),
                ])
                .finish(),
        ];
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(&base(), v, "variant {i} must change the key");
        }
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        let a = CacheKey::new("p").variables([("ab", "c")]).finish();
        let b = CacheKey::new("p").variables([("a", "bc")]).finish();
        assert_ne!(a, b);
    }
}
