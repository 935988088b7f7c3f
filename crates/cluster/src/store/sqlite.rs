//! The embedded store: one SQLite file holding a log of every write, in the manner of kine.
//!
//! Each row is one write (its `revision` is the store revision it made); a key's value is
//! its newest row, unless that row marks a delete. History makes revisioned lists and watch
//! replay plain queries. Compaction deletes rows that a newer row of the same key has
//! superseded at or before the compaction revision.

use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{broadcast, mpsc};

use super::{Entry, Event, EventKind, Page, Revision, Store, StoreError, WatchStream};

/// Live events kept for watchers that fall behind; past this they re-read the log.
const LIVE_EVENTS: usize = 4096;

pub struct SqliteStore(Arc<Shared>);

struct Shared {
    db: Mutex<Db>,
    events: broadcast::Sender<Arc<Event>>,
}

struct Db {
    conn: Connection,
    current: Revision,
    compacted: Revision,
}

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// The smallest string greater than every string that starts with `prefix`.
fn prefix_end(prefix: &str) -> Option<String> {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0x7f {
            bytes.push(last + 1);
            return String::from_utf8(bytes).ok();
        }
    }
    None
}

impl SqliteStore {
    /// Opens (creating) the store file at `path`.
    pub fn open(path: &std::path::Path) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path).map_err(backend)?;
        Self::with_connection(conn)
    }

    /// A store that lives in memory only (tests).
    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        Self::with_connection(Connection::open_in_memory().map_err(backend)?)
    }

    fn with_connection(conn: Connection) -> Result<SqliteStore, StoreError> {
        // WAL: readers never block the writer. NORMAL sync: a committed write survives the
        // process being killed; only an OS crash can lose the newest transactions.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA busy_timeout = 5000;
             CREATE TABLE IF NOT EXISTS kv (
                 revision INTEGER PRIMARY KEY AUTOINCREMENT,
                 key TEXT NOT NULL,
                 created INTEGER NOT NULL,
                 deleted INTEGER NOT NULL,
                 create_revision INTEGER NOT NULL,
                 prev_revision INTEGER NOT NULL,
                 value BLOB NOT NULL
             );
             CREATE INDEX IF NOT EXISTS kv_key_revision ON kv (key, revision);
             CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);",
        )
        .map_err(backend)?;
        let current: Revision = conn
            .query_row(
                "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'kv'), 0)",
                [],
                |r| r.get(0),
            )
            .map_err(backend)?;
        let compacted: Revision = conn
            .query_row(
                "SELECT COALESCE((SELECT value FROM meta WHERE name = 'compacted'), 0)",
                [],
                |r| r.get(0),
            )
            .map_err(backend)?;
        let (events, _) = broadcast::channel(LIVE_EVENTS);
        Ok(SqliteStore(Arc::new(Shared {
            db: Mutex::new(Db {
                conn,
                current,
                compacted,
            }),
            events,
        })))
    }

    fn db(&self) -> MutexGuard<'_, Db> {
        self.0.db()
    }
}

impl Shared {
    fn db(&self) -> MutexGuard<'_, Db> {
        // Every change to `Db` is a committed transaction plus counters set after it: a
        // panic cannot leave it half-changed.
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends one write and announces it. Runs with the lock held, so revisions and
    /// announcements stay in order.
    fn append(
        &self,
        db: &mut Db,
        key: &str,
        value: Vec<u8>,
        kind: EventKind,
        latest: Option<&Latest>,
    ) -> Result<Revision, StoreError> {
        let revision = db.current + 1;
        let created = kind == EventKind::Put && latest.is_none_or(|l| l.deleted);
        let create_revision = match latest {
            Some(l) if !created => l.create_revision,
            _ => revision,
        };
        db.conn
            .execute(
                "INSERT INTO kv (revision, key, created, deleted, create_revision, prev_revision, value)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    revision,
                    key,
                    created,
                    kind == EventKind::Delete,
                    create_revision,
                    latest.map_or(0, |l| l.revision),
                    value
                ],
            )
            .map_err(backend)?;
        db.current = revision;
        let _ = self.events.send(Arc::new(Event {
            kind,
            key: key.to_string(),
            value,
            prev_value: latest.filter(|l| !l.deleted).map(|l| l.value.clone()),
            revision,
            created,
        }));
        Ok(revision)
    }
}

struct Latest {
    revision: Revision,
    create_revision: Revision,
    deleted: bool,
    value: Vec<u8>,
}

