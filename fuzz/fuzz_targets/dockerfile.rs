#![no_main]
//! Dockerfiles and `.dockerignore` files from anywhere: parsing, variable substitution of
//! every expandable word, the stage graph, `RUN --mount` and `--chmod` resolution, base image
//! configs and ignore matching give a value or an error, never a panic.
use kiln_build::config::ImageConfig;
use kiln_build::dockerfile::{self, expand_word, InstructionKind};
use kiln_build::fsops::parse_chmod;
use kiln_build::graph;
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
            for ins in &stage.instructions {
                match &ins.kind {
                    InstructionKind::Run(run) => {
                        for m in &run.mounts {
                            let _ = m.resolve(&mut |w| {
                                expand_word(w, &env, file.directives.escape)
                                    .map_err(|e| e.to_string())
                            });
                        }
                    }
                    InstructionKind::Copy(c) => {
                        let _ = c.chmod.as_deref().map(parse_chmod);
                    }
                    _ => {}
                }
            }
        }
        let _ = graph::waves(&file, file.stages.len() - 1);
    }
    if let Ok(mut config) = ImageConfig::parse(data) {
        let _ = (config.env(), config.shell(), config.onbuild(), config.diff_ids());
        config.set_env("A", "b");
        config.push_history("1970-01-01T00:00:00Z", "RUN x", true);
        let _ = config.to_oci();
    }
    if let Ok(rules) = IgnoreRules::parse(text) {
        for path in ["a", "a/b/c", "node_modules/x", ".git/HEAD", "x.md"] {
            let _ = rules.is_ignored(path);
        }
    }
});
