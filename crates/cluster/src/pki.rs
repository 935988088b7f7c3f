//! The cluster's certificates: a CA made on first start, a serving certificate for the API
//! server, and client certificates (the administrator's goes into the kubeconfig).
//! Kubernetes takes a client certificate's CN as the user and its O as the groups.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {reason}")]
    Pem { what: &'static str, reason: String },
    #[error("{what}: {source}")]
    Rcgen {
        what: &'static str,
        source: rcgen::Error,
    },
}

/// PEM certificate and key.
#[derive(Debug, Clone)]
pub struct CertAndKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl CertAndKey {
    /// The certificate chain and key as rustls takes them.
    pub fn to_rustls(
        &self,
    ) -> Result<
        (
            Vec<rustls_pki_types::CertificateDer<'static>>,
            rustls_pki_types::PrivateKeyDer<'static>,
        ),
        PkiError,
    > {
        use rustls_pki_types::pem::PemObject;
        let pem = |reason: &dyn std::fmt::Display| PkiError::Pem {
            what: "reading a certificate and key",
            reason: reason.to_string(),
        };
        let chain = rustls_pki_types::CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| pem(&e))?;
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| pem(&e))?;
        Ok((chain, key))
    }
}

/// The certificates in `ca_pem` as a rustls trust store.
pub fn trust_store(ca_pem: &str) -> Result<rustls::RootCertStore, PkiError> {
    use rustls_pki_types::pem::PemObject;
    let pem = |reason: &dyn std::fmt::Display| PkiError::Pem {
        what: "reading the cluster CA",
        reason: reason.to_string(),
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.map_err(|e| pem(&e))?).map_err(|e| pem(&e))?;
    }
    Ok(roots)
}

fn rcgen_err(what: &'static str) -> impl Fn(rcgen::Error) -> PkiError {
    move |source| PkiError::Rcgen { what, source }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub fn write_private(path: &Path, text: &str) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(text.as_bytes()).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "kiln-ca");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(3650);
    params
}

/// The cluster CA in `dir` (`ca.crt`, `ca.key`), made if absent.
pub struct Authority {
    pub cert_pem: String,
    key: KeyPair,
}

impl Authority {
    pub fn load_or_create(dir: &Path) -> Result<Authority, PkiError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let cert_path = dir.join("ca.crt");
        let key_path = dir.join("ca.key");
        if cert_path.is_file() && key_path.is_file() {
            let cert_pem = std::fs::read_to_string(&cert_path).map_err(io_err(&cert_path))?;
            let key_pem = std::fs::read_to_string(&key_path).map_err(io_err(&key_path))?;
            let key = KeyPair::from_pem(&key_pem).map_err(rcgen_err("reading the CA key"))?;
            return Ok(Authority { cert_pem, key });
        }
        let key = KeyPair::generate().map_err(rcgen_err("making the CA key"))?;
        let cert = ca_params()
            .self_signed(&key)
            .map_err(rcgen_err("making the CA certificate"))?;
        // Key first: a certificate without its key would be unusable after a crash.
        write_private(&key_path, &key.serialize_pem())?;
        write_private(&cert_path, &cert.pem())?;
        Ok(Authority {
            cert_pem: cert.pem(),
            key,
        })
    }

    fn issue(&self, params: CertificateParams, what: &'static str) -> Result<CertAndKey, PkiError> {
        let key = KeyPair::generate().map_err(rcgen_err(what))?;
        // The issuer is rebuilt from the CA's fixed parameters: its name and key identifier
        // (derived from the key) are what issued certificates refer to.
        let issuer = Issuer::new(ca_params(), &self.key);
        let cert = params.signed_by(&key, &issuer).map_err(rcgen_err(what))?;
        Ok(CertAndKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A serving certificate for these DNS names and IP addresses.
    pub fn serving(&self, names: &[String]) -> Result<CertAndKey, PkiError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "kiln-apiserver");
        params.distinguished_name = dn;
        params.subject_alt_names = names
            .iter()
            .filter_map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Some(SanType::IpAddress(ip)),
                Err(_) => n.clone().try_into().ok().map(SanType::DnsName),
            })
            .collect();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(365);
        self.issue(params, "making the serving certificate")
    }

    /// A client certificate for `user` in `groups`.
    pub fn client(&self, user: &str, groups: &[&str]) -> Result<CertAndKey, PkiError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, user);
        for g in groups {
            dn.push(DnType::OrganizationName, *g);
        }
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(365);
        self.issue(params, "making a client certificate")
    }
}

/// A kubeconfig with one cluster, user and context named `name`.
pub fn kubeconfig(name: &str, server: &str, ca_pem: &str, client: &CertAndKey) -> String {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: {name}
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {name}
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: {name}
  context:
    cluster: {name}
    user: {name}
current-context: {name}
preferences: {{}}
",
        ca = b64(ca_pem),
        cert = b64(&client.cert_pem),
        key = b64(&client.key_pem),
    )
}

/// Writes `text` to `path` (mode 0600), creating its directory.
pub fn write_kubeconfig(path: &Path, text: &str) -> Result<(), PkiError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    write_private(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authority_is_made_once_and_issues_certificates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Authority::load_or_create(dir.path()).expect("ca");
        let again = Authority::load_or_create(dir.path()).expect("reload");
        assert_eq!(ca.cert_pem, again.cert_pem);
        let serving = again
            .serving(&["localhost".into(), "127.0.0.1".into()])
            .expect("serving");
        assert!(serving.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let admin = again
            .client("kiln-admin", &["system:masters"])
            .expect("client");
        let config = kubeconfig("kiln", "https://127.0.0.1:6443", &ca.cert_pem, &admin);
        assert!(config.contains("current-context: kiln"));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("ca.key"))
                .expect("key")
                .permissions(),
        );
        assert_eq!(mode & 0o077, 0, "the CA key is private");
    }
}
