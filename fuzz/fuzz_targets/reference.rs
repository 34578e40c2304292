//! Image references (`name[:tag][@digest]`) from arbitrary text: parsing never panics, and what
//! parses prints back as something that parses to the same reference.
#![no_main]

use kiln_oci::Reference;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(reference) = Reference::parse(text) else {
        return;
    };
    let printed = reference.to_string();
    let again = Reference::parse(&printed).expect("a printed reference parses");
    assert_eq!(again.to_string(), printed);
    assert_eq!(again.name(), reference.name());
    let _ = reference.clone().with_default_tag().store_tag();
    let _ = reference.with_tag("latest");
});
