//! The registry's metadata: which blobs exist, which repository may read which blob, the
//! manifests of each repository with what they reference, tags, and upload sessions.
//!
//! SQLite in WAL mode. Every change that makes content visible — committing an upload,
//! mounting, putting a manifest — is one `BEGIN IMMEDIATE` transaction, and so is each
//! garbage-collection sweep, which deletes files *inside* its transaction. Writers are thus
//! serialized against the collector: a blob is either still there when a writer links it, or
//! the writer sees it gone and writes it again.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use kiln_image::Digest;

use super::backend::BlobBackend;

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
    #[error("database lock poisoned")]
    Poisoned,
}

/// A manifest as stored for one repository.
#[derive(Debug, Clone)]
pub struct ManifestRow {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// A referrer: a manifest whose `subject` names another.
#[derive(Debug, Clone)]
pub struct ReferrerRow {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub annotations: Option<String>,
}

/// What a new manifest carries besides its bytes.
pub struct NewManifest<'a> {
    pub repo: &'a str,
    pub digest: &'a Digest,
    pub media_type: &'a str,
    pub size: u64,
    pub artifact_type: Option<&'a str>,
    pub subject: Option<&'a Digest>,
    pub annotations: Option<String>,
    /// Blobs (config, layers) that must be readable in the repository.
    pub blobs: Vec<Digest>,
    /// Manifests (index entries) that must exist in the repository.
    pub manifests: Vec<Digest>,
    pub tag: Option<&'a str>,
}

/// Why a manifest was refused.
#[derive(Debug)]
pub enum PutManifestError {
    Missing(Digest),
    Meta(MetaError),
}

impl From<MetaError> for PutManifestError {
    fn from(e: MetaError) -> Self {
        PutManifestError::Meta(e)
    }
}

impl From<rusqlite::Error> for PutManifestError {
    fn from(e: rusqlite::Error) -> Self {
        PutManifestError::Meta(e.into())
    }
}

