//! The registry's configuration file (TOML), laid out like CNCF distribution's so that its
//! users find their way: `[http]`, `[storage]`, `[auth.htpasswd]`, `[auth.token]`, plus
//! kiln's `[[access]]` rules and `[gc]`. See `docs/registry.example.toml`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub access: Vec<AccessRule>,
    #[serde(default)]
    pub gc: GcConfig,
    #[serde(default)]
    pub log: LogConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(default = "default_addr")]
    pub addr: SocketAddr,
    pub tls: Option<TlsConfig>,
    /// Serve without authentication on a non-loopback address (off: anonymous access is
    /// only the default on loopback).
    #[serde(default)]
    pub anonymous_remote: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            addr: default_addr(),
            tls: None,
            anonymous_remote: false,
        }
    }
}

fn default_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5000))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Where blobs, uploads and the metadata database live.
    pub root: Option<PathBuf>,
    /// Whether DELETE is allowed on manifests, tags and blobs.
    #[serde(default = "yes")]
    pub delete: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            root: None,
            delete: true,
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub htpasswd: Option<HtpasswdConfig>,
    pub token: Option<TokenConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HtpasswdConfig {
    #[serde(default = "default_realm")]
    pub realm: String,
    pub path: PathBuf,
}

fn default_realm() -> String {
    "kiln-registry".to_string()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Where clients fetch tokens [default: this server's /token].
    pub realm: Option<String>,
    #[serde(default = "default_realm")]
    pub service: String,
    #[serde(default = "default_issuer")]
    pub issuer: String,
    /// Token lifetime in seconds.
    #[serde(default = "default_expiration")]
    pub expiration: u64,
    /// File holding the signing key [default: `<root>/token.key`, created on first start].
    pub key: Option<PathBuf>,
}

fn default_issuer() -> String {
    "kiln".to_string()
}

fn default_expiration() -> u64 {
    300
}

/// Who may do something.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Who {
    Class(WhoClass),
    Users(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WhoClass {
    Anonymous,
    Authenticated,
    Nobody,
}

/// `[[access]]`: the first rule whose `repository` glob matches decides. Actions a rule does
/// not name fall through to the next matching rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRule {
    pub repository: String,
    pub pull: Option<Who>,
    pub push: Option<Who>,
    pub delete: Option<Who>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcConfig {
    /// Seconds between background passes; 0 turns them off.
    #[serde(default = "default_gc_interval")]
    pub interval: u64,
    /// Seconds a blob no manifest references is kept after it was last uploaded or mounted,
    /// so that a push's layers survive until its manifest arrives.
    #[serde(default = "default_gc_grace")]
    pub grace: u64,
    /// Seconds an idle upload session is kept.
    #[serde(default = "default_upload_expiry")]
    pub upload_expiry: u64,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            interval: default_gc_interval(),
            grace: default_gc_grace(),
            upload_expiry: default_upload_expiry(),
        }
    }
}

fn default_gc_interval() -> u64 {
    3600
}

fn default_gc_grace() -> u64 {
    3600
}

fn default_upload_expiry() -> u64 {
    86400
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    #[serde(default = "default_log_format")]
    pub format: String,
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: default_log_format(),
            level: default_log_level(),
        }
    }
}

fn default_log_format() -> String {
    "text".to_string()
}

fn default_log_level() -> String {
    "info".to_string()
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                source,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: PathBuf::from("<config>"),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn auth_enabled(&self) -> bool {
        self.auth.htpasswd.is_some()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.auth.token.is_some() && self.auth.htpasswd.is_none() {
            return Err(ConfigError::Invalid(
                "[auth.token] needs [auth.htpasswd]: tokens are issued to htpasswd users".into(),
            ));
        }
        if !self.auth_enabled() && !self.http.addr.ip().is_loopback() && !self.http.anonymous_remote
        {
            return Err(ConfigError::Invalid(format!(
                "refusing to serve {} without authentication: configure [auth.htpasswd], or set http.anonymous_remote = true",
                self.http.addr
            )));
        }
        for rule in &self.access {
            if rule.repository.is_empty() {
                return Err(ConfigError::Invalid(
                    "[[access]] rule with an empty repository pattern".into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let text = include_str!("../../../docs/registry.example.toml");
        let config = Config::parse(text).expect("example config parses");
        assert!(config.auth.htpasswd.is_some());
        assert_eq!(config.access.len(), 2);
        assert_eq!(
            config.access[0].pull,
            Some(Who::Class(WhoClass::Authenticated))
        );
    }

    #[test]
    fn refuses_anonymous_remote_and_unknown_keys() {
        let err = Config::parse("[http]\naddr = \"0.0.0.0:5000\"\n").expect_err("anonymous remote");
        assert!(err.to_string().contains("without authentication"), "{err}");
        assert!(
            Config::parse("[http]\naddr = \"0.0.0.0:5000\"\nanonymous_remote = true\n").is_ok()
        );
        let err = Config::parse("[http]\nadress = \"x\"\n").expect_err("typo");
        assert!(err.to_string().contains("adress"), "{err}");
        let err =
            Config::parse("[auth.token]\nservice = \"x\"\n").expect_err("token without users");
        assert!(err.to_string().contains("htpasswd"), "{err}");
    }
}
