//! The content-addressed blob store: `blobs/<algorithm>/<hex>` under the store root.
//!
//! A blob becomes visible only by `rename` from `ingest/` after its bytes were hashed while
//! being written, compared with the expected digest and size, and fsynced. A crash at any
//! point leaves at most an orphaned ingest file, never a wrong or partial blob.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use crate::digest::{Algorithm, Digest, Hasher};
use crate::store::direct::DirectWriter;
use crate::store::StoreError;

/// Bytes read or written per system call when streaming blobs.
pub const COPY_BUFFER: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct BlobStore {
    blobs: PathBuf,
    ingest: PathBuf,
}

/// What a writer must produce; `None` fields are learned from the bytes.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    pub digest: Option<Digest>,
    pub size: Option<u64>,
}

impl Expected {
    pub fn digest(digest: Digest, size: Option<u64>) -> Expected {
        Expected {
            digest: Some(digest),
            size,
        }
    }
}

impl BlobStore {
    pub(crate) fn open(root: &Path) -> Result<BlobStore, StoreError> {
        let blobs = root.join("blobs");
        let ingest = root.join("ingest");
        for dir in [&blobs, &ingest] {
            fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        }
        Ok(BlobStore { blobs, ingest })
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs
            .join(digest.algorithm().name())
            .join(digest.hex())
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    pub fn size(&self, digest: &Digest) -> Result<u64, StoreError> {
        let path = self.path(digest);
        match fs::metadata(&path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::BlobNotFound(digest.clone()))
            }
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<File, StoreError> {
        let path = self.path(digest);
        File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::BlobNotFound(digest.clone()),
            _ => StoreError::io(&path, e),
        })
    }

    /// Reads a small blob (a manifest or config) whole, refusing anything above `limit`.
    pub fn read_small(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>, StoreError> {
        let size = self.size(digest)?;
        if size > limit {
            return Err(StoreError::TooLarge {
                digest: digest.clone(),
                size,
                limit,
            });
        }
        let mut bytes = Vec::with_capacity(size as usize);
        self.open_blob(digest)?
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| StoreError::io(self.path(digest), e))?;
        Ok(bytes)
    }

    /// Starts writing a blob. Nothing is visible until [`BlobWriter::commit`].
    pub fn writer(&self, expected: Expected) -> Result<BlobWriter, StoreError> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "{}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            time::OffsetDateTime::now_utc().unix_timestamp_nanos()
        );
        let path = self.ingest.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        // The lock tells `prune` this ingest file belongs to a live writer; the kernel
        // drops it when the process dies, however it dies.
        file.try_lock().map_err(|e| {
            StoreError::io(&path, io::Error::other(format!("locking ingest file: {e}")))
        })?;
        // Blob bytes bypass the page cache (see `direct`); the locked descriptor is kept.
        let file = DirectWriter::from_file(file, &path).map_err(|e| StoreError::io(&path, e))?;
        let algorithm = expected
            .digest
            .as_ref()
            .map_or(Algorithm::Sha256, |d| d.algorithm());
        Ok(BlobWriter {
            store: self.clone(),
            temp: Some(path),
            file: Some(file),
            hasher: Some(algorithm.hasher()),
            written: 0,
            expected,
        })
    }

    /// Writes a whole in-memory blob, verifying it when a digest is expected.
    pub fn put_bytes(&self, bytes: &[u8], expected: Expected) -> Result<Digest, StoreError> {
        if let Some(d) = &expected.digest {
            if self.contains(d) {
                // Still verify: a caller handing over wrong bytes must hear about it.
                let actual = Digest::of_bytes(d.algorithm(), bytes);
                if &actual != d {
                    return Err(StoreError::DigestMismatch {
                        expected: d.clone(),
                        actual,
                    });
                }
                return Ok(actual);
            }
        }
        let mut w = self.writer(expected)?;
        w.write_all(bytes)
            .map_err(|e| StoreError::io(w.temp_path(), e))?;
        w.commit()
    }

    /// Streams `reader` into the store, verifying it against `expected`.
    pub fn put_reader(
        &self,
        reader: &mut dyn Read,
        expected: Expected,
    ) -> Result<(Digest, u64), StoreError> {
        let pending = self.stage_reader(reader, expected)?;
        let size = pending.size();
        Ok((pending.commit()?, size))
    }

    /// Streams `reader` into a verified but unpublished blob.
    ///
    /// Hashing runs on a second thread while this one moves the bytes: for big layers the two
    /// take about as long as each other, so overlapping them nearly halves the time. The
    /// hasher sees exactly the buffers that were written to the file.
    pub fn stage_reader(
        &self,
        reader: &mut dyn Read,
        expected: Expected,
    ) -> Result<PendingBlob, StoreError> {
        const DEPTH: usize = 4;
        let mut w = self.writer(expected)?;
        let Some(mut hasher) = w.hasher.take() else {
            return Err(StoreError::io(
                w.temp_path(),
                io::Error::other("writer already finished"),
            ));
        };
        let copied = std::thread::scope(|scope| {
            let (full_tx, full_rx) = mpsc::sync_channel::<(Vec<u8>, usize)>(DEPTH);
            let (empty_tx, empty_rx) = mpsc::sync_channel::<Vec<u8>>(DEPTH + 1);
            for _ in 0..=DEPTH {
                // Cannot fail: the channel has room for every buffer and its receiver is alive.
                let _ = empty_tx.send(vec![0u8; COPY_BUFFER]);
            }
            let hashing = scope.spawn(move || {
                for (buf, n) in full_rx {
                    hasher.update(&buf[..n]);
                    if empty_tx.send(buf).is_err() {
                        break;
                    }
                }
                hasher
            });
            let copied = (|| -> Result<(), StoreError> {
                loop {
                    let Ok(mut buf) = empty_rx.recv() else {
                        return Err(StoreError::io(
                            w.temp_path(),
                            io::Error::other("hashing thread stopped"),
                        ));
                    };
                    let n = read_full(reader, &mut buf).map_err(StoreError::Read)?;
                    if n == 0 {
                        return Ok(());
                    }
                    w.write_unhashed(&buf[..n])
                        .map_err(|e| StoreError::io(w.temp_path(), e))?;
                    if full_tx.send((buf, n)).is_err() {
                        return Err(StoreError::io(
                            w.temp_path(),
                            io::Error::other("hashing thread stopped"),
                        ));
                    }
                }
            })();
            drop(full_tx);
            match hashing.join() {
                Ok(h) => copied.map(|()| h),
                Err(_) => Err(StoreError::io(
                    w.temp_path(),
                    io::Error::other("hashing thread panicked"),
                )),
            }
        })?;
        w.hasher = Some(copied);
        w.finish()
    }

    pub fn remove(&self, digest: &Digest) -> Result<(), StoreError> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    /// Every committed blob. Files that are not named like a digest are skipped.
    pub fn list(&self) -> Result<Vec<Digest>, StoreError> {
        digests_in(&self.blobs).map_err(|e| StoreError::io(&self.blobs, e))
    }

    /// Removes ingest files left by writers that died (their lock is free). Files of live
    /// writers are locked and left alone. Returns how many were removed.
    pub fn remove_abandoned_ingests(&self) -> Result<usize, StoreError> {
        let mut removed = 0;
        let entries = fs::read_dir(&self.ingest).map_err(|e| StoreError::io(&self.ingest, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(&self.ingest, e))?;
            let path = entry.path();
            let Ok(file) = OpenOptions::new().write(true).open(&path) else {
                continue;
            };
            if file.try_lock().is_ok() && fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn blob_dir(&self, algorithm: Algorithm) -> PathBuf {
        self.blobs.join(algorithm.name())
    }
}

/// A blob being written. Hashes as it goes; dropping it without `commit` discards it.
pub struct BlobWriter {
    store: BlobStore,
    temp: Option<PathBuf>,
    file: Option<DirectWriter>,
    hasher: Option<Hasher>,
    written: u64,
    expected: Expected,
}

impl BlobWriter {
    pub fn written(&self) -> u64 {
        self.written
    }

    fn temp_path(&self) -> PathBuf {
        self.temp.clone().unwrap_or_default()
    }

    /// Verifies the bytes against what was expected and makes the blob visible atomically.
    /// On a mismatch the bytes are discarded and the error names both digests.
    pub fn commit(self) -> Result<Digest, StoreError> {
        self.finish()?.commit()
    }

    /// Verifies the bytes but does not publish them yet: the caller decides, once it has
    /// checked everything else, whether to [`PendingBlob::commit`] or drop them.
    pub fn finish(mut self) -> Result<PendingBlob, StoreError> {
        let temp = self.temp_path();
        let (Some(writer), Some(hasher)) = (self.file.take(), self.hasher.take()) else {
            return Err(StoreError::io(
                &temp,
                io::Error::other("writer already finished"),
            ));
        };
        let file = writer.into_file().map_err(|e| StoreError::io(&temp, e))?;
        let actual = hasher.finish();
        if let Some(size) = self.expected.size {
            if size != self.written {
                return Err(StoreError::SizeMismatch {
                    digest: self.expected.digest.clone().unwrap_or(actual),
                    expected: size,
                    actual: self.written,
                });
            }
        }
        if let Some(expected) = &self.expected.digest {
            if expected != &actual {
                return Err(StoreError::DigestMismatch {
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        Ok(PendingBlob {
            store: self.store.clone(),
            temp: self.temp.take(),
            file: Some(file),
            digest: actual,
            size: self.written,
        })
    }
}

/// A verified blob not yet visible in the store. Dropping it discards the bytes.
pub struct PendingBlob {
    store: BlobStore,
    temp: Option<PathBuf>,
    file: Option<File>,
    digest: Digest,
    size: u64,
}

impl PendingBlob {
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Publishes the blob: fsync, rename into `blobs/`, fsync the directory.
    pub fn commit(mut self) -> Result<Digest, StoreError> {
        let target = self.store.path(&self.digest);
        if target.is_file() {
            // Already present (content-addressed, so identical): nothing to publish.
            return Ok(self.digest.clone());
        }
        let temp = self.temp.clone().unwrap_or_default();
        if let Some(file) = self.file.take() {
            file.sync_all().map_err(|e| StoreError::io(&temp, e))?;
        }
        let dir = self.store.blob_dir(self.digest.algorithm());
        fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        fs::rename(&temp, &target).map_err(|e| StoreError::io(&target, e))?;
        self.temp = None;
        sync_dir(&dir)?;
        Ok(self.digest.clone())
    }
}

impl Drop for PendingBlob {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            let _ = fs::remove_file(temp);
        }
    }
}

impl BlobWriter {
    fn check_size(&self, more: usize) -> io::Result<()> {
        match self.expected.size {
            Some(limit) if self.written + more as u64 > limit => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("blob is larger than its declared size of {limit} bytes"),
            )),
            _ => Ok(()),
        }
    }

    /// Writes bytes whose hashing the caller has arranged elsewhere (see `stage_reader`).
    fn write_unhashed(&mut self, buf: &[u8]) -> io::Result<()> {
        self.append(buf)
    }

    /// Appends to the file (not the hash), starting writeback of every finished stretch.
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.check_size(buf.len())?;
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("blob writer already finished"));
        };
        file.write_all(buf)?;
        self.written += buf.len() as u64;
        Ok(())
    }
}

