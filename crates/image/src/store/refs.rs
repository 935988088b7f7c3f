//! The reference table: image name -> the descriptor of its manifest or index.
//!
//! SQLite in WAL mode, so that several kiln processes (an import, a `tag`, a node agent) can
//! read and write at once; every change is one transaction, so none is lost or torn by a
//! concurrent writer or a crash.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::digest::Digest;
use crate::reference::Reference;
use crate::store::StoreError;

/// What a name points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefEntry {
    pub name: Reference,
    pub target: Target,
    /// When the name was last set, in Unix seconds.
    pub updated: i64,
}

pub struct RefTable {
    conn: Connection,
}

impl RefTable {
    pub(crate) fn open(path: &Path) -> Result<RefTable, StoreError> {
        let conn = Connection::open(path).map_err(|e| StoreError::refs(path, e))?;
        conn.busy_timeout(Duration::from_secs(30))
            .map_err(|e| StoreError::refs(path, e))?;
        // WAL lets readers proceed while one process writes; NORMAL sync is durable across
        // process crashes, which is the failure this store promises to survive.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| StoreError::refs(path, e))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| StoreError::refs(path, e))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS refs (
                name       TEXT PRIMARY KEY NOT NULL,
                digest     TEXT NOT NULL,
                media_type TEXT NOT NULL,
                size       INTEGER NOT NULL,
                updated    INTEGER NOT NULL
            );
            CREATE INDEX IF NOT EXISTS refs_by_digest ON refs(digest);",
        )
        .map_err(|e| StoreError::refs(path, e))?;
        Ok(RefTable { conn })
    }

    /// Points `name` at `target`, replacing what it pointed at before.
    pub fn set(&self, name: &Reference, target: &Target) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO refs (name, digest, media_type, size, updated)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(name) DO UPDATE SET
                    digest = excluded.digest, media_type = excluded.media_type,
                    size = excluded.size, updated = excluded.updated",
                params![
                    name.to_string(),
                    target.digest.to_string(),
                    target.media_type,
                    target.size as i64,
                    time::OffsetDateTime::now_utc().unix_timestamp()
                ],
            )
            .map_err(StoreError::Sql)?;
        Ok(())
    }

    pub fn get(&self, name: &Reference) -> Result<Option<RefEntry>, StoreError> {
        self.conn
            .query_row(
                "SELECT name, digest, media_type, size, updated FROM refs WHERE name = ?1",
                params![name.to_string()],
                row_to_raw,
            )
            .optional()
            .map_err(StoreError::Sql)?
            .map(RawRow::into_entry)
            .transpose()
    }

    /// Removes `name`; returns whether it existed.
    pub fn remove(&self, name: &Reference) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute(
                "DELETE FROM refs WHERE name = ?1",
                params![name.to_string()],
            )
            .map_err(StoreError::Sql)?;
        Ok(n > 0)
    }

    pub fn list(&self) -> Result<Vec<RefEntry>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, digest, media_type, size, updated FROM refs ORDER BY name")
            .map_err(StoreError::Sql)?;
        let rows = stmt
            .query_map([], row_to_raw)
            .map_err(StoreError::Sql)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::Sql)?;
        rows.into_iter().map(RawRow::into_entry).collect()
    }

    /// Names pointing at `digest`.
    pub fn names_for(&self, digest: &Digest) -> Result<Vec<RefEntry>, StoreError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|e| &e.target.digest == digest)
            .collect())
    }
}

struct RawRow {
    name: String,
    digest: String,
    media_type: String,
    size: i64,
    updated: i64,
}

fn row_to_raw(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok(RawRow {
        name: row.get(0)?,
        digest: row.get(1)?,
        media_type: row.get(2)?,
        size: row.get(3)?,
        updated: row.get(4)?,
    })
}

impl RawRow {
    fn into_entry(self) -> Result<RefEntry, StoreError> {
        let corrupt = |why: String| StoreError::CorruptRef {
            name: self.name.clone(),
            why,
        };
        let name = Reference::parse_normalized(&self.name).map_err(|e| corrupt(e.to_string()))?;
        let digest = Digest::parse(&self.digest).map_err(|e| corrupt(e.to_string()))?;
        let size = u64::try_from(self.size).map_err(|_| corrupt(format!("size {}", self.size)))?;
        Ok(RefEntry {
            name,
            target: Target {
                digest,
                media_type: self.media_type,
                size,
            },
            updated: self.updated,
        })
    }
}
