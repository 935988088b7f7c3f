//! OCI image layouts (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`), as skopeo's `oci:`
//! transport reads and writes them.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex};

use super::{Imported, TransferError, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME};
use crate::digest::Digest;
use crate::model::{self, media_types as mt, Document, MAX_DOCUMENT_SIZE};
use crate::reference::Reference;
use crate::store::{Expected, ImageStore, PendingBlob, StoreError, Target};

const LAYOUT_FILE: &str = "oci-layout";
const INDEX_FILE: &str = "index.json";
const LAYOUT_VERSION: &str = "1.0.0";

/// `oci:DIR[:REF]`: a layout directory and, optionally, the `ref.name` of one entry in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutTarget {
    pub dir: PathBuf,
    pub ref_name: Option<String>,
}

impl LayoutTarget {
    /// Parses `oci:DIR[:REF]` (the `oci:` prefix is optional). As in skopeo, the reference is
    /// whatever follows the first `:` after the directory.
    pub fn parse(input: &str) -> LayoutTarget {
        let rest = input.strip_prefix("oci:").unwrap_or(input);
        match rest.split_once(':') {
            Some((dir, r)) if !r.is_empty() => LayoutTarget {
                dir: PathBuf::from(dir),
                ref_name: Some(r.to_string()),
            },
            Some((dir, _)) => LayoutTarget {
                dir: PathBuf::from(dir),
                ref_name: None,
            },
            None => LayoutTarget {
                dir: PathBuf::from(rest),
                ref_name: None,
            },
        }
    }
}

fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join("blobs")
        .join(digest.algorithm().name())
        .join(digest.hex())
}

fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, TransferError> {
    let file = File::open(path).map_err(|e| TransferError::io(path, e))?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| TransferError::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(TransferError::Archive {
            path: path.to_path_buf(),
            why: format!("larger than the {limit}-byte limit for this file"),
        });
    }
    Ok(bytes)
}

fn read_index(dir: &Path) -> Result<ImageIndex, TransferError> {
    let layout_path = dir.join(LAYOUT_FILE);
    let layout = match read_limited(&layout_path, 4096) {
        Ok(b) => b,
        Err(TransferError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Err(TransferError::NotLayout {
                path: dir.to_path_buf(),
                why: format!("{LAYOUT_FILE} is missing"),
            })
        }
        Err(e) => return Err(e),
    };
    let version = serde_json::from_slice::<serde_json::Value>(&layout)
        .ok()
        .and_then(|v| v.get("imageLayoutVersion")?.as_str().map(str::to_string));
    match version {
        Some(v) if v.starts_with("1.") => {}
        Some(v) => {
            return Err(TransferError::NotLayout {
                path: dir.to_path_buf(),
                why: format!("unsupported imageLayoutVersion {v:?}"),
            })
        }
        None => {
            return Err(TransferError::NotLayout {
                path: dir.to_path_buf(),
                why: format!("{LAYOUT_FILE} has no imageLayoutVersion"),
            })
        }
    }
    let index_path = dir.join(INDEX_FILE);
    let bytes = read_limited(&index_path, MAX_DOCUMENT_SIZE)?;
    match Document::parse(&bytes, None) {
        Ok(Document::Index(index)) => Ok(*index),
        Ok(Document::Manifest(_)) => Err(TransferError::NotLayout {
            path: dir.to_path_buf(),
            why: format!("{INDEX_FILE} is a manifest, not an index"),
        }),
        Err(source) => Err(TransferError::Document {
            path: index_path,
            what: INDEX_FILE.to_string(),
            source,
        }),
    }
}

fn annotation<'a>(d: &'a Descriptor, key: &str) -> Option<&'a str> {
    d.annotations().as_ref()?.get(key).map(String::as_str)
}