pub struct Meta {
    conn: Mutex<Connection>,
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl Meta {
    pub fn open(path: &Path) -> Result<Meta, MetaError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS blobs (
                digest  TEXT PRIMARY KEY NOT NULL,
                size    INTEGER NOT NULL,
                created INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS repo_blobs (
                repo    TEXT NOT NULL,
                digest  TEXT NOT NULL,
                linked  INTEGER NOT NULL,
                PRIMARY KEY (repo, digest));
            CREATE INDEX IF NOT EXISTS repo_blobs_digest ON repo_blobs(digest);
            CREATE TABLE IF NOT EXISTS manifests (
                repo          TEXT NOT NULL,
                digest        TEXT NOT NULL,
                media_type    TEXT NOT NULL,
                size          INTEGER NOT NULL,
                artifact_type TEXT,
                subject       TEXT,
                annotations   TEXT,
                created       INTEGER NOT NULL,
                PRIMARY KEY (repo, digest));
            CREATE INDEX IF NOT EXISTS manifests_subject ON manifests(repo, subject);
            CREATE INDEX IF NOT EXISTS manifests_digest ON manifests(digest);
            CREATE TABLE IF NOT EXISTS manifest_refs (
                repo     TEXT NOT NULL,
                manifest TEXT NOT NULL,
                child    TEXT NOT NULL,
                PRIMARY KEY (repo, manifest, child));
            CREATE INDEX IF NOT EXISTS manifest_refs_child ON manifest_refs(repo, child);
            CREATE TABLE IF NOT EXISTS tags (
                repo    TEXT NOT NULL,
                tag     TEXT NOT NULL,
                digest  TEXT NOT NULL,
                updated INTEGER NOT NULL,
                PRIMARY KEY (repo, tag));
            CREATE TABLE IF NOT EXISTS uploads (
                id      TEXT PRIMARY KEY NOT NULL,
                repo    TEXT NOT NULL,
                size    INTEGER NOT NULL,
                updated INTEGER NOT NULL);",
        )?;
        Ok(Meta {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>, MetaError> {
        self.conn.lock().map_err(|_| MetaError::Poisoned)
    }

    // ---- blobs -------------------------------------------------------------------------

    /// Size of `digest` if the repository may read it: linked there, or one of its manifests.
    pub fn blob_in_repo(&self, repo: &str, digest: &Digest) -> Result<Option<u64>, MetaError> {
        let conn = self.conn()?;
        let d = digest.to_string();
        let mut stmt = conn.prepare_cached(
            "SELECT b.size FROM blobs b WHERE b.digest = ?2 AND (
                EXISTS (SELECT 1 FROM repo_blobs l WHERE l.repo = ?1 AND l.digest = ?2)
                OR EXISTS (SELECT 1 FROM manifests m WHERE m.repo = ?1 AND m.digest = ?2))",
        )?;
        Ok(stmt
            .query_row(params![repo, d], |r| r.get::<_, i64>(0))
            .optional()?
            .map(|s| s as u64))
    }

    /// Publishes an upload and links it into `repo`, in one transaction: `commit` moves the
    /// bytes into place while the collector is held off.
    pub fn commit_blob(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        commit: impl FnOnce() -> std::io::Result<()>,
    ) -> Result<(), MetaError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        commit()?;
        let d = digest.to_string();
        let t = now();
        tx.execute(
            "INSERT INTO blobs (digest, size, created) VALUES (?1, ?2, ?3) ON CONFLICT(digest) DO NOTHING",
            params![d, size as i64, t],
        )?;
        tx.execute(
            "INSERT INTO repo_blobs (repo, digest, linked) VALUES (?1, ?2, ?3)
             ON CONFLICT(repo, digest) DO UPDATE SET linked = excluded.linked",
            params![repo, d, t],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Links an existing blob into `repo` (cross-repository mount). With `from`, the blob
    /// must be readable there. Returns the blob's size, or `None` when nothing was mounted.
    pub fn mount(
        &self,
        repo: &str,
        digest: &Digest,
        from: Option<&str>,
    ) -> Result<Option<u64>, MetaError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let d = digest.to_string();
        let size: Option<i64> = match from {
            Some(from) => tx
                .query_row(
                    "SELECT b.size FROM blobs b WHERE b.digest = ?2 AND (
                        EXISTS (SELECT 1 FROM repo_blobs l WHERE l.repo = ?1 AND l.digest = ?2)
                        OR EXISTS (SELECT 1 FROM manifests m WHERE m.repo = ?1 AND m.digest = ?2))",
                    params![from, d],
                    |r| r.get(0),
                )
                .optional()?,
            None => tx
                .query_row(
                    "SELECT size FROM blobs WHERE digest = ?1",
                    params![d],
                    |r| r.get(0),
                )
                .optional()?,
        };
        if size.is_some() {
            tx.execute(
                "INSERT INTO repo_blobs (repo, digest, linked) VALUES (?1, ?2, ?3)
                 ON CONFLICT(repo, digest) DO UPDATE SET linked = excluded.linked",
                params![repo, d, now()],
            )?;
        }
        tx.commit()?;
        Ok(size.map(|s| s as u64))
    }

    pub fn unlink_blob(&self, repo: &str, digest: &Digest) -> Result<bool, MetaError> {
        let conn = self.conn()?;
        let n = conn.execute(
            "DELETE FROM repo_blobs WHERE repo = ?1 AND digest = ?2",
            params![repo, digest.to_string()],
        )?;
        Ok(n > 0)
    }

    // ---- manifests ---------------------------------------------------------------------

    /// Stores a manifest after checking, in the same transaction, that everything it
    /// references is there; `commit` publishes its bytes as a blob meanwhile.
    pub fn put_manifest(
        &self,
        m: &NewManifest<'_>,
        commit: impl FnOnce() -> std::io::Result<()>,
    ) -> Result<(), PutManifestError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for blob in &m.blobs {
            let linked: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM repo_blobs l JOIN blobs b ON b.digest = l.digest
                     WHERE l.repo = ?1 AND l.digest = ?2",
                    params![m.repo, blob.to_string()],
                    |r| r.get(0),
                )
                .optional()?;
            if linked.is_none() {
                return Err(PutManifestError::Missing(blob.clone()));
            }
        }
        for child in &m.manifests {
            let present: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM manifests WHERE repo = ?1 AND digest = ?2",
                    params![m.repo, child.to_string()],
                    |r| r.get(0),
                )
                .optional()?;
            if present.is_none() {
                return Err(PutManifestError::Missing(child.clone()));
            }
        }
        commit().map_err(MetaError::from)?;
        let d = m.digest.to_string();
        let t = now();
        tx.execute(
            "INSERT INTO blobs (digest, size, created) VALUES (?1, ?2, ?3) ON CONFLICT(digest) DO NOTHING",
            params![d, m.size as i64, t],
        )?;
        tx.execute(
            "INSERT INTO manifests (repo, digest, media_type, size, artifact_type, subject, annotations, created)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT(repo, digest) DO UPDATE SET media_type = excluded.media_type",
            params![
                m.repo,
                d,
                m.media_type,
                m.size as i64,
                m.artifact_type,
                m.subject.map(|s| s.to_string()),
                m.annotations,
                t
            ],
        )?;
        for child in m.blobs.iter().chain(&m.manifests) {
            tx.execute(
                "INSERT INTO manifest_refs (repo, manifest, child) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                params![m.repo, d, child.to_string()],
            )?;
        }
        if let Some(tag) = m.tag {
            tx.execute(
                "INSERT INTO tags (repo, tag, digest, updated) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(repo, tag) DO UPDATE SET digest = excluded.digest, updated = excluded.updated",
                params![m.repo, tag, d, t],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// A manifest of `repo` by tag or digest.
    pub fn manifest(
        &self,
        repo: &str,
        reference: &Reference<'_>,
    ) -> Result<Option<ManifestRow>, MetaError> {
        let conn = self.conn()?;
        let columns = |r: &rusqlite::Row<'_>| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        };
        let row = match reference {
            Reference::Digest(d) => conn
                .prepare_cached("SELECT digest, media_type, size FROM manifests WHERE repo = ?1 AND digest = ?2")?
                .query_row(params![repo, d.to_string()], columns)
                .optional()?,
            Reference::Tag(t) => conn
                .prepare_cached(
                    "SELECT m.digest, m.media_type, m.size FROM tags t
                     JOIN manifests m ON m.repo = t.repo AND m.digest = t.digest
                     WHERE t.repo = ?1 AND t.tag = ?2",
                )?
                .query_row(params![repo, t], columns)
                .optional()?,
        };
        Ok(row.and_then(|(d, media_type, size)| {
            Some(ManifestRow {
                digest: Digest::parse(&d).ok()?,
                media_type,
                size: size as u64,
            })
        }))
    }

    pub fn delete_tag(&self, repo: &str, tag: &str) -> Result<bool, MetaError> {
        let conn = self.conn()?;
        Ok(conn.execute(
            "DELETE FROM tags WHERE repo = ?1 AND tag = ?2",
            params![repo, tag],
        )? > 0)
    }

    /// Removes a manifest from a repository, with its tags and references.
    pub fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<bool, MetaError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let d = digest.to_string();
        let n = tx.execute(
            "DELETE FROM manifests WHERE repo = ?1 AND digest = ?2",
            params![repo, d],
        )?;
        tx.execute(
            "DELETE FROM tags WHERE repo = ?1 AND digest = ?2",
            params![repo, d],
        )?;
        tx.execute(
            "DELETE FROM manifest_refs WHERE repo = ?1 AND manifest = ?2",
            params![repo, d],
        )?;
        tx.commit()?;
        Ok(n > 0)
    }

    pub fn repo_exists(&self, repo: &str) -> Result<bool, MetaError> {
        let conn = self.conn()?;
        let found: Option<i64> = conn
            .query_row(
                "SELECT 1 WHERE EXISTS (SELECT 1 FROM manifests WHERE repo = ?1)
                    OR EXISTS (SELECT 1 FROM repo_blobs WHERE repo = ?1)",
                params![repo],
                |r| r.get(0),
            )
            .optional()?;
        Ok(found.is_some())
    }

    /// Every tag of `repo`, in byte order (the spec's lexical order); callers paginate.
    pub fn tags(&self, repo: &str) -> Result<Vec<String>, MetaError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached("SELECT tag FROM tags WHERE repo = ?1 ORDER BY tag")?;
        let rows = stmt.query_map(params![repo], |r| r.get(0))?;
        Ok(rows.collect::<Result<Vec<String>, _>>()?)
    }

    pub fn repositories(
        &self,
        last: Option<&str>,
        n: Option<usize>,
    ) -> Result<Vec<String>, MetaError> {
        let conn = self.conn()?;
        let limit = n.map_or(-1, |n| n as i64 + 1);
        let mut stmt = conn.prepare_cached(
            "SELECT repo FROM (SELECT repo FROM manifests UNION SELECT repo FROM repo_blobs)
             WHERE repo > ?1 ORDER BY repo LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![last.unwrap_or(""), limit], |r| r.get(0))?;
        Ok(rows.collect::<Result<Vec<String>, _>>()?)
    }

    pub fn referrers(&self, repo: &str, subject: &Digest) -> Result<Vec<ReferrerRow>, MetaError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT digest, media_type, size, artifact_type, annotations FROM manifests
             WHERE repo = ?1 AND subject = ?2 ORDER BY created, digest",
        )?;
        let rows = stmt.query_map(params![repo, subject.to_string()], |r| {
            Ok(ReferrerRow {
                digest: r.get(0)?,
                media_type: r.get(1)?,
                size: r.get::<_, i64>(2)? as u64,
                artifact_type: r.get(3)?,
                annotations: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    // ---- uploads -----------------------------------------------------------------------

    pub fn create_upload(&self, id: &str, repo: &str) -> Result<(), MetaError> {
        let conn = self.conn()?;
        conn.execute(
            "INSERT INTO uploads (id, repo, size, updated) VALUES (?1, ?2, 0, ?3)",
            params![id, repo, now()],
        )?;
        Ok(())
    }

    /// The repository and acknowledged size of an upload session.
    pub fn upload(&self, id: &str) -> Result<Option<(String, u64)>, MetaError> {
        let conn = self.conn()?;
        Ok(conn
            .query_row(
                "SELECT repo, size FROM uploads WHERE id = ?1",
                params![id],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)),
            )
            .optional()?)
    }

    pub fn set_upload_size(&self, id: &str, size: u64) -> Result<(), MetaError> {
        let conn = self.conn()?;
        conn.execute(
            "UPDATE uploads SET size = ?2, updated = ?3 WHERE id = ?1",
            params![id, size as i64, now()],
        )?;
        Ok(())
    }

    pub fn delete_upload(&self, id: &str) -> Result<bool, MetaError> {
        let conn = self.conn()?;
        Ok(conn.execute("DELETE FROM uploads WHERE id = ?1", params![id])? > 0)
    }

    // ---- garbage collection ------------------------------------------------------------

    /// One sweep, in one transaction (see ARCHITECTURE.md, "Registry garbage collection"):
    /// drops links no manifest of their repository references and that are older than
    /// `grace_cutoff`; deletes — rows and files — blobs nothing links or references; and
    /// deletes blob files the table does not know (left by a crash between a file's rename
    /// and its transaction's commit: a live commit holds this same lock, so none is racing).
    /// Returns the digests deleted.
    pub fn sweep(
        &self,
        grace_cutoff: i64,
        backend: &dyn BlobBackend,
    ) -> Result<Vec<Digest>, MetaError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "DELETE FROM repo_blobs WHERE linked < ?1 AND NOT EXISTS (
                SELECT 1 FROM manifest_refs r WHERE r.repo = repo_blobs.repo AND r.child = repo_blobs.digest)",
            params![grace_cutoff],
        )?;
        let doomed: Vec<String> = {
            let mut stmt = tx.prepare(
                "SELECT digest FROM blobs b WHERE created < ?1
                   AND NOT EXISTS (SELECT 1 FROM repo_blobs l WHERE l.digest = b.digest)
                   AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.digest = b.digest)
                   AND NOT EXISTS (SELECT 1 FROM manifest_refs r WHERE r.child = b.digest)",
            )?;
            let rows = stmt.query_map(params![grace_cutoff], |r| r.get(0))?;
            rows.collect::<Result<Vec<String>, _>>()?
        };
        let mut deleted = Vec::new();
        for d in doomed {
            tx.execute("DELETE FROM blobs WHERE digest = ?1", params![d])?;
            if let Ok(digest) = Digest::parse(&d) {
                backend.delete_blob(&digest)?;
                deleted.push(digest);
            }
        }
        for digest in backend.list_blobs()? {
            let known: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM blobs WHERE digest = ?1",
                    params![digest.to_string()],
                    |r| r.get(0),
                )
                .optional()?;
            if known.is_none() {
                backend.delete_blob(&digest)?;
                deleted.push(digest);
            }
        }
        tx.commit()?;
        Ok(deleted)
    }

    /// Upload sessions idle since before `cutoff`, removed from the table (their files are
    /// the caller's to delete).
    pub fn expire_uploads(&self, cutoff: i64) -> Result<Vec<String>, MetaError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare("DELETE FROM uploads WHERE updated < ?1 RETURNING id")?;
        let rows = stmt.query_map(params![cutoff], |r| r.get(0))?;
        Ok(rows.collect::<Result<Vec<String>, _>>()?)
    }
}

