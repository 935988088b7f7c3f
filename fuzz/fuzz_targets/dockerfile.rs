#![no_main]
//! Dockerfiles and `.dockerignore` files from anywhere: parsing, variable substitution of
//! every expandable word, and ignore matching give a value or an error, never a panic.
use kiln_build::dockerfile::{self, expand_word};
use kiln_build::ignore::IgnoreRules;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(file) = dockerfile::parse(text) {
        let env: Vec<(String, String)> = file
            .global_args
            .iter()
            .map(|a| (a.name.clone(), a.default.clone().unwrap_or_default()))
            .collect();
        for stage in &file.stages {
            let _ = expand_word(&stage.base, &env, file.directives.escape);
        }
    }
    if let Ok(rules) = IgnoreRules::parse(text) {
        for path in ["a", "a/b/c", "node_modules/x", ".git/HEAD", "x.md"] {
            let _ = rules.is_ignored(path);
        }
    }
});
