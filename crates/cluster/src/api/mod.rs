//! The HTTP face of the API server: discovery, OpenAPI and the REST verbs of every served
//! type, routed the way Kubernetes lays out its URLs.

mod body;
pub mod node_proxy;
pub(crate) mod read;
pub(crate) mod write;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::Value;

use crate::discovery;
use crate::openapi::OpenApi;
use crate::resources::ResourceType;
use crate::status::{ApiError, ApiResult};
use crate::store::Store;

pub use body::json_response;
pub use write::create_object;

/// What every handler shares.
pub struct ApiServer {
    pub store: Arc<dyn Store>,
    /// How to reach nodes (for logs and exec), when the server has an identity for it.
    pub nodes: Option<node_proxy::NodeClient>,
    pub admission: crate::admission::Admission,
    openapi: OpenApi,
    /// `host:port` clients reach the server at (for `/api`'s address list).
    pub address: String,
}

pub type Shared = Arc<ApiServer>;

impl ApiServer {
    pub fn new(store: Arc<dyn Store>, address: String) -> ApiServer {
        ApiServer {
            store,
            nodes: None,
            admission: Default::default(),
            openapi: OpenApi::new(),
            address,
        }
    }
}

pub fn router(server: Shared) -> Router {
    Router::new()
        .route(
            "/version",
            get(|| async { json_response(StatusCode::OK, &discovery::version()) }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/api", get(api_versions))
        .route(
            "/apis",
            get(|| async { json_response(StatusCode::OK, &discovery::api_group_list()) }),
        )
        .route("/openapi/v2", get(openapi_v2))
        .route("/openapi/v3", get(openapi_index))
        .route("/openapi/v3/{*path}", get(openapi_document))
        .route("/api/{*rest}", axum::routing::any(core_group))
        .route("/apis/{*rest}", axum::routing::any(named_group))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource",
            )
        })
        .with_state(server)
}

async fn api_versions(State(s): State<Shared>) -> Response {
    json_response(StatusCode::OK, &discovery::api_versions(&s.address))
}

async fn openapi_v2(State(s): State<Shared>) -> Response {
    (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            crate::openapi_v2::CONTENT_TYPE,
        )],
        s.openapi.v2().to_vec(),
    )
        .into_response()
}

async fn openapi_index(State(s): State<Shared>) -> Response {
    json_response(StatusCode::OK, s.openapi.index())
}

async fn openapi_document(State(s): State<Shared>, Path(path): Path<String>) -> Response {
    match s.openapi.document(&path) {
        Some(doc) => (
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            doc.to_string(),
        )
            .into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        )
        .into_response(),
    }
}

/// One request's resource: type, namespace, name and subresource.
#[derive(Debug, Clone)]
pub struct Target {
    pub rt: ResourceType,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

impl Target {
    /// The object `name` of `rt`, in `namespace` when the type is namespaced.
    pub fn object(rt: ResourceType, namespace: Option<&str>, name: &str) -> Target {
        Target {
            rt,
            namespace: namespace.filter(|_| rt.namespaced).map(str::to_string),
            name: Some(name.to_string()),
            subresource: None,
        }
    }

    /// The stored `object` of `rt`, by its metadata.
    pub fn of(rt: ResourceType, object: &Value) -> Target {
        Target::object(
            rt,
            crate::objects::meta_str(object, "namespace"),
            crate::objects::name_of(object),
        )
    }

    /// The same object's subresource `sub` (`None`: the object itself).
    pub fn with_subresource(&self, sub: Option<&str>) -> Target {
        Target {
            subresource: sub.map(str::to_string),
            ..self.clone()
        }
    }

    pub fn key(&self) -> Option<String> {
        self.name
            .as_deref()
            .map(|n| self.rt.key(self.namespace.as_deref(), n))
    }

    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }
}

fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource",
    )
}

/// Resolves the path after a group-version (`namespaces/default/pods/web/log`).
fn target(group: &str, version: &str, segments: &[&str]) -> ApiResult<Target> {
    let find = |plural: &str| ResourceType::find(group, version, plural).ok_or_else(not_found);
    let owned = |s: &&str| s.to_string();
    match segments {
        // A namespaced collection or object: namespaces/NS/PLURAL[/NAME[/SUB]]
        ["namespaces", ns, plural, rest @ ..]
            if ResourceType::find(group, version, plural).is_some_and(|t| t.namespaced)
                && rest.len() <= 2 =>
        {
            Ok(Target {
                rt: find(plural)?,
                namespace: Some(ns.to_string()),
                name: rest.first().map(owned),
                subresource: rest.get(1).map(owned),
            })
        }
        [plural, rest @ ..] if rest.len() <= 2 => Ok(Target {
            rt: find(plural)?,
            namespace: None,
            name: rest.first().map(owned),
            subresource: rest.get(1).map(owned),
        }),
        _ => Err(not_found()),
    }
}

/// A request split into what routing and the verbs need.
struct Incoming {
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    query: HashMap<String, String>,
    body: Bytes,
    /// The connection's upgrade, for `pods/exec`.
    upgrade: Option<hyper::upgrade::OnUpgrade>,
}

async fn incoming(request: axum::extract::Request) -> Result<Incoming, Response> {
    let (mut parts, body) = request.into_parts();
    let query = Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
        .map(|Query(q)| q)
        .map_err(|e| {
            ApiError::bad_request(format!("the query string is malformed: {e}")).into_response()
        })?;
    let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    Ok(Incoming {
        body: read_body(body).await?,
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        query,
        upgrade,
    })
}