fn latest(conn: &Connection, key: &str) -> Result<Option<Latest>, StoreError> {
    conn.query_row(
        "SELECT revision, create_revision, deleted, value FROM kv
         WHERE key = ?1 ORDER BY revision DESC LIMIT 1",
        params![key],
        |r| {
            Ok(Latest {
                revision: r.get(0)?,
                create_revision: r.get(1)?,
                deleted: r.get(2)?,
                value: r.get(3)?,
            })
        },
    )
    .optional()
    .map_err(backend)
}

/// Changes under `prefix` after `after`, oldest first, at most `limit`.
fn changes_since(
    conn: &Connection,
    prefix: &str,
    after: Revision,
    limit: usize,
) -> Result<Vec<Event>, StoreError> {
    let hi = prefix_end(prefix).unwrap_or_else(|| "\u{7f}".repeat(8));
    let mut stmt = conn
        .prepare_cached(
            "SELECT kv.revision, kv.key, kv.created, kv.deleted, kv.value, prev.value
             FROM kv LEFT JOIN kv AS prev ON prev.revision = kv.prev_revision AND prev.deleted = 0
             WHERE kv.revision > ?1 AND kv.key >= ?2 AND kv.key < ?3
             ORDER BY kv.revision LIMIT ?4",
        )
        .map_err(backend)?;
    let rows = stmt
        .query_map(params![after, prefix, hi, limit as i64], |r| {
            let deleted: bool = r.get(3)?;
            Ok(Event {
                revision: r.get(0)?,
                key: r.get(1)?,
                created: r.get(2)?,
                kind: if deleted {
                    EventKind::Delete
                } else {
                    EventKind::Put
                },
                value: r.get(4)?,
                prev_value: r.get(5)?,
            })
        })
        .map_err(backend)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(backend)
}

