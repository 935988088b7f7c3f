//! Helpers for the black-box conformance tests of `kiln registry serve`: start a server on a
//! fresh root, talk HTTP to it, build blobs and manifests, and check OCI error bodies.
#![allow(dead_code)] // not every helper is used by every test

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use kiln_image::digest::{Algorithm, Digest};
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::{Method, StatusCode, Url};
use serde_json::{json, Value};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The `{}` blob of the OCI image spec's "empty descriptor".
pub const EMPTY_JSON: &[u8] = b"{}";
pub const EMPTY_JSON_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

/// The error codes of the spec's "Error Codes" table ("The `code` field MUST be one of the
/// following"), plus the two legacy Docker codes it names as ones clients may encounter.
pub const SPEC_ERROR_CODES: &[&str] = &[
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
    "TOOMANYREQUESTS",
    "TAG_INVALID",
    "MANIFEST_UNVERIFIED",
];

/// Every manifest type the tests push; sent as `Accept` on manifest pulls.
pub const ALL_MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// A `kiln registry serve` child on 127.0.0.1 with its own temporary root. Killed on drop;
/// its stderr log is printed when the test is failing.
pub struct Registry {
    child: Child,
    base: String,
    client: Client,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry on a fresh, empty root.
    pub fn start() -> Registry {
        Registry::spawn(None)
    }

    /// Starts a registry with `--config <file>` holding `toml`.
    pub fn start_with_config(toml: &str) -> Registry {
        Registry::spawn(Some(toml))
    }

