//! The node's client of the API server: JSON over HTTPS with the node's client certificate,
//! the few verbs a kubelet uses (get, list, watch, create, patch status, delete, events).

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("API server at {url}: {source}")]
    Transport { url: String, source: reqwest::Error },
    #[error("{method} {path}: {code} {reason}: {message}")]
    Status {
        method: &'static str,
        path: String,
        code: u16,
        reason: String,
        message: String,
    },
    #[error("{what}: {reason}")]
    Config { what: String, reason: String },
    #[error("{path}: the response is not JSON: {reason}")]
    Body { path: String, reason: String },
}

impl ApiError {
    pub fn code(&self) -> Option<u16> {
        match self {
            ApiError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }

    pub fn is_conflict(&self) -> bool {
        self.code() == Some(409)
    }
}

/// Where the API server is and who this node is to it.
#[derive(Clone)]
pub struct Connection {
    /// `https://host:port`.
    pub server: String,
    /// PEM of the cluster's certificate authority.
    pub ca_pem: String,
    /// PEM of the node's client certificate followed by its key.
    pub identity_pem: String,
}

impl Connection {
    /// Reads the first cluster and user of a kubeconfig (inline data or files).
    pub fn from_kubeconfig(
        text: &str,
        server_override: Option<&str>,
    ) -> Result<Connection, ApiError> {
        use base64::Engine;
        let bad = |reason: &str| ApiError::Config {
            what: "kubeconfig".into(),
            reason: reason.to_string(),
        };
        let doc: Value = yaml_serde::from_str(text).map_err(|e| bad(&e.to_string()))?;
        let current = doc["current-context"].as_str().unwrap_or_default();
        let contexts = doc["contexts"].as_array().cloned().unwrap_or_default();
        let context = contexts
            .iter()
            .find(|c| c["name"] == current)
            .or_else(|| contexts.first())
            .map(|c| c["context"].clone())
            .unwrap_or(Value::Null);
        let named = |list: &str, name: &Value| -> Value {
            let items = doc[list].as_array().cloned().unwrap_or_default();
            items
                .iter()
                .find(|i| &i["name"] == name)
                .or_else(|| items.first())
                .cloned()
                .unwrap_or(Value::Null)
        };
        let cluster = named("clusters", &context["cluster"])["cluster"].clone();
        let user = named("users", &context["user"])["user"].clone();
        let data = |v: &Value, inline: &str, file: &str| -> Result<String, ApiError> {
            if let Some(b64) = v[inline].as_str() {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|e| bad(&format!("{inline}: {e}")))?;
                return String::from_utf8(bytes).map_err(|e| bad(&format!("{inline}: {e}")));
            }
            if let Some(path) = v[file].as_str() {
                return std::fs::read_to_string(path).map_err(|e| bad(&format!("{path}: {e}")));
            }
            Err(bad(&format!("neither {inline} nor {file} is set")))
        };
        let server = match server_override {
            Some(s) => s.to_string(),
            None => cluster["server"]
                .as_str()
                .ok_or_else(|| bad("the cluster has no server"))?
                .to_string(),
        };
        Ok(Connection {
            server: server.trim_end_matches('/').to_string(),
            ca_pem: data(
                &cluster,
                "certificate-authority-data",
                "certificate-authority",
            )?,
            identity_pem: format!(
                "{}\n{}",
                data(&user, "client-certificate-data", "client-certificate")?,
                data(&user, "client-key-data", "client-key")?
            ),
        })
    }
}

/// One watch event.
#[derive(Debug)]
pub struct WatchEvent {
    pub kind: String,
    pub object: Value,
}

#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    /// For long-running watches: no overall timeout.
    streaming: reqwest::Client,
    server: String,
}

