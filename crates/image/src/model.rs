//! The OCI image model: which documents kiln understands and how it tells them apart.
//!
//! The types themselves come from `oci-spec`; this module adds what it leaves to callers:
//! recognising OCI *and* Docker schema 2 media types, refusing schema 1 clearly, and
//! classifying a raw document before it is trusted. Raw bytes stay the source of truth —
//! a parsed manifest is never re-serialized, since that would change its digest.

use std::fmt;

pub use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};

use crate::digest::{Digest, DigestError};

pub mod media_types {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
    pub const DOCKER_FOREIGN_LAYER: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
    pub const DOCKER_SCHEMA1_MANIFEST: &str =
        "application/vnd.docker.distribution.manifest.v1+json";
    pub const DOCKER_SCHEMA1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";
}

use media_types as mt;

/// Largest manifest, index or config kiln reads into memory. distribution caps manifests at
/// 4 MiB; configs of real images are far smaller.
pub const MAX_DOCUMENT_SIZE: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("Docker schema 1 manifests are not supported (media type {media_type}); re-push the image with a current client to get a schema 2 or OCI manifest")]
    Schema1 { media_type: String },
    #[error("manifest is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("{what} is not a JSON object")]
    NotObject { what: &'static str },
    #[error("unsupported schemaVersion {0} (expected 2)")]
    SchemaVersion(i64),
    #[error("unsupported manifest media type {0:?}")]
    UnknownMediaType(String),
    #[error("manifest declares media type {inside:?} but was served as {declared:?}")]
    MediaTypeMismatch { declared: String, inside: String },
    #[error("cannot tell whether the document is a manifest or an index: it has no mediaType, \"manifests\" or \"layers\"")]
    Unclassifiable,
    #[error("invalid {what}: {source}")]
    Invalid {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("descriptor has an unusable digest: {0}")]
    Digest(#[from] DigestError),
    #[error("{what} is {size} bytes, more than the {MAX_DOCUMENT_SIZE}-byte limit")]
    TooLarge { what: &'static str, size: u64 },
    #[error("invalid platform {input:?}: expected os/arch[/variant], e.g. linux/arm64/v8")]
    Platform { input: String },
}

/// A manifest-level document: what a reference or an index entry points at.
#[derive(Debug, Clone)]
pub enum Document {
    Manifest(Box<ImageManifest>),
    Index(Box<ImageIndex>),
}

pub fn is_manifest_media_type(media_type: &str) -> bool {
    media_type == mt::OCI_MANIFEST || media_type == mt::DOCKER_MANIFEST
}

pub fn is_index_media_type(media_type: &str) -> bool {
    media_type == mt::OCI_INDEX || media_type == mt::DOCKER_MANIFEST_LIST
}

pub fn is_image_config_media_type(media_type: &str) -> bool {
    media_type == mt::OCI_CONFIG || media_type == mt::DOCKER_CONFIG
}

impl Document {
    /// Classifies and parses a manifest or index. `declared` is the media type it was
    /// announced with (a descriptor or a Content-Type), if any; it must agree with the
    /// document's own `mediaType` field when both are present.
    pub fn parse(bytes: &[u8], declared: Option<&str>) -> Result<Document, ModelError> {
        if bytes.len() as u64 > MAX_DOCUMENT_SIZE {
            return Err(ModelError::TooLarge {
                what: "manifest",
                size: bytes.len() as u64,
            });
        }
        if let Some(d) = declared {
            if d == mt::DOCKER_SCHEMA1_MANIFEST || d == mt::DOCKER_SCHEMA1_SIGNED {
                return Err(ModelError::Schema1 {
                    media_type: d.to_string(),
                });
            }
        }
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(ModelError::Json)?;
        let object = value
            .as_object()
            .ok_or(ModelError::NotObject { what: "manifest" })?;
        let inside = object.get("mediaType").and_then(|m| m.as_str());
        match object.get("schemaVersion").and_then(|v| v.as_i64()) {
            Some(2) => {}
            Some(1) => {
                return Err(ModelError::Schema1 {
                    media_type: inside.unwrap_or(mt::DOCKER_SCHEMA1_MANIFEST).to_string(),
                })
            }
            Some(other) => return Err(ModelError::SchemaVersion(other)),
            None => return Err(ModelError::SchemaVersion(0)),
        }
        if let (Some(declared), Some(inside)) = (declared, inside) {
            if declared != inside {
                return Err(ModelError::MediaTypeMismatch {
                    declared: declared.to_string(),
                    inside: inside.to_string(),
                });
            }
        }
        let is_index = match inside.or(declared) {
            Some(m) if is_index_media_type(m) => true,
            Some(m) if is_manifest_media_type(m) => false,
            Some(m) => return Err(ModelError::UnknownMediaType(m.to_string())),
            None if object.contains_key("manifests") => true,
            None if object.contains_key("layers") || object.contains_key("config") => false,
            None => return Err(ModelError::Unclassifiable),
        };
        if is_index {
            let index: ImageIndex =
                serde_json::from_value(value).map_err(|source| ModelError::Invalid {
                    what: "image index",
                    source,
                })?;
            for d in index.manifests() {
                descriptor_digest(d)?;
            }
            Ok(Document::Index(Box::new(index)))
        } else {
            let manifest: ImageManifest =
                serde_json::from_value(value).map_err(|source| ModelError::Invalid {
                    what: "image manifest",
                    source,
                })?;
            descriptor_digest(manifest.config())?;
            for d in manifest.layers() {
                descriptor_digest(d)?;
            }
            Ok(Document::Manifest(Box::new(manifest)))
        }
    }

    /// The descriptors this document owns: config and layers, or child manifests. The
    /// `subject` of a referrer is deliberately not included — it points the other way.
    pub fn children(&self) -> Vec<&Descriptor> {
        match self {
            Document::Manifest(m) => std::iter::once(m.config()).chain(m.layers()).collect(),
            Document::Index(i) => i.manifests().iter().collect(),
        }
    }
}

/// Parses an image configuration (OCI or Docker `container.image.v1`).
pub fn parse_config(bytes: &[u8]) -> Result<ImageConfiguration, ModelError> {
    if bytes.len() as u64 > MAX_DOCUMENT_SIZE {
        return Err(ModelError::TooLarge {
            what: "image config",
            size: bytes.len() as u64,
        });
    }
    serde_json::from_slice(bytes).map_err(|source| ModelError::Invalid {
        what: "image config",
        source,
    })
}

/// The digest of a descriptor, restricted to the algorithms kiln can verify.
/// A Unix time as image configs write it (`created`, history): RFC 3339 in UTC; times
/// outside RFC 3339's range give the epoch.
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

pub fn descriptor_digest(d: &Descriptor) -> Result<Digest, ModelError> {
    Ok(Digest::try_from(d.digest())?)
}

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn of_layer_media_type(media_type: &str) -> Option<Compression> {
        match media_type {
            mt::OCI_LAYER | mt::DOCKER_LAYER => Some(Compression::None),
            mt::OCI_LAYER_GZIP | mt::DOCKER_LAYER_GZIP | mt::DOCKER_FOREIGN_LAYER => {
                Some(Compression::Gzip)
            }
            mt::OCI_LAYER_ZSTD | mt::DOCKER_LAYER_ZSTD => Some(Compression::Zstd),
            m if m.starts_with("application/vnd.oci.image.layer.nondistributable.v1.tar") => {
                Compression::of_layer_media_type(&m.replace(".nondistributable", ""))
            }
            _ => None,
        }
    }

    /// Recognises compressed streams by their magic numbers.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// An OS/architecture pair as image indexes and `--platform` name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this binary runs on, in Go's GOOS/GOARCH terms as registries use them.
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "x86" => ("386", None),
            "arm" => ("arm", Some("v7")),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    pub fn parse(input: &str) -> Result<Platform, ModelError> {
        let parts: Vec<&str> = input.split('/').collect();
        let bad = || ModelError::Platform {
            input: input.to_string(),
        };
        let valid = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| valid(p)) {
            return Err(bad());
        }
        let architecture = match parts[1] {
            "x86_64" | "x86-64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        Ok(Platform {
            os: parts[0].to_string(),
            architecture: architecture.to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }

    /// Whether an index entry's platform satisfies this one. A missing variant on either side
    /// matches, except that arm64's implicit variant is v8, as containerd's matcher treats it.
    pub fn matches(&self, other: &oci_spec::image::Platform) -> bool {
        if self.os != other.os().to_string()
            || self.architecture != other.architecture().to_string()
        {
            return false;
        }
        let norm = |v: Option<&str>| -> Option<String> {
            match (self.architecture.as_str(), v) {
                ("arm64", None) => Some("v8".to_string()),
                (_, v) => v.map(str::to_string),
            }
        };
        match (
            norm(self.variant.as_deref()),
            norm(other.variant().as_deref()),
        ) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    fn manifest(media_type: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{media_type}","config":{{"mediaType":"{}","digest":"{D}","size":2}},"layers":[]}}"#,
            mt::OCI_CONFIG
        )
    }

    #[test]
    fn reads_oci_and_docker_manifests_and_indexes() {
        for m in [mt::OCI_MANIFEST, mt::DOCKER_MANIFEST] {
            assert!(matches!(
                Document::parse(manifest(m).as_bytes(), Some(m)),
                Ok(Document::Manifest(_))
            ));
        }
        for m in [mt::OCI_INDEX, mt::DOCKER_MANIFEST_LIST] {
            let doc = format!(
                r#"{{"schemaVersion":2,"mediaType":"{m}","manifests":[{{"mediaType":"{}","digest":"{D}","size":2,"platform":{{"os":"linux","architecture":"arm64"}}}}]}}"#,
                mt::OCI_MANIFEST
            );
            assert!(matches!(
                Document::parse(doc.as_bytes(), None),
                Ok(Document::Index(_))
            ));
        }
        // No mediaType at all: classified by shape.
        let bare = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{}","digest":"{D}","size":2}},"layers":[]}}"#,
            mt::OCI_CONFIG
        );
        assert!(matches!(
            Document::parse(bare.as_bytes(), None),
            Ok(Document::Manifest(_))
        ));
    }

    #[test]
    fn reads_artifact_manifests() {
        // An artifact: empty config, artifactType, inline data, and a subject it refers to.
        let doc = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","artifactType":"application/vnd.example.sbom","config":{{"mediaType":"{}","digest":"{D}","size":2,"data":"e30="}},"layers":[{{"mediaType":"application/json","digest":"{D}","size":2}}],"subject":{{"mediaType":"{}","digest":"{D}","size":2}}}}"#,
            mt::OCI_MANIFEST,
            mt::OCI_EMPTY,
            mt::OCI_MANIFEST
        );
        let Ok(Document::Manifest(m)) = Document::parse(doc.as_bytes(), None) else {
            panic!("artifact manifest not read");
        };
        assert_eq!(
            m.artifact_type().as_ref().map(|t| t.to_string()).as_deref(),
            Some("application/vnd.example.sbom")
        );
        assert!(m.subject().is_some());
        // The subject is not owned: only config and layers are children.
        assert_eq!(Document::Manifest(m).children().len(), 2);
    }

    #[test]
    fn refuses_schema1_and_garbage_with_clear_errors() {
        let s1 = r#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        let err = Document::parse(s1.as_bytes(), None)
            .expect_err("schema1")
            .to_string();
        assert!(err.contains("schema 1"), "{err}");
        let err = Document::parse(b"{}", Some(mt::DOCKER_SCHEMA1_SIGNED))
            .expect_err("s1")
            .to_string();
        assert!(err.contains("schema 1"), "{err}");
        let cases: [(&[u8], &str); 6] = [
            (b"not json", "not valid JSON"),
            (b"[1,2]", "not a JSON object"),
            (br#"{"schemaVersion":3}"#, "schemaVersion 3"),
            (br#"{"schemaVersion":2}"#, "cannot tell"),
            (br#"{"schemaVersion":2,"mediaType":"text/plain"}"#, "unsupported manifest media type"),
            (br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}"#, "invalid image manifest"),
        ];
        for (input, want) in cases {
            let err = Document::parse(input, None).expect_err(want).to_string();
            assert!(err.contains(want), "{err} lacks {want}");
        }
        let err = Document::parse(manifest(mt::OCI_MANIFEST).as_bytes(), Some(mt::OCI_INDEX))
            .expect_err("mismatch")
            .to_string();
        assert!(err.contains("served as"), "{err}");
        let bad_digest = manifest(mt::OCI_MANIFEST).replace(D, "sha384:00");
        assert!(Document::parse(bad_digest.as_bytes(), None).is_err());
    }

    #[test]
    fn layer_compression_from_media_type_and_magic() {
        assert_eq!(
            Compression::of_layer_media_type(mt::OCI_LAYER_GZIP),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::of_layer_media_type(mt::DOCKER_LAYER_GZIP),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::of_layer_media_type(mt::OCI_LAYER_ZSTD),
            Some(Compression::Zstd)
        );
        assert_eq!(
            Compression::of_layer_media_type(mt::OCI_LAYER),
            Some(Compression::None)
        );
        assert_eq!(Compression::of_layer_media_type("text/plain"), None);
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(Compression::sniff(b"ustar"), Compression::None);
    }

    #[test]
    fn platforms_parse_and_match() {
        let p = Platform::parse("linux/arm64/v8").expect("valid");
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert_eq!(
            Platform::parse("linux/x86_64").expect("valid").architecture,
            "amd64"
        );
        for bad in [
            "linux",
            "linux/",
            "/amd64",
            "linux/amd64/v8/x",
            "Linux/amd64",
        ] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
        let entry: oci_spec::image::Platform =
            serde_json::from_str(r#"{"os":"linux","architecture":"arm64"}"#).expect("json");
        assert!(p.matches(&entry));
        assert!(Platform::parse("linux/arm64")
            .expect("valid")
            .matches(&entry));
        assert!(!Platform::parse("linux/amd64")
            .expect("valid")
            .matches(&entry));
        let v7: oci_spec::image::Platform =
            serde_json::from_str(r#"{"os":"linux","architecture":"arm","variant":"v7"}"#)
                .expect("json");
        assert!(!Platform::parse("linux/arm/v6").expect("valid").matches(&v7));
    }
}
