#![no_main]
//! Manifests, indexes and configs from untrusted bytes: errors, never panics.
use kiln_image::model::{self, media_types, Document};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Document::parse(data, None);
    let _ = Document::parse(data, Some(media_types::OCI_INDEX));
    let _ = Document::parse(data, Some(media_types::DOCKER_MANIFEST));
    let _ = model::parse_config(data);
});
