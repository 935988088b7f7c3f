//! What can go wrong between kiln and a registry, named so that a user can act on it.

use kiln_image::{Digest, StoreError};

use crate::credentials::CredentialError;

/// One entry of a registry's `{"errors":[...]}` body.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct RegistryError {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
}

#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct RegistryErrors {
    #[serde(default)]
    pub errors: Vec<RegistryError>,
}

fn codes(errors: &[RegistryError]) -> String {
    if errors.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = errors
        .iter()
        .map(|e| match (e.code.is_empty(), e.message.is_empty()) {
            (false, false) => format!("{}: {}", e.code, e.message),
            (false, true) => e.code.clone(),
            _ => e.message.clone(),
        })
        .collect();
    format!(": {}", parts.join("; "))
}

/// The registry's codes, or the spec's code when it sent none (a bodiless 404).
fn unknown_codes(errors: &[RegistryError]) -> String {
    if errors.is_empty() {
        ": MANIFEST_UNKNOWN".into()
    } else {
        codes(errors)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{what}: {reason}")]
    Config { what: String, reason: String },
    #[error(transparent)]
    Credentials(CredentialError),
    #[error("cannot reach {registry}: {reason}")]
    Unreachable { registry: String, reason: String },
    #[error("unauthorized at {registry}: {detail}")]
    Unauthorized { registry: String, detail: String },
    #[error("{what}: registry answered {status}{}", codes(errors))]
    Registry {
        what: String,
        status: u16,
        errors: Vec<RegistryError>,
    },
    #[error("manifest for {reference} not found{}", unknown_codes(errors))]
    ManifestUnknown {
        reference: String,
        errors: Vec<RegistryError>,
    },
    #[error("{what}: the registry sent content whose digest is {actual}, not {expected}")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{what}: {reason}")]
    BadContent { what: String, reason: String },
    #[error("{reference}: no image for platform {platform} (the index has: {available})")]
    NoPlatform {
        reference: String,
        platform: String,
        available: String,
    },
    #[error("transfer of {what} broke off: {reason}")]
    Interrupted { what: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ClientError {
    /// The registry's error codes, if it sent any.
    pub fn registry_codes(&self) -> Vec<&str> {
        match self {
            ClientError::Registry { errors, .. } | ClientError::ManifestUnknown { errors, .. } => {
                errors.iter().map(|e| e.code.as_str()).collect()
            }
            _ => Vec::new(),
        }
    }
}
