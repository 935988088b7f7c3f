//! The distribution API over HTTP. Repository names contain slashes, so `/v2/...` paths are
//! routed by hand: the last `/blobs/`, `/manifests/`, `/tags/list` or `/referrers/` marker
//! splits name from rest.

mod blobs;
mod discovery;
mod manifests;
mod uploads;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt;

use kiln_image::reference::{is_valid_repository_path, is_valid_tag};
use kiln_image::Digest;

use crate::auth::{Action, Scope};
use crate::conn::{ReceiveLowWater, SocketFd};
use crate::error::{code, ApiError, ApiResult, Code};
use crate::storage::meta::Reference;
use crate::Registry;

type Shared = Arc<Registry>;

pub fn router(registry: Shared) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/token", get(token))
        .fallback(dispatch)
        .with_state(registry)
}

async fn metrics(State(r): State<Shared>) -> Response {
    let text = r.metrics.render(r.sessions.in_flight());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn token(State(r): State<Shared>, req: Request) -> Response {
    let query = query_pairs(req.uri().query());
    match r.auth.issue_token(req.headers(), &query) {
        Ok(body) => axum::Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

/// A parsed `/v2/` route.
#[derive(Debug)]
enum Route {
    Base,
    Catalog,
    Tags(String),
    Manifest(String, String),
    Blob(String, String),
    Uploads(String),
    Upload(String, String),
    Referrers(String, String),
}

impl Route {
    fn label(&self) -> &'static str {
        match self {
            Route::Base => "base",
            Route::Catalog => "catalog",
            Route::Tags(_) => "tags",
            Route::Manifest(..) => "manifest",
            Route::Blob(..) => "blob",
            Route::Uploads(_) | Route::Upload(..) => "upload",
            Route::Referrers(..) => "referrers",
        }
    }

    fn parse(path: &str) -> Option<Route> {
        let rest = path.strip_prefix("/v2")?;
        if rest.is_empty() || rest == "/" {
            return Some(Route::Base);
        }
        let rest = rest.strip_prefix('/')?;
        if rest == "_catalog" {
            return Some(Route::Catalog);
        }
        if let Some(name) = rest.strip_suffix("/tags/list") {
            return Some(Route::Tags(name.to_string()));
        }
        if let Some(name) = rest
            .strip_suffix("/blobs/uploads/")
            .or_else(|| rest.strip_suffix("/blobs/uploads"))
        {
            return Some(Route::Uploads(name.to_string()));
        }
        if let Some(i) = rest.rfind("/blobs/uploads/") {
            return Some(Route::Upload(
                rest[..i].to_string(),
                rest[i + "/blobs/uploads/".len()..].to_string(),
            ));
        }
        for (marker, make) in [
            (
                "/manifests/",
                Route::Manifest as fn(String, String) -> Route,
            ),
            ("/blobs/", Route::Blob),
            ("/referrers/", Route::Referrers),
        ] {
            if let Some(i) = rest.rfind(marker) {
                return Some(make(
                    rest[..i].to_string(),
                    rest[i + marker.len()..].to_string(),
                ));
            }
        }
        None
    }
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        _ => "OTHER",
    }
}

async fn dispatch(State(r): State<Shared>, req: Request) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let route = Route::parse(&path);
    let label = route.as_ref().map_or("unknown", Route::label);
    let response = match route {
        Some(route) => handle(&r, route, req)
            .await
            .unwrap_or_else(IntoResponse::into_response),
        None => code(Code::Unsupported)
            .status(StatusCode::NOT_FOUND)
            .message(format!("no such endpoint: {path}"))
            .into_response(),
    };
    let mut response = response;
    response.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    let status = response.status().as_u16();
    r.metrics.record(label, method_label(&method), status);
    if method != Method::HEAD {
        if let Some(len) = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        {
            r.metrics.bytes_out.fetch_add(len, Ordering::Relaxed);
        }
    }
    tracing::info!(
        method = %method,
        path = %path,
        status,
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    response
}

/// `scheme://host` as the client addressed us, for Location-free realms.
fn origin(r: &Registry, headers: &HeaderMap) -> String {
    let scheme = if r.config.http.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map_or_else(|| r.config.http.addr.to_string(), str::to_string);
    format!("{scheme}://{host}")
}

fn check_name(name: &str) -> ApiResult<()> {
    if name.is_empty() || !is_valid_repository_path(name) {
        return Err(code(Code::NameInvalid).detail(serde_json::json!({ "name": name })));
    }
    Ok(())
}

pub(crate) fn parse_digest(s: &str) -> ApiResult<Digest> {
    Digest::parse(s).map_err(|e| code(Code::DigestInvalid).message(e.to_string()))
}

fn parse_reference(s: &str) -> ApiResult<Reference<'_>> {
    if s.contains(':') {
        return Ok(Reference::Digest(parse_digest(s)?));
    }
    if !is_valid_tag(s) {
        return Err(code(Code::TagInvalid)
            .message(format!(
                "invalid tag {s:?}: must match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}"
            ))
            .detail(serde_json::json!({ "tag": s })));
    }
    Ok(Reference::Tag(s))
}

fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    let Some(q) = query else { return Vec::new() };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_value<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

async fn handle(r: &Shared, route: Route, req: Request) -> ApiResult<Response> {
    let method = req.method().clone();
    let origin = origin(r, req.headers());
    let (scope, name) = match &route {
        Route::Base => (Scope::Base, None),
        Route::Catalog => (Scope::Catalog, None),
        Route::Tags(n)
        | Route::Manifest(n, _)
        | Route::Blob(n, _)
        | Route::Uploads(n)
        | Route::Upload(n, _)
        | Route::Referrers(n, _) => {
            check_name(n)?;
            let action = match method {
                Method::GET | Method::HEAD => Action::Pull,
                Method::DELETE if !matches!(route, Route::Upload(..)) => Action::Delete,
                _ => Action::Push,
            };
            (Scope::Repository(n.clone(), action), Some(n.clone()))
        }
    };
    r.auth.authorize(req.headers(), &origin, &scope)?;
    if method == Method::DELETE && !r.config.storage.delete && !matches!(route, Route::Upload(..)) {
        return Err(code(Code::Unsupported)
            .message("deletion is disabled in this registry's configuration"));
    }
    let _ = name;
    let query = query_pairs(req.uri().query());
    match (route, method) {
        (Route::Base, Method::GET | Method::HEAD) => {
            Ok((StatusCode::OK, axum::Json(serde_json::json!({}))).into_response())
        }
        (Route::Catalog, Method::GET) => discovery::catalog(r, &query),
        (Route::Tags(name), Method::GET) => discovery::tags(r, &name, &query),
        (Route::Referrers(name, digest), Method::GET) => {
            discovery::referrers(r, &name, &digest, &query)
        }
        (Route::Manifest(name, reference), Method::GET) => {
            manifests::get(r, &name, &reference, true)
        }
        (Route::Manifest(name, reference), Method::HEAD) => {
            manifests::get(r, &name, &reference, false)
        }
        (Route::Manifest(name, reference), Method::PUT) => {
            manifests::put(r, &name, &reference, req).await
        }
        (Route::Manifest(name, reference), Method::DELETE) => {
            manifests::delete(r, &name, &reference)
        }
        (Route::Blob(name, digest), Method::GET) => {
            blobs::get(r, &name, &digest, req.headers(), true)
        }
        (Route::Blob(name, digest), Method::HEAD) => {
            blobs::get(r, &name, &digest, req.headers(), false)
        }
        (Route::Blob(name, digest), Method::DELETE) => blobs::delete(r, &name, &digest),
        (Route::Uploads(name), Method::POST) => uploads::start(r, &name, &query, req).await,
        (Route::Upload(name, id), Method::GET) => uploads::status(r, &name, &id),
        (Route::Upload(name, id), Method::PATCH) => uploads::patch(r, &name, &id, req).await,
        (Route::Upload(name, id), Method::PUT) => uploads::finish(r, &name, &id, &query, req).await,
        (Route::Upload(name, id), Method::DELETE) => uploads::cancel(r, &name, &id),
        (_, m) => Err(code(Code::Unsupported)
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .message(format!("method {m} is not allowed here"))),
    }
}

/// Streams a body into `sink`, counting bytes; `limit` caps what is accepted.
pub(crate) async fn stream_body(
    r: &Registry,
    req: axum::extract::Request,
    mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> ApiResult<u64> {
    let mut low_water = ReceiveLowWater::new(
        req.extensions().get::<SocketFd>().copied(),
        header_str(req.headers(), "content-length").and_then(|l| l.parse().ok()),
    );
    let mut stream = req.into_body().into_data_stream();
    let mut total = 0u64;
    loop {
        low_water.before_read();
        let Some(chunk) = stream.next().await else {
            break;
        };
        let chunk = chunk.map_err(|e| {
            code(Code::SizeInvalid).message(format!("reading the request body failed: {e}"))
        })?;
        low_water.received(chunk.len());
        sink(&chunk).map_err(|e| ApiError::internal("writing upload", e))?;
        total += chunk.len() as u64;
    }
    r.metrics.bytes_in.fetch_add(total, Ordering::Relaxed);
    Ok(total)
}

/// Largest request body read off the wire only to be thrown away before an error answer.
const DRAIN_LIMIT: u64 = 64 << 20;

/// Reads and discards what is left of a refused request's body, then returns `error` —
/// with `Connection: close` when the body was too big to drain, so the client is told
/// rather than reset.
pub(crate) async fn drain_then(body: Body, error: ApiError) -> ApiError {
    let mut stream = body.into_data_stream();
    let mut read = 0u64;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => read += c.len() as u64,
            Err(_) => return error,
        }
        if read > DRAIN_LIMIT {
            return error.header("connection", "close");
        }
    }
    error
}

pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub(crate) fn internal(context: &str) -> impl Fn(crate::storage::meta::MetaError) -> ApiError + '_ {
    move |e| ApiError::internal(context, e)
}
