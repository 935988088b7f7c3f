//! Where blob bytes live. The HTTP layer never touches files: it talks to a [`BlobBackend`],
//! shaped so that an object store (S3 through the `object_store` crate: multipart uploads
//! for sessions, a conditional copy for commit) can implement it as well as a filesystem.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use kiln_image::store::blobs::{digests_in, start_writeback};
use kiln_image::Digest;

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

struct FsUpload {
    /// Request bodies arrive in pieces of a few KiB; buffering turns them into few syscalls.
    file: std::io::BufWriter<File>,
    len: u64,
    synced: u64,
}

/// Writeback is started for each stretch this long, so a final fsync has little left.
const WRITEBACK_STRETCH: u64 = 8 << 20;

impl UploadWriter for FsUpload {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.len += bytes.len() as u64;
        if self.len - self.synced >= WRITEBACK_STRETCH {
            self.file.flush()?;
            start_writeback(self.file.get_ref(), self.synced, self.len - self.synced);
            self.synced = self.len;
        }
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.flush()?;
        let file = self.file.get_mut();
        file.set_len(len)?;
        file.seek(SeekFrom::Start(len))?;
        self.len = len;
        self.synced = self.synced.min(len);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.flush()?;
        self.file.get_ref().sync_data()
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

    fn upload_writer(&self, id: &str, offset: u64) -> io::Result<Box<dyn UploadWriter>> {
        let path = self.upload_path(id)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        let mut upload = FsUpload {
            file: std::io::BufWriter::with_capacity(256 << 10, file),
            len: offset,
            synced: 0,
        };
        upload.truncate(offset)?;
        Ok(Box::new(upload))
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
