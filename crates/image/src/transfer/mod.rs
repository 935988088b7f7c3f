//! Moving images between the store and files: OCI image layouts (import and export),
//! `docker save` archives (load) and root-filesystem tarballs (import-rootfs).
//!
//! Every path into the store goes through [`crate::store::BlobWriter`], so every byte is
//! verified against its digest before it becomes visible, and names are set only after all
//! the blobs they reach are committed.

pub mod docker_archive;
pub mod layout;
pub mod rootfs;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::model::{Compression, ModelError};
use crate::reference::{Reference, ReferenceError};
use crate::store::{StoreError, Target};

pub use docker_archive::load_docker_archive;
pub use layout::{export_layout, import_layout, LayoutTarget};
pub use rootfs::{import_rootfs, RootfsOptions};

/// Annotation naming an index entry inside an OCI layout (usually a tag).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's annotation carrying the full image name in a layout.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an OCI image layout: {why}")]
    NotLayout { path: PathBuf, why: String },
    #[error("{path}: {what} is invalid: {source}")]
    Document {
        path: PathBuf,
        what: String,
        #[source]
        source: ModelError,
    },
    #[error("{path}: blob {digest} is missing (needed by {needed_by})")]
    MissingBlob {
        path: PathBuf,
        digest: Digest,
        needed_by: String,
    },
    #[error("{path}: no entry named {wanted:?} (entries: {available})")]
    NoSuchEntry {
        path: PathBuf,
        wanted: String,
        available: String,
    },
    #[error("{path}: {entries} images would get the same name {name}; import them one at a time (oci:DIR:REF)")]
    NameForMany {
        path: PathBuf,
        entries: usize,
        name: String,
    },
    #[error("{path}: image {digest} has no name ({hint}); give one with --name")]
    Unnamed {
        path: PathBuf,
        digest: Digest,
        hint: String,
    },
    #[error("invalid image name in {what}: {source}")]
    Name {
        what: String,
        #[source]
        source: ReferenceError,
    },
    #[error("{path}: {why}")]
    Archive { path: PathBuf, why: String },
    #[error("{path}: not a valid tar archive: {source}")]
    Tar {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl TransferError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> TransferError {
        TransferError::Io {
            path: path.into(),
            source,
        }
    }
}

/// A tar stream, whatever compression (gzip, zstd or none) its first bytes announce.
pub fn decompressed<'a>(
    path: &Path,
    input: impl Read + 'a,
) -> Result<Box<dyn Read + 'a>, TransferError> {
    let mut buffered = BufReader::with_capacity(1 << 20, input);
    let head = buffered
        .fill_buf()
        .map_err(|e| TransferError::io(path, e))?
        .to_vec();
    Ok(match Compression::sniff(&head) {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(buffered)),
        Compression::Zstd => {
            Box::new(zstd::Decoder::with_buffer(buffered).map_err(|e| TransferError::io(path, e))?)
        }
        Compression::None => Box::new(buffered),
    })
}

/// A tar-level failure. The `tar` crate quotes raw header bytes in some messages; only a
/// short first line is kept, so garbage input gives a readable error.
pub(crate) fn tar_error(path: &Path, source: std::io::Error) -> TransferError {
    let message = source.to_string();
    let first: String = message
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(100)
        .collect();
    TransferError::Tar {
        path: path.to_path_buf(),
        source: std::io::Error::new(source.kind(), first),
    }
}

/// One image that arrived in the store, and the name it was given (if any).
#[derive(Debug, Clone)]
pub struct Imported {
    pub name: Option<Reference>,
    pub target: Target,
}