    fn spawn(config: Option<&str>) -> Registry {
        let dir = tempfile::tempdir().expect("create temp dir for the registry");
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).expect("create registry root");
        let log = dir.path().join("server.log");
        let log_file = File::create(&log).expect("create server log file");

        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.args(["registry", "serve", "--addr", "127.0.0.1:0", "--root"])
            .arg(&root);
        if let Some(toml) = config {
            let path = dir.path().join("registry.toml");
            std::fs::write(&path, toml).expect("write registry config");
            cmd.arg("--config").arg(path);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file));
        let mut child = cmd.spawn().expect("spawn `kiln registry serve`");

        // The first stdout line announces the address. Read it on a thread so a server that
        // never prints cannot hang the test; keep draining stdout afterwards.
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut first = String::new();
            let _ = reader.read_line(&mut first);
            let _ = tx.send(first);
            let mut sink = Vec::new();
            let _ = reader.read_to_end(&mut sink);
        });
        let first = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "registry printed no `listening on` line within 30s; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        let base = match first.trim_end().strip_prefix("listening on ") {
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                url.trim_end_matches('/').to_string()
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "expected first stdout line `listening on http://127.0.0.1:PORT`, got {first:?}; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        let client = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .build()
            .expect("build HTTP client");
        Registry {
            child,
            base,
            client,
            log,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `host:port` of the listener, for raw TCP requests.
    pub fn addr(&self) -> String {
        let url = Url::parse(&self.base).expect("base URL parses");
        format!(
            "{}:{}",
            url.host_str().expect("base URL has a host"),
            url.port_or_known_default().expect("base URL has a port")
        )
    }

    /// Absolute URL for an absolute path such as `/v2/`.
    pub fn url(&self, path: &str) -> String {
        assert!(
            path.starts_with('/'),
            "url() takes an absolute path: {path}"
        );
        format!("{}{}", self.base, path)
    }

    /// Resolves a `Location` (absolute or relative) against the registry's base URL.
    pub fn resolve(&self, location: &str) -> Url {
        Url::parse(&self.base)
            .expect("base URL parses")
            .join(location)
            .unwrap_or_else(|e| panic!("Location {location:?} is not a valid URL reference: {e}"))
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    pub fn get(&self, path: &str) -> Response {
        send(self.request(Method::GET, path))
    }

    pub fn head(&self, path: &str) -> Response {
        send(self.request(Method::HEAD, path))
    }

    pub fn delete(&self, path: &str) -> Response {
        send(self.request(Method::DELETE, path))
    }

    /// GET a manifest, accepting every manifest media type.
    pub fn get_manifest(&self, repo: &str, reference: &str) -> Response {
        send(
            self.request(Method::GET, &format!("/v2/{repo}/manifests/{reference}"))
                .header("Accept", ALL_MANIFEST_TYPES),
        )
    }

    /// HEAD a manifest, accepting every manifest media type.
    pub fn head_manifest(&self, repo: &str, reference: &str) -> Response {
        send(
            self.request(Method::HEAD, &format!("/v2/{repo}/manifests/{reference}"))
                .header("Accept", ALL_MANIFEST_TYPES),
        )
    }

    /// POST `/v2/<repo>/blobs/uploads/` and return the absolute upload URL from the 202.
    pub fn start_upload(&self, repo: &str) -> Url {
        let resp = send(
            self.request(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
                .header("Content-Length", "0"),
        );
        assert_eq!(
            resp.status(),
            StatusCode::ACCEPTED,
            "POST /v2/{repo}/blobs/uploads/ should open an upload session (202)"
        );
        self.location(&resp)
    }

    /// The `Location` header of `resp`, resolved to an absolute URL.
    pub fn location(&self, resp: &Response) -> Url {
        let loc = header(resp, "Location").unwrap_or_else(|| {
            panic!(
                "expected a Location header on the {} response to {}",
                resp.status(),
                resp.url()
            )
        });
        self.resolve(&loc)
    }

    /// Pushes `bytes` into `repo` (POST then monolithic PUT) and returns the sha256 digest.
    pub fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        self.push_blob_with(repo, bytes, Algorithm::Sha256)
    }

    /// Pushes `bytes` into `repo` under a digest of the given algorithm.
    pub fn push_blob_with(&self, repo: &str, bytes: &[u8], algorithm: Algorithm) -> String {
        let digest = Digest::of_bytes(algorithm, bytes).to_string();
        let upload = self.start_upload(repo);
        let resp = send(
            self.client
                .put(with_query(&upload, "digest", &digest))
                .header("Content-Type", "application/octet-stream")
                .body(bytes.to_vec()),
        );
        assert_eq!(
            resp.status(),
            StatusCode::CREATED,
            "PUT <upload>?digest={digest} should store the blob (201); body: {}",
            resp.text().unwrap_or_default()
        );
        digest
    }

    /// PUT a manifest; returns the raw response.
    pub fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Response {
        send(
            self.request(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
                .header("Content-Type", media_type)
                .body(bytes.to_vec()),
        )
    }

    /// PUT a manifest that must be accepted (201); returns its sha256 digest.
    pub fn push_manifest_ok(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> String {
        let resp = self.push_manifest(repo, reference, media_type, bytes);
        let status = resp.status();
        assert_eq!(
            status,
            StatusCode::CREATED,
            "PUT /v2/{repo}/manifests/{reference} should be accepted (201); body: {}",
            resp.text().unwrap_or_default()
        );
        sha256(bytes)
    }

    /// Pushes a small config and `layers` into `repo`, then an OCI image manifest for them
    /// under `reference`. Returns `(manifest bytes, manifest digest)`.
    pub fn push_image(&self, repo: &str, reference: &str, layers: &[&[u8]]) -> (Vec<u8>, String) {
        // Unique per repository and reference, so configs do not collide across images.
        let config = serde_json::to_string(&json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
            "kiln-test": format!("{repo}/{reference}/{}", layers.len()),
        }))
        .expect("serialize config");
        let config_digest = self.push_blob(repo, config.as_bytes());
        let layer_descs: Vec<(String, usize)> = layers
            .iter()
            .map(|l| (self.push_blob(repo, l), l.len()))
            .collect();
        let manifest = image_manifest(&config_digest, config.len(), &layer_descs);
        let digest = self.push_manifest_ok(repo, reference, OCI_MANIFEST, &manifest);
        (manifest, digest)
    }

    /// Sends a hand-written HTTP/1.1 request over a fresh TCP connection (for requests reqwest
    /// cannot express: wrong Content-Length, un-normalized `..` paths). See [`raw_http`].
    pub fn raw(&self, request_head: &str, body: &[u8], half_close: bool) -> RawOutcome {
        raw_http(&self.addr(), request_head, body, half_close)
    }

    fn server_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- registry server log ({}) ----\n{}",
                self.base,
                self.server_log()
            );
        }
    }
}

/// Sends a request; a transport error is a test failure.
pub fn send(req: RequestBuilder) -> Response {
    let (client, req) = req.build_split();
    let req = req.expect("request builds");
    let what = format!("{} {}", req.method(), req.url());
    client
        .execute(req)
        .unwrap_or_else(|e| panic!("{what}: transport error: {}", error_chain(&e)))
}