/// A manifest reference in a URL.
#[derive(Debug, Clone)]
pub enum Reference<'a> {
    Tag(&'a str),
    Digest(Digest),
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::storage::backend::{BlobBackend, FsBackend};

    fn blob(backend: &FsBackend, meta: &Meta, repo: &str, bytes: &[u8]) -> Digest {
        let digest = Digest::sha256_of(bytes);
        let id = uuid::Uuid::new_v4().to_string();
        let mut w = backend.upload_writer(&id, 0).expect("writer");
        w.write_all(bytes).expect("write");
        w.sync().expect("sync");
        meta.commit_blob(repo, &digest, bytes.len() as u64, || {
            backend.commit_upload(&id, &digest)
        })
        .expect("commit");
        digest
    }

    fn exists(backend: &FsBackend, d: &Digest) -> bool {
        backend.stat(d).expect("stat").is_some()
    }

    #[test]
    fn sweep_keeps_referenced_and_young_blobs_and_drops_the_rest() {
        let dir = tempfile::tempdir().expect("tmp");
        let backend = FsBackend::open(dir.path()).expect("backend");
        let meta = Meta::open(&dir.path().join("registry.db")).expect("meta");
        let layer = blob(&backend, &meta, "app", b"layer");
        let config = blob(&backend, &meta, "app", b"{}");
        let stray = blob(&backend, &meta, "app", b"never referenced");
        let manifest = Digest::sha256_of(b"manifest");
        let id = uuid::Uuid::new_v4().to_string();
        let mut w = backend.upload_writer(&id, 0).expect("writer");
        w.write_all(b"manifest").expect("write");
        w.sync().expect("sync");
        meta.put_manifest(
            &NewManifest {
                repo: "app",
                digest: &manifest,
                media_type: "application/vnd.oci.image.manifest.v1+json",
                size: 8,
                artifact_type: None,
                subject: None,
                annotations: None,
                blobs: vec![config.clone(), layer.clone()],
                manifests: vec![],
                tag: Some("v1"),
            },
            || backend.commit_upload(&id, &manifest),
        )
        .map_err(|e| format!("{e:?}"))
        .expect("manifest");

        // Within the grace period nothing goes, referenced or not.
        assert!(meta
            .sweep(now() - 3600, &backend)
            .expect("sweep")
            .is_empty());
        assert!(exists(&backend, &stray));

        // After it, only the stray blob does; the manifest keeps its blobs.
        let deleted = meta.sweep(now() + 10, &backend).expect("sweep");
        assert_eq!(deleted, vec![stray.clone()]);
        assert!(
            !exists(&backend, &stray) && exists(&backend, &layer) && exists(&backend, &manifest)
        );
        assert_eq!(meta.blob_in_repo("app", &layer).expect("lookup"), Some(5));
        assert_eq!(meta.blob_in_repo("app", &stray).expect("lookup"), None);

        // A file the database never recorded (a crash before commit) is removed too.
        let orphan = Digest::sha256_of(b"orphan");
        let id = uuid::Uuid::new_v4().to_string();
        let mut w = backend.upload_writer(&id, 0).expect("writer");
        w.write_all(b"orphan").expect("write");
        w.sync().expect("sync");
        backend.commit_upload(&id, &orphan).expect("rename");
        assert_eq!(
            meta.sweep(now() - 3600, &backend).expect("sweep"),
            vec![orphan.clone()]
        );

        // Deleting the manifest releases its blobs to the next sweep past the grace period.
        assert!(meta.delete_manifest("app", &manifest).expect("delete"));
        let mut deleted = meta.sweep(now() + 10, &backend).expect("sweep");
        deleted.sort();
        let mut want = vec![layer, config, manifest];
        want.sort();
        assert_eq!(deleted, want);
    }

    #[test]
    fn manifest_put_checks_references_in_its_repository() {
        let dir = tempfile::tempdir().expect("tmp");
        let backend = FsBackend::open(dir.path()).expect("backend");
        let meta = Meta::open(&dir.path().join("registry.db")).expect("meta");
        let elsewhere = blob(&backend, &meta, "other", b"layer");
        let manifest = Digest::sha256_of(b"m");
        let new = NewManifest {
            repo: "app",
            digest: &manifest,
            media_type: "application/vnd.oci.image.manifest.v1+json",
            size: 1,
            artifact_type: None,
            subject: None,
            annotations: None,
            blobs: vec![elsewhere.clone()],
            manifests: vec![],
            tag: Some("v1"),
        };
        match meta.put_manifest(&new, || Ok(())) {
            Err(PutManifestError::Missing(d)) => assert_eq!(d, elsewhere),
            other => panic!("expected a missing blob, got {:?}", other.err()),
        }
        assert!(meta
            .manifest("app", &Reference::Tag("v1"))
            .expect("lookup")
            .is_none());
        // Mounted from `other`, it is there.
        assert_eq!(
            meta.mount("app", &elsewhere, Some("other")).expect("mount"),
            Some(5)
        );
        meta.put_manifest(&new, || Ok(()))
            .map_err(|e| format!("{e:?}"))
            .expect("put");
        let mut body = String::new();
        backend
            .reader(&elsewhere, 0, 5)
            .expect("reader")
            .read_to_string(&mut body)
            .expect("read");
        assert_eq!(body, "layer");
    }
}
