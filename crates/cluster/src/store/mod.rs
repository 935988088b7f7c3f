//! The API server's storage: a revisioned key-value store in the manner of etcd v3.
//!
//! Every write gets the next revision of the whole store; an object's `resourceVersion` is
//! the revision of its last write. Lists can be read as of a revision (consistent paging),
//! and watches replay every change after a revision, until compaction forgets it (then the
//! client re-lists, as it would after etcd's `ErrCompacted`).

pub mod etcd;
pub mod sqlite;

use std::pin::Pin;

use futures_util::Stream;

pub type Revision = i64;

/// A key's current value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: Revision,
    pub mod_revision: Revision,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change. For a delete, `value` is the value the key held when it was deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub key: String,
    pub value: Vec<u8>,
    /// The value before this change, if the key existed.
    pub prev_value: Option<Vec<u8>>,
    pub revision: Revision,
    /// True when this put created the key.
    pub created: bool,
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub entries: Vec<Entry>,
    /// The revision the list was read at.
    pub revision: Revision,
    /// More keys follow the last one returned.
    pub more: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {0:?} already exists")]
    AlreadyExists(String),
    #[error("key {0:?} not found")]
    NotFound(String),
    /// The key's revision is not the one the write was conditioned on.
    #[error("key {key:?} is at revision {current}, not {expected}")]
    Conflict {
        key: String,
        expected: Revision,
        current: Revision,
    },
    /// The revision asked for has been compacted away.
    #[error("revision {requested} is compacted (oldest kept: {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    /// The revision asked for is in the future.
    #[error("revision {requested} is newer than the store ({current})")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    #[error("storage: {0}")]
    Backend(String),
}

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Event, StoreError>> + Send>>;

#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError>;

    /// Keys under `prefix` in key order, after `start_after` if given, at most `limit`
    /// (0: all), as of revision `at` (`None`: the current one).
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        at: Option<Revision>,
    ) -> Result<Page, StoreError>;

    /// Creates `key`; fails if it exists.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError>;

    /// Replaces `key`'s value if its last write was at `expected`.
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<Revision, StoreError>;

    /// Deletes `key`, if its last write was at `expected` when given. Returns the revision
    /// of the delete and the value deleted.
    async fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> Result<(Revision, Vec<u8>), StoreError>;

    /// Every change under `prefix` after revision `after`, then live changes as they come.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError>;

    async fn current_revision(&self) -> Result<Revision, StoreError>;

    /// Forgets history older than `revision` (current values are kept).
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;
}
