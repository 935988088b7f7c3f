//! `kiln image import-rootfs`: a one-layer image from a root-filesystem tarball — the offline
//! way to a base image (busybox-static, a debootstrap tree).

use std::io::{self, Read, Write};
use std::path::Path;

use flate2::write::GzEncoder;

use super::{Imported, TransferError};
use crate::digest::{Algorithm, Digest, HashingWriter};
use crate::model::{media_types as mt, Platform};
use crate::reference::Reference;
use crate::store::{Expected, ImageStore, Target};

#[derive(Debug, Clone)]
pub struct RootfsOptions {
    pub platform: Platform,
    /// Image creation time in Unix seconds (from `SOURCE_DATE_EPOCH` for reproducible images).
    pub created: i64,
    /// `Cmd` for the image config, e.g. `["sh"]`.
    pub cmd: Option<Vec<String>>,
    /// Extra `KEY=VALUE` environment, after the default `PATH`.
    pub env: Vec<String>,
}

/// Tees everything read through it into a writer, so the tarball is validated by `tar` and
/// compressed into the store in the same single pass.
struct TeeReader<R, W> {
    inner: R,
    sink: W,
}

impl<R: Read, W: Write> Read for TeeReader<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sink.write_all(&buf[..n])?;
        Ok(n)
    }
}

pub fn import_rootfs(
    store: &ImageStore,
    path: &Path,
    input: impl Read,
    name: &Reference,
    options: &RootfsOptions,
) -> Result<Imported, TransferError> {
    let name = name.store_key();
    if name.digest().is_some() {
        return Err(TransferError::Archive {
            path: path.to_path_buf(),
            why: format!("cannot name a new image by digest ({name}); give a name or name:tag"),
        });
    }
    let _lease = store.lease()?;
    let tar_stream = super::decompressed(path, input)?;

    // uncompressed tar -> diff_id hasher -> gzip -> blob writer (digest of the compressed layer)
    let blob = store.blobs().writer(Expected::default())?;
    let gzip = GzEncoder::new(blob, flate2::Compression::new(6));
    let diff = HashingWriter::new(gzip, Algorithm::Sha256);
    let mut tee = TeeReader {
        inner: tar_stream,
        sink: diff,
    };
    let tar_err = |source| super::tar_error(path, source);
    let mut entries = 0usize;
    {
        let mut archive = tar::Archive::new(&mut tee);
        for entry in archive.entries().map_err(tar_err)? {
            let mut entry = entry.map_err(tar_err)?;
            entry.path().map_err(tar_err)?;
            io::copy(&mut entry, &mut io::sink()).map_err(tar_err)?;
            entries += 1;
        }
    }
    if entries == 0 {
        return Err(TransferError::Archive {
            path: path.to_path_buf(),
            why: "the tarball holds no files".into(),
        });
    }
    // The end-of-archive blocks and any padding belong to the layer too.
    io::copy(&mut tee, &mut io::sink()).map_err(tar_err)?;
    let (gzip, diff_id, _) = tee.sink.finish();
    let blob = gzip.finish().map_err(|e| TransferError::io(path, e))?;
    let layer = blob.finish()?;

    let created = crate::model::rfc3339(options.created);
    let mut env =
        vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()];
    env.extend(options.env.iter().cloned());
    let mut container_config = serde_json::json!({ "Env": env });
    if let Some(cmd) = &options.cmd {
        container_config["Cmd"] = serde_json::json!(cmd);
    }
    let mut config = serde_json::json!({
        "created": created,
        "architecture": options.platform.architecture,
        "os": options.platform.os,
        "config": container_config,
        "rootfs": { "type": "layers", "diff_ids": [diff_id.to_string()] },
        "history": [{ "created": created, "created_by": format!("kiln image import-rootfs {}", file_name(path)) }],
    });
    if let Some(v) = &options.platform.variant {
        config["variant"] = serde_json::json!(v);
    }
    let config_bytes = to_json(path, &config)?;
    let config_digest = Digest::sha256_of(&config_bytes);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": mt::OCI_MANIFEST,
        "config": { "mediaType": mt::OCI_CONFIG, "digest": config_digest.to_string(), "size": config_bytes.len() },
        "layers": [{ "mediaType": mt::OCI_LAYER_GZIP, "digest": layer.digest().to_string(), "size": layer.size() }],
    });
    let manifest_bytes = to_json(path, &manifest)?;

    layer.commit()?;
    store
        .blobs()
        .put_bytes(&config_bytes, Expected::digest(config_digest, None))?;
    let manifest_digest = store
        .blobs()
        .put_bytes(&manifest_bytes, Expected::default())?;
    let target = Target {
        digest: manifest_digest,
        media_type: mt::OCI_MANIFEST.to_string(),
        size: manifest_bytes.len() as u64,
    };
    store.refs().set(&name, &target)?;
    Ok(Imported {
        name: Some(name),
        target,
    })
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "-".to_string())
}

fn to_json(path: &Path, value: &serde_json::Value) -> Result<Vec<u8>, TransferError> {
    serde_json::to_vec(value).map_err(|e| TransferError::Archive {
        path: path.to_path_buf(),
        why: e.to_string(),
    })
}
