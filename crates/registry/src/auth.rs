//! Who may do what: htpasswd (bcrypt) users, docker's bearer-token flow, and the access rules
//! of the configuration.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use axum::http::HeaderMap;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::config::{AccessRule, Config, Who, WhoClass};
use crate::error::{code, ApiError, Code};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    fn parse(s: &str) -> Option<Action> {
        match s {
            "pull" => Some(Action::Pull),
            "push" => Some(Action::Push),
            "delete" => Some(Action::Delete),
            _ => None,
        }
    }
}

/// What a request needs: an action on a repository, or (catalog) on the registry.
#[derive(Debug, Clone)]
pub enum Scope {
    Repository(String, Action),
    Catalog,
    /// `GET /v2/`: only that the caller is who they say.
    Base,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("htpasswd file {path}: {why}")]
    Htpasswd { path: String, why: String },
    #[error("token key {path}: {source}")]
    Key {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Users from an Apache htpasswd file. Only bcrypt hashes, as CNCF distribution.
struct Htpasswd {
    users: HashMap<String, String>,
    /// Checked credentials (sha256 of `user\0password` -> valid): bcrypt is deliberately slow,
    /// and clients send Basic credentials on every request.
    verified: Mutex<HashMap<[u8; 32], bool>>,
}

impl Htpasswd {
    fn load(path: &Path) -> Result<Htpasswd, AuthError> {
        let bad = |why: String| AuthError::Htpasswd {
            path: path.display().to_string(),
            why,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(bad(format!("line {}: expected user:hash", n + 1)));
            };
            if !(hash.starts_with("$2y$") || hash.starts_with("$2a$") || hash.starts_with("$2b$")) {
                return Err(bad(format!(
                    "line {}: user {user:?} has a non-bcrypt hash; create it with `htpasswd -B`",
                    n + 1
                )));
            }
            users.insert(user.to_string(), hash.to_string());
        }
        Ok(Htpasswd {
            users,
            verified: Mutex::new(HashMap::new()),
        })
    }

    fn verify(&self, user: &str, password: &str) -> bool {
        let key: [u8; 32] = Sha256::digest(format!("{user}\0{password}").as_bytes()).into();
        if let Some(ok) = self.verified.lock().ok().and_then(|v| v.get(&key).copied()) {
            return ok;
        }
        let ok = self
            .users
            .get(user)
            .is_some_and(|hash| bcrypt::verify(password, hash).unwrap_or(false));
        if let Ok(mut v) = self.verified.lock() {
            if v.len() > 10_000 {
                v.clear();
            }
            v.insert(key, ok);
        }
        ok
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Grant {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    exp: i64,
    iat: i64,
    access: Vec<Grant>,
}

/// How callers prove who they are.
enum Mode {
    Anonymous,
    Basic,
    Token {
        realm: Option<String>,
        service: String,
        issuer: String,
        expiration: u64,
        key: Vec<u8>,
    },
}

pub struct Auth {
    mode: Mode,
    users: Option<Htpasswd>,
    realm: String,
    rules: Vec<AccessRule>,
}

/// The caller, once authenticated (or not).
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: Option<String>,
    grants: Option<Vec<Grant>>,
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// `*` matches within one path component, `**` across components.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some((b'*', rest)) if rest.first() == Some(&b'*') => {
                let rest = &rest[1..];
                (0..=n.len()).any(|i| go(rest, &n[i..]))
            }
            Some((b'*', rest)) => {
                let mut i = 0;
                loop {
                    if go(rest, &n[i..]) {
                        return true;
                    }
                    if i == n.len() || n[i] == b'/' {
                        return false;
                    }
                    i += 1;
                }
            }
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

impl Auth {
    pub fn from_config(config: &Config, root: &Path) -> Result<Auth, AuthError> {
        let users = match &config.auth.htpasswd {
            Some(h) => Some(Htpasswd::load(&h.path)?),
            None => None,
        };
        let realm = config
            .auth
            .htpasswd
            .as_ref()
            .map_or_else(|| "kiln-registry".to_string(), |h| h.realm.clone());
        let mode = match (&users, &config.auth.token) {
            (None, _) => Mode::Anonymous,
            (Some(_), None) => Mode::Basic,
            (Some(_), Some(t)) => {
                let path = t.key.clone().unwrap_or_else(|| root.join("token.key"));
                Mode::Token {
                    realm: t.realm.clone(),
                    service: t.service.clone(),
                    issuer: t.issuer.clone(),
                    expiration: t.expiration,
                    key: load_or_create_key(&path)?,
                }
            }
        };
        Ok(Auth {
            mode,
            users,
            realm,
            rules: config.access.clone(),
        })
    }

    /// Whether `user` may do `action` on `repo` under the configured rules.
    pub fn permits(&self, user: Option<&str>, repo: &str, action: Action) -> bool {
        if matches!(self.mode, Mode::Anonymous) {
            return true;
        }
        for rule in &self.rules {
            if !glob_match(&rule.repository, repo) {
                continue;
            }
            let who = match action {
                Action::Pull => &rule.pull,
                Action::Push => &rule.push,
                // Deleting is pushing's business unless a rule says otherwise.
                Action::Delete if rule.delete.is_some() => &rule.delete,
                Action::Delete => &rule.push,
            };
            if let Some(who) = who {
                return match who {
                    Who::Class(WhoClass::Anonymous) => true,
                    Who::Class(WhoClass::Authenticated) => user.is_some(),
                    Who::Class(WhoClass::Nobody) => false,
                    Who::Users(list) => user.is_some_and(|u| list.iter().any(|l| l == u)),
                };
            }
        }
        user.is_some()
    }

    fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
        let value = headers.get("authorization")?.to_str().ok()?;
        let encoded = value
            .strip_prefix("Basic ")
            .or_else(|| value.strip_prefix("basic "))?;
        let decoded = STANDARD.decode(encoded.trim()).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, password) = text.split_once(':')?;
        Some((user.to_string(), password.to_string()))
    }

    fn bearer(headers: &HeaderMap) -> Option<&str> {
        let value = headers.get("authorization")?.to_str().ok()?;
        value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
    }

    fn challenge(&self, host: &str, scope: &Scope, insufficient: bool) -> String {
        match &self.mode {
            Mode::Token { realm, service, .. } => {
                let realm = realm.clone().unwrap_or_else(|| format!("{host}/token"));
                let mut c = format!("Bearer realm=\"{realm}\",service=\"{service}\"");
                match scope {
                    Scope::Repository(name, action) => {
                        let actions = if *action == Action::Pull {
                            "pull".to_string()
                        } else {
                            format!("pull,{}", action.as_str())
                        };
                        c.push_str(&format!(",scope=\"repository:{name}:{actions}\""));
                    }
                    Scope::Catalog => c.push_str(",scope=\"registry:catalog:*\""),
                    Scope::Base => {}
                }
                if insufficient {
                    c.push_str(",error=\"insufficient_scope\"");
                }
                c
            }
            _ => format!("Basic realm=\"{}\"", self.realm),
        }
    }

    fn unauthorized(&self, host: &str, scope: &Scope, insufficient: bool) -> ApiError {
        code(Code::Unauthorized).detail(scope_detail(scope)).header(
            "www-authenticate",
            self.challenge(host, scope, insufficient),
        )
    }

    /// Checks a request against `scope`. `origin` is `scheme://host` of the request, for the
    /// token realm.
    pub fn authorize(
        &self,
        headers: &HeaderMap,
        origin: &str,
        scope: &Scope,
    ) -> Result<Principal, ApiError> {
        let principal = match &self.mode {
            Mode::Anonymous => {
                return Ok(Principal {
                    user: None,
                    grants: None,
                })
            }
            Mode::Basic => match Self::basic_credentials(headers) {
                Some((user, password)) => {
                    if !self
                        .users
                        .as_ref()
                        .is_some_and(|u| u.verify(&user, &password))
                    {
                        return Err(self
                            .unauthorized(origin, scope, false)
                            .message("invalid username or password"));
                    }
                    Principal {
                        user: Some(user),
                        grants: None,
                    }
                }
                None => Principal {
                    user: None,
                    grants: None,
                },
            },
            Mode::Token { key, service, .. } => match Self::bearer(headers) {
                Some(token) => match verify_token(key, service, token) {
                    Some(claims) => Principal {
                        user: (!claims.sub.is_empty()).then_some(claims.sub),
                        grants: Some(claims.access),
                    },
                    None => {
                        return Err(self
                            .unauthorized(origin, scope, false)
                            .message("invalid or expired token"))
                    }
                },
                None => Principal {
                    user: None,
                    grants: None,
                },
            },
        };
        let allowed = match scope {
            Scope::Base => principal.user.is_some() || principal.grants.is_some(),
            Scope::Catalog => match &principal.grants {
                Some(g) => g
                    .iter()
                    .any(|g| g.kind == "registry" && g.name == "catalog"),
                None => principal.user.is_some(),
            },
            Scope::Repository(repo, action) => match &principal.grants {
                Some(g) => g.iter().any(|g| {
                    g.kind == "repository"
                        && &g.name == repo
                        && g.actions.iter().any(|a| a == action.as_str() || a == "*")
                }),
                None => self.permits(principal.user.as_deref(), repo, *action),
            },
        };
        if allowed {
            return Ok(principal);
        }
        // Anonymous pulls that the rules allow need no token even in token mode.
        if let (Scope::Repository(repo, action), None) = (scope, &principal.user) {
            if principal.grants.is_none() && self.permits(None, repo, *action) {
                return Ok(principal);
            }
        }
        match (&self.mode, &principal.user, &principal.grants) {
            (Mode::Token { .. }, _, _) => {
                Err(self.unauthorized(origin, scope, principal.grants.is_some()))
            }
            (_, None, _) => Err(self.unauthorized(origin, scope, false)),
            (_, Some(_), _) => Err(code(Code::Denied).detail(scope_detail(scope))),
        }
    }

    /// `GET /token`: docker's token endpoint. Grants each requested scope the actions the
    /// rules allow the caller (anonymous when no credentials are sent).
    pub fn issue_token(
        &self,
        headers: &HeaderMap,
        query: &[(String, String)],
    ) -> Result<serde_json::Value, ApiError> {
        let Mode::Token {
            service,
            issuer,
            expiration,
            key,
            ..
        } = &self.mode
        else {
            return Err(code(Code::Unsupported).message("this registry does not issue tokens"));
        };
        let user = match Self::basic_credentials(headers) {
            Some((user, password)) => {
                if !self
                    .users
                    .as_ref()
                    .is_some_and(|u| u.verify(&user, &password))
                {
                    return Err(code(Code::Unauthorized)
                        .message("invalid username or password")
                        .header(
                            "www-authenticate",
                            format!("Basic realm=\"{}\"", self.realm),
                        ));
                }
                Some(user)
            }
            None => None,
        };
        let mut access = Vec::new();
        for (k, v) in query {
            if k != "scope" {
                continue;
            }
            for scope in v.split(' ') {
                // type:name:actions, where a name may itself hold a ':' (a registry port).
                let (Some((kind, rest)), Some(i)) = (scope.split_once(':'), scope.rfind(':'))
                else {
                    continue;
                };
                if i <= kind.len() {
                    continue;
                }
                let (name, actions) = (&rest[..i - kind.len() - 1], &scope[i + 1..]);
                let granted: Vec<String> = match kind {
                    "repository" => actions
                        .split(',')
                        .filter_map(Action::parse)
                        .filter(|a| self.permits(user.as_deref(), name, *a))
                        .map(|a| a.as_str().to_string())
                        .collect(),
                    "registry" if name == "catalog" && user.is_some() => vec!["*".to_string()],
                    _ => Vec::new(),
                };
                if !granted.is_empty() {
                    access.push(Grant {
                        kind: kind.to_string(),
                        name: name.to_string(),
                        actions: granted,
                    });
                }
            }
        }
        let iat = now();
        let claims = Claims {
            iss: issuer.clone(),
            sub: user.unwrap_or_default(),
            aud: service.clone(),
            exp: iat + *expiration as i64,
            iat,
            access,
        };
        let token = sign_token(key, &claims);
        let issued_at = time::OffsetDateTime::from_unix_timestamp(iat)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            });
        Ok(serde_json::json!({
            "token": token,
            "access_token": token,
            "expires_in": expiration,
            "issued_at": issued_at,
        }))
    }
}

