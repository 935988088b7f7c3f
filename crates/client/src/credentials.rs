//! Registry credentials in docker's format: `~/.docker/config.json` (or `$DOCKER_CONFIG`,
//! or podman's `$REGISTRY_AUTH_FILE`), with `credsStore` / `credHelpers` naming
//! `docker-credential-<name>` programs that keep the secrets instead.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use serde_json::{Map, Value};

/// A user name and secret for one registry. A user name of `<token>` marks an identity
/// (refresh) token, as docker's credential helpers do.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    pub fn new(username: impl Into<String>, secret: impl Into<String>) -> Credentials {
        Credentials {
            username: username.into(),
            secret: secret.into(),
        }
    }

    /// An identity token rather than a password (exchanged with OAuth2 at the token realm).
    pub fn identity_token(&self) -> Option<&str> {
        (self.username == "<token>" || self.username.is_empty()).then_some(self.secret.as_str())
    }
}

/// Where the client finds credentials for a registry host (`host[:port]`; docker.io as
/// `docker.io`). Docker config files are one provider; the node agent adds pull secrets.
pub trait CredentialProvider: Send + Sync {
    fn credentials(&self, registry: &str) -> Result<Option<Credentials>, CredentialError>;
}

/// No credentials at all.
pub struct Anonymous;

impl CredentialProvider for Anonymous {
    fn credentials(&self, _: &str) -> Result<Option<Credentials>, CredentialError> {
        Ok(None)
    }
}

/// One credential (or none) for whichever registry is asked about: for a caller that has
/// already decided which credential applies (a node's keyring, `crictl pull --creds`).
pub struct Fixed(pub Option<Credentials>);

impl CredentialProvider for Fixed {
    fn credentials(&self, _: &str) -> Result<Option<Credentials>, CredentialError> {
        Ok(self.0.clone())
    }
}

/// A fixed set, keyed by registry host.
#[derive(Default)]
pub struct StaticCredentials(pub BTreeMap<String, Credentials>);

impl CredentialProvider for StaticCredentials {
    fn credentials(&self, registry: &str) -> Result<Option<Credentials>, CredentialError> {
        Ok(self.0.get(registry).cloned())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a docker config file: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("credential helper docker-credential-{helper} {action}: {reason}")]
    Helper {
        helper: String,
        action: &'static str,
        reason: String,
    },
}

/// The key docker uses for Docker Hub in `auths`.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// The `auths` key under which `registry` is saved.
pub fn config_key(registry: &str) -> String {
    if is_docker_hub(registry) {
        DOCKER_HUB_KEY.to_string()
    } else {
        registry.to_string()
    }
}

