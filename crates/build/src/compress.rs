//! A step's changes to a compressed layer blob in the store, in one pass: the tar is hashed
//! for the diff ID as it is written, compressed, and hashed again as the blob is stored.
//! gzip is compressed on every core (blocks compressed independently and joined with sync
//! flushes, so the output is one ordinary gzip stream whatever the thread count); zstd
//! uses its own worker threads.

use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use gzp::deflate::Gzip;
use gzp::par::compress::ParCompressBuilder;
use gzp::ZWriter;
use kiln_image::digest::{Algorithm, HashingWriter};
use kiln_image::model::media_types as mt;
use kiln_image::store::blobs::{BlobStore, BlobWriter, Expected, PendingBlob};
use kiln_image::Digest;

use crate::layer::{self, LayerError, Stamp};

/// How layers are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayerCompression {
    #[default]
    Gzip,
    Zstd,
}

impl LayerCompression {
    pub fn parse(text: &str) -> Result<LayerCompression, String> {
        match text {
            "gzip" => Ok(LayerCompression::Gzip),
            "zstd" => Ok(LayerCompression::Zstd),
            other => Err(format!(
                "unknown compression {other:?}: gzip or zstd is expected"
            )),
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            LayerCompression::Gzip => mt::OCI_LAYER_GZIP,
            LayerCompression::Zstd => mt::OCI_LAYER_ZSTD,
        }
    }
}

/// A layer written to the store but not yet committed (see [`PendingBlob::commit`]).
pub struct LayerBlob {
    pub blob: PendingBlob,
    pub diff_id: Digest,
    pub media_type: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error("writing the layer blob: {0}")]
    Store(#[from] kiln_image::StoreError),
    #[error("compressing the layer: {0}")]
    Compress(String),
}

/// Lets the blob writer be handed to a compressor that wants to own its output and still
/// be taken back afterwards.
#[derive(Clone)]
struct Shared(Arc<Mutex<Option<BlobWriter>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut guard = self
            .0
            .lock()
            .map_err(|_| io::Error::other("writer poisoned"))?;
        match guard.as_mut() {
            Some(w) => w.write(buf),
            None => Err(io::Error::other("layer writer already finished")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut guard = self
            .0
            .lock()
            .map_err(|_| io::Error::other("writer poisoned"))?;
        match guard.as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Writes the changes in `dir` as a layer blob.
pub fn write_layer(
    dir: &Path,
    blobs: &BlobStore,
    compression: LayerCompression,
    stamp: Stamp,
) -> Result<LayerBlob, CompressError> {
    let writer = blobs.writer(Expected::default())?;
    let shared = Shared(Arc::new(Mutex::new(Some(writer))));
    let comp = |e: String| CompressError::Compress(e);
    let diff_id = match compression {
        LayerCompression::Gzip => {
            let gzip = ParCompressBuilder::<Gzip>::new()
                .num_threads(threads())
                .map_err(|e| comp(e.to_string()))?
                .compression_level(flate2::Compression::new(6))
                .from_writer(shared.clone());
            let mut hashing = HashingWriter::new(gzip, Algorithm::Sha256);
            layer::write_tar(dir, &mut hashing, stamp)?;
            let (mut gzip, diff_id, _) = hashing.finish();
            gzip.finish().map_err(|e| comp(e.to_string()))?;
            diff_id
        }
        LayerCompression::Zstd => {
            let mut encoder =
                zstd::Encoder::new(shared.clone(), 3).map_err(|e| comp(e.to_string()))?;
            // Worker threads make the output depend on nothing but the input and level.
            encoder
                .multithread(threads() as u32)
                .map_err(|e| comp(e.to_string()))?;
            let mut hashing = HashingWriter::new(encoder, Algorithm::Sha256);
            layer::write_tar(dir, &mut hashing, stamp)?;
            let (encoder, diff_id, _) = hashing.finish();
            encoder.finish().map_err(|e| comp(e.to_string()))?;
            diff_id
        }
    };
    let writer = shared
        .0
        .lock()
        .map_err(|_| comp("writer poisoned".into()))?
        .take()
        .ok_or_else(|| comp("layer writer lost".into()))?;
    Ok(LayerBlob {
        blob: writer.finish()?,
        diff_id,
        media_type: compression.media_type(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(t.path().join("a/b")).expect("mkdir");
        let text: String = (0..200_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(t.path().join("a/b/big.txt"), text).expect("write");
        std::fs::write(t.path().join("small"), b"x").expect("write");
        t
    }

    fn stored(blobs: &BlobStore, layer: LayerBlob) -> (Digest, Vec<u8>) {
        let digest = layer.blob.commit().expect("commit");
        let bytes = std::fs::read(blobs.path(&digest)).expect("read");
        (digest, bytes)
    }

    #[test]
    fn both_compressions_give_the_tar_whose_digest_is_the_diff_id() {
        let src = tree();
        let store = tempfile::tempdir().expect("tempdir");
        let store = kiln_image::ImageStore::open(store.path()).expect("store");
        let blobs = store.blobs();
        let mut plain = Vec::new();
        layer::write_tar(src.path(), &mut plain, Stamp::default()).expect("tar");
        for compression in [LayerCompression::Gzip, LayerCompression::Zstd] {
            let layer =
                write_layer(src.path(), blobs, compression, Stamp::default()).expect("layer");
            let diff_id = layer.diff_id.clone();
            let (_, bytes) = stored(blobs, layer);
            let mut out = Vec::new();
            match compression {
                LayerCompression::Gzip => {
                    // One ordinary gzip stream: a single-member decoder reads it all.
                    flate2::read::GzDecoder::new(&bytes[..])
                        .read_to_end(&mut out)
                        .expect("gunzip");
                }
                LayerCompression::Zstd => {
                    zstd::stream::copy_decode(&bytes[..], &mut out).expect("unzstd");
                }
            }
            assert_eq!(out, plain, "{compression:?}");
            assert_eq!(diff_id, Digest::sha256_of(&plain));
            assert!(bytes.len() < plain.len() / 3, "{compression:?} compresses");
        }
    }

    #[test]
    fn the_same_tree_gives_the_same_blob() {
        let src = tree();
        let store = tempfile::tempdir().expect("tempdir");
        let store = kiln_image::ImageStore::open(store.path()).expect("store");
        let blobs = store.blobs();
        let stamp = Stamp {
            clamp_mtime: Some(0),
        };
        let a = stored(
            blobs,
            write_layer(src.path(), blobs, LayerCompression::Gzip, stamp).expect("a"),
        )
        .0;
        let b = stored(
            blobs,
            write_layer(src.path(), blobs, LayerCompression::Gzip, stamp).expect("b"),
        )
        .0;
        assert_eq!(a, b);
    }
}
