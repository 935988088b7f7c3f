//! `pods/log` and `pods/exec`: the API server forwards them to the node that runs the pod,
//! at the kubelet's paths (`/containerLogs/NS/POD/CONTAINER`, `/exec/NS/POD/CONTAINER`), over
//! TLS verified against the cluster CA and authenticated with the API server's own client
//! certificate. An exec is a WebSocket (`v5.channel.k8s.io`): once the node accepts the
//! upgrade, the bytes of both connections are copied through unchanged.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::read::current;
use super::{Shared, Target};
use crate::pki::CertAndKey;
use crate::resources::NODES;
use crate::status::{ApiError, ApiResult};

/// The kubelet's default port, when a node does not say.
const KUBELET_PORT: u16 = 10250;

/// TLS settings for talking to nodes.
pub struct NodeClient {
    tls: Arc<rustls::ClientConfig>,
}

#[derive(Debug, thiserror::Error)]
#[error("node client TLS: {0}")]
pub struct NodeClientError(String);

impl NodeClient {
    pub fn new(ca_pem: &str, identity: &CertAndKey) -> Result<NodeClient, NodeClientError> {
        let err = |e: &dyn std::fmt::Display| NodeClientError(e.to_string());
        let roots = crate::pki::trust_store(ca_pem).map_err(|e| err(&e))?;
        let (chain, key) = identity.to_rustls().map_err(|e| err(&e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| err(&e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| err(&e))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(NodeClient {
            tls: Arc::new(config),
        })
    }
}

/// Where the node running `pod` serves the kubelet API.
async fn node_endpoint(s: &Shared, pod: &Value) -> ApiResult<(String, u16)> {
    let pod_name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!("pod {pod_name} does not have a host assigned"))
        })?;
    let t = Target::object(NODES, None, node_name);
    let (node, _) = current(s, &t).await?;
    let addresses = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let address = ["InternalIP", "ExternalIP", "Hostname"]
        .iter()
        .find_map(|kind| {
            addresses.iter().find_map(|a| {
                (a.get("type").and_then(Value::as_str) == Some(kind))
                    .then(|| a.get("address").and_then(Value::as_str))
                    .flatten()
            })
        })
        .ok_or_else(|| {
            ApiError::bad_request(format!("node {node_name} has no address to reach it at"))
        })?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(KUBELET_PORT);
    Ok((address.to_string(), port))
}

/// The container a request names, or the pod's only one.
fn container_of(pod: &Value, asked: Option<&str>) -> ApiResult<String> {
    let names: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    let pod_name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    match asked.filter(|c| !c.is_empty()) {
        Some(c) => {
            let known = names.contains(&c)
                || ["initContainers", "ephemeralContainers"]
                    .iter()
                    .any(|list| {
                        pod.pointer(&format!("/spec/{list}"))
                            .and_then(Value::as_array)
                            .is_some_and(|cs| {
                                cs.iter()
                                    .any(|x| x.get("name").and_then(Value::as_str) == Some(c))
                            })
                    });
            if known {
                Ok(c.to_string())
            } else {
                Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {pod_name}"
                )))
            }
        }
        None => match names.as_slice() {
            [one] => Ok(one.to_string()),
            many => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                many.join(" ")
            ))),
        },
    }
}

async fn connect(
    client: &NodeClient,
    host: &str,
    port: u16,
) -> ApiResult<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let unreachable = |e: &dyn std::fmt::Display| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "ServiceUnavailable",
            format!("error dialing the node at {host}:{port}: {e}"),
        )
    };
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| unreachable(&e))?;
    let name =
        rustls_pki_types::ServerName::try_from(host.to_string()).map_err(|e| unreachable(&e))?;
    tokio_rustls::TlsConnector::from(client.tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| unreachable(&e))
}

/// Forwards a `pods/log` or `pods/exec` request to the pod's node.
pub async fn forward(
    s: &Shared,
    t: &Target,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> ApiResult<Response> {
    let Some(client) = s.nodes.as_ref() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "this API server cannot reach nodes",
        ));
    };
    let (pod, _) = current(s, &t.with_subresource(None)).await?;
    let query: Vec<(String, String)> = uri
        .query()
        .map(|q| {
            q.split('&')
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    // Raw (still percent-encoded) pairs: they are forwarded as they came.
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (k.to_string(), v.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let asked = query
        .iter()
        .find(|(k, _)| k == "container")
        .map(|(_, v)| v.as_str());
    let container = container_of(&pod, asked)?;
    let sub = t.subresource.as_deref().unwrap_or_default();
    if sub == "exec" {
        let phase = pod.pointer("/status/phase").and_then(Value::as_str);
        if matches!(phase, Some("Succeeded" | "Failed")) {
            return Err(ApiError::bad_request(
                "cannot exec into a container in a completed pod",
            ));
        }
    }
    let (host, port) = node_endpoint(s, &pod).await?;
    let namespace = t.namespace.as_deref().unwrap_or("default");
    let path = match sub {
        "log" => format!("/containerLogs/{namespace}/{}/{container}", t.name()),
        _ => format!("/exec/{namespace}/{}/{container}", t.name()),
    };
    let forwarded_query: Vec<String> = query
        .iter()
        .filter(|(k, _)| k != "container")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let target = if forwarded_query.is_empty() {
        path
    } else {
        format!("{path}?{}", forwarded_query.join("&"))
    };
    let stream = connect(client, &host, port).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ApiError::internal(format!("talking to node {host}: {e}")))?;
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });
    let mut request = axum::http::Request::builder()
        .method(method)
        .uri(&target)
        .header(header::HOST, format!("{host}:{port}"));
    for name in [
        header::CONNECTION,
        header::UPGRADE,
        header::SEC_WEBSOCKET_KEY,
        header::SEC_WEBSOCKET_VERSION,
        header::SEC_WEBSOCKET_PROTOCOL,
        header::ACCEPT,
    ] {
        if let Some(v) = headers.get(&name) {
            request = request.header(name, v);
        }
    }
    let request = request
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut response = sender
        .send_request(request)
        .await
        .map_err(|e| ApiError::internal(format!("talking to node {host}: {e}")))?;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_side) = upgrade else {
            return Err(ApiError::bad_request(
                "the node upgraded a request that asked for no upgrade",
            ));
        };
        let node_side = hyper::upgrade::on(&mut response);
        let mut answer = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
        for (name, value) in response.headers() {
            answer = answer.header(name, value);
        }
        tokio::spawn(async move {
            if let (Ok(a), Ok(b)) = (client_side.await, node_side.await) {
                let _ =
                    tokio::io::copy_bidirectional(&mut TokioIo::new(a), &mut TokioIo::new(b)).await;
            }
        });
        return answer
            .body(Body::empty())
            .map_err(|e| ApiError::internal(e.to_string()));
    }
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or(HeaderValue::from_static("text/plain"));
    Ok((
        status,
        [(header::CONTENT_TYPE, content_type)],
        Body::new(response.into_body()),
    )
        .into_response())
}
