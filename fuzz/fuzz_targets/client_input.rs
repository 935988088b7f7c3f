//! What the client parses from outside: `WWW-Authenticate` challenges from registries and
//! docker config files from disk. Neither may panic, whatever the bytes.
#![no_main]

use std::path::Path;

use kiln_client::challenge;
use kiln_client::credentials::{CredentialProvider, DockerConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        for c in challenge::parse(text) {
            let _ = format!("{c:?}");
        }
    }
    if let Ok(config) = DockerConfig::from_bytes(Path::new("config.json"), data) {
        // Lookups only (no helper is run: a fuzzed credsStore must not start programs).
        for host in ["docker.io", "localhost:5000", "quay.io"] {
            let _ = config.inline(host);
            let _ = config.helper_for(host);
        }
        let _ = &config as &dyn CredentialProvider;
    }
});
