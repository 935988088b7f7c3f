//! GET: one object, lists (JSON or Table, selectors, paging) and watches.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::{decode_stored, json_response, Request, Shared, Target};
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::{ApiError, ApiResult};
use crate::store::{EventKind, Revision, StoreError};
use crate::table::{self, IncludeObject};

pub fn store_error(t: &Target, e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound(_) => ApiError::not_found(&t.rt, t.name()),
        StoreError::AlreadyExists(_) => ApiError::already_exists(&t.rt, t.name()),
        StoreError::Conflict { .. } => ApiError::conflict(&t.rt, t.name()),
        StoreError::Compacted { requested, .. } => {
            ApiError::expired(format!("too old resource version: {requested}"))
        }
        StoreError::FutureRevision { requested, current } => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "Timeout",
            format!("Too large resource version: {requested}, current: {current}"),
        ),
        StoreError::Backend(m) => ApiError::internal(m),
    }
}

/// The current object at `t` (with its revision), or 404.
pub async fn current(s: &Shared, t: &Target) -> ApiResult<(Value, Revision)> {
    let key = t
        .key()
        .ok_or_else(|| ApiError::bad_request("no name given"))?;
    match s.store.get(&key).await.map_err(|e| store_error(t, e))? {
        Some(entry) => Ok((
            decode_stored(&entry.value, entry.mod_revision)?,
            entry.mod_revision,
        )),
        None => Err(ApiError::not_found(&t.rt, t.name())),
    }
}

pub async fn get(s: &Shared, t: &Target, req: &Request) -> ApiResult<Response> {
    let (object, revision) = current(s, t).await?;
    if req.wants_table() {
        let include = IncludeObject::parse(req.param("includeObject"))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let table = table::table(
            t.rt.kind,
            &[object],
            time::OffsetDateTime::now_utc(),
            include,
            &revision.to_string(),
            None,
        );
        return Ok(json_response(StatusCode::OK, &table));
    }
    Ok(json_response(StatusCode::OK, &object))
}

/// An `autoscaling/v1` Scale for a deployment or replica set.
pub fn scale_of(object: &Value) -> Value {
    let selector = object
        .pointer("/spec/selector")
        .and_then(|s| LabelSelector::from_object(s).ok())
        .map(|s| s.to_string())
        .unwrap_or_default();
    let md = object.get("metadata").cloned().unwrap_or(json!({}));
    let keep = [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ];
    let metadata: serde_json::Map<String, Value> = md
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| keep.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": {"replicas": object.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": object.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

pub async fn get_scale(s: &Shared, t: &Target) -> ApiResult<Response> {
    let (object, _) = current(s, t).await?;
    Ok(json_response(StatusCode::OK, &scale_of(&object)))
}

/// Label and field selectors of a list or watch.
pub struct Filter {
    labels: Option<LabelSelector>,
    fields: Option<FieldSelector>,
}

impl Filter {
    pub fn of(req: &Request) -> ApiResult<Filter> {
        let labels =
            match req.param("labelSelector") {
                Some(s) if !s.is_empty() => Some(LabelSelector::parse(s).map_err(|e| {
                    ApiError::bad_request(format!("unable to parse requirement: {e}"))
                })?),
                _ => None,
            };
        let fields = match req.param("fieldSelector") {
            Some(s) if !s.is_empty() => Some(
                FieldSelector::parse(s)
                    .map_err(|e| ApiError::bad_request(format!("invalid field selector: {e}")))?,
            ),
            _ => None,
        };
        Ok(Filter { labels, fields })
    }

    pub fn matches(&self, object: &Value) -> bool {
        let labels = object
            .pointer("/metadata/labels")
            .and_then(Value::as_object);
        self.labels.as_ref().is_none_or(|l| l.matches(labels))
            && self.fields.as_ref().is_none_or(|f| f.matches(object))
    }
}

/// A list's continue token: the revision the list is read at and the last key returned.
#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    v: String,
    rv: Revision,
    start: String,
}