/// The name an entry carries: containerd's full-name annotation, else a `ref.name` that is a
/// whole reference (a bare tag such as `latest` names no repository).
fn entry_name(d: &Descriptor) -> Result<Option<Reference>, TransferError> {
    if let Some(full) = annotation(d, ANNOTATION_IMAGE_NAME) {
        return Reference::parse_normalized(full)
            .map(|r| Some(r.store_key()))
            .map_err(|source| TransferError::Name {
                what: format!("annotation {ANNOTATION_IMAGE_NAME}"),
                source,
            });
    }
    match annotation(d, ANNOTATION_REF_NAME) {
        Some(r) if r.contains(['/', ':', '@']) => Reference::parse_normalized(r)
            .map(|r| Some(r.store_key()))
            .map_err(|source| TransferError::Name {
                what: format!("annotation {ANNOTATION_REF_NAME}"),
                source,
            }),
        _ => Ok(None),
    }
}

/// Imports images from an OCI layout. With `ref_name`, only the entry of that name; without,
/// every entry. `name` overrides the names the layout carries (one entry only).
pub fn import_layout(
    store: &ImageStore,
    source: &LayoutTarget,
    name: Option<&Reference>,
) -> Result<Vec<Imported>, TransferError> {
    let dir = &source.dir;
    let index = read_index(dir)?;
    let entries: Vec<&Descriptor> = match &source.ref_name {
        Some(wanted) => {
            let found: Vec<&Descriptor> = index
                .manifests()
                .iter()
                .filter(|d| annotation(d, ANNOTATION_REF_NAME) == Some(wanted.as_str()))
                .collect();
            if found.is_empty() {
                let available: Vec<&str> = index
                    .manifests()
                    .iter()
                    .filter_map(|d| annotation(d, ANNOTATION_REF_NAME))
                    .collect();
                return Err(TransferError::NoSuchEntry {
                    path: dir.clone(),
                    wanted: wanted.clone(),
                    available: if available.is_empty() {
                        "none named".into()
                    } else {
                        available.join(", ")
                    },
                });
            }
            found
        }
        None => index.manifests().iter().collect(),
    };
    if let (Some(name), true) = (name, entries.len() > 1) {
        return Err(TransferError::NameForMany {
            path: dir.clone(),
            entries: entries.len(),
            name: name.to_string(),
        });
    }
    // Names are settled before any byte is copied, so a bad name changes nothing.
    let mut plan = Vec::new();
    for d in &entries {
        let digest = model::descriptor_digest(d).map_err(|source| TransferError::Document {
            path: dir.join(INDEX_FILE),
            what: "an index entry".into(),
            source,
        })?;
        let entry_name = match name {
            Some(n) => Some(n.store_key()),
            None => entry_name(d)?,
        };
        if entry_name.is_none() {
            let hint = match annotation(d, ANNOTATION_REF_NAME) {
                Some(tag) => format!("its {ANNOTATION_REF_NAME} {tag:?} is only a tag"),
                None => "the layout gives it no name".to_string(),
            };
            return Err(TransferError::Unnamed {
                path: dir.clone(),
                digest,
                hint,
            });
        }
        plan.push((*d, digest, entry_name));
    }

    let _lease = store.lease()?;
    // Everything is verified into pending blobs first and published only when the whole
    // import checked out, so a bad layout leaves the store exactly as it was.
    let mut pending = Pending::default();
    for (d, digest, _) in &plan {
        copy_tree(
            store,
            dir,
            digest,
            d.media_type().as_ref(),
            d.size(),
            "index.json",
            0,
            &mut pending,
        )?;
    }
    for blob in pending.blobs {
        blob.commit()?;
    }
    let mut imported = Vec::new();
    for (d, digest, name) in plan {
        let target = Target {
            digest,
            media_type: d.media_type().to_string(),
            size: d.size(),
        };
        if let Some(n) = &name {
            store.refs().set(n, &target)?;
        }
        imported.push(Imported { name, target });
    }
    Ok(imported)
}

/// Verified blobs waiting to be published, in dependency order (children first).
#[derive(Default)]
struct Pending {
    blobs: Vec<PendingBlob>,
    seen: HashSet<Digest>,
}