/// An error with its sources, `a: b: c`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// A header as a string, if present and valid UTF-8.
pub fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A header that must be present.
pub fn require_header(resp: &Response, name: &str) -> String {
    header(resp, name).unwrap_or_else(|| {
        panic!(
            "expected header {name} on the {} response to {}; headers: {:?}",
            resp.status(),
            resp.url(),
            resp.headers()
        )
    })
}

/// The `Content-Length` header (not reqwest's body size hint, which is 0 for HEAD).
pub fn content_length(resp: &Response) -> Option<u64> {
    header(resp, "Content-Length").map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("Content-Length {v:?} is not a number"))
    })
}

/// Reads the body; a transport error is a test failure.
pub fn body(resp: Response) -> Vec<u8> {
    let url = resp.url().clone();
    resp.bytes()
        .unwrap_or_else(|e| panic!("reading the response body of {url}: {e}"))
        .to_vec()
}

/// Reads a JSON body.
pub fn json_body(resp: Response) -> Value {
    let url = resp.url().clone();
    let bytes = body(resp);
    serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "response of {url} is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    })
}

/// Asserts the status, then that the body is an OCI error document whose codes include
/// `code`.
pub fn assert_error(resp: Response, status: u16, code: &str) {
    assert_error_any(resp, &[status], &[code]);
}

/// Asserts the status is one of `statuses` and the error body carries one of `codes`.
/// Returns the codes found.
pub fn assert_error_any(resp: Response, statuses: &[u16], codes: &[&str]) -> Vec<String> {
    assert_error_for("", resp, statuses, codes)
}

/// [`assert_error_any`] with a description of the case for the failure message.
pub fn assert_error_for(
    case: &str,
    resp: Response,
    statuses: &[u16],
    codes: &[&str],
) -> Vec<String> {
    let status = resp.status().as_u16();
    let what = if case.is_empty() {
        format!("{} {}", resp.status(), resp.url())
    } else {
        format!("{case} ({})", resp.url())
    };
    let bytes = body(resp);
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        statuses.contains(&status),
        "{what}: expected status {statuses:?} with error {codes:?}, got {status}: {text}"
    );
    let found = error_codes(&what, &bytes);
    assert!(
        found.iter().any(|c| codes.contains(&c.as_str())),
        "{what}: expected error code {codes:?}, got {found:?}: {text}"
    );
    found
}

/// Validates an OCI error body (`{"errors":[{"code","message","detail"}]}`) and returns the
/// codes.
pub fn error_codes(what: &str, bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let doc: Value = serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("{what}: 4xx body is not JSON ({e}): {text:?}"));
    let errors = doc["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: error body lacks an `errors` array: {text}"));
    assert!(
        !errors.is_empty(),
        "{what}: `errors` array is empty: {text}"
    );
    errors
        .iter()
        .map(|e| {
            let code = e["code"]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: error entry without string `code`: {text}"));
            assert!(
                SPEC_ERROR_CODES.contains(&code),
                "{what}: error code {code:?} is not in the spec's list {SPEC_ERROR_CODES:?}: {text}"
            );
            if let Some(message) = e.get("message") {
                assert!(
                    message.is_string(),
                    "{what}: error `message` must be a string: {text}"
                );
            }
            code.to_string()
        })
        .collect()
}

/// Asserts the status and returns the body.
pub fn expect_status(resp: Response, status: u16, what: &str) -> Vec<u8> {
    let got = resp.status().as_u16();
    let url = resp.url().clone();
    let bytes = body(resp);
    assert_eq!(
        got,
        status,
        "{what} ({url}): expected {status}, got {got}: {}",
        String::from_utf8_lossy(&bytes)
    );
    bytes
}

/// Asserts a 416 answer; a JSON body, if any, must be a valid OCI error document ("If the
/// response body is in JSON format, it MUST have the following format").
pub fn assert_416(resp: Response, what: &str) {
    let status = resp.status().as_u16();
    let bytes = resp.bytes().map(|b| b.to_vec()).unwrap_or_default();
    assert_eq!(
        status,
        416,
        "{what}: expected 416, got {status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    if serde_json::from_slice::<Value>(&bytes).is_ok() {
        error_codes(what, &bytes);
    }
}

/// Asserts the response is not a server error, and that a 4xx other than 416 (a Range
/// answer) carries an OCI error body. Returns the status.
pub fn assert_not_5xx(resp: Response, what: &str) -> u16 {
    let status = resp.status().as_u16();
    // Only the status matters here; a body that fails to arrive is not a server error.
    let bytes = resp.bytes().map(|b| b.to_vec()).unwrap_or_default();
    assert!(
        status < 500,
        "{what}: server error {status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    if (400..500).contains(&status) && status != 416 {
        error_codes(what, &bytes);
    }
    status
}

