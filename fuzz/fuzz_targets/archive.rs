#![no_main]
//! `docker save` / OCI archives and rootfs tarballs from untrusted bytes: an error or a
//! consistent import, never a panic, and a rejected archive leaves no blob behind.
use kiln_image::transfer::{load_docker_archive, import_rootfs, RootfsOptions};
use kiln_image::{ImageStore, Platform, Reference};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = ImageStore::open(dir.path()).expect("store");
    let path = std::path::Path::new("fuzz.tar");
    if load_docker_archive(&store, path, data).is_err() {
        assert!(store.blobs().list().expect("list").is_empty(), "a rejected archive stored blobs");
    }
    let name = Reference::parse_normalized("fuzz:1").expect("name");
    let options = RootfsOptions { platform: Platform::host(), created: 0, cmd: None, env: vec![] };
    let _ = import_rootfs(&store, path, data, &name, &options);
});