/// A stream fed by a task running `feed`, which stops once the stream is dropped.
fn spawn_stream<F, Fut>(feed: F) -> WatchStream
where
    F: FnOnce(mpsc::Sender<Result<Event, StoreError>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(feed(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let db = self.db();
        Ok(latest(&db.conn, key)?
            .filter(|l| !l.deleted)
            .map(|l| Entry {
                key: key.to_string(),
                value: l.value,
                create_revision: l.create_revision,
                mod_revision: l.revision,
            }))
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        at: Option<Revision>,
    ) -> Result<Page, StoreError> {
        let db = self.db();
        let revision = match at {
            None => db.current,
            Some(r) if r > db.current => {
                return Err(StoreError::FutureRevision {
                    requested: r,
                    current: db.current,
                })
            }
            Some(r) if r < db.compacted => {
                return Err(StoreError::Compacted {
                    requested: r,
                    compacted: db.compacted,
                })
            }
            Some(r) => r,
        };
        let hi = prefix_end(prefix).unwrap_or_else(|| "\u{7f}".repeat(8));
        let lo = match start_after {
            // Strictly after: the smallest string greater than `s`.
            Some(s) if s >= prefix => format!("{s}\u{0}"),
            _ => prefix.to_string(),
        };
        let fetch = if limit == 0 { -1 } else { limit as i64 + 1 };
        let mut stmt = db
            .conn
            .prepare_cached(
                "SELECT kv.key, kv.value, kv.create_revision, kv.revision FROM kv
                 JOIN (SELECT key, MAX(revision) AS newest FROM kv
                       WHERE key >= ?1 AND key < ?2 AND revision <= ?3 GROUP BY key) AS latest
                   ON kv.revision = latest.newest
                 WHERE kv.deleted = 0 ORDER BY kv.key LIMIT ?4",
            )
            .map_err(backend)?;
        let mut entries = stmt
            .query_map(params![lo, hi, revision, fetch], |r| {
                Ok(Entry {
                    key: r.get(0)?,
                    value: r.get(1)?,
                    create_revision: r.get(2)?,
                    mod_revision: r.get(3)?,
                })
            })
            .map_err(backend)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(backend)?;
        let more = limit > 0 && entries.len() > limit;
        entries.truncate(if limit == 0 { entries.len() } else { limit });
        Ok(Page {
            entries,
            revision,
            more,
        })
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        let mut db = self.db();
        let existing = latest(&db.conn, key)?;
        if existing.as_ref().is_some_and(|l| !l.deleted) {
            return Err(StoreError::AlreadyExists(key.to_string()));
        }
        self.0
            .append(&mut db, key, value, EventKind::Put, existing.as_ref())
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<Revision, StoreError> {
        let mut db = self.db();
        let existing = latest(&db.conn, key)?.filter(|l| !l.deleted);
        let Some(existing) = existing else {
            return Err(StoreError::NotFound(key.to_string()));
        };
        if existing.revision != expected {
            return Err(StoreError::Conflict {
                key: key.to_string(),
                expected,
                current: existing.revision,
            });
        }
        self.0
            .append(&mut db, key, value, EventKind::Put, Some(&existing))
    }

    async fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> Result<(Revision, Vec<u8>), StoreError> {
        let mut db = self.db();
        let existing = latest(&db.conn, key)?.filter(|l| !l.deleted);
        let Some(existing) = existing else {
            return Err(StoreError::NotFound(key.to_string()));
        };
        if let Some(expected) = expected.filter(|e| *e != existing.revision) {
            return Err(StoreError::Conflict {
                key: key.to_string(),
                expected,
                current: existing.revision,
            });
        }
        let value = existing.value.clone();
        let revision = self.0.append(
            &mut db,
            key,
            value.clone(),
            EventKind::Delete,
            Some(&existing),
        )?;
        Ok((revision, value))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        let (mut live, backlog) = {
            let db = self.db();
            if after < db.compacted {
                return Err(StoreError::Compacted {
                    requested: after,
                    compacted: db.compacted,
                });
            }
            if after > db.current {
                return Err(StoreError::FutureRevision {
                    requested: after,
                    current: db.current,
                });
            }
            // Subscribed under the lock: nothing written after the backlog is missed.
            let live = self.0.events.subscribe();
            (
                live,
                changes_since(&db.conn, prefix, after, usize::MAX >> 1)?,
            )
        };
        let prefix = prefix.to_string();
        let store = Arc::downgrade(&self.0);
        let stream = spawn_stream(move |tx| async move {
            let mut last = after;
            for event in backlog {
                last = event.revision;
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            loop {
                let received = tokio::select! {
                    received = live.recv() => received,
                    () = tx.closed() => return,
                };
                match received {
                    Ok(event) => {
                        if event.revision <= last || !event.key.starts_with(&prefix) {
                            continue;
                        }
                        last = event.revision;
                        if tx.send(Ok((*event).clone())).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Fell behind the live feed: catch up from the log.
                        let caught_up = match store.upgrade() {
                            Some(store) => {
                                let db = store.db();
                                changes_since(&db.conn, &prefix, last, usize::MAX >> 1)
                            }
                            None => return,
                        };
                        match caught_up {
                            Ok(events) => {
                                for event in events {
                                    last = event.revision;
                                    if tx.send(Ok(event)).await.is_err() {
                                        return;
                                    }
                                }
                            }
                            Err(e) => {
                                let _ = tx.send(Err(e)).await;
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(stream)
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.db().current)
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let mut db = self.db();
        let revision = revision.min(db.current);
        if revision <= db.compacted {
            return Ok(());
        }
        let tx = db.conn.transaction().map_err(backend)?;
        // Rows superseded by a newer row of their key at or before `revision`, and deletes
        // at or before it (nothing older of their key is left to need them).
        tx.execute(
            "DELETE FROM kv WHERE revision < ?1 AND EXISTS (
                 SELECT 1 FROM kv AS newer
                 WHERE newer.key = kv.key AND newer.revision > kv.revision
                   AND newer.revision <= ?1)",
            params![revision],
        )
        .map_err(backend)?;
        tx.execute(
            "DELETE FROM kv WHERE deleted = 1 AND revision <= ?1",
            params![revision],
        )
        .map_err(backend)?;
        tx.execute(
            "INSERT INTO meta (name, value) VALUES ('compacted', ?1)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            params![revision],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)?;
        db.compacted = revision;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn v(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[tokio::test]
    async fn writes_are_revisioned_and_conditional() {
        let store = SqliteStore::in_memory().expect("store");
        let r1 = store.create("/a/x", v("1")).await.expect("create");
        assert!(matches!(
            store.create("/a/x", v("again")).await,
            Err(StoreError::AlreadyExists(_))
        ));
        let r2 = store.update("/a/x", v("2"), r1).await.expect("update");
        assert!(r2 > r1);
        match store.update("/a/x", v("stale"), r1).await {
            Err(StoreError::Conflict {
                expected, current, ..
            }) => assert_eq!((expected, current), (r1, r2)),
            other => panic!("expected a conflict, got {other:?}"),
        }
        let entry = store.get("/a/x").await.expect("get").expect("present");
        assert_eq!(
            (entry.value, entry.create_revision, entry.mod_revision),
            (v("2"), r1, r2)
        );
        assert!(matches!(
            store.delete("/a/x", Some(r1)).await,
            Err(StoreError::Conflict { .. })
        ));
        let (r3, deleted) = store.delete("/a/x", Some(r2)).await.expect("delete");
        assert_eq!(deleted, v("2"));
        assert!(store.get("/a/x").await.expect("get").is_none());
        assert!(matches!(
            store.update("/a/x", v("3"), r3).await,
            Err(StoreError::NotFound(_))
        ));
        // Re-created: a new life with its own create revision.
        let r4 = store.create("/a/x", v("new")).await.expect("recreate");
        let entry = store.get("/a/x").await.expect("get").expect("present");
        assert_eq!(entry.create_revision, r4);
    }

    #[tokio::test]
    async fn lists_page_in_key_order_as_of_a_revision() {
        let store = SqliteStore::in_memory().expect("store");
        for name in ["c", "a", "b", "d"] {
            store
                .create(&format!("/p/{name}"), v(name))
                .await
                .expect("create");
        }
        store.create("/pz", v("outside")).await.expect("create");
        store.create("/o/a", v("outside")).await.expect("create");
        let page = store.list("/p/", None, 3, None).await.expect("list");
        let keys: Vec<_> = page.entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["/p/a", "/p/b", "/p/c"]);
        assert!(page.more);
        let at = page.revision;
        // Changes after the first page do not show in the rest of it.
        store.delete("/p/d", None).await.expect("delete");
        store.create("/p/e", v("e")).await.expect("create");
        let rest = store
            .list("/p/", Some("/p/c"), 3, Some(at))
            .await
            .expect("list");
        let keys: Vec<_> = rest.entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["/p/d"]);
        assert!(!rest.more);
        let now = store.list("/p/", None, 0, None).await.expect("list");
        let keys: Vec<_> = now.entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["/p/a", "/p/b", "/p/c", "/p/e"]);
        assert!(matches!(
            store.list("/p/", None, 0, Some(now.revision + 5)).await,
            Err(StoreError::FutureRevision { .. })
        ));
    }

    #[tokio::test]
    async fn watches_replay_then_follow() {
        let store = SqliteStore::in_memory().expect("store");
        let r1 = store.create("/w/a", v("1")).await.expect("create");
        store.update("/w/a", v("2"), r1).await.expect("update");
        store.create("/x/other", v("x")).await.expect("create");
        let mut watch = store.watch("/w/", r1).await.expect("watch");
        let first = watch.next().await.expect("event").expect("ok");
        assert_eq!((first.kind, first.value.clone()), (EventKind::Put, v("2")));
        assert_eq!(first.prev_value, Some(v("1")));
        assert!(!first.created);
        store.create("/w/b", v("b")).await.expect("create");
        store.delete("/w/a", None).await.expect("delete");
        let second = watch.next().await.expect("event").expect("ok");
        assert_eq!((second.key.as_str(), second.created), ("/w/b", true));
        let third = watch.next().await.expect("event").expect("ok");
        assert_eq!((third.kind, third.value), (EventKind::Delete, v("2")));
    }

    #[tokio::test]
    async fn a_watch_that_falls_behind_catches_up_from_the_log() {
        let store = SqliteStore::in_memory().expect("store");
        let start = store.current_revision().await.expect("rev");
        let mut watch = store.watch("/k/", start).await.expect("watch");
        let total = LIVE_EVENTS + 500;
        for i in 0..total {
            store
                .create(&format!("/k/{i:05}"), v("x"))
                .await
                .expect("create");
        }
        let mut last = start;
        for _ in 0..total {
            let event = watch.next().await.expect("event").expect("ok");
            assert_eq!(event.revision, last + 1, "no change skipped or repeated");
            last = event.revision;
        }
    }

    #[tokio::test]
    async fn compaction_keeps_current_values_and_refuses_old_revisions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        let keep;
        {
            let store = SqliteStore::open(&path).expect("open");
            let r1 = store.create("/c/a", v("1")).await.expect("create");
            let r2 = store.update("/c/a", v("2"), r1).await.expect("update");
            store.create("/c/gone", v("g")).await.expect("create");
            store.delete("/c/gone", None).await.expect("delete");
            keep = store.update("/c/a", v("3"), r2).await.expect("update");
            store.compact(keep).await.expect("compact");
            assert!(matches!(
                store.watch("/c/", r1).await.err(),
                Some(StoreError::Compacted { .. })
            ));
        }
        // Reopened: values, revision counter and compaction point survive.
        let store = SqliteStore::open(&path).expect("reopen");
        assert_eq!(store.current_revision().await.expect("rev"), keep);
        let page = store.list("/c/", None, 0, None).await.expect("list");
        assert_eq!(page.entries.len(), 1);
        assert_eq!(page.entries[0].value, v("3"));
        assert!(matches!(
            store.list("/c/", None, 0, Some(keep - 1)).await,
            Err(StoreError::Compacted { .. })
        ));
        let next = store.create("/c/b", v("b")).await.expect("create");
        assert_eq!(next, keep + 1, "revisions are never reused");
    }
}