fn is_docker_hub(registry: &str) -> bool {
    matches!(
        registry,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

/// The host an `auths` key names: keys may be URLs (`https://host/v1/`) or, in podman's
/// files, `host/namespace`.
fn key_host(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

fn same_registry(key: &str, registry: &str) -> bool {
    let host = key_host(key);
    host == registry || (is_docker_hub(host) && is_docker_hub(registry))
}

/// A docker config file, kept as JSON so that fields kiln does not know survive a rewrite.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    path: PathBuf,
    json: Map<String, Value>,
}

impl DockerConfig {
    /// The file docker and podman would use: `$REGISTRY_AUTH_FILE`, else
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    pub fn default_path() -> PathBuf {
        if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|p| !p.is_empty()) {
            return PathBuf::from(dir).join("config.json");
        }
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "/root".into());
        PathBuf::from(home).join(".docker").join("config.json")
    }

    /// Loads `path`; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<DockerConfig, CredentialError> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(DockerConfig {
                    path: path.to_path_buf(),
                    json: Map::new(),
                })
            }
            Err(source) => {
                return Err(CredentialError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        DockerConfig::from_bytes(path, &text)
    }

    /// Parses a config file's contents (`path` is where it is saved to and named in errors).
    pub fn from_bytes(path: &Path, text: &[u8]) -> Result<DockerConfig, CredentialError> {
        let json = if text.iter().all(u8::is_ascii_whitespace) {
            Map::new()
        } else {
            match serde_json::from_slice::<Value>(text) {
                Ok(Value::Object(map)) => map,
                Ok(_) => {
                    return Err(CredentialError::Parse {
                        path: path.to_path_buf(),
                        reason: "the top level is not a JSON object".into(),
                    })
                }
                Err(e) => {
                    return Err(CredentialError::Parse {
                        path: path.to_path_buf(),
                        reason: e.to_string(),
                    })
                }
            }
        };
        Ok(DockerConfig {
            path: path.to_path_buf(),
            json,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn string_field(&self, name: &str) -> Option<&str> {
        self.json
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// The helper that keeps `registry`'s credentials, if any (`credHelpers` first).
    pub fn helper_for(&self, registry: &str) -> Option<String> {
        if let Some(Value::Object(helpers)) = self.json.get("credHelpers") {
            for (key, helper) in helpers {
                if same_registry(key, registry) {
                    if let Some(h) = helper.as_str().filter(|h| !h.is_empty()) {
                        return Some(h.to_string());
                    }
                }
            }
        }
        self.string_field("credsStore").map(str::to_string)
    }

    /// Credentials stored inline in `auths` (`auth` = base64 `user:password`, or
    /// `identitytoken`).
    pub fn inline(&self, registry: &str) -> Result<Option<Credentials>, CredentialError> {
        let Some(Value::Object(auths)) = self.json.get("auths") else {
            return Ok(None);
        };
        // An exact key wins over URL forms of the same host.
        let exact = config_key(registry);
        let entry = auths.get(&exact).or_else(|| {
            auths
                .iter()
                .find(|(k, _)| same_registry(k, registry))
                .map(|(_, v)| v)
        });
        let Some(Value::Object(entry)) = entry else {
            return Ok(None);
        };
        if let Some(token) = entry
            .get("identitytoken")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            return Ok(Some(Credentials::new("<token>", token)));
        }
        let Some(auth) = entry
            .get("auth")
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
        else {
            return Ok(None);
        };
        let bad = |reason: &str| CredentialError::Parse {
            path: self.path.clone(),
            reason: format!("auths[{exact:?}].auth: {reason}"),
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| bad("not base64"))?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad("not UTF-8"))?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or_else(|| bad("not user:password"))?;
        Ok(Some(Credentials::new(
            user,
            password.trim_end_matches('\n'),
        )))
    }

    /// Saves credentials for `registry`: in its helper if one is configured, else inline.
    pub fn store(&mut self, registry: &str, creds: &Credentials) -> Result<(), CredentialError> {
        let key = config_key(registry);
        if let Some(helper) = self.helper_for(registry) {
            helper_store(&helper, &key, creds)?;
            // docker leaves an empty entry so that `docker login` lists the registry.
            self.auths_mut().insert(key, Value::Object(Map::new()));
        } else {
            let mut entry = Map::new();
            if let Some(token) = creds.identity_token() {
                entry.insert("identitytoken".into(), token.into());
            } else {
                let auth = base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", creds.username, creds.secret));
                entry.insert("auth".into(), auth.into());
            }
            self.auths_mut().insert(key, Value::Object(entry));
        }
        self.save()
    }

    /// Removes `registry`'s credentials; `Ok(false)` if there were none.
    pub fn erase(&mut self, registry: &str) -> Result<bool, CredentialError> {
        let mut found = false;
        if let Some(helper) = self.helper_for(registry) {
            found |= helper_erase(&helper, &config_key(registry))?;
        }
        let keys: Vec<String> = match self.json.get("auths") {
            Some(Value::Object(auths)) => auths
                .keys()
                .filter(|k| same_registry(k, registry))
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        if !keys.is_empty() {
            let auths = self.auths_mut();
            for k in keys {
                auths.remove(&k);
            }
            found = true;
            self.save()?;
        }
        Ok(found)
    }

    fn auths_mut(&mut self) -> &mut Map<String, Value> {
        let auths = self
            .json
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !auths.is_object() {
            *auths = Value::Object(Map::new());
        }
        match auths {
            Value::Object(map) => map,
            _ => unreachable!("just made an object"),
        }
    }

    /// Writes the file atomically (temporary file + rename), private to its owner.
    fn save(&self) -> Result<(), CredentialError> {
        let err = |source| CredentialError::Write {
            path: self.path.clone(),
            source,
        };
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(err)?;
        let mut text = serde_json::to_vec_pretty(&Value::Object(self.json.clone()))
            .map_err(|e| err(std::io::Error::other(e)))?;
        text.push(b'\n');
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            self.path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("config.json"),
            std::process::id()
        ));
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(err)?;
            f.write_all(&text).map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(err)
    }
}

impl CredentialProvider for DockerConfig {
    fn credentials(&self, registry: &str) -> Result<Option<Credentials>, CredentialError> {
        if let Some(helper) = self.helper_for(registry) {
            if let Some(c) = helper_get(&helper, &config_key(registry))? {
                return Ok(Some(c));
            }
        }
        self.inline(registry)
    }
}

fn run_helper(
    helper: &str,
    action: &'static str,
    input: &[u8],
) -> Result<(bool, Vec<u8>, String), CredentialError> {
    let program = format!("docker-credential-{helper}");
    let fail = |reason: String| CredentialError::Helper {
        helper: helper.to_string(),
        action,
        reason,
    };
    let mut child = Command::new(&program)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run {program}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .map_err(|e| fail(format!("writing to {program}: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| fail(format!("waiting for {program}: {e}")))?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let stdout_text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let message = if stdout_text.is_empty() {
        stderr
    } else {
        stdout_text
    };
    Ok((out.status.success(), out.stdout, message))
}

fn helper_get(helper: &str, server: &str) -> Result<Option<Credentials>, CredentialError> {
    let (ok, stdout, message) = run_helper(helper, "get", server.as_bytes())?;
    if !ok {
        // The helpers' protocol: this exact message means "nothing stored".
        if message.contains("credentials not found") {
            return Ok(None);
        }
        return Err(CredentialError::Helper {
            helper: helper.into(),
            action: "get",
            reason: message,
        });
    }
    #[derive(serde::Deserialize)]
    struct Reply {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let reply: Reply = serde_json::from_slice(&stdout).map_err(|e| CredentialError::Helper {
        helper: helper.into(),
        action: "get",
        reason: format!("unreadable reply: {e}"),
    })?;
    if reply.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials::new(reply.username, reply.secret)))
}

fn helper_store(helper: &str, server: &str, creds: &Credentials) -> Result<(), CredentialError> {
    let input = serde_json::json!({
        "ServerURL": server,
        "Username": creds.username,
        "Secret": creds.secret,
    });
    let (ok, _, message) = run_helper(helper, "store", input.to_string().as_bytes())?;
    if ok {
        Ok(())
    } else {
        Err(CredentialError::Helper {
            helper: helper.into(),
            action: "store",
            reason: message,
        })
    }
}

fn helper_erase(helper: &str, server: &str) -> Result<bool, CredentialError> {
    let (ok, _, message) = run_helper(helper, "erase", server.as_bytes())?;
    if ok {
        Ok(true)
    } else if message.contains("credentials not found") {
        Ok(false)
    } else {
        Err(CredentialError::Helper {
            helper: helper.into(),
            action: "erase",
            reason: message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> (tempfile::TempDir, DockerConfig) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.json");
        std::fs::write(&path, text).expect("write");
        let c = DockerConfig::load(&path).expect("load");
        (dir, c)
    }

    #[test]
    fn reads_inline_auth_under_any_key_form() {
        let (_d, c) = config(
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},
                "http://localhost:5000/v1/":{"auth":"YTpiOmM="},
                "quay.io/team":{"identitytoken":"tok"}}}"#,
        );
        assert_eq!(
            c.credentials("docker.io").expect("ok"),
            Some(Credentials::new("user", "pass"))
        );
        // The password is everything after the first colon.
        assert_eq!(
            c.credentials("localhost:5000").expect("ok"),
            Some(Credentials::new("a", "b:c"))
        );
        let token = c.credentials("quay.io").expect("ok").expect("some");
        assert_eq!(token.identity_token(), Some("tok"));
        assert_eq!(c.credentials("ghcr.io").expect("ok"), None);
    }

    #[test]
    fn malformed_auth_is_named() {
        let (_d, c) = config(r#"{"auths":{"r.io":{"auth":"!!!"}}}"#);
        let err = c.credentials("r.io").expect_err("must fail").to_string();
        assert!(err.contains("not base64"), "{err}");
        let (_d, c) = config(r#"{"auths":{"r.io":{"auth":"bm9jb2xvbg=="}}}"#);
        let err = c.credentials("r.io").expect_err("must fail").to_string();
        assert!(err.contains("user:password"), "{err}");
    }

    #[test]
    fn a_broken_file_is_refused_with_its_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.json");
        std::fs::write(&path, "{not json").expect("write");
        let err = DockerConfig::load(&path)
            .expect_err("must fail")
            .to_string();
        assert!(err.contains("config.json"), "{err}");
        std::fs::write(&path, "[1]").expect("write");
        assert!(DockerConfig::load(&path).is_err());
    }

    #[test]
    fn store_and_erase_keep_other_fields() {
        let (_d, mut c) = config(r#"{"auths":{},"psFormat":"table {{.ID}}"}"#);
        c.store("localhost:5000", &Credentials::new("u", "p"))
            .expect("store");
        let reloaded = DockerConfig::load(c.path()).expect("load");
        assert_eq!(
            reloaded.credentials("localhost:5000").expect("ok"),
            Some(Credentials::new("u", "p"))
        );
        assert_eq!(
            reloaded.json.get("psFormat").and_then(Value::as_str),
            Some("table {{.ID}}")
        );
        let mut reloaded = reloaded;
        assert!(reloaded.erase("localhost:5000").expect("erase"));
        assert!(!reloaded.erase("localhost:5000").expect("erase"));
        let again = DockerConfig::load(c.path()).expect("load");
        assert_eq!(again.credentials("localhost:5000").expect("ok"), None);
    }

    #[test]
    fn docker_hub_is_saved_under_dockers_key() {
        let (_d, mut c) = config("");
        c.store("docker.io", &Credentials::new("u", "p"))
            .expect("store");
        let text = std::fs::read_to_string(c.path()).expect("read");
        assert!(text.contains(DOCKER_HUB_KEY), "{text}");
    }

    #[test]
    fn helpers_are_chosen_per_registry() {
        let (_d, c) = config(r#"{"credsStore":"pass","credHelpers":{"gcr.io":"gcloud"}}"#);
        assert_eq!(c.helper_for("gcr.io").as_deref(), Some("gcloud"));
        assert_eq!(c.helper_for("quay.io").as_deref(), Some("pass"));
    }
}
