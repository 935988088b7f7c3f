#![no_main]
//! References and digests: never panic; whatever parses prints back to something that parses
//! to the same reference.
use kiln_image::{Digest, Reference};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = Digest::parse(s);
    if let Ok(r) = Reference::parse_normalized(s) {
        let again = Reference::parse_normalized(&r.to_string()).expect("canonical form re-parses");
        assert_eq!(again, r);
        let familiar = Reference::parse_normalized(&r.familiar()).expect("familiar form re-parses");
        assert_eq!(familiar, r);
    }
});