fn scope_detail(scope: &Scope) -> serde_json::Value {
    match scope {
        Scope::Repository(name, action) => {
            serde_json::json!([{"Type": "repository", "Name": name, "Action": action.as_str()}])
        }
        Scope::Catalog => {
            serde_json::json!([{"Type": "registry", "Name": "catalog", "Action": "*"}])
        }
        Scope::Base => serde_json::Value::Null,
    }
}

fn load_or_create_key(path: &Path) -> Result<Vec<u8>, AuthError> {
    let err = |source| AuthError::Key {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() >= 32 => Ok(bytes),
        Ok(_) => Err(err(std::io::Error::other("key is shorter than 32 bytes"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key: [u8; 32] = rand::random();
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(err)?;
            }
            std::fs::write(path, key).map_err(err)?;
            Ok(key.to_vec())
        }
        Err(e) => Err(err(e)),
    }
}

fn mac(key: &[u8], payload: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    m.update(payload);
    m.finalize().into_bytes().to_vec()
}

fn sign_token(key: &[u8], claims: &Claims) -> String {
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signature = URL_SAFE_NO_PAD.encode(mac(key, payload.as_bytes()));
    format!("{payload}.{signature}")
}

fn verify_token(key: &[u8], service: &str, token: &str) -> Option<Claims> {
    let (payload, signature) = token.split_once('.')?;
    let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).ok()?;
    m.update(payload.as_bytes());
    m.verify_slice(&signature).ok()?;
    let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    (claims.exp > now() && claims.aud == service).then_some(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("private/*", "private/app"));
        assert!(!glob_match("private/*", "private/team/app"));
        assert!(glob_match("private/**", "private/team/app"));
        assert!(glob_match("**", "a/b/c"));
        assert!(glob_match("*", "busybox"));
        assert!(!glob_match("*", "library/busybox"));
        assert!(glob_match("lib*/b*x", "library/busybox"));
        assert!(!glob_match("private/*", "public/app"));
    }

    #[test]
    fn tokens_round_trip_and_reject_tampering() {
        let key = b"0123456789abcdef0123456789abcdef";
        let claims = Claims {
            iss: "kiln".into(),
            sub: "alice".into(),
            aud: "svc".into(),
            exp: now() + 60,
            iat: now(),
            access: vec![Grant {
                kind: "repository".into(),
                name: "x".into(),
                actions: vec!["pull".into()],
            }],
        };
        let token = sign_token(key, &claims);
        assert_eq!(
            verify_token(key, "svc", &token).map(|c| c.sub),
            Some("alice".into())
        );
        assert!(
            verify_token(key, "other", &token).is_none(),
            "audience is checked"
        );
        assert!(verify_token(b"another key another key another k", "svc", &token).is_none());
        let (payload, sig) = token.split_once('.').expect("two parts");
        let forged = URL_SAFE_NO_PAD.encode(
            br#"{"iss":"kiln","sub":"root","aud":"svc","exp":99999999999,"iat":0,"access":[]}"#,
        );
        assert!(verify_token(key, "svc", &format!("{forged}.{sig}")).is_none());
        assert!(verify_token(key, "svc", payload).is_none());
        let expired = Claims {
            exp: now() - 1,
            ..claims
        };
        assert!(verify_token(key, "svc", &sign_token(key, &expired)).is_none());
    }
}
