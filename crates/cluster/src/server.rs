//! Running the API server: storage, first-start objects, certificates, listeners and the
//! background work (history compaction).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::api::{self, ApiServer, Shared};
use crate::pki::{self, Authority, CertAndKey, PkiError};
use crate::resources::NAMESPACES;
use crate::status::ApiError;
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError};

pub struct ServeConfig {
    /// Where the store and the certificates live.
    pub data_dir: PathBuf,
    /// The HTTPS listener (client certificates required).
    pub listen: SocketAddr,
    /// An optional plain-HTTP listener; refused unless on loopback.
    pub insecure_listen: Option<SocketAddr>,
    /// Extra names and addresses for the serving certificate.
    pub tls_sans: Vec<String>,
    /// Where objects live.
    pub datastore: Datastore,
    pub admission: crate::admission::Admission,
}

/// The store behind the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datastore {
    /// One SQLite file in the data directory.
    Embedded,
    /// An etcd v3 cluster (client URLs); keys live under `/kiln`.
    Etcd(Vec<String>),
}

impl std::str::FromStr for Datastore {
    type Err = String;

    /// `sqlite` (or empty) for the embedded store, `etcd://h1:2379,h2:2379` for etcd.
    fn from_str(s: &str) -> Result<Datastore, String> {
        match s {
            "" | "sqlite" | "embedded" => Ok(Datastore::Embedded),
            _ => {
                let rest = s.strip_prefix("etcd://").ok_or_else(|| {
                    format!("unknown datastore {s:?}: expected \"sqlite\" or etcd://HOST:PORT[,HOST:PORT...]")
                })?;
                let endpoints: Vec<String> = rest
                    .split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(|e| {
                        if e.contains("://") {
                            e.to_string()
                        } else {
                            format!("http://{e}")
                        }
                    })
                    .collect();
                if endpoints.is_empty() {
                    return Err(format!("datastore {s:?} names no etcd endpoint"));
                }
                Ok(Datastore::Etcd(endpoints))
            }
        }
    }
}

/// What a started server tells its caller.
pub struct Ready {
    /// `https://host:port` for clients.
    pub url: String,
    pub insecure_url: Option<String>,
    /// A kubeconfig for the cluster administrator.
    pub admin_kubeconfig: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("opening the store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("creating namespace {name}: {error}")]
    Bootstrap { name: String, error: ApiError },
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("the plain-HTTP listener must be on a loopback address, not {0}")]
    InsecureNotLoopback(SocketAddr),
}

/// The namespaces every cluster starts with.
const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

async fn bootstrap(server: &Shared) -> Result<(), ServeError> {
    for name in SYSTEM_NAMESPACES {
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        match api::create_object(server, &NAMESPACES, None, ns, false).await {
            Ok(_) => {}
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(error) => {
                return Err(ServeError::Bootstrap {
                    name: name.to_string(),
                    error,
                })
            }
        }
    }
    Ok(())
}

/// The administrator's client certificate, made once and kept beside the CA.
fn admin_certificate(ca: &Authority, dir: &std::path::Path) -> Result<CertAndKey, ServeError> {
    let cert_path = dir.join("admin.crt");
    let key_path = dir.join("admin.key");
    if let (Ok(cert_pem), Ok(key_pem)) = (
        std::fs::read_to_string(&cert_path),
        std::fs::read_to_string(&key_path),
    ) {
        return Ok(CertAndKey { cert_pem, key_pem });
    }
    let admin = ca.client("kiln-admin", &["system:masters"])?;
    pki::write_private(&key_path, &admin.key_pem)?;
    pki::write_private(&cert_path, &admin.cert_pem)?;
    Ok(admin)
}

