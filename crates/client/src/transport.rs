//! Talking to one registry: which URL (HTTPS, or HTTP for loopback and insecure hosts),
//! authentication (Basic, or bearer tokens fetched from the challenge's realm and reused per
//! scope), and retries with exponential back-off on 5xx, 429 and dropped connections.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};

use crate::challenge::{self, Challenge};
use crate::credentials::{CredentialProvider, Credentials};
use crate::error::{ClientError, RegistryErrors};

/// How a client reaches registries.
#[derive(Debug, Clone)]
pub struct TransportOptions {
    /// Hosts (`host[:port]`) served over plain HTTP or HTTPS without certificate checks.
    /// Loopback hosts may always fall back to plain HTTP.
    pub insecure: Vec<String>,
    /// PEM files of certificate authorities trusted beside the system's.
    pub extra_ca: Vec<PathBuf>,
    /// Retries of a failed request (connection errors, 5xx, 429) before giving up.
    pub retries: u32,
    /// First back-off; doubled on every retry.
    pub backoff: Duration,
    pub user_agent: String,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            insecure: Vec::new(),
            extra_ca: Vec::new(),
            retries: 4,
            backoff: Duration::from_millis(250),
            user_agent: format!("kiln/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// Longest wait honoured from a `Retry-After` header.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Access a request needs, as token scopes (`repository:NAME:pull,push`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Scope(Vec<String>);

impl Scope {
    pub fn none() -> Scope {
        Scope(Vec::new())
    }

    pub fn pull(repository: &str) -> Scope {
        Scope(vec![format!("repository:{repository}:pull")])
    }

    pub fn push(repository: &str) -> Scope {
        Scope(vec![format!("repository:{repository}:pull,push")])
    }

    /// Adds pull access to `repository` (a cross-repository mount's source).
    pub fn and_pull(mut self, repository: &str) -> Scope {
        let s = format!("repository:{repository}:pull");
        if !self.0.contains(&s) {
            self.0.push(s);
        }
        self
    }
}

#[derive(Clone)]
struct Token {
    value: String,
    expires: Instant,
}

/// How to authenticate with a host, learned from its first 401.
#[derive(Clone)]
enum AuthMode {
    Anonymous,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

#[derive(Clone)]
struct Endpoint {
    base: String,
    http: reqwest::Client,
    auth: AuthMode,
}

/// Shared by every operation of a client: connections, endpoints and tokens are reused.
pub struct Transport {
    options: TransportOptions,
    verified: reqwest::Client,
    unverified: reqwest::Client,
    credentials: Arc<dyn CredentialProvider>,
    endpoints: Mutex<HashMap<String, Endpoint>>,
    tokens: Mutex<HashMap<(String, Scope), Token>>,
}

/// The HTTP host for a registry name (Docker Hub's API lives elsewhere than its name).
pub fn api_host(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        other => other,
    }
}

fn is_loopback(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        // `[::1]:5000`, `127.0.0.1:5000`, `localhost:5000`; a bare IPv6 has several colons.
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl Transport {
    pub fn new(
        options: TransportOptions,
        credentials: Arc<dyn CredentialProvider>,
    ) -> Result<Transport, ClientError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(options.user_agent.clone())
            .connect_timeout(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(60));
        for path in &options.extra_ca {
            let pem = std::fs::read(path).map_err(|e| ClientError::Config {
                what: format!("reading CA file {}", path.display()),
                reason: e.to_string(),
            })?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ClientError::Config {
                    what: format!("CA file {}", path.display()),
                    reason: e.to_string(),
                })?;
            if certs.is_empty() {
                return Err(ClientError::Config {
                    what: format!("CA file {}", path.display()),
                    reason: "no PEM certificate in it".into(),
                });
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let verified = builder.build().map_err(|e| ClientError::Config {
            what: "HTTP client".into(),
            reason: e.to_string(),
        })?;
        let unverified = reqwest::Client::builder()
            .user_agent(options.user_agent.clone())
            .connect_timeout(Duration::from_secs(30))
            .danger_accept_invalid_certs(true)
            .build()
            .map_err(|e| ClientError::Config {
                what: "HTTP client".into(),
                reason: e.to_string(),
            })?;
        Ok(Transport {
            options,
            verified,
            unverified,
            credentials,
            endpoints: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    fn is_insecure(&self, registry: &str) -> bool {
        self.options.insecure.iter().any(|h| h == registry)
    }

    /// Finds how to reach `registry` (pinging `/v2/`), once per host.
    async fn endpoint(&self, registry: &str) -> Result<Endpoint, ClientError> {
        if let Some(e) = self
            .endpoints
            .lock()
            .ok()
            .and_then(|m| m.get(registry).cloned())
        {
            return Ok(e);
        }
        let host = api_host(registry);
        let insecure = self.is_insecure(registry);
        let mut candidates = vec![(
            format!("https://{host}"),
            if insecure {
                self.unverified.clone()
            } else {
                self.verified.clone()
            },
        )];
        if insecure || is_loopback(host) {
            candidates.push((format!("http://{host}"), self.verified.clone()));
        }
        let mut first_error = None;
        for (base, http) in candidates {
            match self.ping(&base, &http).await {
                Ok(auth) => {
                    let endpoint = Endpoint { base, http, auth };
                    if let Ok(mut m) = self.endpoints.lock() {
                        m.insert(registry.to_string(), endpoint.clone());
                    }
                    return Ok(endpoint);
                }
                Err(e) => {
                    tracing::debug!(registry, error = %e, "endpoint unusable");
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| ClientError::Unreachable {
            registry: registry.to_string(),
            reason: "no endpoint".into(),
        }))
    }

    /// `GET /v2/`: 200 (open) or 401 with a challenge.
    async fn ping(&self, base: &str, http: &reqwest::Client) -> Result<AuthMode, ClientError> {
        let url = format!("{base}/v2/");
        let mut attempt = 0;
        let response = loop {
            match http.get(&url).send().await {
                Ok(r) if retryable_status(r.status()) && attempt < self.options.retries => {
                    self.back_off(attempt, r.headers()).await;
                }
                Ok(r) => break r,
                // A plain-HTTP server answering a TLS handshake fails at once: no retry.
                Err(e) if e.is_connect() || attempt >= self.options.retries => {
                    return Err(ClientError::Unreachable {
                        registry: url,
                        reason: error_text(&e),
                    })
                }
                Err(_) => self.back_off(attempt, &HeaderMap::new()).await,
            }
            attempt += 1;
        };
        match response.status() {
            s if s.is_success() => Ok(AuthMode::Anonymous),
            StatusCode::UNAUTHORIZED => Ok(auth_mode(response.headers())),
            status => Err(ClientError::Unreachable {
                registry: url,
                reason: format!("GET /v2/ answered {status}: not an OCI registry API"),
            }),
        }
    }

    async fn back_off(&self, attempt: u32, headers: &HeaderMap) {
        let wait = retry_after(headers).unwrap_or_else(|| {
            self.options
                .backoff
                .saturating_mul(2u32.saturating_pow(attempt))
                .min(Duration::from_secs(30))
        });
        tokio::time::sleep(wait).await;
    }

    fn credentials_for(&self, registry: &str) -> Result<Option<Credentials>, ClientError> {
        self.credentials
            .credentials(registry)
            .map_err(ClientError::Credentials)
    }

    /// The `Authorization` value for `scope` on `registry`, fetching a token if needed.
    async fn authorization(
        &self,
        registry: &str,
        endpoint: &Endpoint,
        scope: &Scope,
        creds: Option<&Credentials>,
        refresh: bool,
    ) -> Result<Option<HeaderValue>, ClientError> {
        match &endpoint.auth {
            AuthMode::Anonymous => Ok(None),
            AuthMode::Basic => Ok(creds.and_then(|c| basic_header(c).ok())),
            AuthMode::Bearer { realm, service } => {
                let key = (registry.to_string(), scope.clone());
                if !refresh {
                    let cached = self.tokens.lock().ok().and_then(|t| t.get(&key).cloned());
                    if let Some(t) = cached.filter(|t| t.expires > Instant::now()) {
                        return Ok(bearer_header(&t.value));
                    }
                }
                let token = self
                    .fetch_token(endpoint, realm, service.as_deref(), scope, creds)
                    .await?;
                let header = bearer_header(&token.value);
                if let Ok(mut t) = self.tokens.lock() {
                    t.insert(key, token);
                }
                Ok(header)
            }
        }
    }

    async fn fetch_token(
        &self,
        endpoint: &Endpoint,
        realm: &str,
        service: Option<&str>,
        scope: &Scope,
        creds: Option<&Credentials>,
    ) -> Result<Token, ClientError> {
        let started = Instant::now();
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(s) = service {
            query.push(("service", s));
        }
        for s in &scope.0 {
            query.push(("scope", s));
        }
        let request = match creds {
            // docker's OAuth2 refresh-token grant for identity tokens.
            Some(c) if c.identity_token().is_some() => {
                let mut form: Vec<(&str, &str)> = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &c.secret),
                    ("client_id", "kiln"),
                ];
                if let Some(s) = service {
                    form.push(("service", s));
                }
                let scopes = scope.0.join(" ");
                if !scopes.is_empty() {
                    form.push(("scope", &scopes));
                }
                endpoint.http.post(realm).form(&form)
            }
            Some(c) => endpoint
                .http
                .get(realm)
                .query(&query)
                .basic_auth(&c.username, Some(&c.secret)),
            None => endpoint.http.get(realm).query(&query),
        };
        let response = request.send().await.map_err(|e| ClientError::Unreachable {
            registry: realm.to_string(),
            reason: error_text(&e),
        })?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(ClientError::Unauthorized {
                registry: realm.to_string(),
                detail: if creds.is_some() {
                    "the token service refused the credentials".into()
                } else {
                    "the token service requires credentials".into()
                },
            });
        }
        if !status.is_success() {
            return Err(ClientError::Unreachable {
                registry: realm.to_string(),
                reason: format!("token service answered {status}"),
            });
        }
        #[derive(serde::Deserialize)]
        struct Reply {
            #[serde(default)]
            token: String,
            #[serde(default)]
            access_token: String,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        let reply: Reply = response
            .json()
            .await
            .map_err(|e| ClientError::Unreachable {
                registry: realm.to_string(),
                reason: format!("unreadable token reply: {}", error_text(&e)),
            })?;
        let value = if reply.token.is_empty() {
            reply.access_token
        } else {
            reply.token
        };
        if value.is_empty() {
            return Err(ClientError::Unreachable {
                registry: realm.to_string(),
                reason: "token reply holds no token".into(),
            });
        }
        // The spec's default lifetime is 60 s; renew a little early.
        let lifetime = Duration::from_secs(reply.expires_in.unwrap_or(60).max(10));
        Ok(Token {
            value,
            expires: started + lifetime - Duration::from_secs(5),
        })
    }

    /// Sends a request built by `build` (called again for every attempt), authenticated for
    /// `scope`, retried on connection errors, 5xx and 429. A 401 refreshes the token once.
    pub async fn send(
        &self,
        registry: &str,
        scope: &Scope,
        method: Method,
        path: &str,
        build: &(dyn Fn(RequestBuilder) -> RequestBuilder + Send + Sync),
    ) -> Result<Response, ClientError> {
        self.send_with(registry, scope, method, path, build, self.options.retries)
            .await
    }

    /// As [`Transport::send`] but never retried: for streamed bodies, whose partial
    /// delivery the caller must look into before sending more.
    pub async fn send_once(
        &self,
        registry: &str,
        scope: &Scope,
        method: Method,
        path: &str,
        build: &(dyn Fn(RequestBuilder) -> RequestBuilder + Send + Sync),
    ) -> Result<Response, ClientError> {
        self.send_with(registry, scope, method, path, build, 0)
            .await
    }

    async fn send_with(
        &self,
        registry: &str,
        scope: &Scope,
        method: Method,
        path: &str,
        build: &(dyn Fn(RequestBuilder) -> RequestBuilder + Send + Sync),
        retries: u32,
    ) -> Result<Response, ClientError> {
        let mut endpoint = self.endpoint(registry).await?;
        let creds = self.credentials_for(registry)?;
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", endpoint.base)
        };
        let mut attempt = 0u32;
        let mut refreshed = false;
        loop {
            let auth = self
                .authorization(registry, &endpoint, scope, creds.as_ref(), false)
                .await?;
            let mut request = build(endpoint.http.request(method.clone(), &url));
            if let Some(a) = auth {
                request = request.header(AUTHORIZATION, a);
            }
            match request.send().await {
                Ok(response) if response.status() == StatusCode::UNAUTHORIZED && !refreshed => {
                    // The token expired, or the server wants another scheme than the ping
                    // suggested: learn from this challenge and try once more.
                    refreshed = true;
                    let mode = auth_mode(response.headers());
                    endpoint.auth = mode;
                    if let Ok(mut m) = self.endpoints.lock() {
                        m.insert(registry.to_string(), endpoint.clone());
                    }
                    if let Ok(mut t) = self.tokens.lock() {
                        t.remove(&(registry.to_string(), scope.clone()));
                    }
                    if creds.is_none() && !matches!(endpoint.auth, AuthMode::Bearer { .. }) {
                        return Ok(response);
                    }
                }
                Ok(response) if retryable_status(response.status()) && attempt < retries => {
                    tracing::debug!(%url, status = %response.status(), attempt, "retrying");
                    self.back_off(attempt, response.headers()).await;
                    attempt += 1;
                }
                Ok(response) => return Ok(response),
                Err(e) if attempt < retries && retryable_error(&e) => {
                    tracing::debug!(%url, error = %e, attempt, "retrying");
                    self.back_off(attempt, &HeaderMap::new()).await;
                    attempt += 1;
                }
                Err(e) => {
                    return Err(ClientError::Unreachable {
                        registry: url,
                        reason: error_text(&e),
                    })
                }
            }
        }
    }

    /// Checks that the registry accepts `creds` (for `login`): with Basic auth `GET /v2/`
    /// must pass, with tokens the token service must issue one.
    pub async fn check_login(
        &self,
        registry: &str,
        creds: &Credentials,
    ) -> Result<(), ClientError> {
        let endpoint = self.endpoint(registry).await?;
        let refused = |detail: String| ClientError::Unauthorized {
            registry: registry.to_string(),
            detail,
        };
        let (authorization, refusal) = match &endpoint.auth {
            // Open registry: nothing to check against, as docker does.
            AuthMode::Anonymous => return Ok(()),
            AuthMode::Basic => (basic_header(creds).ok(), "incorrect username or password"),
            AuthMode::Bearer { realm, service } => {
                let token = self
                    .fetch_token(
                        &endpoint,
                        realm,
                        service.as_deref(),
                        &Scope::none(),
                        Some(creds),
                    )
                    .await
                    .map_err(|e| match e {
                        ClientError::Unauthorized { .. } => {
                            refused("incorrect username or password".into())
                        }
                        other => other,
                    })?;
                // The token must open the API itself.
                (
                    bearer_header(&token.value),
                    "the registry refused the token",
                )
            }
        };
        let mut request = endpoint.http.get(format!("{}/v2/", endpoint.base));
        if let Some(a) = authorization {
            request = request.header(AUTHORIZATION, a);
        }
        let response = request.send().await.map_err(|e| ClientError::Unreachable {
            registry: registry.to_string(),
            reason: error_text(&e),
        })?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(refused(format!("{refusal} ({})", response.status())))
        }
    }
}

fn auth_mode(headers: &HeaderMap) -> AuthMode {
    let mut mode = AuthMode::Anonymous;
    for value in headers.get_all(WWW_AUTHENTICATE) {
        let Ok(text) = value.to_str() else { continue };
        for c in challenge::parse(text) {
            match c {
                Challenge::Bearer { realm, service, .. } => {
                    return AuthMode::Bearer { realm, service };
                }
                Challenge::Basic => mode = AuthMode::Basic,
            }
        }
    }
    mode
}

fn basic_header(c: &Credentials) -> Result<HeaderValue, reqwest::header::InvalidHeaderValue> {
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.secret));
    let mut v = HeaderValue::from_str(&format!("Basic {encoded}"))?;
    v.set_sensitive(true);
    Ok(v)
}

fn bearer_header(token: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    v.set_sensitive(true);
    Some(v)
}

fn retryable_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

fn retryable_error(e: &reqwest::Error) -> bool {
    e.is_connect() || e.is_timeout() || e.is_request() || e.is_body()
}

/// `Retry-After` as seconds (HTTP dates are rare from registries and treated as absent).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// A reqwest error with its causes (reqwest's own text stops at "error sending request").
pub fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Reads a registry's error body (`{"errors":[...]}`) for an unexpected response.
pub async fn registry_error(response: Response, what: String) -> ClientError {
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    let errors = serde_json::from_slice::<RegistryErrors>(&body).unwrap_or_default();
    ClientError::Registry {
        what,
        status: status.as_u16(),
        errors: errors.errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "example.com",
            "10.0.0.1:5000",
            "[fe80::1]:5000",
            "localhost.example.com",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn retry_after_is_capped_and_dates_ignored() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("99999"));
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn scopes_merge_mount_sources() {
        let s = Scope::push("a/b").and_pull("c/d").and_pull("c/d");
        assert_eq!(
            s.0,
            vec![
                "repository:a/b:pull,push".to_string(),
                "repository:c/d:pull".to_string()
            ]
        );
    }
}
