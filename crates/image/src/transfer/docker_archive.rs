//! `docker save` archives (and OCI archives): `kiln image load`.
//!
//! The archive is read in one pass, since `manifest.json` usually comes last: every regular
//! file is hashed into a pending blob as it streams by, and only the blobs the archive's
//! manifests actually reach are committed, after everything has been checked. A bad archive
//! therefore leaves the store as it was.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Component, Path};

use serde::Deserialize;

use super::{Imported, TransferError, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME};
use crate::digest::Digest;
use crate::model::{self, media_types as mt, Document, MAX_DOCUMENT_SIZE};
use crate::reference::Reference;
use crate::store::{Expected, ImageStore, PendingBlob, Target};

/// One entry of docker's `manifest.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SaveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

struct ArchiveContents {
    /// Path -> pending blob, for every regular file.
    files: HashMap<String, PendingBlob>,
    /// Path -> bytes, for files small enough to be documents.
    small: HashMap<String, Vec<u8>>,
    /// Path -> path, for symlinks and hard links (docker >= 25 links legacy paths to blobs/).
    links: HashMap<String, String>,
}

impl ArchiveContents {
    fn resolve<'a>(&'a self, mut path: &'a str) -> &'a str {
        for _ in 0..16 {
            match self.links.get(path) {
                Some(next) => path = next,
                None => break,
            }
        }
        path
    }

    fn blob(&self, path: &str) -> Option<&PendingBlob> {
        self.files.get(self.resolve(path))
    }

    fn bytes(&self, path: &str) -> Option<&[u8]> {
        self.small.get(self.resolve(path)).map(Vec::as_slice)
    }
}

/// Resolves `path` to a `/`-joined path inside the archive. `..` may climb back out of a
/// directory entered earlier (link targets), never above the archive's root; absolute paths
/// are refused.
fn path_within_archive(path: &Path, allow_parent: bool) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir if allow_parent && !parts.is_empty() => {
                parts.pop();
            }
            _ => return None,
        }
    }
    Some(parts.join("/"))
}

fn escapes(archive: &Path, what: String) -> TransferError {
    TransferError::Archive {
        path: archive.to_path_buf(),
        why: format!("{what} escapes the archive (absolute path or ..)"),
    }
}

fn read_archive(
    store: &ImageStore,
    path: &Path,
    input: impl Read,
) -> Result<ArchiveContents, TransferError> {
    let mut archive = tar::Archive::new(super::decompressed(path, input)?);
    let mut contents = ArchiveContents {
        files: HashMap::new(),
        small: HashMap::new(),
        links: HashMap::new(),
    };
    let tar_err = |source| super::tar_error(path, source);
    for entry in archive.entries().map_err(tar_err)? {
        let mut entry = entry.map_err(tar_err)?;
        let raw_path = entry.path().map_err(tar_err)?.into_owned();
        let member = path_within_archive(&raw_path, false)
            .ok_or_else(|| escapes(path, format!("member {:?}", raw_path.display().to_string())))?;
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(tar_err)?
                .ok_or_else(|| TransferError::Archive {
                    path: path.to_path_buf(),
                    why: format!("link {member:?} has no target"),
                })?
                .into_owned();
            // Symlinks are relative to the member's directory; hard links to the archive root.
            let joined = if kind.is_symlink() {
                Path::new(&member)
                    .parent()
                    .unwrap_or(Path::new(""))
                    .join(&target)
            } else {
                target.clone()
            };
            let resolved = path_within_archive(&joined, true).ok_or_else(|| {
                escapes(
                    path,
                    format!("link {member:?} -> {:?}", target.display().to_string()),
                )
            })?;
            contents.links.insert(member, resolved);
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let size = entry.size();
        let mut writer = store.blobs().writer(Expected::default())?;
        let mut small = (size <= MAX_DOCUMENT_SIZE).then(|| Vec::with_capacity(size as usize));
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = entry.read(&mut buf).map_err(tar_err)?;
            if n == 0 {
                break;
            }
            std::io::Write::write_all(&mut writer, &buf[..n])
                .map_err(|e| TransferError::io(path, e))?;
            if let Some(s) = small.as_mut() {
                s.extend_from_slice(&buf[..n]);
            }
        }
        contents.files.insert(member.clone(), writer.finish()?);
        if let Some(s) = small {
            contents.small.insert(member, s);
        }
    }
    Ok(contents)
}

