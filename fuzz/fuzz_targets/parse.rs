//! Any bytes, read as a Dockerfile: parsing and dumping must never panic, and a parse error
//! always says where.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let source = String::from_utf8_lossy(data);
    match kiln_grammar::parse(&source) {
        Ok(dockerfile) => {
            let dump = kiln_grammar::dump::dump(&dockerfile);
            assert_eq!(dump.lines().count(), dockerfile.nodes.len());
        }
        Err(error) => {
            assert!(error.span.is_some(), "parse error without a span: {error}");
            let _ = error.render("Dockerfile", &source);
        }
    }
});
