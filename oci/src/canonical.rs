//! Canonical JSON (RFC 8785): sorted keys, no insignificant whitespace. Every config, manifest and
//! index the store writes goes through here, so the same image always has the same digest even
//! though oci-spec keeps annotations and labels in hash maps with a random iteration order.

use crate::error::{Error, Result};
use canon_json::CanonicalFormatter;
use serde::Serialize;

pub fn to_canonical_json<T: Serialize + ?Sized>(value: &T, what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, CanonicalFormatter::new());
    value
        .serialize(&mut ser)
        .map_err(|e| Error::json(what, e))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn hash_map_order_does_not_leak() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..8 {
            let map: HashMap<String, u32> = (0..32).map(|i| (format!("key{i}"), i)).collect();
            seen.insert(to_canonical_json(&map, "map").unwrap());
        }
        assert_eq!(seen.len(), 1);
        let bytes = seen.into_iter().next().unwrap();
        assert!(bytes.starts_with(br#"{"key0":0,"key1":1,"key10":10"#));
    }
}
