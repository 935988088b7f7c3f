#![no_main]
//! What a node agent parses from outside: KubeletConfiguration files, pull secrets and
//! docker config files, pod objects, and the CRI log lines it serves. Any input gives a
//! value or an error, never a panic.
use kiln_node::config::KubeletConfig;
use kiln_node::keyring;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 5 {
        0 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                if let Ok(loaded) = KubeletConfig::from_yaml_str(text) {
                    let _ = loaded.config.validate();
                }
            }
        }
        1 => {
            if let Ok(entries) = keyring::from_docker_config(rest) {
                let ring = keyring::BasicKeyring::from_entries(&entries);
                let _ = ring.lookup("registry.example.com:5000/team/app");
                let _ = ring.lookup("docker.io/library/busybox");
            }
        }
        2 => {
            if let Ok(secret) = serde_json::from_slice::<serde_json::Value>(rest) {
                if let Ok(ring) = keyring::Keyring::for_pod(&[secret], &keyring::Keyring::new()) {
                    let _ = ring.lookup("localhost:5000/app");
                }
            }
        }
        3 => {
            if let Ok(object) = serde_json::from_slice::<serde_json::Value>(rest) {
                if let Ok(pod) = kiln_node::pod::Pod::from_value(&object) {
                    for c in &pod.spec.containers {
                        if let Some(p) = &c.readiness_probe {
                            if let Some(h) = &p.http_get {
                                let _ = c.resolve_port(&h.port);
                            }
                        }
                        for arg in c.args.iter().flatten() {
                            let _ = kiln_node::pod::expand(arg, &Default::default());
                        }
                    }
                    let _ = pod.grace_period_seconds();
                }
            }
        }
        _ => {
            for line in rest.split(|&b| b == b'\n') {
                let _ = kiln_runtime::container::parse_cri_line(line);
            }
        }
    }
});
