//! Layer digests and chain ids (OCI image spec, "ChainID"): chain(L0) = diffid(L0),
//! chain(Ln) = sha256(chain(Ln-1) + " " + diffid(Ln)).

use std::fmt;

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// A `sha256:<hex>` digest. Both diff-ids (digest of an uncompressed layer tar) and chain ids
/// (digest of a layer stack) have this form.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

/// The digest of an uncompressed layer tar.
pub type DiffId = Digest;
/// The identity of a stack of layers, used to name its snapshot.
pub type ChainId = Digest;

impl Digest {
    /// Parses `sha256:<64 lowercase hex digits>`.
    pub fn parse(s: &str) -> Result<Self> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| Error::InvalidDigest(s.to_owned()))?;
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(Error::InvalidDigest(s.to_owned()));
        }
        Ok(Digest(s.to_owned()))
    }

    /// The digest of a finished sha256 hash.
    pub fn from_sha256(hash: &[u8]) -> Self {
        Digest(format!("sha256:{}", hex::encode(hash)))
    }

    /// The chain id of `diff_id` stacked on `parent` (or the bottom layer when `parent` is None).
    pub fn chain(parent: Option<&ChainId>, diff_id: &DiffId) -> ChainId {
        match parent {
            None => diff_id.clone(),
            Some(parent) => {
                let mut h = Sha256::new();
                h.update(parent.0.as_bytes());
                h.update(b" ");
                h.update(diff_id.0.as_bytes());
                Digest::from_sha256(&h.finalize())
            }
        }
    }

    /// The full `sha256:<hex>` form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hex part alone. Snapshot directories are named by it: a `:` would split an overlay
    /// `lowerdir=` list.
    pub fn hex(&self) -> &str {
        self.0.strip_prefix("sha256:").unwrap_or(&self.0)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The chain ids of every prefix of a layer list, bottom first.
pub fn chain_ids(diff_ids: &[DiffId]) -> Vec<ChainId> {
    let mut out: Vec<ChainId> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = Digest::chain(out.last(), d);
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_of_one_layer_is_its_diff_id() {
        let d = Digest::parse(&format!("sha256:{}", "a".repeat(64))).unwrap();
        assert_eq!(chain_ids(std::slice::from_ref(&d)), vec![d]);
    }

    #[test]
    fn chain_matches_the_spec_formula() {
        let a = Digest::parse(&format!("sha256:{}", "a".repeat(64))).unwrap();
        let b = Digest::parse(&format!("sha256:{}", "b".repeat(64))).unwrap();
        let ids = chain_ids(&[a.clone(), b.clone()]);
        let expect = hex::encode(Sha256::digest(format!("{a} {b}").as_bytes()));
        assert_eq!(ids[1].hex(), expect);
    }

    #[test]
    fn rejects_malformed_digests() {
        for bad in [
            "",
            "sha256:",
            "sha512:aa",
            &format!("sha256:{}", "A".repeat(64)),
            "sha256:../x",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
