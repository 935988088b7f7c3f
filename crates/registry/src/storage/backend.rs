//! Where blob bytes live. The HTTP layer never touches files: it talks to a [`BlobBackend`],
//! shaped so that an object store (S3 through the `object_store` crate: multipart uploads
//! for sessions, a conditional copy for commit) can implement it as well as a filesystem.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use kiln_image::store::blobs::digests_in;

use super::fs_upload::FsUpload;
use kiln_image::Digest;

/// A blob's bytes in order, as [`BlobBackend::chunks`] hands them out.
pub type BlobChunks = Box<dyn Iterator<Item = io::Result<bytes::Bytes>> + Send>;

/// Bytes per chunk for backends that read through [`BlobBackend::reader`].
const READ_CHUNK: usize = 256 << 10;

/// Chunks of [`READ_CHUNK`] bytes from an ordinary reader.
pub fn read_chunks(mut reader: Box<dyn Read + Send>) -> BlobChunks {
    let mut failed = false;
    Box::new(std::iter::from_fn(move || {
        if failed {
            return None;
        }
        // Filled by the read itself: no zeroing of memory that is overwritten at once.
        let mut buf = Vec::with_capacity(READ_CHUNK);
        match (&mut reader).take(READ_CHUNK as u64).read_to_end(&mut buf) {
            Ok(0) => None,
            Ok(_) => Some(Ok(bytes::Bytes::from(buf))),
            Err(e) => {
                failed = true;
                Some(Err(e))
            }
        }
    }))
}

/// An upload session's bytes as they arrive.
pub trait UploadWriter: Send {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Cuts the upload back to `len` bytes (a chunk that failed half-way).
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// Hands everything written so far to storage, so that it survives this process dying.
    /// Called before a chunk is acknowledged.
    fn flush(&mut self) -> io::Result<()>;
    /// Makes everything written so far durable.
    fn sync(&mut self) -> io::Result<()>;
}

pub trait BlobBackend: Send + Sync + 'static {
    /// Size of a committed blob, if present.
    fn stat(&self, digest: &Digest) -> io::Result<Option<u64>>;
    /// Reads a committed blob from `offset`, at most `len` bytes.
    fn reader(&self, digest: &Digest, offset: u64, len: u64) -> io::Result<Box<dyn Read + Send>>;
    /// A committed blob from `offset`, `len` bytes, as a sequence of buffers for sending.
    /// Iterated on an async worker as the connection drains: each step must be quick (a
    /// local read, or a buffer a remote backend has fetched ahead).
    fn chunks(&self, digest: &Digest, offset: u64, len: u64) -> io::Result<BlobChunks> {
        Ok(read_chunks(self.reader(digest, offset, len)?))
    }

    /// Opens (creating if needed) an upload session for appending at `offset`; bytes past
    /// `offset` (from a chunk that was never acknowledged) are discarded. Fails with
    /// `UnexpectedEof` when storage holds fewer than `offset` bytes (the session is lost).
    fn upload_writer(&self, id: &str, offset: u64) -> io::Result<Box<dyn UploadWriter>>;
    /// Reads an upload session's bytes (to rebuild its hash after a restart).
    fn upload_reader(&self, id: &str) -> io::Result<Box<dyn Read + Send>>;
    /// Publishes an upload as the blob `digest`, atomically. If the blob already exists the
    /// upload is simply discarded (content-addressed: the bytes are the same).
    fn commit_upload(&self, id: &str, digest: &Digest) -> io::Result<()>;
    fn delete_upload(&self, id: &str) -> io::Result<()>;
    /// Upload sessions present in storage, with when each was last written.
    fn list_uploads(&self) -> io::Result<Vec<(String, std::time::SystemTime)>>;
    fn delete_blob(&self, digest: &Digest) -> io::Result<()>;
    /// Every committed blob (for garbage collection of files the database lost track of).
    fn list_blobs(&self) -> io::Result<Vec<Digest>>;
}

/// Blobs as files: `blobs/<alg>/<hex>`, sessions in `uploads/<id>`.
pub struct FsBackend {
    blobs: PathBuf,
    uploads: PathBuf,
}

impl FsBackend {
    pub fn open(root: &Path) -> io::Result<FsBackend> {
        let blobs = root.join("blobs");
        let uploads = root.join("uploads");
        fs::create_dir_all(&blobs)?;
        fs::create_dir_all(&uploads)?;
        Ok(FsBackend { blobs, uploads })
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs
            .join(digest.algorithm().name())
            .join(digest.hex())
    }

    fn upload_path(&self, id: &str) -> io::Result<PathBuf> {
        // Session ids are UUIDs; anything else could be a path trick.
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "invalid upload id",
            ));
        }
        Ok(self.uploads.join(id))
    }
}

impl BlobBackend for FsBackend {
    fn stat(&self, digest: &Digest) -> io::Result<Option<u64>> {
        match fs::metadata(self.blob_path(digest)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn reader(&self, digest: &Digest, offset: u64, len: u64) -> io::Result<Box<dyn Read + Send>> {
        let mut file = File::open(self.blob_path(digest))?;
        if offset > 0 {
            file.seek(SeekFrom::Start(offset))?;
        }
        Ok(Box::new(file.take(len)))
    }

    /// One buffer mapping the file: plain-TCP connections send it from the page cache
    /// without copying (see `zero_copy`).
    fn chunks(&self, digest: &Digest, offset: u64, len: u64) -> io::Result<BlobChunks> {
        let file = File::open(self.blob_path(digest))?;
        if file.metadata()?.len() < offset.saturating_add(len) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "blob is shorter than recorded",
            ));
        }
        match crate::zero_copy::file_bytes(file, offset, len) {
            Ok(bytes) => Ok(Box::new(std::iter::once(Ok(bytes)))),
            // A filesystem that cannot map files: read them.
            Err(_) => Ok(read_chunks(self.reader(digest, offset, len)?)),
        }
    }

    fn upload_writer(&self, id: &str, offset: u64) -> io::Result<Box<dyn UploadWriter>> {
        Ok(Box::new(FsUpload::open(&self.upload_path(id)?, offset)?))
    }

    fn upload_reader(&self, id: &str) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(File::open(self.upload_path(id)?)?))
    }

    fn commit_upload(&self, id: &str, digest: &Digest) -> io::Result<()> {
        let from = self.upload_path(id)?;
        let to = self.blob_path(digest);
        if to.is_file() {
            return fs::remove_file(from);
        }
        File::open(&from)?.sync_all()?;
        let dir = self.blobs.join(digest.algorithm().name());
        fs::create_dir_all(&dir)?;
        fs::rename(&from, &to)?;
        File::open(&dir)?.sync_all()
    }

    fn delete_upload(&self, id: &str) -> io::Result<()> {
        match fs::remove_file(self.upload_path(id)?) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn list_uploads(&self) -> io::Result<Vec<(String, std::time::SystemTime)>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.uploads)? {
            let entry = entry?;
            let modified = match entry.metadata() {
                Ok(m) => m.modified()?,
                // Gone since the listing: nothing to collect.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if let Some(name) = entry.file_name().to_str() {
                out.push((name.to_string(), modified));
            }
        }
        Ok(out)
    }

    fn delete_blob(&self, digest: &Digest) -> io::Result<()> {
        match fs::remove_file(self.blob_path(digest)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn list_blobs(&self) -> io::Result<Vec<Digest>> {
        digests_in(&self.blobs)
    }
}
