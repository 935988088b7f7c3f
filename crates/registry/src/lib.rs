//! kiln-registry: an OCI distribution-spec v1.1 registry.
//!
//! `http` maps requests to the operations of [`Registry`]; `storage` holds the bytes (a
//! [`storage::backend::BlobBackend`]) and the metadata (SQLite); `uploads` the sessions;
//! `auth` decides who may do what; `gc` collects unreferenced blobs while pushes go on.

pub mod auth;
pub mod config;
mod conn;
pub mod error;
pub mod gc;
mod http;
pub mod metrics;
pub mod storage;
pub mod uploads;
mod zero_copy;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use config::Config;

use crate::auth::Auth;
use crate::metrics::Metrics;
use crate::storage::backend::{BlobBackend, FsBackend};
use crate::storage::meta::Meta;
use crate::uploads::Sessions;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Meta(#[from] storage::meta::MetaError),
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The registry's state, shared by every request.
pub struct Registry {
    pub(crate) config: Config,
    pub(crate) meta: Meta,
    pub(crate) backend: Arc<dyn BlobBackend>,
    pub(crate) sessions: Sessions,
    pub(crate) auth: Auth,
    pub(crate) metrics: Metrics,
    /// Each repository's sorted tags, as last read; dropped whenever this process changes
    /// them (one server process owns a root; `kiln registry gc` never touches tags).
    pub(crate) tag_cache: std::sync::Mutex<std::collections::HashMap<String, Arc<TagList>>>,
}

impl Registry {
    /// Opens (creating if needed) the registry stored under `root`.
    pub fn open(config: Config, root: &Path) -> Result<Registry, ServeError> {
        let io = |source| ServeError::Io {
            path: root.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(root).map_err(io)?;
        let backend = FsBackend::open(root).map_err(io)?;
        let meta = Meta::open(&root.join("registry.db"))?;
        let auth = Auth::from_config(&config, root)?;
        Ok(Registry {
            config,
            meta,
            backend: Arc::new(backend),
            sessions: Sessions::default(),
            auth,
            metrics: Metrics::default(),
            tag_cache: Default::default(),
        })
    }
}

/// A repository's tags, sorted, with the unpaginated `tags/list` answer ready to send.
pub(crate) struct TagList {
    pub tags: Vec<String>,
    pub json: bytes::Bytes,
}

impl Registry {
    /// All tags of `repo`, sorted, from the cache when it has them.
    pub(crate) fn all_tags(&self, repo: &str) -> Result<Arc<TagList>, storage::meta::MetaError> {
        if let Some(tags) = self
            .tag_cache
            .lock()
            .ok()
            .and_then(|c| c.get(repo).cloned())
        {
            return Ok(tags);
        }
        let tags = self.meta.tags(repo)?;
        let json = serde_json::to_vec(&serde_json::json!({ "name": repo, "tags": tags }))
            .unwrap_or_default();
        let tags = Arc::new(TagList {
            tags,
            json: bytes::Bytes::from(json),
        });
        if let Ok(mut cache) = self.tag_cache.lock() {
            cache.insert(repo.to_string(), tags.clone());
        }
        Ok(tags)
    }

    pub(crate) fn tags_changed(&self, repo: &str) {
        if let Ok(mut cache) = self.tag_cache.lock() {
            cache.remove(repo);
        }
    }
}

/// Process-wide settings for a registry server; call before any thread starts. glibc gives
/// every thread its own malloc arena, which keeps freed request buffers resident per thread;
/// two arenas serve an I/O-bound server as well and hold far less memory.
pub fn tune_process() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator parameters; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// The HTTP application (for serving, or for driving in-process as the fuzz target does).
pub fn app(registry: Arc<Registry>) -> axum::Router {
    http::router(registry)
}

/// Serves until SIGINT or SIGTERM, then finishes the requests in flight. Calls `on_listen`
/// with the bound address (useful with port 0) before accepting.
pub async fn serve(
    registry: Registry,
    on_listen: impl FnOnce(SocketAddr, bool),
) -> Result<(), ServeError> {
    let addr = registry.config.http.addr;
    let tls = registry.config.http.tls.clone();
    let gc_interval = registry.config.gc.interval;
    let registry = Arc::new(registry);
    let app = app(registry.clone());

    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| ServeError::Bind { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| ServeError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;

    if gc_interval > 0 {
        let registry = registry.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(gc_interval));
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let r = registry.clone();
                match tokio::task::spawn_blocking(move || r.collect_garbage()).await {
                    Ok(Err(e)) => tracing::error!(error = %e, "garbage collection failed"),
                    Err(e) => tracing::error!(error = %e, "garbage collection panicked"),
                    Ok(Ok(_)) => {}
                }
            }
        });
    }

    let handle = axum_server::Handle::new();
    let shutdown = handle.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing requests in flight");
        shutdown.graceful_shutdown(Some(Duration::from_secs(30)));
    });

    on_listen(bound, tls.is_some());
    let service = app.into_make_service();
    match tls {
        Some(tls) => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let config =
                axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.certificate, &tls.key)
                    .await
                    .map_err(|e| {
                        ServeError::Tls(format!(
                            "{} / {}: {e}",
                            tls.certificate.display(),
                            tls.key.display()
                        ))
                    })?;
            axum_server::from_tcp_rustls(listener, config)
                .handle(handle)
                .serve(service)
                .await
                .map_err(|source| ServeError::Bind { addr, source })
        }
        None => axum_server::from_tcp(listener)
            .acceptor(conn::TagSocket)
            .handle(handle)
            .serve(service)
            .await
            .map_err(|source| ServeError::Bind { addr, source }),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
