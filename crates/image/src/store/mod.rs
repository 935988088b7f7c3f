//! kiln's local image store: content-addressed blobs plus a table of names.
//!
//! Layout under the root (`$KILN_ROOT`, `/var/lib/kiln` for root, else the XDG data dir):
//!
//! ```text
//! blobs/sha256/<hex>   committed blobs, immutable, shared by every image that uses them
//! ingest/              blobs being written (each locked by its writer)
//! refs.db              SQLite: name -> manifest/index descriptor
//! gc.lock              writers hold it shared; prune holds it exclusive
//! ```

pub mod blobs;
pub mod direct;
pub mod refs;

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::image::{ImageConfiguration, ImageManifest};

use crate::digest::Digest;
use crate::model::{self, Document, ModelError, Platform, MAX_DOCUMENT_SIZE};
use crate::reference::{is_hex_identifier, Reference, ReferenceError};

pub use blobs::{BlobStore, BlobWriter, Expected, PendingBlob};
pub use refs::{RefEntry, RefTable, Target};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading input: {0}")]
    Read(#[source] io::Error),
    #[error("reference table {path}: {source}")]
    RefsOpen {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("reference table: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("reference table holds an unusable entry {name:?}: {why}")]
    CorruptRef { name: String, why: String },
    #[error("digest mismatch: expected {expected}, got {actual}; nothing was stored")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error(
        "size mismatch for {digest}: expected {expected} bytes, got {actual}; nothing was stored"
    )]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("blob {0} is not in the store")]
    BlobNotFound(Digest),
    #[error(
        "blob {digest} is {size} bytes, more than the {limit}-byte limit for this kind of document"
    )]
    TooLarge {
        digest: Digest,
        size: u64,
        limit: u64,
    },
    #[error("no such image: {0}")]
    ImageNotFound(String),
    #[error("{input:?} matches several images ({matches}); use more characters or a full name")]
    Ambiguous { input: String, matches: String },
    #[error("image {digest} has no manifest for platform {platform} (available: {available})")]
    NoPlatform {
        digest: Digest,
        platform: String,
        available: String,
    },
    #[error("{digest}: {source}")]
    Model {
        digest: Digest,
        #[source]
        source: ModelError,
    },
    #[error(transparent)]
    Reference(#[from] ReferenceError),
}