fn encode_continue(rv: Revision, start: &str) -> String {
    let token = ContinueToken {
        v: "meta.k8s.io/v1".into(),
        rv,
        start: start.into(),
    };
    base64::engine::general_purpose::URL_SAFE.encode(serde_json::to_vec(&token).unwrap_or_default())
}

fn decode_continue(token: &str) -> ApiResult<ContinueToken> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: {token:?}"));
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .map_err(|_| bad())?;
    let t: ContinueToken = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if t.v != "meta.k8s.io/v1" {
        return Err(bad());
    }
    Ok(t)
}

pub async fn list_or_watch(s: &Shared, t: &Target, req: &Request) -> ApiResult<Response> {
    let watching = matches!(req.param("watch"), Some("true" | "1"));
    if watching {
        return watch(s, t, req).await;
    }
    let filter = Filter::of(req)?;
    let (objects, revision, next) = list(s, t, req, &filter).await?;
    if req.wants_table() {
        let include = IncludeObject::parse(req.param("includeObject"))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let table = table::table(
            t.rt.kind,
            &objects,
            time::OffsetDateTime::now_utc(),
            include,
            &revision.to_string(),
            next.as_deref(),
        );
        return Ok(json_response(StatusCode::OK, &table));
    }
    let items: Vec<Value> = objects
        .into_iter()
        .map(|mut o| {
            if let Some(m) = o.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            o
        })
        .collect();
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if let Some(next) = next {
        metadata["continue"] = json!(next);
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "kind": format!("{}List", t.rt.kind),
            "apiVersion": t.rt.api_version(),
            "metadata": metadata,
            "items": items,
        }),
    ))
}