/// Adds a query parameter to an upload URL that may already carry its own parameters.
pub fn with_query(url: &Url, key: &str, value: &str) -> Url {
    let mut url = url.clone();
    url.query_pairs_mut().append_pair(key, value);
    url
}

pub fn sha256(bytes: &[u8]) -> String {
    Digest::sha256_of(bytes).to_string()
}

pub fn sha512(bytes: &[u8]) -> String {
    Digest::of_bytes(Algorithm::Sha512, bytes).to_string()
}

/// Deterministic pseudo-random bytes, distinct per `seed`.
pub fn blob_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// An OCI image manifest (bytes, as pushed) for a config and `(digest, size)` layers.
pub fn image_manifest(
    config_digest: &str,
    config_size: usize,
    layers: &[(String, usize)],
) -> Vec<u8> {
    let layers: Vec<Value> = layers
        .iter()
        .map(|(d, s)| json!({"mediaType": OCI_LAYER, "digest": d, "size": s}))
        .collect();
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
        "layers": layers,
    }))
    .expect("serialize manifest")
}

/// A descriptor for a pushed manifest.
pub fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": sha256(bytes), "size": bytes.len()})
}

/// An OCI image index over `manifests` descriptors.
pub fn image_index(manifests: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    }))
    .expect("serialize index")
}

/// The OCI empty descriptor (`{}`), usable as an artifact's config or layer.
pub fn empty_descriptor() -> Value {
    json!({"mediaType": OCI_EMPTY, "digest": EMPTY_JSON_DIGEST, "size": 2})
}

/// Standard base64 with padding (for descriptor `data`).
pub fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Parses a `Link: <url>; rel="next"` header into the absolute next-page URL.
pub fn next_link(reg: &Registry, resp: &Response) -> Option<Url> {
    let link = header(resp, "Link")?;
    let (target, params) = link
        .trim()
        .strip_prefix('<')
        .and_then(|rest| rest.split_once('>'))
        .unwrap_or_else(|| panic!("Link header {link:?} is not `<url>; rel=\"next\"`"));
    let rel_next = params.split(';').any(|p| {
        let p = p.trim().replace(' ', "");
        p == "rel=\"next\"" || p == "rel=next"
    });
    assert!(rel_next, "Link header {link:?} lacks rel=\"next\"");
    Some(reg.resolve(target))
}

/// Query parameters of a URL as owned pairs.
pub fn query_pairs(url: &Url) -> Vec<(String, String)> {
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// What a raw HTTP exchange produced.
#[derive(Debug)]
pub enum RawOutcome {
    /// A response: status code and the raw text after the status line.
    Response { status: u16, rest: String },
    /// The server closed (or reset) the connection without answering.
    Closed,
}

/// Writes `request_head` (request line and headers, without the blank line), `\r\n\r\n`,
/// and `body`, then reads whatever comes back until the server closes. With `half_close` the
/// write side is shut down after the body (a client giving up on a body it announced as
/// longer); otherwise `request_head` should carry `Connection: close`.
pub fn raw_http(addr: &str, request_head: &str, body: &[u8], half_close: bool) -> RawOutcome {
    let mut stream = TcpStream::connect(addr).expect("connect to the registry");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("set read timeout");
    let mut req = request_head
        .trim_end()
        .replace("\r\n", "\n")
        .replace('\n', "\r\n");
    req.push_str("\r\n\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    // The server may answer (and close) before reading everything; a failed write is fine.
    let _ = stream.write_all(&bytes);
    let _ = stream.flush();
    if half_close {
        let _ = stream.shutdown(Shutdown::Write);
    }
    let mut reply = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                if reply.is_empty() {
                    panic!("raw request {request_head:?}: no response and no close within 20s");
                }
                break;
            }
            Err(_) => break, // reset: treat what we have as the outcome
        }
    }
    let text = String::from_utf8_lossy(&reply).into_owned();
    let Some(status_line) = text.lines().next().filter(|l| l.starts_with("HTTP/")) else {
        return RawOutcome::Closed;
    };
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unparsable status line {status_line:?}"));
    RawOutcome::Response {
        status,
        rest: text[status_line.len()..].to_string(),
    }
}
