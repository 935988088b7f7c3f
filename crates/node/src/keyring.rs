//! Docker registry credential keyring used when pulling images.
//!
//! This re-implements the upstream kubelet keyring
//! (`pkg/credentialprovider/keyring.go`, `config.go` and `secrets/secrets.go` in
//! kubernetes/kubernetes) so that a pod is handed exactly the credentials, in
//! exactly the order, that upstream kubelet would hand to the container runtime.
//! Pull secrets in the wild are written against upstream behaviour, so several
//! upstream quirks are kept on purpose; each is documented where it happens.
//!
//! Flow: pull secrets / node config files are parsed into [`Entry`] lists, entries
//! are indexed into a [`BasicKeyring`] (one normalized key per registry location),
//! and a pod-level [`Keyring`] is the ordered union of several basic keyrings
//! (the pod's pull secrets first, then the node's own credentials).

use std::collections::HashMap;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Map, Value};

/// Secret type whose `.dockerconfigjson` key holds a `config.json`-shaped document.
pub const SECRET_TYPE_DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
/// Data key used by [`SECRET_TYPE_DOCKER_CONFIG_JSON`] secrets.
pub const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";
/// Legacy secret type whose `.dockercfg` key holds the bare registry map.
pub const SECRET_TYPE_DOCKERCFG: &str = "kubernetes.io/dockercfg";
/// Data key used by [`SECRET_TYPE_DOCKERCFG`] secrets.
pub const DOCKERCFG_KEY: &str = ".dockercfg";

/// Key under which Docker Hub credentials land after normalization: both
/// `index.docker.io` and `https://index.docker.io/v1/` normalize to it.
pub const DEFAULT_REGISTRY_KEY: &str = "index.docker.io";

/// Errors from parsing credential sources.
///
/// Upstream fails the whole image pull when any pull secret is unparsable
/// (`MakeDockerKeyring` returns the error), so these are surfaced rather than
/// silently skipped. Messages never include credential material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    /// A pull secret could not be decoded; `secret` is `namespace/name`.
    #[error("image pull secret {secret}: {reason}")]
    Secret { secret: String, reason: String },
    /// A node-level docker config file could not be decoded.
    #[error("docker config: {reason}")]
    DockerConfig { reason: String },
}

/// One registry entry of a docker config, before key normalization.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entry {
    /// Registry location exactly as written in the config (e.g. `https://index.docker.io/v1/`).
    pub registry: String,
    pub username: String,
    pub password: String,
    pub email: String,
    /// `identitytoken` from the entry. Upstream parses but drops this field; it
    /// is carried here so the CRI `AuthConfig.identity_token` can be filled.
    pub identity_token: Option<String>,
}

/// A credential selected for an image, in the order it should be tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
    pub identity_token: Option<String>,
    /// Normalized keyring key that selected this credential (useful for logs).
    pub matched_key: String,
}

// ---------------------------------------------------------------------------
// Parsing credential sources
// ---------------------------------------------------------------------------

/// Parses the docker credentials carried by one Secret object (API-server JSON).
///
/// Only `kubernetes.io/dockerconfigjson` (key `.dockerconfigjson`) and
/// `kubernetes.io/dockercfg` (key `.dockercfg`) contribute; any other type, or a
/// missing/empty data key, yields no entries, matching upstream which simply
/// skips such secrets.
pub fn from_secret(secret: &Value) -> Result<Vec<Entry>, KeyringError> {
    let name = secret_name(secret);
    let fail = |reason: String| KeyringError::Secret {
        secret: name.clone(),
        reason,
    };
    let obj = secret
        .as_object()
        .ok_or_else(|| fail(format!("expected an object, found {}", kind(secret))))?;
    let secret_type = match obj.get("type") {
        None | Some(Value::Null) => "",
        Some(Value::String(s)) => s.as_str(),
        Some(other) => {
            return Err(fail(format!(
                "field \"type\" must be a string, found {}",
                kind(other)
            )));
        }
    };
    let (key, parse): (&str, ConfigParser) = match secret_type {
        SECRET_TYPE_DOCKER_CONFIG_JSON => (DOCKER_CONFIG_JSON_KEY, parse_config_json),
        SECRET_TYPE_DOCKERCFG => (DOCKERCFG_KEY, parse_dockercfg),
        _ => return Ok(Vec::new()),
    };
    let data = match obj.get("data") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(fail(format!(
                "field \"data\" must be an object, found {}",
                kind(other)
            )));
        }
    };
    let encoded = match data.get(key) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(fail(format!(
                "data[{key:?}] must be a base64 string, found {}",
                kind(other)
            )));
        }
    };
    let bytes = decode_b64(encoded, true)
        .ok_or_else(|| fail(format!("data[{key:?}] is not valid base64")))?;
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    parse(&bytes).map_err(|reason| fail(format!("data[{key:?}]: {reason}")))
}

type ConfigParser = fn(&[u8]) -> Result<Vec<Entry>, String>;

/// Parses a node-level docker `config.json` (`{"auths": {...}}`).
pub fn from_docker_config(bytes: &[u8]) -> Result<Vec<Entry>, KeyringError> {
    parse_config_json(bytes).map_err(|reason| KeyringError::DockerConfig { reason })
}

/// Parses a legacy node-level `.dockercfg` file (the bare registry map), which
/// upstream reads when no valid `config.json` is found.
pub fn from_dockercfg(bytes: &[u8]) -> Result<Vec<Entry>, KeyringError> {
    parse_dockercfg(bytes).map_err(|reason| KeyringError::DockerConfig { reason })
}

/// `namespace/name` for error messages, tolerating missing metadata.
fn secret_name(secret: &Value) -> String {
    let meta = secret.get("metadata");
    let get = |f: &str| meta.and_then(|m| m.get(f)).and_then(Value::as_str);
    match (get("namespace"), get("name")) {
        (Some(ns), Some(n)) => format!("{ns}/{n}"),
        (None, Some(n)) => n.to_string(),
        _ => "<unnamed>".to_string(),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Go's `encoding/json` matches struct fields case-insensitively (exact match
/// preferred), so `"Auths"` or `"Username"` are accepted upstream; mirror that.
fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// A string field: absent or `null` leaves it empty (as Go does), other types fail.
fn string_field(obj: &Map<String, Value>, name: &str) -> Result<String, String> {
    match field(obj, name) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!(
            "field {name:?} must be a string, found {}",
            kind(other)
        )),
    }
}

