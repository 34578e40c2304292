//! Layer digests and chain ids (OCI image spec, "ChainID"): chain(L0) = diffid(L0),
//! chain(Ln) = sha256(chain(Ln-1) + " " + diffid(Ln)).
//!
//! Diff-ids and chain ids are the store's own content digests ([`kiln_oci::Digest`]): one type
//! from the image config to the snapshot directory, nothing to convert on the way.

pub use kiln_oci::Digest;

use crate::error::{Error, Result};

/// The digest of an uncompressed layer tar.
pub type DiffId = Digest;
/// The identity of a stack of layers, used to name its snapshot. Snapshot directories are named
/// by its hex part ([`Digest::hex`]): a `:` would split an overlay `lowerdir=` list.
pub type ChainId = Digest;

/// The chain id of `diff_id` stacked on `parent` (or the bottom layer when `parent` is None).
pub fn chain_id(parent: Option<&ChainId>, diff_id: &DiffId) -> ChainId {
    match parent {
        None => diff_id.clone(),
        Some(parent) => Digest::of(format!("{parent} {diff_id}").as_bytes()),
    }
}

/// The chain ids of every prefix of a layer list, bottom first.
pub fn chain_ids(diff_ids: &[DiffId]) -> Vec<ChainId> {
    let mut out: Vec<ChainId> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = chain_id(out.last(), d);
        out.push(next);
    }
    out
}

/// Parses `sha256:<64 lowercase hex digits>` as this crate's error says it.
pub(crate) fn parse(text: &str) -> Result<Digest> {
    Digest::parse(text).map_err(|_| Error::InvalidDigest(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest as _, Sha256};

    #[test]
    fn chain_of_one_layer_is_its_diff_id() {
        let d = parse(&format!("sha256:{}", "a".repeat(64))).unwrap();
        assert_eq!(chain_ids(std::slice::from_ref(&d)), vec![d]);
    }

    #[test]
    fn chain_matches_the_spec_formula() {
        let a = parse(&format!("sha256:{}", "a".repeat(64))).unwrap();
        let b = parse(&format!("sha256:{}", "b".repeat(64))).unwrap();
        let ids = chain_ids(&[a.clone(), b.clone()]);
        let expect = hex::encode(Sha256::digest(format!("{a} {b}").as_bytes()));
        assert_eq!(ids[1].hex(), expect);
        assert_eq!(ids[1], chain_id(Some(&a), &b));
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
            assert!(
                matches!(parse(bad), Err(Error::InvalidDigest(text)) if text == bad),
                "{bad:?} accepted"
            );
        }
    }
}