impl ApiClient {
    pub fn new(connection: &Connection) -> Result<ApiClient, ApiError> {
        let bad = |what: &str, e: reqwest::Error| ApiError::Config {
            what: what.into(),
            reason: e.to_string(),
        };
        let ca = reqwest::Certificate::from_pem(connection.ca_pem.as_bytes())
            .map_err(|e| bad("the cluster's CA certificate", e))?;
        let identity = reqwest::Identity::from_pem(connection.identity_pem.as_bytes())
            .map_err(|e| bad("the node's client certificate", e))?;
        let build = |timeout: Option<Duration>| {
            let mut b = reqwest::Client::builder()
                .use_rustls_tls()
                .tls_built_in_root_certs(false)
                .add_root_certificate(ca.clone())
                .identity(identity.clone())
                .connect_timeout(Duration::from_secs(10))
                .user_agent(concat!("kiln-node/", env!("CARGO_PKG_VERSION")));
            if let Some(t) = timeout {
                b = b.timeout(t);
            }
            b.build().map_err(|e| bad("the HTTP client", e))
        };
        Ok(ApiClient {
            http: build(Some(Duration::from_secs(30)))?,
            streaming: build(None)?,
            server: connection.server.clone(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server)
    }

    async fn send(
        &self,
        method: &'static str,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Value, ApiError> {
        let response = request.send().await.map_err(|source| ApiError::Transport {
            url: self.url(path),
            source,
        })?;
        let code = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|source| ApiError::Transport {
                url: self.url(path),
                source,
            })?;
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !(200..300).contains(&code) {
            return Err(ApiError::Status {
                method,
                path: path.to_string(),
                code,
                reason: body["reason"].as_str().unwrap_or_default().to_string(),
                message: body["message"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned()),
            });
        }
        Ok(body)
    }

    pub async fn get(&self, path: &str) -> Result<Value, ApiError> {
        self.send("GET", path, self.http.get(self.url(path))).await
    }

    pub async fn create(&self, path: &str, object: &Value) -> Result<Value, ApiError> {
        self.send("POST", path, self.http.post(self.url(path)).json(object))
            .await
    }

    pub async fn update(&self, path: &str, object: &Value) -> Result<Value, ApiError> {
        self.send("PUT", path, self.http.put(self.url(path)).json(object))
            .await
    }

    /// A JSON merge patch.
    pub async fn merge_patch(&self, path: &str, patch: &Value) -> Result<Value, ApiError> {
        let request = self
            .http
            .patch(self.url(path))
            .header("content-type", "application/merge-patch+json")
            .body(patch.to_string());
        self.send("PATCH", path, request).await
    }

    pub async fn delete(&self, path: &str, options: &Value) -> Result<Value, ApiError> {
        self.send(
            "DELETE",
            path,
            self.http.delete(self.url(path)).json(options),
        )
        .await
    }

    /// Watches `path` (a collection URL with its query) from `resource_version`, calling
    /// `on_event` for each event until the server ends the stream. Returns the last
    /// resourceVersion seen.
    pub async fn watch(
        &self,
        path: &str,
        resource_version: &str,
        mut on_event: impl FnMut(WatchEvent),
    ) -> Result<String, ApiError> {
        let separator = if path.contains('?') { '&' } else { '?' };
        let full = format!(
            "{path}{separator}watch=1&allowWatchBookmarks=true&resourceVersion={resource_version}&timeoutSeconds=300"
        );
        let response = self
            .streaming
            .get(self.url(&full))
            .send()
            .await
            .map_err(|source| ApiError::Transport {
                url: self.url(&full),
                source,
            })?;
        let code = response.status().as_u16();
        if code != 200 {
            let text = response.text().await.unwrap_or_default();
            return Err(ApiError::Status {
                method: "GET",
                path: full,
                code,
                reason: String::new(),
                message: text,
            });
        }
        let mut last = resource_version.to_string();
        let mut buffer: Vec<u8> = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|source| ApiError::Transport {
                url: self.url(&full),
                source,
            })?;
            buffer.extend_from_slice(&chunk);
            while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                    continue;
                };
                let kind = event["type"].as_str().unwrap_or_default().to_string();
                if kind == "ERROR" {
                    return Err(ApiError::Status {
                        method: "GET",
                        path: full,
                        code: event["object"]["code"].as_u64().unwrap_or(500) as u16,
                        reason: event["object"]["reason"]
                            .as_str()
                            .unwrap_or_default()
                            .into(),
                        message: event["object"]["message"]
                            .as_str()
                            .unwrap_or_default()
                            .into(),
                    });
                }
                if let Some(rv) = event["object"]["metadata"]["resourceVersion"].as_str() {
                    last = rv.to_string();
                }
                if kind != "BOOKMARK" {
                    on_event(WatchEvent {
                        kind,
                        object: event["object"].clone(),
                    });
                }
            }
        }
        Ok(last)
    }
}

/// An Event about `object` (a Pod or Node) from this node's kubelet, as the kubelet's
/// recorder writes it.
pub fn event(
    object: &Value,
    node: &str,
    kind: &str,
    reason: &str,
    message: &str,
    field_path: Option<&str>,
) -> Value {
    let meta = &object["metadata"];
    let namespace = meta["namespace"].as_str().unwrap_or("default");
    let name = meta["name"].as_str().unwrap_or_default();
    let now = crate::status::now_rfc3339();
    let mut involved = json!({
        "apiVersion": object["apiVersion"].as_str().unwrap_or("v1"),
        "kind": object["kind"].as_str().unwrap_or("Pod"),
        "name": name,
        "namespace": meta["namespace"],
        "uid": meta["uid"],
        "resourceVersion": meta["resourceVersion"],
    });
    if let Some(f) = field_path {
        involved["fieldPath"] = json!(f);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": format!("{name}.{:x}", uuid::Uuid::new_v4().as_u128() as u64),
            "namespace": namespace,
        },
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "type": kind,
        "source": {"component": "kubelet", "host": node},
        "reportingComponent": "kubelet",
        "reportingInstance": node,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    })
}