/// Loads every image in a `docker save` (or OCI) archive. Images the archive names are
/// tagged; untagged ones are stored and reported without a name.
pub fn load_docker_archive(
    store: &ImageStore,
    path: &Path,
    input: impl Read,
) -> Result<Vec<Imported>, TransferError> {
    let _lease = store.lease()?;
    let contents = read_archive(store, path, input)?;
    let save_entries: Option<Vec<SaveEntry>> = match contents.bytes("manifest.json") {
        Some(bytes) => Some(
            serde_json::from_slice(bytes).map_err(|e| TransferError::Archive {
                path: path.to_path_buf(),
                why: format!("manifest.json is invalid: {e}"),
            })?,
        ),
        None => None,
    };
    let has_layout =
        contents.bytes("oci-layout").is_some() && contents.bytes("index.json").is_some();
    let mut imported = Vec::new();
    let mut commit: Vec<&PendingBlob> = Vec::new();
    let mut extra_docs: Vec<Vec<u8>> = Vec::new();

    if has_layout {
        // Keep the archive's own manifests (and so their digests); docker's manifest.json,
        // when present, only supplies names, matched by config digest.
        let mut names_by_config: HashMap<Digest, Vec<Reference>> = HashMap::new();
        for e in save_entries.iter().flatten() {
            let Some(config) = contents.blob(&e.config) else {
                continue;
            };
            for tag in e.repo_tags.iter().flatten() {
                let r = parse_name(tag, "manifest.json RepoTags")?;
                names_by_config
                    .entry(config.digest().clone())
                    .or_default()
                    .push(r);
            }
        }
        let index_bytes = contents.bytes("index.json").unwrap_or_default();
        let Document::Index(index) =
            Document::parse(index_bytes, None).map_err(|source| TransferError::Document {
                path: path.join("index.json"),
                what: "index.json".into(),
                source,
            })?
        else {
            return Err(TransferError::Archive {
                path: path.to_path_buf(),
                why: "index.json is not an index".into(),
            });
        };
        for d in index.manifests() {
            let digest = model::descriptor_digest(d).map_err(|source| TransferError::Document {
                path: path.join("index.json"),
                what: "an index entry".into(),
                source,
            })?;
            let mut names = Vec::new();
            let annotations = d.annotations().clone().unwrap_or_default();
            if let Some(n) = annotations.get(ANNOTATION_IMAGE_NAME) {
                names.push(parse_name(n, ANNOTATION_IMAGE_NAME)?);
            } else if let Some(n) = annotations
                .get(ANNOTATION_REF_NAME)
                .filter(|n| n.contains(['/', ':']))
            {
                names.push(parse_name(n, ANNOTATION_REF_NAME)?);
            }
            let config = collect_tree(
                &contents,
                path,
                &digest,
                d.media_type().as_ref(),
                d.size(),
                &mut commit,
                0,
            )?;
            if let Some(config) = config {
                for n in names_by_config.get(&config).into_iter().flatten() {
                    if !names.contains(n) {
                        names.push(n.clone());
                    }
                }
            }
            let target = Target {
                digest,
                media_type: d.media_type().to_string(),
                size: d.size(),
            };
            imported.push(Loaded { names, target });
        }
    } else if let Some(entries) = &save_entries {
        for e in entries {
            let manifest = legacy_manifest(&contents, path, e, &mut commit)?;
            let digest = Digest::sha256_of(&manifest);
            let target = Target {
                digest,
                media_type: mt::OCI_MANIFEST.to_string(),
                size: manifest.len() as u64,
            };
            let mut names = Vec::new();
            for tag in e.repo_tags.iter().flatten() {
                names.push(parse_name(tag, "manifest.json RepoTags")?);
            }
            extra_docs.push(manifest);
            imported.push(Loaded { names, target });
        }
    } else {
        return Err(TransferError::Archive {
            path: path.to_path_buf(),
            why: "neither a docker save archive (no manifest.json) nor an OCI archive (no oci-layout and index.json)".into(),
        });
    }

    // Everything checked: publish blobs, then the manifests built here, then the names.
    let wanted: std::collections::HashSet<Digest> =
        commit.iter().map(|b| b.digest().clone()).collect();
    drop(commit);
    for (_, blob) in contents.files {
        if wanted.contains(blob.digest()) {
            blob.commit()?;
        }
    }
    for doc in &extra_docs {
        store.blobs().put_bytes(doc, Expected::default())?;
    }
    for i in &imported {
        for n in &i.names {
            store.refs().set(n, &i.target)?;
        }
    }
    Ok(imported
        .into_iter()
        .flat_map(Loaded::into_imported)
        .collect())
}

struct Loaded {
    names: Vec<Reference>,
    target: Target,
}

impl Loaded {
    fn into_imported(self) -> Vec<Imported> {
        if self.names.is_empty() {
            return vec![Imported {
                name: None,
                target: self.target,
            }];
        }
        let target = self.target;
        self.names
            .into_iter()
            .map(|n| Imported {
                name: Some(n),
                target: target.clone(),
            })
            .collect()
    }
}