fn parse_json(bytes: &[u8]) -> Result<Value, String> {
    // serde_json syntax errors carry only a position, never document content.
    serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))
}

/// `config.json` shape: `{"auths": {LOCATION: ENTRY}, "HttpHeaders": {..}}`.
fn parse_config_json(bytes: &[u8]) -> Result<Vec<Entry>, String> {
    let root = parse_json(bytes)?;
    let obj = match &root {
        Value::Null => return Ok(Vec::new()),
        Value::Object(m) => m,
        other => return Err(format!("expected an object, found {}", kind(other))),
    };
    // Upstream decodes HttpHeaders as map[string]string, so a mistyped value
    // there fails the whole document; keep that strictness.
    match field(obj, "HttpHeaders") {
        None | Some(Value::Null) => {}
        Some(Value::Object(h)) => {
            if let Some((k, v)) = h
                .iter()
                .find(|(_, v)| !matches!(v, Value::String(_) | Value::Null))
            {
                return Err(format!(
                    "HttpHeaders[{k:?}] must be a string, found {}",
                    kind(v)
                ));
            }
        }
        Some(other) => {
            return Err(format!(
                "field \"HttpHeaders\" must be an object, found {}",
                kind(other)
            ));
        }
    }
    match field(obj, "auths") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(m)) => parse_registry_map(m),
        Some(other) => Err(format!(
            "field \"auths\" must be an object, found {}",
            kind(other)
        )),
    }
}

/// Legacy `.dockercfg` shape: the registry map itself.
fn parse_dockercfg(bytes: &[u8]) -> Result<Vec<Entry>, String> {
    match parse_json(bytes)? {
        Value::Null => Ok(Vec::new()),
        Value::Object(m) => parse_registry_map(&m),
        other => Err(format!("expected an object, found {}", kind(&other))),
    }
}

fn parse_registry_map(map: &Map<String, Value>) -> Result<Vec<Entry>, String> {
    map.iter()
        .map(|(loc, v)| parse_entry(loc, v).map_err(|e| format!("registry {loc:?}: {e}")))
        .collect()
}

/// One registry entry. A non-empty `auth` (base64 of `user:pass`) overrides any
/// `username`/`password` fields, exactly as upstream's `UnmarshalJSON` does.
fn parse_entry(loc: &str, v: &Value) -> Result<Entry, String> {
    let obj = match v {
        // Go hands `null` to the entry's UnmarshalJSON, which yields an empty entry.
        Value::Null => {
            return Ok(Entry {
                registry: loc.to_string(),
                ..Entry::default()
            });
        }
        Value::Object(m) => m,
        other => return Err(format!("expected an object, found {}", kind(other))),
    };
    let mut username = string_field(obj, "username")?;
    let mut password = string_field(obj, "password")?;
    let email = string_field(obj, "email")?;
    let auth = string_field(obj, "auth")?;
    let identity_token = string_field(obj, "identitytoken")?;
    if !auth.is_empty() {
        (username, password) = decode_auth_field(&auth)?;
    }
    Ok(Entry {
        registry: loc.to_string(),
        username,
        password,
        email,
        identity_token: (!identity_token.is_empty()).then_some(identity_token),
    })
}

/// Go's `base64.StdEncoding`: padding required, trailing bits tolerated.
const B64_PADDED: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);
/// Go's `base64.RawStdEncoding`: no padding allowed, trailing bits tolerated.
const B64_UNPADDED: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone),
);

/// Decodes like Go's std/raw-std base64 decoders, which skip `\r` and `\n`.
fn decode_b64(input: &str, padded: bool) -> Option<Vec<u8>> {
    let cleaned: Vec<u8> = input
        .bytes()
        .filter(|b| *b != b'\r' && *b != b'\n')
        .collect();
    let engine = if padded { &B64_PADDED } else { &B64_UNPADDED };
    engine.decode(cleaned).ok()
}

/// Decodes an `auth` field. Upstream picks the padded decoder iff the trimmed
/// value ends in `=`, so both padded and unpadded encodings are accepted.
fn decode_auth_field(auth: &str) -> Result<(String, String), String> {
    let padded = auth.trim().ends_with('=');
    let raw = decode_b64(auth, padded).ok_or("field \"auth\" is not valid base64")?;
    let text = String::from_utf8(raw).map_err(|_| "field \"auth\" does not decode to UTF-8")?;
    let (user, pass) = text
        .split_once(':')
        .ok_or("field \"auth\" must be formatted as base64(username:password)")?;
    Ok((user.to_string(), pass.to_string()))
}

// ---------------------------------------------------------------------------
// Keys and matching
// ---------------------------------------------------------------------------

/// Normalizes a registry location into a keyring key, or `None` if upstream
/// would reject it (it logs and ignores such entries).
///
/// `https://` is added unless the location already starts with `https://` or
/// `http://` (case-sensitive, as upstream). A leading `/v1/` or `/v2/` is cut to
/// `/` because docker treats those API prefixes as the bare host. The key is
/// `host[:port]` plus the remaining path, except that a path of `/` is dropped;
/// any other trailing slash is kept. Query, fragment and userinfo are dropped,
/// and percent-escapes decoded, because that is what Go's `url.Parse` does.
pub fn normalize_registry_key(location: &str) -> Option<String> {
    let url = if location.starts_with("https://") || location.starts_with("http://") {
        parse_http_url(location)
    } else {
        parse_http_url(&format!("https://{location}"))
    }
    .ok()?;
    let mut path = url.path.as_str();
    if path.starts_with("/v2/") || path.starts_with("/v1/") {
        path = &path[3..];
    }
    if path.is_empty() || path == "/" {
        Some(url.host)
    } else {
        Some(format!("{}{}", url.host, path))
    }
}

/// Upstream's fallback test for "does this image live on Docker Hub": the first
/// path component is `docker.io`/`index.docker.io`, or has no `.` or `:`.
/// Note the quirk that `localhost/app` therefore counts as Docker Hub.
fn is_default_registry_match(image: &str) -> bool {
    match image.split_once('/') {
        None => !image.is_empty(),
        Some(("", _)) => false,
        Some(("docker.io" | "index.docker.io", _)) => true,
        Some((first, _)) => !first.contains(['.', ':']),
    }
}

