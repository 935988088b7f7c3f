//! Upload sessions: bytes appended chunk by chunk, hashed as they arrive, resumable after a
//! restart (the acknowledged size is in the database; the hash is rebuilt from storage).

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};

use kiln_image::digest::{Algorithm, Hasher};
use kiln_image::Digest;

use crate::storage::backend::{BlobBackend, UploadWriter};
use crate::storage::meta::{Meta, MetaError};

/// The live state of one session. Held behind an async mutex: chunks of one session are
/// applied one at a time, in order.
pub struct Session {
    pub id: String,
    pub repo: String,
    pub size: u64,
    writer: Box<dyn UploadWriter>,
    hasher: Hasher,
}

/// Where a chunk started, so that a chunk that fails half-way can be undone exactly.
pub struct Mark {
    size: u64,
    hasher: Hasher,
}

impl Session {
    pub fn mark(&self) -> Mark {
        Mark {
            size: self.size,
            hasher: self.hasher.clone(),
        }
    }

    pub fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes)?;
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        Ok(())
    }

    pub fn rewind(&mut self, mark: Mark) -> std::io::Result<()> {
        self.writer.truncate(mark.size)?;
        self.size = mark.size;
        self.hasher = mark.hasher;
        Ok(())
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.writer.flush()
    }

    pub fn sync(&mut self) -> std::io::Result<()> {
        self.writer.sync()
    }

    /// The digest of everything appended, in `algorithm` (sha512 is recomputed from storage,
    /// since sessions hash in sha256 as they go).
    pub fn digest(
        &self,
        algorithm: Algorithm,
        backend: &dyn BlobBackend,
    ) -> std::io::Result<Digest> {
        match algorithm {
            Algorithm::Sha256 => Ok(self.hasher.clone().finish()),
            other => Ok(hash_stored(backend, &self.id, self.size, other)?.finish()),
        }
    }
}

/// Hashes the first `size` stored bytes of an upload.
fn hash_stored(
    backend: &dyn BlobBackend,
    id: &str,
    size: u64,
    algorithm: Algorithm,
) -> std::io::Result<Hasher> {
    let mut reader = backend.upload_reader(id)?.take(size);
    let mut hasher = algorithm.hasher();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher)
}

pub type SessionHandle = Arc<tokio::sync::Mutex<Session>>;

#[derive(Default)]
pub struct Sessions {
    /// Session id -> (repository, session).
    live: Mutex<HashMap<String, (String, SessionHandle)>>,
}

impl Sessions {
    pub fn create(
        &self,
        meta: &Meta,
        backend: &dyn BlobBackend,
        repo: &str,
    ) -> Result<SessionHandle, MetaError> {
        let id = uuid::Uuid::new_v4().to_string();
        meta.create_upload(&id, repo)?;
        let writer = backend.upload_writer(&id, 0)?;
        let session = Arc::new(tokio::sync::Mutex::new(Session {
            id: id.clone(),
            repo: repo.to_string(),
            size: 0,
            writer,
            hasher: Algorithm::Sha256.hasher(),
        }));
        if let Ok(mut live) = self.live.lock() {
            live.insert(id, (repo.to_string(), session.clone()));
        }
        Ok(session)
    }

    /// Finds a session of `repo`: live in memory, or resumed from storage after a restart.
    pub fn get(
        &self,
        meta: &Meta,
        backend: &dyn BlobBackend,
        repo: &str,
        id: &str,
    ) -> Result<Option<SessionHandle>, MetaError> {
        if let Some((owner, s)) = self.live.lock().ok().and_then(|l| l.get(id).cloned()) {
            return Ok((owner == repo).then_some(s));
        }
        let Some((owner, size)) = meta.upload(id)? else {
            return Ok(None);
        };
        if owner != repo {
            return Ok(None);
        }
        // Bytes past the acknowledged size belong to a chunk that was never answered.
        let writer = match backend.upload_writer(id, size) {
            Ok(w) => w,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                tracing::warn!(upload = id, error = %e, "dropping an upload session whose bytes were lost");
                meta.delete_upload(id)?;
                let _ = backend.delete_upload(id);
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        let hasher = hash_stored(backend, id, size, Algorithm::Sha256)?;
        let session = Arc::new(tokio::sync::Mutex::new(Session {
            id: id.to_string(),
            repo: owner,
            size,
            writer,
            hasher,
        }));
        // Two requests may resume the same session at once: the first one in wins.
        let Ok(mut live) = self.live.lock() else {
            return Ok(Some(session));
        };
        let entry = live
            .entry(id.to_string())
            .or_insert_with(|| (repo.to_string(), session));
        Ok(Some(entry.1.clone()))
    }

    pub fn forget(&self, id: &str) {
        if let Ok(mut live) = self.live.lock() {
            live.remove(id);
        }
    }

    pub fn in_flight(&self) -> usize {
        self.live.lock().map(|l| l.len()).unwrap_or(0)
    }
}