fn parse_name(s: &str, what: &str) -> Result<Reference, TransferError> {
    Reference::parse_normalized(s)
        .map(|r| r.store_key())
        .map_err(|source| TransferError::Name {
            what: what.to_string(),
            source,
        })
}

fn missing(path: &Path, what: String) -> TransferError {
    TransferError::Archive {
        path: path.to_path_buf(),
        why: format!("{what} is missing from the archive"),
    }
}

/// Checks an OCI-style tree inside the archive (blobs/<alg>/<hex>) and lists what to commit.
/// Returns the config digest when `digest` is an image manifest.
fn collect_tree<'a>(
    contents: &'a ArchiveContents,
    path: &Path,
    digest: &Digest,
    media_type: &str,
    size: u64,
    commit: &mut Vec<&'a PendingBlob>,
    depth: usize,
) -> Result<Option<Digest>, TransferError> {
    let member = format!("blobs/{}/{}", digest.algorithm(), digest.hex());
    let blob = contents
        .blob(&member)
        .ok_or_else(|| missing(path, format!("blob {digest}")))?;
    if blob.digest() != digest || blob.size() != size {
        return Err(crate::store::StoreError::DigestMismatch {
            expected: digest.clone(),
            actual: blob.digest().clone(),
        }
        .into());
    }
    commit.push(blob);
    if !(model::is_manifest_media_type(media_type) || model::is_index_media_type(media_type))
        || depth > 8
    {
        return Ok(None);
    }
    let bytes = contents
        .bytes(&member)
        .ok_or_else(|| missing(path, format!("manifest {digest}")))?;
    let doc =
        Document::parse(bytes, Some(media_type)).map_err(|source| TransferError::Document {
            path: path.join(&member),
            what: format!("{media_type} {digest}"),
            source,
        })?;
    for child in doc.children() {
        let d = model::descriptor_digest(child).map_err(|source| TransferError::Document {
            path: path.join(&member),
            what: "a descriptor".into(),
            source,
        })?;
        collect_tree(
            contents,
            path,
            &d,
            child.media_type().as_ref(),
            child.size(),
            commit,
            depth + 1,
        )?;
    }
    Ok(match doc {
        Document::Manifest(m) => model::descriptor_digest(m.config()).ok(),
        Document::Index(_) => None,
    })
}

/// Builds an OCI manifest for a legacy `docker save` entry: uncompressed layers whose digests
/// must equal the config's diff IDs (they are the same bytes).
fn legacy_manifest<'a>(
    contents: &'a ArchiveContents,
    path: &Path,
    entry: &SaveEntry,
    commit: &mut Vec<&'a PendingBlob>,
) -> Result<Vec<u8>, TransferError> {
    let config_blob = contents
        .blob(&entry.config)
        .ok_or_else(|| missing(path, format!("config {:?}", entry.config)))?;
    let config_bytes = contents
        .bytes(&entry.config)
        .ok_or_else(|| missing(path, format!("config {:?}", entry.config)))?;
    let config = model::parse_config(config_bytes).map_err(|source| TransferError::Document {
        path: path.join(&entry.config),
        what: "image config".into(),
        source,
    })?;
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != entry.layers.len() {
        return Err(TransferError::Archive {
            path: path.to_path_buf(),
            why: format!(
                "config {} lists {} layers but manifest.json lists {}",
                entry.config,
                diff_ids.len(),
                entry.layers.len()
            ),
        });
    }
    commit.push(config_blob);
    let mut layers = Vec::new();
    for (i, (layer_path, diff_id)) in entry.layers.iter().zip(diff_ids).enumerate() {
        let blob = contents
            .blob(layer_path)
            .ok_or_else(|| missing(path, format!("layer {layer_path:?}")))?;
        if blob.digest().to_string() != *diff_id {
            return Err(TransferError::Archive {
                path: path.to_path_buf(),
                why: format!(
                    "layer {i} ({layer_path}) has digest {} but the config's diff_id is {diff_id}",
                    blob.digest()
                ),
            });
        }
        commit.push(blob);
        layers.push(serde_json::json!({"mediaType": mt::OCI_LAYER, "digest": blob.digest().to_string(), "size": blob.size()}));
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": mt::OCI_MANIFEST,
        "config": {"mediaType": mt::OCI_CONFIG, "digest": config_blob.digest().to_string(), "size": config_blob.size()},
        "layers": layers,
    });
    let bytes = serde_json::to_vec(&manifest).map_err(|e| TransferError::Archive {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    Ok(bytes)
}