async fn core_group(
    State(s): State<Shared>,
    Path(rest): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let incoming = match incoming(request).await {
        Ok(i) => i,
        Err(response) => return response,
    };
    let segments: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    match segments.as_slice() {
        [] => json_response(StatusCode::OK, &discovery::api_versions(&s.address)),
        ["v1"] => match discovery::api_resource_list("", "v1") {
            Some(list) => json_response(StatusCode::OK, &list),
            None => not_found().into_response(),
        },
        [version, rest @ ..] => {
            let version = version.to_string();
            dispatch(s, "", &version, rest, incoming).await
        }
    }
}

async fn named_group(
    State(s): State<Shared>,
    Path(rest): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let incoming = match incoming(request).await {
        Ok(i) => i,
        Err(response) => return response,
    };
    let segments: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    match segments.as_slice() {
        [] => json_response(StatusCode::OK, &discovery::api_group_list()),
        [group] => match discovery::api_group(group) {
            Some(g) => json_response(StatusCode::OK, &g),
            None => not_found().into_response(),
        },
        [group, version] => match discovery::api_resource_list(group, version) {
            Some(list) => json_response(StatusCode::OK, &list),
            None => not_found().into_response(),
        },
        [group, version, rest @ ..] => {
            let (group, version) = (group.to_string(), version.to_string());
            dispatch(s, &group, &version, rest, incoming).await
        }
    }
}

/// The request body, refused once it passes the object size limit.
async fn read_body(body: axum::body::Body) -> Result<Bytes, Response> {
    axum::body::to_bytes(body, crate::objects::MAX_OBJECT_BYTES)
        .await
        .map_err(|_| {
            let mut response = ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                format!(
                    "the request body is larger than the limit of {} bytes",
                    crate::objects::MAX_OBJECT_BYTES
                ),
            )
            .into_response();
            // The rest of the body is not read: the connection cannot carry another request.
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            response
        })
}

async fn dispatch(
    s: Shared,
    group: &str,
    version: &str,
    segments: &[&str],
    incoming: Incoming,
) -> Response {
    let result = async {
        let t = target(group, version, segments)?;
        if let Some(sub) = &t.subresource {
            if !t.rt.has_subresource(sub) {
                return Err(not_found());
            }
        }
        let Incoming {
            method,
            uri,
            headers,
            query,
            body,
            upgrade,
        } = incoming;
        if t.name.is_some() && matches!(t.subresource.as_deref(), Some("log" | "exec")) {
            return match method {
                Method::GET | Method::POST => {
                    node_proxy::forward(&s, &t, method, &uri, &headers, upgrade).await
                }
                m => Err(ApiError::method_not_allowed(format!(
                    "the server does not allow this method on the requested resource ({m})"
                ))),
            };
        }
        let req = Request {
            query,
            headers,
            body,
        };
        match (method, t.name.is_some(), t.subresource.as_deref()) {
            (Method::GET, false, None) => read::list_or_watch(&s, &t, &req).await,
            (Method::GET, true, None | Some("status")) => read::get(&s, &t, &req).await,
            (Method::GET, true, Some("scale")) => read::get_scale(&s, &t).await,
            (Method::POST, false, None) => write::create(&s, &t, &req).await,
            (Method::PUT, true, None | Some("status")) => write::update(&s, &t, &req).await,
            (Method::PUT, true, Some("scale")) => write::update_scale(&s, &t, &req).await,
            (Method::PATCH, true, None | Some("status")) => write::patch(&s, &t, &req).await,
            (Method::PATCH, true, Some("scale")) => write::patch_scale(&s, &t, &req).await,
            (Method::DELETE, true, None) => write::delete(&s, &t, &req).await,
            (Method::DELETE, false, None) => write::delete_collection(&s, &t, &req).await,
            (m, _, _) => Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({m})"
            ))),
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The parts of a request the verbs read.
pub struct Request {
    pub query: HashMap<String, String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Request {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Whether the client asked for a Table (`kubectl get`).
    pub fn wants_table(&self) -> bool {
        self.header("accept")
            .is_some_and(|a| a.split(',').any(|part| part.contains("as=Table")))
    }

    pub fn dry_run(&self) -> ApiResult<bool> {
        match self.param("dryRun") {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "Invalid dryRun value {other:?}: supported values: \"All\""
            ))),
        }
    }
}

/// An object as served, from its stored bytes.
pub fn decode_stored(value: &[u8], revision: i64) -> ApiResult<Value> {
    let mut object: Value = serde_json::from_slice(value)
        .map_err(|e| ApiError::internal(format!("stored object is not JSON: {e}")))?;
    crate::objects::set_resource_version(&mut object, revision);
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_resolve_like_kubernetes() {
        let t = target("", "v1", &["namespaces", "default", "pods", "web", "log"]).expect("log");
        assert_eq!(
            (
                t.rt.plural,
                t.namespace.as_deref(),
                t.name.as_deref(),
                t.subresource.as_deref()
            ),
            ("pods", Some("default"), Some("web"), Some("log"))
        );
        let t = target("", "v1", &["namespaces", "kube-system"]).expect("namespace");
        assert_eq!(
            (t.rt.plural, t.name.as_deref()),
            ("namespaces", Some("kube-system"))
        );
        let t = target("", "v1", &["namespaces", "x", "status"]).expect("ns status");
        assert_eq!(
            (t.rt.plural, t.subresource.as_deref()),
            ("namespaces", Some("status"))
        );
        let t = target("", "v1", &["pods"]).expect("all pods");
        assert!(t.namespace.is_none() && t.name.is_none());
        let t = target("apps", "v1", &["namespaces", "a", "deployments"]).expect("deployments");
        assert_eq!(t.rt.kind, "Deployment");
        assert!(target("", "v1", &["widgets"]).is_err());
        assert!(target("", "v1", &["namespaces", "a", "pods", "b", "c", "d"]).is_err());
    }
}