/// The matching objects of one page, the revision read at and the next page's token.
pub async fn list(
    s: &Shared,
    t: &Target,
    req: &Request,
    filter: &Filter,
) -> ApiResult<(Vec<Value>, Revision, Option<String>)> {
    let limit: usize = match req.param("limit") {
        None | Some("") => 0,
        Some(l) => l
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?
            .max(0) as usize,
    };
    let prefix = t.rt.key_prefix(t.namespace.as_deref());
    let (mut at, mut start) = match req.param("continue") {
        Some(token) if !token.is_empty() => {
            let token = decode_continue(token)?;
            if !token.start.starts_with(&prefix) {
                return Err(ApiError::bad_request(
                    "continue key does not match this list",
                ));
            }
            (Some(token.rv), Some(token.start))
        }
        _ => (None, None),
    };
    if at.is_none() && req.param("resourceVersionMatch") == Some("Exact") {
        at = Some(
            req.param("resourceVersion")
                .unwrap_or("")
                .parse()
                .map_err(|_| {
                    ApiError::bad_request("resourceVersion must be a number for an exact match")
                })?,
        );
    }
    let mut out = Vec::new();
    loop {
        let want = if limit == 0 {
            0
        } else {
            (limit - out.len()).max(1)
        };
        let page = s
            .store
            .list(&prefix, start.as_deref(), want, at)
            .await
            .map_err(|e| store_error(t, e))?;
        at = Some(page.revision);
        let last_key = page.entries.last().map(|e| e.key.clone());
        for entry in page.entries {
            let object = decode_stored(&entry.value, entry.mod_revision)?;
            if filter.matches(&object) {
                out.push(object);
            }
        }
        let revision = page.revision;
        if !page.more {
            return Ok((out, revision, None));
        }
        start = last_key;
        if limit > 0 && out.len() >= limit {
            let next = start.as_deref().map(|k| encode_continue(revision, k));
            return Ok((out, revision, next));
        }
    }
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

async fn watch(s: &Shared, t: &Target, req: &Request) -> ApiResult<Response> {
    let filter = Filter::of(req)?;
    let timeout = req
        .param("timeoutSeconds")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(1800);
    let bookmarks = req.param("allowWatchBookmarks") == Some("true");
    let prefix = t.rt.key_prefix(t.namespace.as_deref());
    let mut initial = Vec::new();
    let from: Revision = match req.param("resourceVersion") {
        // No version, or "any": the current state as ADDED events, then changes after it.
        None | Some("") | Some("0") => {
            let (objects, revision, _) = list(
                s,
                t,
                &Request {
                    query: Default::default(),
                    headers: Default::default(),
                    body: Bytes::new(),
                },
                &filter,
            )
            .await?;
            initial = objects.iter().map(|o| event_line("ADDED", o)).collect();
            revision
        }
        Some(v) => v
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {v:?}")))?,
    };
    let kind = t.rt.kind;
    let api_version = t.rt.api_version();
    let events = match s.store.watch(&prefix, from).await {
        Ok(events) => events,
        Err(e @ StoreError::Compacted { .. }) => {
            // Kubernetes reports an expired version inside the watch, as an ERROR event.
            let status = store_error(t, e).to_status();
            let body = Body::from(event_line("ERROR", &status));
            return Ok(watch_response(body));
        }
        Err(e) => return Err(store_error(t, e)),
    };
    let decode = move |bytes: &[u8], revision: Revision| -> Option<Value> {
        let mut object: Value = serde_json::from_slice(bytes).ok()?;
        crate::objects::set_resource_version(&mut object, revision);
        Some(object)
    };
    let delivered = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(from));
    let seen = delivered.clone();
    let changes = events.filter_map(move |event| {
        if let Ok(e) = &event {
            seen.store(e.revision, std::sync::atomic::Ordering::Relaxed);
        }
        let out = match event {
            Err(e) => {
                let status = ApiError::internal(e.to_string()).to_status();
                Some(event_line("ERROR", &status))
            }
            Ok(event) => {
                let new = decode(&event.value, event.revision);
                let old_matched = event
                    .prev_value
                    .as_deref()
                    .and_then(|p| serde_json::from_slice::<Value>(p).ok())
                    .is_some_and(|o| filter.matches(&o));
                match (event.kind, new) {
                    (_, None) => None,
                    (EventKind::Delete, Some(o)) => old_matched.then(|| event_line("DELETED", &o)),
                    (EventKind::Put, Some(o)) => match (old_matched, filter.matches(&o)) {
                        (false, true) => Some(event_line("ADDED", &o)),
                        (true, true) => Some(event_line("MODIFIED", &o)),
                        (true, false) => Some(event_line("DELETED", &o)),
                        (false, false) => None,
                    },
                }
            }
        };
        std::future::ready(out.map(Ok::<Bytes, Infallible>))
    });
    let live = if bookmarks {
        futures_util::stream::select(changes, bookmarks_every(delivered, kind, api_version)).boxed()
    } else {
        changes.boxed()
    };
    let stream = futures_util::stream::iter(initial.into_iter().map(Ok::<Bytes, Infallible>))
        .chain(live)
        .take_until(tokio::time::sleep(Duration::from_secs(timeout)));
    Ok(watch_response(Body::from_stream(stream)))
}

/// BOOKMARK events every half minute, at the revision this watch has delivered up to (a
/// client that resumes from a bookmark must not skip changes still on their way).
fn bookmarks_every(
    delivered: std::sync::Arc<std::sync::atomic::AtomicI64>,
    kind: &'static str,
    api_version: String,
) -> futures_util::stream::BoxStream<'static, Result<Bytes, Infallible>> {
    futures_util::stream::unfold((), move |()| {
        let delivered = delivered.clone();
        let api_version = api_version.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            let rv = delivered.load(std::sync::atomic::Ordering::Relaxed);
            let bookmark = json!({"kind": kind, "apiVersion": api_version,
                "metadata": {"resourceVersion": rv.to_string()}});
            Some((Ok(event_line("BOOKMARK", &bookmark)), ()))
        }
    })
    .boxed()
}

fn watch_response(body: Body) -> Response {
    (
        StatusCode::OK,
        [
            (axum::http::header::CONTENT_TYPE, "application/json"),
            (axum::http::header::CACHE_CONTROL, "no-cache, private"),
        ],
        body,
    )
        .into_response()
}