/// Parses a key or image the way upstream's `ParseSchemelessURL` does.
fn parse_schemeless(s: &str) -> Result<GoUrl, &'static str> {
    parse_http_url(&format!("https://{s}"))
}

/// Upstream `URLsMatch`: equal ports, equal host label counts, key path a plain
/// *string* prefix of the image path (so key `r.io/team` also matches
/// `r.io/teamx/app`), and every host label glob-matched with Go `path.Match`.
/// Wildcards are only honoured in host labels; malformed globs never match.
fn urls_match(glob: &GoUrl, target: &GoUrl) -> bool {
    let (glob_labels, glob_port) = split_url(&glob.host);
    let (target_labels, target_port) = split_url(&target.host);
    glob_port == target_port
        && glob_labels.len() == target_labels.len()
        && target.path.starts_with(&glob.path)
        && glob_labels
            .iter()
            .zip(&target_labels)
            .all(|(g, t)| glob_match(g, t) == Ok(true))
}

/// Host labels and port; when Go's `net.SplitHostPort` rejects the host (no
/// port, stray brackets, ...) the whole host is split and the port is empty.
fn split_url(host: &str) -> (Vec<&str>, &str) {
    match split_host_port(host) {
        Some((h, port)) => (h.split('.').collect(), port),
        None => (host.split('.').collect(), ""),
    }
}

/// Go `net.SplitHostPort`, returning `None` where Go returns an error.
fn split_host_port(hostport: &str) -> Option<(&str, &str)> {
    let last_colon = hostport.rfind(':')?;
    let (host, j, k) = if hostport.starts_with('[') {
        let end = hostport.find(']')?;
        if end + 1 != last_colon {
            return None; // missing port, or too many colons
        }
        (&hostport[1..end], 1, end + 1)
    } else {
        let host = &hostport[..last_colon];
        if host.contains(':') {
            return None;
        }
        (host, 0, 0)
    };
    if hostport[j..].contains('[') || hostport[k..].contains(']') {
        return None;
    }
    Some((host, &hostport[last_colon + 1..]))
}

// ---------------------------------------------------------------------------
// Minimal Go `net/url` parser (only what upstream's key handling relies on)
// ---------------------------------------------------------------------------

/// The two parts of a Go `url.URL` that the keyring uses.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GoUrl {
    /// `host[:port]`, percent-decoded, case preserved (Go does not lowercase).
    host: String,
    /// Percent-decoded path, starting with `/` or empty.
    path: String,
}

/// Parses `http://…` / `https://…` following Go's `url.Parse`: cut the fragment
/// at `#`, the query at `?`, userinfo at the last `@`; validate the port and
/// host characters; percent-decode host and path. Input must start with one of
/// the two schemes (every caller guarantees it).
fn parse_http_url(raw: &str) -> Result<GoUrl, &'static str> {
    if raw.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err("invalid control character in URL");
    }
    let (raw, fragment) = match raw.split_once('#') {
        Some((u, f)) => (u, Some(f)),
        None => (raw, None),
    };
    if let Some(f) = fragment {
        unescape(f, Escape::Other)?;
    }
    let rest = raw
        .strip_prefix("https:")
        .or_else(|| raw.strip_prefix("http:"))
        .ok_or("missing http(s) scheme")?;
    let rest = match rest.split_once('?') {
        Some((before, _query)) => before,
        None => rest,
    };
    let rest = rest.strip_prefix("//").ok_or("missing authority")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = match authority.rfind('@') {
        Some(i) => {
            let userinfo = &authority[..i];
            if !valid_userinfo(userinfo) {
                return Err("invalid userinfo");
            }
            unescape(userinfo, Escape::Other)?;
            &authority[i + 1..]
        }
        None => authority,
    };
    Ok(GoUrl {
        host: parse_host(host)?,
        path: unescape(path, Escape::Other)?,
    })
}

fn parse_host(host: &str) -> Result<String, &'static str> {
    if host.starts_with('[') {
        // A leading `[` means an IPv6 literal to Go, so `[a-c].example.com`
        // is rejected here (invalid port after `]`).
        let end = host.rfind(']').ok_or("missing ']' in host")?;
        if !valid_optional_port(&host[end + 1..]) {
            return Err("invalid port after host");
        }
    } else if host
        .rfind(':')
        .is_some_and(|i| !valid_optional_port(&host[i..]))
    {
        return Err("invalid port after host");
    }
    unescape(host, Escape::Host)
}

/// Empty, or `:` followed by digits only (an empty port is allowed).
fn valid_optional_port(port: &str) -> bool {
    port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

fn valid_userinfo(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._:~!$&'()*+,;=%@".contains(c))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Escape {
    Host,
    Other,
}

/// Go `url.unescape`: `%XX` must be well formed; in hosts only non-ASCII bytes
/// (or `%25`) may be escaped and only RFC 3986 sub-delims and a few extras may
/// appear literally. Unlike Go, non-UTF-8 results are rejected.
fn unescape(s: &str, mode: Escape) -> Result<String, &'static str> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let (Some(hi), Some(lo)) = (
                b.get(i + 1).copied().and_then(unhex),
                b.get(i + 2).copied().and_then(unhex),
            ) else {
                return Err("invalid URL escape");
            };
            if mode == Escape::Host && hi < 8 && &b[i..i + 3] != b"%25" {
                return Err("invalid URL escape in host");
            }
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            if mode == Escape::Host
                && c < 0x80
                && !(c.is_ascii_alphanumeric() || b"-_.~!$&'()*+,;=:[]<>\"".contains(&c))
            {
                return Err("invalid character in host name");
            }
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "URL component is not valid UTF-8")
}