/// Copies one blob and, for manifests and indexes, everything it references, children first:
/// a document never enters the store before the blobs it points at.
#[allow(clippy::too_many_arguments)]
fn copy_tree(
    store: &ImageStore,
    dir: &Path,
    digest: &Digest,
    media_type: &str,
    size: u64,
    needed_by: &str,
    depth: usize,
    pending: &mut Pending,
) -> Result<(), TransferError> {
    if pending.seen.contains(digest) {
        return Ok(());
    }
    let path = blob_path(dir, digest);
    if !path.is_file() {
        if store.blobs().contains(digest) && !is_document(media_type) {
            return Ok(());
        }
        return Err(TransferError::MissingBlob {
            path: dir.to_path_buf(),
            digest: digest.clone(),
            needed_by: needed_by.to_string(),
        });
    }
    if is_document(media_type) {
        if depth > 8 {
            return Err(TransferError::Archive {
                path: dir.to_path_buf(),
                why: format!("{digest}: indexes nested more than 8 deep"),
            });
        }
        let bytes = read_limited(&path, MAX_DOCUMENT_SIZE)?;
        // Verify before parsing: never act on bytes that are not what the parent named.
        let actual = Digest::of_bytes(digest.algorithm(), &bytes);
        if &actual != digest {
            return Err(StoreError::DigestMismatch {
                expected: digest.clone(),
                actual,
            }
            .into());
        }
        let doc = Document::parse(&bytes, Some(media_type)).map_err(|source| {
            TransferError::Document {
                path: path.clone(),
                what: format!("{media_type} {digest}"),
                source,
            }
        })?;
        for child in doc.children() {
            let child_digest =
                model::descriptor_digest(child).map_err(|source| TransferError::Document {
                    path: path.clone(),
                    what: format!("a descriptor in {digest}"),
                    source,
                })?;
            copy_tree(
                store,
                dir,
                &child_digest,
                child.media_type().as_ref(),
                child.size(),
                &digest.to_string(),
                depth + 1,
                pending,
            )?;
        }
        let mut w = store
            .blobs()
            .writer(Expected::digest(digest.clone(), Some(size)))?;
        w.write_all(&bytes)
            .map_err(|e| TransferError::io(&path, e))?;
        pending.seen.insert(digest.clone());
        pending.blobs.push(w.finish()?);
        return Ok(());
    }
    pending.seen.insert(digest.clone());
    if store.blobs().contains(digest) {
        return Ok(());
    }
    let mut file = File::open(&path).map_err(|e| TransferError::io(&path, e))?;
    pending.blobs.push(
        store
            .blobs()
            .stage_reader(&mut file, Expected::digest(digest.clone(), Some(size)))?,
    );
    Ok(())
}

fn is_document(media_type: &str) -> bool {
    model::is_manifest_media_type(media_type) || model::is_index_media_type(media_type)
}

