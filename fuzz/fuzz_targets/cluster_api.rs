#![no_main]
//! The cluster API from hostile requests: any method, path under /api or /apis, content type,
//! query and body get a Kubernetes Status or an object, never a 5xx, and never a panic. The
//! parsers behind it (selectors, the three patch formats, object bodies) are reached through
//! the same requests.
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::Request;
use kiln_cluster::api::{self, ApiServer};
use kiln_cluster::store::sqlite::SqliteStore;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

struct Harness {
    runtime: tokio::runtime::Runtime,
    app: axum::Router,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let store = Arc::new(SqliteStore::in_memory().expect("store"));
        let server = Arc::new(ApiServer::new(store, "127.0.0.1:6443".into()));
        runtime.block_on(async {
            let ns = serde_json::json!({"metadata": {"name": "default"}});
            api::create_object(&server, &kiln_cluster::resources::NAMESPACES, None, ns, false)
                .await
                .expect("namespace");
        });
        Harness { app: api::router(server), runtime }
    })
}

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];
const TYPES: [&str; 6] = [
    "application/json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/json-patch+json",
    "application/vnd.kubernetes.protobuf",
    "text/plain",
];
const PATHS: [&str; 6] = [
    "/api/v1/namespaces/default/pods",
    "/api/v1/namespaces/default/pods/p",
    "/apis/apps/v1/namespaces/default/deployments",
    "/apis/apps/v1/namespaces/default/deployments/d/scale",
    "/api/v1/namespaces",
    "/api/v1/",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.splitn(2, '\n');
    let line = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default().as_bytes().to_vec();
    // The first line is a query string or, with the top bit set, a path of its own.
    let uri = if selector & 0x80 != 0 {
        format!("/api/{}", line.trim_start_matches('/'))
    } else {
        format!("{}?{line}", PATHS[(selector as usize >> 4) % PATHS.len()])
    };
    let builder = Request::builder()
        .method(METHODS[selector as usize % METHODS.len()])
        .uri(&uri)
        .header("content-type", TYPES[(selector as usize / 5) % TYPES.len()])
        .header("accept", if selector & 0x40 != 0 { "application/json;as=Table;v=v1;g=meta.k8s.io" } else { "application/json" });
    let Ok(request) = builder.body(Body::from(body)) else { return };
    let h = harness();
    let response = h.runtime.block_on(async {
        // A watch answers with a stream that never ends: only its status matters.
        tokio::time::timeout(std::time::Duration::from_secs(5), h.app.clone().oneshot(request)).await
    });
    if let Ok(response) = response {
        let response = response.expect("infallible");
        assert!(!response.status().is_server_error(), "{uri} -> {}", response.status());
    }
});