/// The digests of the blobs in a `<dir>/<algorithm>/<hex>` tree (the layout of kiln's store,
/// of OCI layouts and of the registry). Files not named like a digest are skipped.
pub fn digests_in(dir: &Path) -> io::Result<Vec<Digest>> {
    let mut out = Vec::new();
    for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
        let entries = match fs::read_dir(dir.join(algorithm.name())) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            if let Some(name) = entry?.file_name().to_str() {
                if let Ok(d) = Digest::parse(&format!("{algorithm}:{name}")) {
                    out.push(d);
                }
            }
        }
    }
    Ok(out)
}

/// Asks the kernel to begin writing a range of the file out, without waiting for it, so that
/// a later fsync finds little left to do. Shared by every writer of large files in kiln.
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: the descriptor is valid for the lifetime of `file`; the call only schedules
    // I/O. A failure is harmless: the commit's fsync writes everything regardless.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.hasher.is_none() {
            return Err(io::Error::other("blob writer already finished"));
        }
        self.append(buf)?;
        if let Some(hasher) = self.hasher.as_mut() {
            hasher.update(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            let _ = fs::remove_file(temp);
        }
    }
}

/// Fills `buf` as far as the reader allows; 0 means end of input.
fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Makes a rename durable: the directory entry itself must reach the disk.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}