impl StoreError {
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> StoreError {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn refs(path: &Path, source: rusqlite::Error) -> StoreError {
        StoreError::RefsOpen {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The store's root when neither a flag nor `$KILN_ROOT` names one.
pub fn default_root() -> PathBuf {
    if let Some(root) = std::env::var_os("KILN_ROOT").filter(|r| !r.is_empty()) {
        return PathBuf::from(root);
    }
    if is_root_user() {
        return PathBuf::from("/var/lib/kiln");
    }
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(data).join("kiln");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/kiln"),
        None => PathBuf::from(".kiln"),
    }
}

fn is_root_user() -> bool {
    // The owner of /proc/self is the effective user; no libc call needed for this one fact.
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

pub struct ImageStore {
    root: PathBuf,
    blobs: BlobStore,
    refs: RefTable,
}

/// Held while blobs are written and names set, so that `prune` never deletes a blob that
/// a writer has committed but not yet referenced.
pub struct Lease {
    _file: File,
}

/// One image as a platform sees it: a name's target resolved down to a single manifest.
#[derive(Debug, Clone)]
pub struct Image {
    /// What the name points at (a manifest or an index).
    pub target: Target,
    pub manifest_digest: Digest,
    pub manifest: ImageManifest,
    /// The image ID, as docker reports it.
    pub config_digest: Digest,
    pub config_raw: Vec<u8>,
    pub config: ImageConfiguration,
}

impl Image {
    /// Bytes of the config and every layer blob: what the image occupies in the store.
    pub fn content_size(&self) -> u64 {
        self.manifest.config().size() + self.manifest.layers().iter().map(|l| l.size()).sum::<u64>()
    }
}

/// What a user's argument named.
#[derive(Debug, Clone)]
pub struct Found {
    /// The name it was found under, when it was found by name.
    pub name: Option<Reference>,
    pub target: Target,
}

#[derive(Debug, Default)]
pub struct PruneReport {
    pub removed: Vec<Digest>,
    pub bytes: u64,
    pub abandoned_ingests: usize,
}

impl ImageStore {
    pub fn open(root: &Path) -> Result<ImageStore, StoreError> {
        fs::create_dir_all(root).map_err(|e| StoreError::io(root, e))?;
        let blobs = BlobStore::open(root)?;
        let refs = RefTable::open(&root.join("refs.db"))?;
        Ok(ImageStore {
            root: root.to_path_buf(),
            blobs,
            refs,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    pub fn refs(&self) -> &RefTable {
        &self.refs
    }

    fn gc_lock_file(&self) -> Result<File, StoreError> {
        let path = self.root.join("gc.lock");
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))
    }

    /// Takes a writer's lease (shared; blocks only while a prune runs).
    pub fn lease(&self) -> Result<Lease, StoreError> {
        let file = self.gc_lock_file()?;
        file.lock_shared()
            .map_err(|e| StoreError::io(self.root.join("gc.lock"), e))?;
        Ok(Lease { _file: file })
    }

    /// Reads and parses a manifest or index blob.
    pub fn read_document(
        &self,
        digest: &Digest,
        media_type: Option<&str>,
    ) -> Result<Document, StoreError> {
        let bytes = self.blobs.read_small(digest, MAX_DOCUMENT_SIZE)?;
        Document::parse(&bytes, media_type).map_err(|source| StoreError::Model {
            digest: digest.clone(),
            source,
        })
    }

    /// Resolves a target to the image for `platform` (an index picks its matching entry).
    pub fn image(&self, target: &Target, platform: &Platform) -> Result<Image, StoreError> {
        let mut digest = target.digest.clone();
        let mut media_type = target.media_type.clone();
        // Nested indexes are legal; a depth bound keeps a hostile cycle from looping forever.
        for _ in 0..8 {
            match self.read_document(&digest, Some(&media_type))? {
                Document::Manifest(manifest) => {
                    let config_digest =
                        model::descriptor_digest(manifest.config()).map_err(|source| {
                            StoreError::Model {
                                digest: digest.clone(),
                                source,
                            }
                        })?;
                    let config_raw = self.blobs.read_small(&config_digest, MAX_DOCUMENT_SIZE)?;
                    let config =
                        model::parse_config(&config_raw).map_err(|source| StoreError::Model {
                            digest: config_digest.clone(),
                            source,
                        })?;
                    return Ok(Image {
                        target: target.clone(),
                        manifest_digest: digest,
                        manifest: *manifest,
                        config_digest,
                        config_raw,
                        config,
                    });
                }
                Document::Index(index) => {
                    let chosen = index.manifests().iter().find(|d| {
                        d.platform().as_ref().is_some_and(|p| platform.matches(p))
                            && self.blobs.contains(
                                &model::descriptor_digest(d).unwrap_or_else(|_| digest.clone()),
                            )
                    });
                    let Some(chosen) = chosen else {
                        let available: Vec<String> = index
                            .manifests()
                            .iter()
                            .filter_map(|d| d.platform().as_ref())
                            .map(|p| {
                                let mut s = format!("{}/{}", p.os(), p.architecture());
                                if let Some(v) = p.variant() {
                                    s = format!("{s}/{v}");
                                }
                                s
                            })
                            .collect();
                        return Err(StoreError::NoPlatform {
                            digest,
                            platform: platform.to_string(),
                            available: if available.is_empty() {
                                "none".into()
                            } else {
                                available.join(", ")
                            },
                        });
                    };
                    let next =
                        model::descriptor_digest(chosen).map_err(|source| StoreError::Model {
                            digest: digest.clone(),
                            source,
                        })?;
                    media_type = chosen.media_type().to_string();
                    digest = next;
                }
            }
        }
        Err(StoreError::ImageNotFound(format!(
            "{} (indexes nested too deeply)",
            target.digest
        )))
    }

    /// Finds what a user's argument names, as docker does: a name first, then a digest
    /// (`sha256:...` of a manifest, index or config), then an unambiguous image-ID prefix.
    pub fn find(&self, input: &str) -> Result<Found, StoreError> {
        let by_name = Reference::parse_normalized(input).map(|r| r.store_key());
        if let Ok(name) = &by_name {
            if let Some(entry) = self.refs.get(name)? {
                return Ok(Found {
                    name: Some(entry.name),
                    target: entry.target,
                });
            }
        }
        let hex = input.strip_prefix("sha256:").unwrap_or(input);
        let looks_like_id = !hex.is_empty()
            && hex.len() <= 64
            && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if looks_like_id || Digest::parse(input).is_ok() {
            let mut matches: Vec<Target> = Vec::new();
            for entry in self.refs.list()? {
                let ids = self.ids_of(&entry.target);
                let hit = ids
                    .iter()
                    .any(|d| d.to_string() == input || (looks_like_id && d.hex().starts_with(hex)));
                if hit && !matches.iter().any(|t| t.digest == entry.target.digest) {
                    matches.push(entry.target);
                }
            }
            match matches.len() {
                0 => {}
                1 => {
                    return Ok(Found {
                        name: None,
                        target: matches.remove(0),
                    })
                }
                _ => {
                    let full = is_hex_identifier(hex);
                    if !full {
                        return Err(StoreError::Ambiguous {
                            input: input.to_string(),
                            matches: matches
                                .iter()
                                .map(|t| t.digest.to_string())
                                .collect::<Vec<_>>()
                                .join(", "),
                        });
                    }
                    return Ok(Found {
                        name: None,
                        target: matches.remove(0),
                    });
                }
            }
        }
        match by_name {
            Err(e) if !looks_like_id => Err(e.into()),
            _ => Err(StoreError::ImageNotFound(input.to_string())),
        }
    }

    /// The digests a target can be named by: its own, and its host-platform config (image ID).
    fn ids_of(&self, target: &Target) -> Vec<Digest> {
        let mut ids = vec![target.digest.clone()];
        if let Ok(image) = self.image(target, &Platform::host()) {
            ids.push(image.config_digest);
        }
        ids
    }

    /// Gives `target`'s image another name (`kiln tag`).
    pub fn tag(&self, target: &Target, name: &Reference) -> Result<(), StoreError> {
        self.refs.set(&name.store_key(), target)
    }

    fn pin_path(&self, set: &str, key: &str) -> PathBuf {
        self.root.join("pins").join(set).join(key)
    }

    /// Keeps `target` (and everything it references) from `prune` under `set`/`key`, a name
    /// outside the reference table: a build cache entry, for example. Written whole or not
    /// at all.
    pub fn pin(&self, set: &str, key: &str, target: &Target) -> Result<(), StoreError> {
        let path = self.pin_path(set, key);
        let dir = self.root.join("pins").join(set);
        fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        let body = serde_json::json!({
            "digest": target.digest.to_string(),
            "mediaType": target.media_type,
            "size": target.size,
        });
        let tmp = dir.join(format!(".{key}.{}", std::process::id()));
        fs::write(&tmp, body.to_string()).map_err(|e| StoreError::io(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| StoreError::io(&path, e))
    }

    /// The target pinned under `set`/`key`, if any. A pin that cannot be read counts as
    /// absent: it is a cache, rebuilt on a miss.
    pub fn pinned(&self, set: &str, key: &str) -> Result<Option<Target>, StoreError> {
        let path = self.pin_path(set, key);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        Ok(parse_pin(&bytes))
    }

    /// Removes every pin of `set`; returns how many there were.
    pub fn unpin_all(&self, set: &str) -> Result<usize, StoreError> {
        let dir = self.root.join("pins").join(set);
        let count = match fs::read_dir(&dir) {
            Ok(entries) => entries.count(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(StoreError::io(&dir, e)),
        };
        fs::remove_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        Ok(count)
    }

    /// The targets of every pin, of every set.
    fn pinned_targets(&self) -> Result<Vec<Target>, StoreError> {
        let mut out = Vec::new();
        let root = self.root.join("pins");
        let sets = match fs::read_dir(&root) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(StoreError::io(&root, e)),
        };
        for set in sets.flatten() {
            let Ok(entries) = fs::read_dir(set.path()) else {
                continue;
            };
            for entry in entries.flatten() {
                if let Some(t) = fs::read(entry.path()).ok().and_then(|b| parse_pin(&b)) {
                    out.push(t);
                }
            }
        }
        Ok(out)
    }

    /// Every blob reachable from a name. A missing child of an index is tolerated (a pull of
    /// one platform stores only that one); an unreadable document stops the walk with an error,
    /// because guessing would risk deleting what it references.
    pub fn reachable(&self) -> Result<HashSet<Digest>, StoreError> {
        let mut seen = HashSet::new();
        let mut pending: Vec<(Digest, String)> = self
            .refs
            .list()?
            .into_iter()
            .map(|e| (e.target.digest, e.target.media_type))
            .chain(
                self.pinned_targets()?
                    .into_iter()
                    .map(|t| (t.digest, t.media_type)),
            )
            .collect();
        while let Some((digest, media_type)) = pending.pop() {
            if !seen.insert(digest.clone()) || !self.blobs.contains(&digest) {
                continue;
            }
            if !(model::is_manifest_media_type(&media_type)
                || model::is_index_media_type(&media_type))
            {
                continue;
            }
            let doc = self.read_document(&digest, Some(&media_type))?;
            for child in doc.children() {
                let d = model::descriptor_digest(child).map_err(|source| StoreError::Model {
                    digest: digest.clone(),
                    source,
                })?;
                pending.push((d, child.media_type().to_string()));
            }
        }
        Ok(seen)
    }

    /// Removes every blob no name reaches, and ingest files of writers that died. Waits for
    /// running writers to finish and holds them off meanwhile, so a blob being written or
    /// just written but not yet named is never removed.
    pub fn prune(&self) -> Result<PruneReport, StoreError> {
        let lock = self.gc_lock_file()?;
        lock.lock()
            .map_err(|e| StoreError::io(self.root.join("gc.lock"), e))?;
        self.prune_locked()
    }

    /// Like [`ImageStore::prune`], but gives up at once (returning `None`) when a writer is busy.
    pub fn try_prune(&self) -> Result<Option<PruneReport>, StoreError> {
        let lock = self.gc_lock_file()?;
        match lock.try_lock() {
            Ok(()) => self.prune_locked().map(Some),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(StoreError::io(self.root.join("gc.lock"), e))
            }
        }
    }

    fn prune_locked(&self) -> Result<PruneReport, StoreError> {
        let keep = self.reachable()?;
        let mut report = PruneReport::default();
        let all: BTreeSet<Digest> = self.blobs.list()?.into_iter().collect();
        for digest in all.difference(&keep.into_iter().collect()) {
            report.bytes += self.blobs.size(digest).unwrap_or(0);
            self.blobs.remove(digest)?;
            report.removed.push(digest.clone());
        }
        report.abandoned_ingests = self.blobs.remove_abandoned_ingests()?;
        Ok(report)
    }
}

fn parse_pin(bytes: &[u8]) -> Option<Target> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    Some(Target {
        digest: Digest::parse(v["digest"].as_str()?).ok()?,
        media_type: v["mediaType"].as_str()?.to_string(),
        size: v["size"].as_u64()?,
    })
}