fn unhex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Go `path.Match` (what upstream's `filepath.Match` is on Linux)
// ---------------------------------------------------------------------------

/// Malformed glob pattern (Go's `ErrBadPattern`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BadPattern;

/// Go `path.Match`: `*` (no `/`), `?`, `[...]` / `[^...]` classes with ranges
/// and `\` escapes, byte-for-byte including its error cases.
fn glob_match(pattern: &str, name: &str) -> Result<bool, BadPattern> {
    let mut pattern = pattern.as_bytes();
    let mut name = name.as_bytes();
    'chunks: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            // Trailing `*` matches the rest unless it contains a separator.
            return Ok(!name.contains(&b'/'));
        }
        if let Some(t) = match_chunk(chunk, name)? {
            // The last chunk must consume the whole name.
            if t.is_empty() || !pattern.is_empty() {
                name = t;
                continue;
            }
        }
        if star {
            let mut i = 0;
            while i < name.len() && name[i] != b'/' {
                if let Some(t) = match_chunk(chunk, &name[i + 1..])? {
                    if pattern.is_empty() && !t.is_empty() {
                        i += 1;
                        continue;
                    }
                    name = t;
                    continue 'chunks;
                }
                i += 1;
            }
        }
        // Go reports a malformed remainder even after a mismatch.
        while !pattern.is_empty() {
            let (_, chunk, rest) = scan_chunk(pattern);
            pattern = rest;
            match_chunk(chunk, b"")?;
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

/// Splits off leading stars and the following star-free chunk.
fn scan_chunk(mut pattern: &[u8]) -> (bool, &[u8], &[u8]) {
    let mut star = false;
    while let [b'*', rest @ ..] = pattern {
        pattern = rest;
        star = true;
    }
    let mut in_range = false;
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'\\' if i + 1 < pattern.len() => i += 1,
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    (star, &pattern[..i], &pattern[i..])
}

/// Matches one star-free chunk at the start of `s`; `Some(rest)` on success.
/// Like Go it keeps scanning the chunk after a mismatch to report bad syntax.
fn match_chunk<'a>(mut chunk: &[u8], mut s: &'a [u8]) -> Result<Option<&'a [u8]>, BadPattern> {
    let mut failed = false;
    while let Some(&c) = chunk.first() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match c {
            b'[' => {
                let mut r = 0u32;
                if !failed {
                    let (rune, n) = decode_rune(s);
                    r = rune;
                    s = &s[n..];
                }
                chunk = &chunk[1..];
                let negated = chunk.first() == Some(&b'^');
                if negated {
                    chunk = &chunk[1..];
                }
                let mut matched = false;
                let mut ranges = 0;
                loop {
                    if chunk.first() == Some(&b']') && ranges > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let (lo, rest) = get_esc(chunk)?;
                    chunk = rest;
                    let mut hi = lo;
                    if chunk.first() == Some(&b'-') {
                        let (h, rest) = get_esc(&chunk[1..])?;
                        hi = h;
                        chunk = rest;
                    }
                    if lo <= r && r <= hi {
                        matched = true;
                    }
                    ranges += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            b'?' => {
                if let (false, Some(&first)) = (failed, s.first()) {
                    if first == b'/' {
                        failed = true;
                    }
                    let (_, n) = decode_rune(s);
                    s = &s[n..];
                }
                chunk = &chunk[1..];
            }
            _ => {
                let literal = if c == b'\\' {
                    chunk = &chunk[1..];
                    *chunk.first().ok_or(BadPattern)?
                } else {
                    c
                };
                if let (false, Some(&first)) = (failed, s.first()) {
                    if first != literal {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
        }
    }
    Ok((!failed).then_some(s))
}

/// One (possibly escaped) character of a `[...]` class.
fn get_esc(chunk: &[u8]) -> Result<(u32, &[u8]), BadPattern> {
    let chunk = match chunk {
        [] | [b'-', ..] | [b']', ..] => return Err(BadPattern),
        [b'\\'] => return Err(BadPattern),
        [b'\\', rest @ ..] => rest,
        _ => chunk,
    };
    let (r, n) = decode_rune(chunk);
    if r == REPLACEMENT && n == 1 {
        return Err(BadPattern);
    }
    let rest = &chunk[n..];
    if rest.is_empty() {
        return Err(BadPattern);
    }
    Ok((r, rest))
}

const REPLACEMENT: u32 = 0xFFFD;

/// Go `utf8.DecodeRune`: invalid input decodes as U+FFFD of width 1.
fn decode_rune(s: &[u8]) -> (u32, usize) {
    let Some(&b0) = s.first() else {
        return (REPLACEMENT, 0);
    };
    if b0 < 0x80 {
        return (u32::from(b0), 1);
    }
    let width = match b0 {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return (REPLACEMENT, 1),
    };
    s.get(..width)
        .and_then(|p| std::str::from_utf8(p).ok())
        .and_then(|p| p.chars().next())
        .map_or((REPLACEMENT, 1), |c| (u32::from(c), width))
}

// ---------------------------------------------------------------------------
// Keyrings
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Slot {
    /// The key re-parsed as at lookup time upstream; `None` never matches.
    parsed: Option<GoUrl>,
    /// Credentials in insertion order (earlier sources first).
    creds: Vec<Credential>,
}

/// One index over registry keys, upstream's `BasicDockerKeyring`.
///
/// Keys are kept deduplicated and reverse-sorted so that, for one image, more
/// specific keys (`quay.io/team`) are returned before less specific ones
/// (`quay.io`); credentials sharing a key keep the order they were added.
#[derive(Debug, Clone, Default)]
pub struct BasicKeyring {
    index: Vec<String>,
    slots: HashMap<String, Slot>,
}

impl BasicKeyring {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn from_entries(entries: &[Entry]) -> Self {
        let mut ring = Self::new();
        ring.add(entries);
        ring
    }

    /// Indexes entries; locations upstream cannot parse are skipped (upstream
    /// logs and ignores them rather than failing the pull).
    pub fn add(&mut self, entries: &[Entry]) {
        for entry in entries {
            let Some(key) = normalize_registry_key(&entry.registry) else {
                continue;
            };
            let slot = self.slots.entry(key.clone()).or_insert_with(|| Slot {
                parsed: parse_schemeless(&key).ok(),
                creds: Vec::new(),
            });
            slot.creds.push(Credential {
                username: entry.username.clone(),
                password: entry.password.clone(),
                identity_token: entry.identity_token.clone(),
                matched_key: key,
            });
        }
        let mut index: Vec<String> = self.slots.keys().cloned().collect();
        index.sort_unstable_by(|a, b| b.cmp(a));
        self.index = index;
    }

    /// Normalized keys, most specific (reverse lexical) first.
    pub fn keys(&self) -> &[String] {
        &self.index
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// All credentials whose key matches `image` (a repository name without tag
    /// or digest, e.g. `docker.io/library/nginx`), most specific key first.
    ///
    /// Only if nothing matched, and the image looks like a Docker Hub image,
    /// the credentials stored under `index.docker.io` are returned: that key has
    /// three labels and would otherwise never match `docker.io/...` images.
    pub fn lookup(&self, image: &str) -> Vec<Credential> {
        let mut found = Vec::new();
        if let Ok(target) = parse_schemeless(image) {
            for key in &self.index {
                let Some(slot) = self.slots.get(key) else {
                    continue;
                };
                if slot.parsed.as_ref().is_some_and(|g| urls_match(g, &target)) {
                    found.extend(slot.creds.iter().cloned());
                }
            }
        }
        if found.is_empty() && is_default_registry_match(image) {
            found = self
                .slots
                .get(DEFAULT_REGISTRY_KEY)
                .map(|slot| slot.creds.clone())
                .unwrap_or_default();
        }
        found
    }
}

/// Parses all of a pod's pull secrets, in order, into one [`BasicKeyring`].
///
/// Upstream puts every pull secret into a single keyring, so ordering across
/// secrets is by key specificity first and secret order only within a key.
pub fn keyring_from_secrets(pull_secrets: &[Value]) -> Result<BasicKeyring, KeyringError> {
    let mut ring = BasicKeyring::new();
    for secret in pull_secrets {
        ring.add(&from_secret(secret)?);
    }
    Ok(ring)
}

/// Ordered union of keyrings, upstream's `UnionDockerKeyring`.
///
/// Results are the concatenation of each member's lookup, in member order,
/// without deduplication; the Docker Hub fallback is decided per member.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    members: Vec<BasicKeyring>,
}

impl Keyring {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a member; earlier members' credentials are tried first.
    pub fn push(&mut self, member: BasicKeyring) {
        self.members.push(member);
    }

    pub fn members(&self) -> &[BasicKeyring] {
        &self.members
    }

    /// The keyring for one pod pull, upstream's `MakeDockerKeyring`: the pod's
    /// pull secrets (one combined member) ahead of the node's keyring. Any
    /// unparsable pull secret fails the whole pull, as upstream.
    pub fn for_pod(pull_secrets: &[Value], node: &Keyring) -> Result<Keyring, KeyringError> {
        let secrets = keyring_from_secrets(pull_secrets)?;
        let mut ring = Keyring::new();
        if !secrets.is_empty() {
            ring.push(secrets);
        }
        ring.members.extend(node.members.iter().cloned());
        Ok(ring)
    }

    /// Credentials to try for `image`, in order. Upstream tries each in turn
    /// and pulls anonymously only when this list is empty.
    pub fn lookup(&self, image: &str) -> Vec<Credential> {
        self.members.iter().flat_map(|m| m.lookup(image)).collect()
    }
}

impl From<BasicKeyring> for Keyring {
    fn from(member: BasicKeyring) -> Self {
        Keyring {
            members: vec![member],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn entry(registry: &str, user: &str) -> Entry {
        Entry {
            registry: registry.to_string(),
            username: user.to_string(),
            password: format!("{user}-pw"),
            ..Entry::default()
        }
    }

    fn ring(entries: &[(&str, &str)]) -> BasicKeyring {
        let e: Vec<Entry> = entries.iter().map(|(r, u)| entry(r, u)).collect();
        BasicKeyring::from_entries(&e)
    }

    fn users(creds: &[Credential]) -> Vec<&str> {
        creds.iter().map(|c| c.username.as_str()).collect()
    }

    fn secret(name: &str, ty: &str, key: &str, payload: &str) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": "ns"},
            "type": ty,
            "data": {key: b64(payload)}
        })
    }

    fn json_secret(name: &str, payload: &str) -> Value {
        secret(
            name,
            SECRET_TYPE_DOCKER_CONFIG_JSON,
            DOCKER_CONFIG_JSON_KEY,
            payload,
        )
    }

    // --- key normalization -------------------------------------------------

    #[test]
    fn normalize_keys() {
        let n = |s| normalize_registry_key(s);
        assert_eq!(
            n("registry.example.com").as_deref(),
            Some("registry.example.com")
        );
        assert_eq!(
            n("https://index.docker.io/v1/").as_deref(),
            Some("index.docker.io")
        );
        assert_eq!(
            n("https://index.docker.io/v2/").as_deref(),
            Some("index.docker.io")
        );
        assert_eq!(
            n("http://r.io:5000/v2/team").as_deref(),
            Some("r.io:5000/team")
        );
        assert_eq!(
            n("r.io/v1").as_deref(),
            Some("r.io/v1"),
            "only /v1/ with slash"
        );
        assert_eq!(n("r.io/").as_deref(), Some("r.io"));
        assert_eq!(
            n("r.io/team/").as_deref(),
            Some("r.io/team/"),
            "trailing slash kept"
        );
        assert_eq!(n("user:pw@r.io/x?q=1#f").as_deref(), Some("r.io/x"));
        assert_eq!(n("r.io/a%20b").as_deref(), Some("r.io/a b"));
        assert_eq!(
            n("Registry.Example.com").as_deref(),
            Some("Registry.Example.com")
        );
        // `?` starts a query, so a `?` glob in a host never survives upstream.
        assert_eq!(n("reg?.example.com").as_deref(), Some("reg"));
        // Scheme check is case-sensitive: `HTTPS://x` gets `https://` prepended.
        assert_eq!(n("HTTPS://r.io").as_deref(), Some("HTTPS://r.io"));
    }

    #[test]
    fn invalid_locations_are_skipped() {
        for bad in [
            "r.io:abc",
            "[ab].example.com",
            "r io",
            "r.io/%zz",
            "r.io/\u{7}",
            "r^.io",
        ] {
            assert_eq!(normalize_registry_key(bad), None, "{bad}");
        }
        let r = ring(&[("r.io:abc", "bad"), ("r.io", "good")]);
        assert_eq!(r.keys(), ["r.io"]);
    }

    // --- matching -----------------------------------------------------------

    #[test]
    fn glob_host_labels() {
        let r = ring(&[("*.example.com", "star")]);
        assert_eq!(users(&r.lookup("a.example.com/app")), ["star"]);
        assert!(
            r.lookup("a.b.example.com/app").is_empty(),
            "label count differs"
        );
        assert!(r.lookup("example.com/app").is_empty());
        assert!(r.lookup("a.example.org/app").is_empty());

        let r = ring(&[
            ("reg-?.example.com", "q"),
            ("r[0-9].io", "cls"),
            ("x[^a].io", "neg"),
        ]);
        assert_eq!(
            users(&r.lookup("reg-1.example.com/a")),
            Vec::<&str>::new(),
            "? is a query"
        );
        assert_eq!(users(&r.lookup("r7.io/a")), ["cls"]);
        assert!(r.lookup("ra.io/a").is_empty());
        // `^` is not a legal host character for Go's url.Parse, so negated
        // classes never make it into a key upstream.
        assert!(r.lookup("xb.io/a").is_empty());
        assert!(!r.keys().iter().any(|k| k.starts_with('x')));

        let r = ring(&[("*.*.example.com", "two")]);
        assert_eq!(users(&r.lookup("a.b.example.com/x")), ["two"]);
    }

    #[test]
    fn host_match_is_case_sensitive() {
        let r = ring(&[("registry.example.com", "u")]);
        assert!(r.lookup("Registry.example.com/app").is_empty());
    }

    #[test]
    fn go_path_match_semantics() {
        assert_eq!(glob_match("a*", "abc"), Ok(true));
        assert_eq!(glob_match("*c", "abc"), Ok(true));
        assert_eq!(glob_match("a*b*c", "axxbyyc"), Ok(true));
        assert_eq!(glob_match("a?c", "abc"), Ok(true));
        assert_eq!(glob_match("a?c", "ac"), Ok(false));
        assert_eq!(glob_match("[a-c]x", "bx"), Ok(true));
        assert_eq!(glob_match("[^a-c]x", "bx"), Ok(false));
        assert_eq!(glob_match("\\*", "*"), Ok(true));
        assert_eq!(glob_match("\\*", "a"), Ok(false));
        assert_eq!(glob_match("é?", "éa"), Ok(true));
        assert_eq!(glob_match("[é]", "é"), Ok(true));
        assert_eq!(glob_match("*", "a/b"), Ok(false));
        assert_eq!(glob_match("[", "a"), Err(BadPattern));
        assert_eq!(glob_match("a[", "b"), Err(BadPattern));
        assert_eq!(glob_match("[]", "a"), Err(BadPattern));
        assert_eq!(glob_match("[a-]", "a"), Err(BadPattern));
        assert_eq!(glob_match("x\\", "x"), Err(BadPattern));
        // Malformed glob in a key: no match, no panic.
        let r = ring(&[("r[.io", "bad")]);
        assert!(r.lookup("r[.io/app").is_empty());
    }

    #[test]
    fn ports_must_be_equal() {
        let r = ring(&[("r.io:5000", "port"), ("r.io", "noport")]);
        assert_eq!(users(&r.lookup("r.io:5000/app")), ["port"]);
        assert_eq!(users(&r.lookup("r.io/app")), ["noport"]);
        assert!(r.lookup("r.io:5001/app").is_empty());
        // A glob with a port still globs the host.
        let r = ring(&[("*.example.com:443", "g")]);
        assert_eq!(users(&r.lookup("a.example.com:443/x")), ["g"]);
        assert!(r.lookup("a.example.com/x").is_empty());
        // Images with an invalid port never match and are not Docker Hub.
        let r = ring(&[("index.docker.io", "hub"), ("r.io", "r")]);
        assert!(r.lookup("r.io:xx/app").is_empty());
    }

    #[test]
    fn ipv6_hosts() {
        let r = ring(&[("[::1]:5000", "v6")]);
        assert_eq!(r.keys(), ["[::1]:5000"]);
        assert_eq!(users(&r.lookup("[::1]:5000/app")), ["v6"]);
        assert!(r.lookup("[::1]:5001/app").is_empty());
        assert_eq!(split_host_port("[::1]:5000"), Some(("::1", "5000")));
        assert_eq!(split_host_port("[::1]"), None);
        assert_eq!(split_host_port("a:b:1"), None);
        assert_eq!(split_host_port("r.io:"), Some(("r.io", "")));
    }

    #[test]
    fn path_is_a_string_prefix() {
        let r = ring(&[("r.io/team", "team")]);
        assert_eq!(users(&r.lookup("r.io/team/app")), ["team"]);
        assert_eq!(users(&r.lookup("r.io/team")), ["team"]);
        // Upstream compares raw strings, not path components.
        assert_eq!(users(&r.lookup("r.io/teamx/app")), ["team"]);
        assert!(r.lookup("r.io/other/app").is_empty());
        assert!(r.lookup("r.io").is_empty());

        let r = ring(&[("r.io/team/", "slash")]);
        assert_eq!(users(&r.lookup("r.io/team/app")), ["slash"]);
        assert!(r.lookup("r.io/team").is_empty());
    }

    #[test]
    fn most_specific_first_then_insertion_order() {
        let r = ring(&[
            ("r.io", "host"),
            ("r.io/team", "team"),
            ("https://r.io/v2/team/app", "app"),
            ("*.io", "glob"),
            ("http://r.io", "host2"),
        ]);
        assert_eq!(r.keys(), ["r.io/team/app", "r.io/team", "r.io", "*.io"]);
        assert_eq!(
            users(&r.lookup("r.io/team/app")),
            ["app", "team", "host", "host2", "glob"]
        );
        let c = r.lookup("r.io/team/other");
        assert_eq!(users(&c), ["team", "host", "host2", "glob"]);
        assert_eq!(c[0].matched_key, "r.io/team");
        assert_eq!(c[0].password, "team-pw");
    }

    // --- Docker Hub ---------------------------------------------------------

    #[test]
    fn docker_hub_fallback() {
        for loc in [
            "https://index.docker.io/v1/",
            "index.docker.io",
            "index.docker.io/v2/",
        ] {
            let r = ring(&[(loc, "hub")]);
            assert_eq!(r.keys(), [DEFAULT_REGISTRY_KEY]);
            let c = r.lookup("docker.io/library/nginx");
            assert_eq!(users(&c), ["hub"], "{loc}");
            assert_eq!(c[0].matched_key, DEFAULT_REGISTRY_KEY);
            assert_eq!(users(&r.lookup("index.docker.io/library/nginx")), ["hub"]);
            assert_eq!(users(&r.lookup("library/nginx")), ["hub"]);
            assert_eq!(users(&r.lookup("nginx")), ["hub"]);
            assert!(r.lookup("quay.io/app").is_empty());
            assert!(r.lookup("r.io:5000/app").is_empty());
        }
        // Upstream quirk: a first component without `.`/`:` counts as Docker Hub.
        let r = ring(&[("index.docker.io", "hub")]);
        assert_eq!(users(&r.lookup("localhost/app")), ["hub"]);
        assert!(r.lookup("/app").is_empty());
    }

    #[test]
    fn docker_hub_fallback_only_when_nothing_else_matched() {
        let r = ring(&[("index.docker.io", "hub"), ("docker.io", "dio")]);
        assert_eq!(users(&r.lookup("docker.io/library/nginx")), ["dio"]);
        let r = ring(&[("index.docker.io", "hub"), ("*.io", "glob")]);
        assert_eq!(users(&r.lookup("docker.io/library/nginx")), ["glob"]);
        // ... but the decision is per union member.
        let mut k = Keyring::from(ring(&[("*.io", "glob")]));
        k.push(ring(&[("index.docker.io", "hub")]));
        assert_eq!(users(&k.lookup("docker.io/library/nginx")), ["glob", "hub"]);
    }

    #[test]
    fn docker_io_and_registry_1_are_plain_hosts() {
        let r = ring(&[("docker.io", "dio")]);
        assert_eq!(users(&r.lookup("docker.io/library/nginx")), ["dio"]);
        assert!(
            r.lookup("nginx").is_empty(),
            "only index.docker.io is the fallback"
        );
        let r = ring(&[("registry-1.docker.io", "r1")]);
        assert!(r.lookup("docker.io/library/nginx").is_empty());
        assert_eq!(
            users(&r.lookup("registry-1.docker.io/library/nginx")),
            ["r1"]
        );
    }

    // --- secrets --------------------------------------------------------------

    #[test]
    fn dockerconfigjson_secret() {
        let payload = json!({"auths": {
            "r.io": {"username": "u", "password": "p", "email": "e@x", "identitytoken": "tok"},
            "https://index.docker.io/v1/": {"auth": b64("hubu:hubp")}
        }})
        .to_string();
        let entries = from_secret(&json_secret("s1", &payload)).expect("parses");
        assert_eq!(entries.len(), 2);
        let r = BasicKeyring::from_entries(&entries);
        let c = r.lookup("r.io/app");
        assert_eq!(
            c,
            [Credential {
                username: "u".into(),
                password: "p".into(),
                identity_token: Some("tok".into()),
                matched_key: "r.io".into(),
            }]
        );
        let c = r.lookup("docker.io/library/busybox");
        assert_eq!(
            (c[0].username.as_str(), c[0].password.as_str()),
            ("hubu", "hubp")
        );
        assert_eq!(c[0].identity_token, None);
    }

    #[test]
    fn dockercfg_secret() {
        let payload = json!({"r.io": {"auth": b64("a:b"), "email": "x"}}).to_string();
        let s = secret("old", SECRET_TYPE_DOCKERCFG, DOCKERCFG_KEY, &payload);
        let e = from_secret(&s).expect("parses");
        assert_eq!(e.len(), 1);
        assert_eq!(
            (e[0].registry.as_str(), e[0].username.as_str()),
            ("r.io", "a")
        );
        assert_eq!(e[0].password, "b");
    }

    #[test]
    fn irrelevant_secrets_contribute_nothing() {
        let p = json!({"auths": {"r.io": {"username": "u"}}}).to_string();
        // Wrong type for the key, wrong key for the type, other types, empty data.
        let cases = [
            secret("a", "Opaque", DOCKER_CONFIG_JSON_KEY, &p),
            secret("b", SECRET_TYPE_DOCKER_CONFIG_JSON, DOCKERCFG_KEY, &p),
            secret("c", SECRET_TYPE_DOCKERCFG, DOCKER_CONFIG_JSON_KEY, &p),
            secret(
                "d",
                SECRET_TYPE_DOCKER_CONFIG_JSON,
                DOCKER_CONFIG_JSON_KEY,
                "",
            ),
            json!({"metadata": {"name": "e"}, "type": SECRET_TYPE_DOCKER_CONFIG_JSON}),
            json!({"metadata": {"name": "f"}, "type": SECRET_TYPE_DOCKERCFG, "data": null}),
            json!({"metadata": {"name": "g"}, "data": {".dockerconfigjson": "!!!"}}),
        ];
        for s in &cases {
            assert_eq!(from_secret(s), Ok(vec![]), "{s}");
        }
    }

    #[test]
    fn auth_field_wins_and_decodes_variants() {
        let e = |v: Value| parse_entry("r.io", &v);
        let got = e(json!({"username": "x", "password": "y", "auth": b64("u:p")})).expect("ok");
        assert_eq!((got.username.as_str(), got.password.as_str()), ("u", "p"));
        // Empty auth leaves the explicit fields alone.
        let got = e(json!({"username": "x", "password": "y", "auth": ""})).expect("ok");
        assert_eq!((got.username.as_str(), got.password.as_str()), ("x", "y"));
        // Unpadded, newline-wrapped and `:`-containing passwords.
        let unpadded = b64("user:pw").trim_end_matches('=').to_string();
        assert_ne!(unpadded, b64("user:pw"));
        let got = e(json!({"auth": unpadded})).expect("unpadded");
        assert_eq!(got.password, "pw");
        let got = e(json!({"auth": format!("{}\n", b64("us:pw"))})).expect("newline");
        assert_eq!(got.username, "us");
        let got = e(json!({"auth": b64("u:p:q")})).expect("colon");
        assert_eq!((got.username.as_str(), got.password.as_str()), ("u", "p:q"));
        let got = e(json!({"auth": b64(":")})).expect("empty parts");
        assert_eq!((got.username.as_str(), got.password.as_str()), ("", ""));
        // Go field matching is case-insensitive; null entries are empty.
        let got = e(json!({"UserName": "cu", "PASSWORD": "cp"})).expect("case");
        assert_eq!((got.username.as_str(), got.password.as_str()), ("cu", "cp"));
        assert_eq!(e(Value::Null).expect("null").username, "");
        let got = from_docker_config(br#"{"Auths": {"r.io": {"username": "z"}}}"#).expect("ok");
        assert_eq!(got[0].username, "z");
    }

    #[test]
    fn bad_auth_fields_are_errors() {
        let e = |v: Value| parse_entry("r.io", &v).expect_err("must fail");
        assert!(e(json!({"auth": b64("nocolon")})).contains("username:password"));
        assert!(e(json!({"auth": "not base64!"})).contains("not valid base64"));
        assert!(
            e(json!({"auth": "YQ="})).contains("not valid base64"),
            "bad padding"
        );
        assert!(e(json!({"username": 5})).contains("\"username\" must be a string"));
        assert!(e(json!(["x"])).contains("expected an object"));
    }

    #[test]
    fn malformed_secrets_name_the_secret() {
        let bad_b64 = json!({
            "metadata": {"name": "creds", "namespace": "team"},
            "type": SECRET_TYPE_DOCKER_CONFIG_JSON,
            "data": {".dockerconfigjson": "%%%"}
        });
        let err = from_secret(&bad_b64).expect_err("bad base64");
        assert!(matches!(&err, KeyringError::Secret { secret, .. } if secret == "team/creds"));
        let msg = err.to_string();
        assert!(
            msg.contains("team/creds") && msg.contains("not valid base64"),
            "{msg}"
        );

        let err = from_secret(&json_secret("j", "{not json")).expect_err("bad json");
        assert!(err.to_string().contains("ns/j") && err.to_string().contains("invalid JSON"));

        let err = from_secret(&json_secret("k", r#"{"auths": []}"#)).expect_err("auths type");
        assert!(
            err.to_string().contains("\"auths\" must be an object"),
            "{err}"
        );

        let p = json!({"auths": {"r.io": {"auth": b64("nocolon")}}}).to_string();
        let err = from_secret(&json_secret("l", &p)).expect_err("bad auth");
        let msg = err.to_string();
        assert!(
            msg.contains("ns/l") && msg.contains("registry \"r.io\""),
            "{msg}"
        );
        assert!(!msg.contains("nocolon"), "no credential material in errors");

        let p = json!({"auths": {}, "HttpHeaders": {"X": 1}}).to_string();
        assert!(from_secret(&json_secret("m", &p)).is_err());

        let err = from_secret(&json!("str")).expect_err("not an object");
        assert!(err.to_string().contains("<unnamed>"));
        let s = json!({"metadata": {"name": "n"}, "type": SECRET_TYPE_DOCKERCFG, "data": {".dockercfg": 7}});
        assert!(from_secret(&s).is_err());
    }

    #[test]
    fn node_docker_config() {
        let cfg = json!({
            "auths": {"r.io:5000": {"auth": b64("n:p")}},
            "HttpHeaders": {"User-Agent": "x"},
            "credsStore": "desktop"
        });
        let e = from_docker_config(cfg.to_string().as_bytes()).expect("ok");
        let r = BasicKeyring::from_entries(&e);
        assert_eq!(users(&r.lookup("r.io:5000/a/b")), ["n"]);
        assert_eq!(from_docker_config(b"{}"), Ok(vec![]));
        assert_eq!(from_docker_config(br#"{"auths": null}"#), Ok(vec![]));
        assert!(matches!(
            from_docker_config(b"[1]"),
            Err(KeyringError::DockerConfig { .. })
        ));
        assert!(from_docker_config(b"garbage").is_err());
        let legacy =
            from_dockercfg(br#"{"r.io": {"username": "l", "password": "p"}}"#).expect("ok");
        assert_eq!(legacy[0].username, "l");
    }

    #[test]
    fn odd_input_never_panics() {
        let odd = [
            "",
            "/",
            ":",
            "[",
            "]",
            "[]",
            "[:]",
            "[::1",
            "::1]:5",
            "@",
            "a@b@c",
            "%",
            "%4",
            "%e9",
            "%C3%A9.io",
            "é.io/ü",
            "*",
            "**",
            "?",
            "\\",
            "a\\",
            "[\\",
            "[a-",
            "[é-",
            "r.io:",
            "r.io:/x",
            "http://",
            "https://",
            "https:///x",
            "#",
            "?q",
            "\u{fffd}",
            "a..b",
            ".",
            "..",
            "*.",
            "[^]",
            "[]a]",
            "r.io/v1/",
            "r.io/v2",
            "x/../y",
        ];
        let entries: Vec<Entry> = odd.iter().map(|r| entry(r, r)).collect();
        let r = BasicKeyring::from_entries(&entries);
        let k = Keyring::from(r);
        for image in odd {
            let _ = k.lookup(image);
            for p in odd {
                let _ = glob_match(p, image);
            }
        }
    }

    // --- union / pod keyring -------------------------------------------------

    #[test]
    fn pod_keyring_orders_secrets_before_node_and_keeps_duplicates() {
        let s1 = json_secret(
            "s1",
            &json!({"auths": {"r.io": {"username": "s1"}}}).to_string(),
        );
        let s2 = json_secret(
            "s2",
            &json!({"auths": {"r.io/team": {"username": "s2"}, "r.io": {"username": "s2host"}}})
                .to_string(),
        );
        let opaque = json!({"metadata": {"name": "o"}, "type": "Opaque", "data": {}});
        let node = Keyring::from(ring(&[("r.io", "node"), ("r.io/team", "nodeteam")]));
        let k = Keyring::for_pod(&[s1, opaque, s2], &node).expect("ok");
        // One combined member for all secrets: key specificity beats secret order.
        assert_eq!(
            users(&k.lookup("r.io/team/app")),
            ["s2", "s1", "s2host", "nodeteam", "node"]
        );
        assert_eq!(k.members().len(), 2);

        // Identical credentials from two sources are not deduplicated.
        let dup = json_secret(
            "d",
            &json!({"auths": {"r.io": {"username": "node", "password": "node-pw"}}}).to_string(),
        );
        let k = Keyring::for_pod(&[dup], &node).expect("ok");
        let c = k.lookup("r.io/x");
        assert_eq!(users(&c), ["node", "node"]);
        assert_eq!(c[0], c[1]);
    }

    #[test]
    fn pod_keyring_fails_on_any_bad_secret() {
        let good = json_secret(
            "g",
            &json!({"auths": {"r.io": {"username": "u"}}}).to_string(),
        );
        let bad = json_secret("b", "nope");
        let err = Keyring::for_pod(&[good, bad], &Keyring::new()).expect_err("bad");
        assert!(err.to_string().contains("ns/b"));
    }

    #[test]
    fn pod_keyring_without_secrets_is_node_keyring() {
        let node = Keyring::from(ring(&[("r.io", "node")]));
        let k = Keyring::for_pod(&[], &node).expect("ok");
        assert_eq!(k.members().len(), 1);
        assert_eq!(users(&k.lookup("r.io/a")), ["node"]);
        assert!(
            k.lookup("other.io/a").is_empty(),
            "caller pulls anonymously"
        );
    }
}