fn tls_config(ca: &Authority, serving: &CertAndKey) -> Result<rustls::ServerConfig, ServeError> {
    let tls = |e: &dyn std::fmt::Display| ServeError::Tls(e.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = pki::trust_store(&ca.cert_pem)?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| tls(&e))?;
    let (chain, key) = serving.to_rustls()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| tls(&e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Forgets store history older than five minutes, every five minutes (as Kubernetes has
/// etcd do): watches that far behind re-list.
fn compact_periodically(store: Arc<dyn Store>) {
    tokio::spawn(async move {
        let mut previous = None;
        loop {
            tokio::time::sleep(Duration::from_secs(300)).await;
            if let Some(revision) = previous {
                if let Err(e) = store.compact(revision).await {
                    tracing::warn!(error = %e, "compaction failed");
                }
            }
            previous = store.current_revision().await.ok();
        }
    });
}

fn names_for(listen: SocketAddr, extra: &[String]) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if !listen.ip().is_unspecified() {
        names.push(listen.ip().to_string());
    }
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty() {
            names.push(host.to_string());
        }
    }
    names.extend(extra.iter().cloned());
    names.dedup();
    names
}

/// Starts the server; `on_ready` is called once it listens. Runs until shut down.
pub async fn serve(config: ServeConfig, on_ready: impl FnOnce(&Ready)) -> Result<(), ServeError> {
    if let Some(addr) = config.insecure_listen {
        if !addr.ip().is_loopback() {
            return Err(ServeError::InsecureNotLoopback(addr));
        }
    }
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        ServeError::Store(StoreError::Backend(format!(
            "{}: {e}",
            config.data_dir.display()
        )))
    })?;
    let store: Arc<dyn Store> = match &config.datastore {
        Datastore::Embedded => Arc::new(SqliteStore::open(&config.data_dir.join("state.db"))?),
        Datastore::Etcd(endpoints) => {
            Arc::new(crate::store::etcd::EtcdStore::connect(endpoints, "/kiln").await?)
        }
    };
    let pki_dir = config.data_dir.join("pki");
    let ca = Authority::load_or_create(&pki_dir)?;
    let admin = admin_certificate(&ca, &pki_dir)?;
    let serving = ca.serving(&names_for(config.listen, &config.tls_sans))?;

    let listener =
        std::net::TcpListener::bind(config.listen).map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: config.listen,
        source,
    })?;
    let host = if bound.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        match bound.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        }
    };
    let url = format!("https://{host}:{}", bound.port());
    let mut api_server = ApiServer::new(store.clone(), format!("{host}:{}", bound.port()));
    api_server.admission = config.admission.clone();
    // The identity the API server shows nodes when it forwards logs and exec.
    let kubelet_client = ca.client("kube-apiserver-kubelet-client", &["system:masters"])?;
    api_server.nodes = Some(
        crate::api::node_proxy::NodeClient::new(&ca.cert_pem, &kubelet_client)
            .map_err(|e| ServeError::Tls(e.to_string()))?,
    );
    let server: Shared = Arc::new(api_server);
    bootstrap(&server).await?;
    crate::gc::spawn(server.clone());
    crate::controllers::spawn(
        server.clone(),
        Arc::new(crate::controllers::replicaset::ReplicaSetController),
    );
    crate::controllers::spawn(
        server.clone(),
        Arc::new(crate::controllers::scheduler::Scheduler),
    );
    crate::controllers::spawn(
        server.clone(),
        Arc::new(crate::controllers::deployment::DeploymentController),
    );
    compact_periodically(store);

    let app = api::router(server);
    let mut insecure_url = None;
    if let Some(addr) = config.insecure_listen {
        let plain = std::net::TcpListener::bind(addr)
            .map_err(|source| ServeError::Bind { addr, source })?;
        let plain_addr = plain
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        insecure_url = Some(format!("http://{plain_addr}"));
        let app = app.clone();
        tokio::spawn(async move {
            if let Err(e) = axum_server::from_tcp(plain)
                .serve(app.into_make_service())
                .await
            {
                tracing::error!(error = %e, "plain-HTTP listener stopped");
            }
        });
    }
    let tls =
        axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(tls_config(&ca, &serving)?));
    on_ready(&Ready {
        admin_kubeconfig: pki::kubeconfig("kiln", &url, &ca.cert_pem, &admin),
        url,
        insecure_url,
    });
    axum_server::from_tcp_rustls(listener, tls)
        .serve(app.into_make_service())
        .await
        .map_err(|source| ServeError::Bind {
            addr: bound,
            source,
        })
}
