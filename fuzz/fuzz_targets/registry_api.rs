#![no_main]
//! The registry's HTTP API from hostile requests: any method, path, headers and body get a
//! well-formed answer, never a 5xx, and never a panic.
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::Request;
use kiln_registry::{Config, Registry};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

struct Harness {
    runtime: tokio::runtime::Runtime,
    app: axum::Router,
    _dir: tempfile::TempDir,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let registry = Registry::open(Config::default(), dir.path()).expect("registry");
        Harness {
            runtime: tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().expect("runtime"),
            app: kiln_registry::app(Arc::new(registry)),
            _dir: dir,
        }
    })
}

const METHODS: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];
const HEADERS: [&str; 4] = ["range", "content-range", "content-type", "authorization"];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.splitn(3, '\n');
    let path = parts.next().unwrap_or_default();
    let header = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default().as_bytes().to_vec();
    let uri = format!("/v2/{}", path.trim_start_matches('/'));
    let mut builder = Request::builder().method(METHODS[selector as usize % METHODS.len()]).uri(&uri);
    builder = builder.header(HEADERS[(selector as usize / 8) % HEADERS.len()], header);
    let Ok(request) = builder.body(Body::from(body)) else { return };
    let h = harness();
    let response = h.runtime.block_on(h.app.clone().oneshot(request)).expect("infallible");
    assert!(!response.status().is_server_error(), "{uri} -> {}", response.status());
});