/// Writes the image `name` points at into an OCI layout, creating it or adding to it.
/// The entry gets `ref.name` = `ref_name` (default: the tag) and containerd's full-name
/// annotation, so `skopeo copy oci:DIR:REF` and `kiln image import` both find it.
pub fn export_layout(
    store: &ImageStore,
    name: Option<&Reference>,
    target: &Target,
    dest: &LayoutTarget,
) -> Result<(), TransferError> {
    let dir = &dest.dir;
    let index_path = dir.join(INDEX_FILE);
    let mut index: serde_json::Value = if dir.join(LAYOUT_FILE).is_file() {
        read_index(dir)?;
        let bytes = read_limited(&index_path, MAX_DOCUMENT_SIZE)?;
        serde_json::from_slice(&bytes).map_err(|e| TransferError::Archive {
            path: index_path.clone(),
            why: format!("not valid JSON: {e}"),
        })?
    } else {
        if dir.is_dir()
            && fs::read_dir(dir)
                .map_err(|e| TransferError::io(dir, e))?
                .next()
                .is_some()
        {
            return Err(TransferError::NotLayout {
                path: dir.clone(),
                why: "the directory is not empty and has no oci-layout file; refusing to write into it".into(),
            });
        }
        fs::create_dir_all(dir).map_err(|e| TransferError::io(dir, e))?;
        serde_json::json!({"schemaVersion": 2, "mediaType": mt::OCI_INDEX, "manifests": []})
    };

    export_tree(store, dir, &target.digest, &target.media_type, 0)?;

    let ref_name = dest
        .ref_name
        .clone()
        .or_else(|| name.and_then(|n| n.tag().map(str::to_string)));
    let mut annotations = BTreeMap::new();
    if let Some(r) = &ref_name {
        annotations.insert(ANNOTATION_REF_NAME, r.clone());
    }
    if let Some(n) = name {
        annotations.insert(ANNOTATION_IMAGE_NAME, n.to_string());
    }
    let mut entry = serde_json::json!({
        "mediaType": target.media_type,
        "digest": target.digest.to_string(),
        "size": target.size,
    });
    if !annotations.is_empty() {
        entry["annotations"] = serde_json::json!(annotations);
    }
    let manifests = index
        .get_mut("manifests")
        .and_then(|m| m.as_array_mut())
        .ok_or_else(|| TransferError::NotLayout {
            path: dir.clone(),
            why: "index.json has no manifests array".into(),
        })?;
    // One entry per ref.name, as skopeo does: the new image replaces an old one of that name.
    if let Some(r) = &ref_name {
        manifests.retain(|m| {
            m.pointer("/annotations/org.opencontainers.image.ref.name")
                .and_then(|v| v.as_str())
                != Some(r)
        });
    }
    manifests.push(entry);

    let index_bytes = serde_json::to_vec(&index).map_err(|e| TransferError::Archive {
        path: index_path.clone(),
        why: e.to_string(),
    })?;
    write_atomically(
        &dir.join(LAYOUT_FILE),
        format!("{{\"imageLayoutVersion\":\"{LAYOUT_VERSION}\"}}").as_bytes(),
    )?;
    write_atomically(&index_path, &index_bytes)?;
    Ok(())
}

fn export_tree(
    store: &ImageStore,
    dir: &Path,
    digest: &Digest,
    media_type: &str,
    depth: usize,
) -> Result<(), TransferError> {
    if is_document(media_type) && depth <= 8 {
        let doc = store.read_document(digest, Some(media_type))?;
        for child in doc.children() {
            let d = model::descriptor_digest(child).map_err(|source| TransferError::Document {
                path: store.blobs().path(digest),
                what: format!("a descriptor in {digest}"),
                source,
            })?;
            export_tree(store, dir, &d, child.media_type().as_ref(), depth + 1)?;
        }
    }
    let dest = blob_path(dir, digest);
    let size = store.blobs().size(digest)?;
    if fs::metadata(&dest)
        .map(|m| m.len() == size)
        .unwrap_or(false)
    {
        return Ok(());
    }
    let mut src = store.blobs().open_blob(digest)?;
    let parent = dest.parent().unwrap_or(dir);
    fs::create_dir_all(parent).map_err(|e| TransferError::io(parent, e))?;
    let mut tmp =
        tempfile::NamedTempFile::new_in(parent).map_err(|e| TransferError::io(parent, e))?;
    io::copy(&mut src, &mut tmp).map_err(|e| TransferError::io(&dest, e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| TransferError::io(&dest, e))?;
    tmp.persist(&dest)
        .map_err(|e| TransferError::io(&dest, e.error))?;
    Ok(())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), TransferError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let mut tmp =
        tempfile::NamedTempFile::new_in(parent).map_err(|e| TransferError::io(parent, e))?;
    tmp.write_all(bytes)
        .map_err(|e| TransferError::io(path, e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| TransferError::io(path, e))?;
    tmp.persist(path)
        .map_err(|e| TransferError::io(path, e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_oci_targets_like_skopeo() {
        assert_eq!(
            LayoutTarget::parse("oci:/tmp/a:latest"),
            LayoutTarget {
                dir: "/tmp/a".into(),
                ref_name: Some("latest".into())
            }
        );
        assert_eq!(
            LayoutTarget::parse("oci:/tmp/a"),
            LayoutTarget {
                dir: "/tmp/a".into(),
                ref_name: None
            }
        );
        assert_eq!(
            LayoutTarget::parse("oci:dir:localhost:5000/app:v1")
                .ref_name
                .as_deref(),
            Some("localhost:5000/app:v1")
        );
        assert_eq!(LayoutTarget::parse("oci:dir:").ref_name, None);
    }
}
