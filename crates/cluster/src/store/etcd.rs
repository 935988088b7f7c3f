//! The store on an etcd v3 cluster, for API servers that keep their state outside
//! themselves (several servers on one cluster, or the cluster's data surviving them).
//!
//! Each operation is one etcd request, so etcd's revision is the store's revision and etcd's
//! guarantees are the store's: writes are transactions conditioned on the key's create or
//! mod revision, lists are ranges read at a revision, watches are etcd watches with previous
//! values. Every key lives under a prefix, so several clusters can share one etcd.
//!
//! The client balances requests over every endpoint it is given, and keeps trying a dead
//! member's endpoint, so some requests fail to connect for as long as it is down. A request
//! that a dead member refused, or that etcd turned away before proposing it (no leader during
//! an election), is sent again, most likely elsewhere; a read is also sent again after any
//! transient failure. A write that may have reached etcd is not: replaying it could apply it
//! twice or report a conflict with itself, so its caller gets the error and decides, as
//! Kubernetes clients do with a server timeout.

use std::error::Error as _;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, KeyValue,
    KvClient, ResponseHeader, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchClient, WatchOptions,
    WatchResponse,
};
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout, Instant};

use super::{Entry, Event, EventKind, Page, Revision, Store, StoreError, WatchStream};

/// HTTP/2 pings on open streams, so a watch on a member that vanished without closing its
/// connection (power loss, partition) errors instead of waiting forever. etcd turns away
/// clients that ping more often than every 5 s; these are Kubernetes' values.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// A member that does not accept a connection this fast is treated as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for one reply (for a watch: for it to be set up). A request that the
/// member accepted but never answers fails after this, rather than holding its caller.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long requests are retried through member failures: a leader election takes about
/// one election timeout (1 s by default) plus the reconnects.
const RETRY_FOR: Duration = Duration::from_secs(15);
const FIRST_PAUSE: Duration = Duration::from_millis(20);
const LONGEST_PAUSE: Duration = Duration::from_millis(500);
/// Lists without a limit, and watch replays, can be far larger than tonic's 4 MiB default.
const MAX_MESSAGE: usize = i32::MAX as usize;
/// etcd only tells its compaction point to a watch; this bounds the wait for that answer.
const COMPACTION_PROBE: Duration = Duration::from_secs(2);
/// Events waiting for the consumer of a watch before etcd's stream is no longer read.
const WATCH_BUFFER: usize = 256;

const COMPACTED: &str = "required revision has been compacted";
const FUTURE: &str = "required revision is a future revision";
/// etcd's answers that mean it turned the request away before proposing it, for a while.
const REFUSED: [&str; 2] = ["etcdserver: no leader", "etcdserver: too many requests"];
/// gRPC status codes by number: tonic's `Code` cannot be named without depending on tonic
/// itself, at whatever version etcd-client uses.
const UNAVAILABLE: i32 = 14;
const UNKNOWN: i32 = 2;
const CANCELLED: i32 = 1;
const DEADLINE_EXCEEDED: i32 = 4;

/// One connection pool to the cluster, shared by every request and watch of the store (each
/// member gets one HTTP/2 connection that requests multiplex over), so one store per process
/// is enough.
pub struct EtcdStore {
    kv: KvClient,
    watch: WatchClient,
    /// Prepended to every key; no trailing slash.
    root: Arc<str>,
}

/// Whether a failed request may be sent again.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Replay {
    /// Reads and watch set-ups: sending one again changes nothing.
    Always,
    /// Writes: only when etcd cannot have received the first attempt.
    IfUnsent,
}

/// What a failed request tells.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    Compacted,
    Future,
    /// The request never reached etcd's log: sending it again is safe.
    Unsent,
    /// Connection trouble after the request may have been sent.
    Transient,
    Fatal,
}

fn classify(e: &etcd_client::Error) -> Failure {
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            let message = status.message();
            if message.contains(COMPACTED) {
                return Failure::Compacted;
            }
            if message.contains(FUTURE) {
                return Failure::Future;
            }
            if REFUSED.iter().any(|r| message.contains(r)) {
                return Failure::Unsent;
            }
            let code = i32::from(status.code());
            if code == UNAVAILABLE && never_connected(status) {
                return Failure::Unsent;
            }
            // Unknown and Cancelled from the client's side (a source error attached) are
            // broken connections and expired timeouts; from etcd they are its own failures.
            let local = status.source().is_some();
            if code == UNAVAILABLE
                || code == DEADLINE_EXCEEDED
                || (local && (code == UNKNOWN || code == CANCELLED))
            {
                return Failure::Transient;
            }
            Failure::Fatal
        }
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
            Failure::Transient
        }
        _ => Failure::Fatal,
    }
}

/// The request failed while connecting to the member, so no byte of it was sent.
fn never_connected(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = error.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused | AddrNotAvailable | HostUnreachable | NetworkUnreachable
            ) {
                return true;
            }
        }
        if e.to_string().contains("tcp connect error") {
            return true;
        }
        source = e.source();
    }
    false
}

fn backend(e: etcd_client::Error) -> StoreError {
    StoreError::Backend(format!("etcd: {e}"))
}

fn revision_of(header: Option<&ResponseHeader>) -> Result<Revision, StoreError> {
    header
        .map(ResponseHeader::revision)
        .ok_or_else(|| StoreError::Backend("etcd: response without a header".into()))
}

/// The smallest key greater than every key that starts with `prefix` (etcd's `\0`, "to the
/// end", when there is none).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The etcd key range `[lo, hi)` holding the keys under `root` that start with `prefix`,
/// kept inside `root`'s own keys (all of which start with `root` + '/') whatever `prefix` is,
/// so no prefix reaches a neighbour sharing the start of the name ("/kiln2" for "/kiln").
fn span(root: &str, prefix: &str) -> (Vec<u8>, Vec<u8>) {
    let own = [root.as_bytes(), b"/"].concat();
    let own_end = prefix_end(&own);
    let lo = [root.as_bytes(), prefix.as_bytes()].concat();
    let hi = match prefix_end(&lo) {
        // "To the end" (an empty `lo`): only as far as the root's keys go.
        end if end == [0] => own_end,
        end => end.min(own_end),
    };
    (lo.max(own), hi)
}

fn strip(root: &str, key: &[u8]) -> Result<String, StoreError> {
    let relative = key.strip_prefix(root.as_bytes()).ok_or_else(|| {
        StoreError::Backend(format!(
            "etcd returned key {:?} outside {root:?}",
            String::from_utf8_lossy(key)
        ))
    })?;
    String::from_utf8(relative.to_vec()).map_err(|_| {
        StoreError::Backend(format!(
            "etcd key {:?} is not UTF-8",
            String::from_utf8_lossy(key)
        ))
    })
}

fn entry(root: &str, kv: &KeyValue) -> Result<Entry, StoreError> {
    Ok(Entry {
        key: strip(root, kv.key())?,
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

fn event(root: &str, event: &etcd_client::Event) -> Result<Event, StoreError> {
    let kv = event
        .kv()
        .ok_or_else(|| StoreError::Backend("etcd: watch event without a key".into()))?;
    let key = strip(root, kv.key())?;
    let prev_value = event.prev_kv().map(|p| p.value().to_vec());
    Ok(match event.event_type() {
        EventType::Put => Event {
            kind: EventKind::Put,
            key,
            value: kv.value().to_vec(),
            prev_value,
            revision: kv.mod_revision(),
            created: kv.create_revision() == kv.mod_revision(),
        },
        // etcd's delete event carries only the key; the value is the previous one (missing
        // only if compaction raced the event's delivery).
        EventType::Delete => Event {
            kind: EventKind::Delete,
            key,
            value: prev_value.clone().unwrap_or_default(),
            prev_value,
            revision: kv.mod_revision(),
            created: false,
        },
    })
}

/// The one key-value a transaction's single `get` (its failure branch) read.
fn read_back(txn: &TxnResponse) -> Option<KeyValue> {
    txn.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(mut get) => get.take_kvs().into_iter().next(),
        _ => None,
    })
}

impl EtcdStore {
    /// Connects to the etcd cluster at `endpoints` (`http://host:port`, or `host:port`), keeping
    /// every key under `prefix`. Fails if the cluster cannot be reached, so a wrong address
    /// shows at start-up rather than on the first request.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<EtcdStore, StoreError> {
        if endpoints.is_empty() {
            return Err(StoreError::Backend("no etcd endpoints given".into()));
        }
        let options = ConnectOptions::new()
            .with_keep_alive(KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT)
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            // A member cut off from the leader refuses requests, and ends its watches,
            // instead of serving stale reads or holding writes until they time out.
            .with_require_leader(true);
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(backend)?;
        let store = EtcdStore {
            kv: client.kv_client().max_decoding_message_size(MAX_MESSAGE),
            watch: client.watch_client().max_decoding_message_size(MAX_MESSAGE),
            root: Arc::from(prefix.trim_end_matches('/')),
        };
        store.current_revision().await.map_err(|e| {
            StoreError::Backend(format!("etcd at {} unreachable: {e}", endpoints.join(",")))
        })?;
        Ok(store)
    }

    /// The etcd key for `key`. Keys must start with '/': anything else could reach out of
    /// this store's prefix into a neighbour's ("/kiln" + "2/x" is "/kiln2/x").
    fn full(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        if !key.starts_with('/') {
            return Err(StoreError::Backend(format!(
                "key {key:?} does not start with '/'"
            )));
        }
        Ok([self.root.as_bytes(), key.as_bytes()].concat())
    }

    /// Sends a request built by `send`, again while it fails in a way `replay` allows and
    /// the retry time lasts.
    async fn request<T, F, Fut>(&self, replay: Replay, mut send: F) -> Result<T, etcd_client::Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + RETRY_FOR;
        // The first retry goes at once: the balancer most likely picks another member.
        let mut pause = Duration::ZERO;
        loop {
            let error = match send().await {
                Ok(value) => return Ok(value),
                Err(e) => e,
            };
            let again = match classify(&error) {
                Failure::Unsent => true,
                Failure::Transient => replay == Replay::Always,
                _ => false,
            };
            if !again || Instant::now() + pause > deadline {
                return Err(error);
            }
            sleep(pause).await;
            pause = (pause * 2).clamp(FIRST_PAUSE, LONGEST_PAUSE);
        }
    }

    /// A range request (for reads that have to read at a revision).
    async fn range(
        &self,
        key: Vec<u8>,
        options: GetOptions,
    ) -> Result<etcd_client::GetResponse, etcd_client::Error> {
        self.request(Replay::Always, || {
            let mut kv = self.kv.clone();
            let key = key.clone();
            let options = options.clone();
            async move { kv.get(key, Some(options)).await }
        })
        .await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        self.request(Replay::IfUnsent, || {
            let mut kv = self.kv.clone();
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })
        .await
        .map_err(backend)
    }

    /// Checks that revision `at` can still be read: not compacted, not in the future.
    async fn readable(&self, at: Revision) -> Result<(), StoreError> {
        if at < 0 {
            return Err(self.compacted(at).await);
        }
        // etcd's history starts at revision 1 (revision 0 would mean "now" to it); what
        // holds for 1 holds for 0, which has no changes of its own.
        let options = GetOptions::new()
            .with_revision(at.max(1))
            .with_keys_only()
            .with_limit(1);
        match self.range(self.root.as_bytes().to_vec(), options).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.revision_error(at, e).await),
        }
    }

    /// The store error for a failed read at revision `at`.
    async fn revision_error(&self, at: Revision, e: etcd_client::Error) -> StoreError {
        match classify(&e) {
            Failure::Compacted => self.compacted(at).await,
            Failure::Future => match self.current_revision().await {
                Ok(current) => StoreError::FutureRevision {
                    requested: at,
                    current,
                },
                Err(e) => e,
            },
            _ => backend(e),
        }
    }

    /// The error for `requested` having been compacted. etcd tells its compaction point only
    /// to a watch from before it, so one is opened on a key nobody writes (the bare prefix);
    /// if it does not answer in time, the compaction is at least past `requested`.
    async fn compacted(&self, requested: Revision) -> StoreError {
        let mut watch = self.watch.clone();
        let key = self.root.as_bytes().to_vec();
        let probe = async move {
            let options = WatchOptions::new().with_start_revision(1);
            let mut stream = watch.watch(key, Some(options)).await.ok()?;
            loop {
                let response = stream.message().await.ok()??;
                if response.compact_revision() > 0 {
                    return Some(response.compact_revision());
                }
                if response.canceled() {
                    return None;
                }
            }
        };
        let compacted = timeout(COMPACTION_PROBE, probe)
            .await
            .ok()
            .flatten()
            .unwrap_or(requested.saturating_add(1));
        StoreError::Compacted {
            requested,
            compacted,
        }
    }

    /// Opens an etcd watch and waits for etcd's first answer (its confirmation, or refusal),
    /// so a watch that cannot be set up fails here rather than as its stream's first item.
    async fn open_watch(
        &self,
        lo: Vec<u8>,
        options: WatchOptions,
    ) -> Result<(etcd_client::WatchStream, WatchResponse), StoreError> {
        self.request(Replay::Always, || {
            let mut watch = self.watch.clone();
            let lo = lo.clone();
            let options = options.clone();
            async move {
                let mut stream = watch.watch(lo, Some(options)).await?;
                match timeout(REQUEST_TIMEOUT, stream.message()).await {
                    Ok(Ok(Some(first))) => Ok((stream, first)),
                    Ok(Ok(None)) => Err(etcd_client::Error::WatchError(
                        "etcd closed the watch before confirming it".into(),
                    )),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(etcd_client::Error::WatchError(
                        "etcd did not confirm the watch in time".into(),
                    )),
                }
            }
        })
        .await
        .map_err(backend)
    }
}

/// The error a cancelled etcd watch stands for.
fn cancelled(response: &WatchResponse, last: Revision) -> StoreError {
    if response.compact_revision() > 0 {
        StoreError::Compacted {
            requested: last,
            compacted: response.compact_revision(),
        }
    } else {
        StoreError::Backend(format!(
            "etcd cancelled the watch: {}",
            response.cancel_reason()
        ))
    }
}

/// Passes etcd's watch responses on as events until the consumer goes away or the watch
/// ends; how it ended is the last item, so a consumer never waits on a dead watch.
async fn feed(
    root: Arc<str>,
    mut stream: etcd_client::WatchStream,
    first: WatchResponse,
    mut last: Revision,
    tx: mpsc::Sender<Result<Event, StoreError>>,
) {
    let mut response = first;
    loop {
        for e in response.events() {
            let event = event(&root, e);
            let failed = event.is_err();
            if let Ok(event) = &event {
                last = event.revision;
            }
            if tx.send(event).await.is_err() || failed {
                return;
            }
        }
        if response.canceled() {
            let _ = tx.send(Err(cancelled(&response, last))).await;
            return;
        }
        let message = tokio::select! {
            message = stream.message() => message,
            () = tx.closed() => return,
        };
        response = match message {
            Ok(Some(response)) => response,
            Ok(None) => {
                let _ = tx
                    .send(Err(StoreError::Backend("etcd ended the watch".into())))
                    .await;
                return;
            }
            Err(e) => {
                let _ = tx
                    .send(Err(StoreError::Backend(format!("etcd watch lost: {e}"))))
                    .await;
                return;
            }
        };
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let response = self
            .range(self.full(key)?, GetOptions::new())
            .await
            .map_err(backend)?;
        response
            .kvs()
            .first()
            .map(|kv| entry(&self.root, kv))
            .transpose()
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        at: Option<Revision>,
    ) -> Result<Page, StoreError> {
        if let Some(at) = at.filter(|r| *r <= 0) {
            // Nothing existed before etcd's first revision.
            self.readable(at).await?;
            return Ok(Page {
                entries: Vec::new(),
                revision: at,
                more: false,
            });
        }
        let (mut lo, hi) = span(&self.root, prefix);
        if let Some(after) = start_after {
            // Strictly after: the smallest key greater than `after`.
            lo = lo.max([self.root.as_bytes(), after.as_bytes(), b"\0"].concat());
        }
        let mut options = GetOptions::new().with_range(hi);
        if limit > 0 {
            options = options.with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        }
        if let Some(at) = at {
            options = options.with_revision(at);
        }
        let response = match self.range(lo, options).await {
            Ok(response) => response,
            Err(e) => return Err(self.revision_error(at.unwrap_or(0), e).await),
        };
        let revision = match at {
            Some(at) => at,
            None => revision_of(response.header())?,
        };
        let entries = response
            .kvs()
            .iter()
            .map(|kv| entry(&self.root, kv))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page {
            entries,
            revision,
            more: response.more(),
        })
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        let full = self.full(key)?;
        let txn = Txn::new()
            .when([Compare::create_revision(full.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(full, value, None)]);
        let response = self.txn(txn).await?;
        if !response.succeeded() {
            return Err(StoreError::AlreadyExists(key.to_string()));
        }
        revision_of(response.header())
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<Revision, StoreError> {
        let full = self.full(key)?;
        // A missing key's mod revision compares as 0: the version check keeps an update
        // expecting 0 from creating it.
        let txn = Txn::new()
            .when([
                Compare::version(full.clone(), CompareOp::Greater, 0),
                Compare::mod_revision(full.clone(), CompareOp::Equal, expected),
            ])
            .and_then([TxnOp::put(full.clone(), value, None)])
            .or_else([TxnOp::get(full, None)]);
        let response = self.txn(txn).await?;
        if response.succeeded() {
            return revision_of(response.header());
        }
        match read_back(&response) {
            None => Err(StoreError::NotFound(key.to_string())),
            Some(current) => Err(StoreError::Conflict {
                key: key.to_string(),
                expected,
                current: current.mod_revision(),
            }),
        }
    }

    async fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> Result<(Revision, Vec<u8>), StoreError> {
        let full = self.full(key)?;
        let mut conditions = vec![Compare::version(full.clone(), CompareOp::Greater, 0)];
        if let Some(expected) = expected {
            conditions.push(Compare::mod_revision(
                full.clone(),
                CompareOp::Equal,
                expected,
            ));
        }
        let txn = Txn::new()
            .when(conditions)
            .and_then([TxnOp::delete(
                full.clone(),
                Some(DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(full, None)]);
        let response = self.txn(txn).await?;
        if !response.succeeded() {
            return match (read_back(&response), expected) {
                (Some(current), Some(expected)) => Err(StoreError::Conflict {
                    key: key.to_string(),
                    expected,
                    current: current.mod_revision(),
                }),
                _ => Err(StoreError::NotFound(key.to_string())),
            };
        }
        let revision = revision_of(response.header())?;
        let deleted = response
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Delete(mut delete) => delete.take_prev_kvs().into_iter().next(),
                _ => None,
            })
            .ok_or_else(|| StoreError::Backend("etcd: delete without the deleted value".into()))?;
        Ok((revision, deleted.value().to_vec()))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        // etcd accepts a watch from a compacted revision and cancels it a moment later, and
        // waits for a future one to come: reading at `after` first reports both now.
        self.readable(after).await?;
        let (lo, hi) = span(&self.root, prefix);
        let options = WatchOptions::new()
            .with_range(hi)
            .with_start_revision(after.saturating_add(1))
            .with_prev_key();
        let (stream, first) = self.open_watch(lo, options).await?;
        if first.canceled() {
            return Err(cancelled(&first, after));
        }
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        tokio::spawn(feed(self.root.clone(), stream, first, after, tx));
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        let options = GetOptions::new().with_keys_only().with_limit(1);
        let response = self
            .range(self.root.as_bytes().to_vec(), options)
            .await
            .map_err(backend)?;
        revision_of(response.header())
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let mut revision = revision;
        loop {
            if revision <= 0 {
                return Ok(());
            }
            // Physical: returns once the history is gone, so reads after it see it gone.
            let options = etcd_client::CompactionOptions::new().with_physical();
            let result = self
                .request(Replay::Always, || {
                    let mut kv = self.kv.clone();
                    let options = options.clone();
                    async move { kv.compact(revision, Some(options)).await }
                })
                .await;
            match result {
                Ok(_) => return Ok(()),
                // Already compacted that far (compacting is idempotent, so a replay can
                // land here too).
                Err(e) if classify(&e) == Failure::Compacted => return Ok(()),
                // As much history as there is: compact up to now.
                Err(e) if classify(&e) == Failure::Future => {
                    let current = self.current_revision().await?;
                    if current >= revision {
                        return Err(backend(e));
                    }
                    revision = current;
                }
                Err(e) => return Err(backend(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(lo: &str, hi: &str) -> (Vec<u8>, Vec<u8>) {
        (lo.as_bytes().to_vec(), hi.as_bytes().to_vec())
    }

    #[test]
    fn ranges_stay_inside_the_root() {
        assert_eq!(span("/kiln", "/p/"), pair("/kiln/p/", "/kiln/p0"));
        assert_eq!(span("/kiln", ""), pair("/kiln/", "/kiln0"));
        assert_eq!(span("", ""), pair("/", "0"));
        // Not a path: an empty range (etcd reads `lo >= hi` as nothing).
        let (lo, hi) = span("/kiln", "2");
        assert!(lo >= hi);
    }

    #[test]
    fn prefix_ends_skip_trailing_ff_bytes() {
        assert_eq!(prefix_end(b"/a"), b"/b");
        assert_eq!(prefix_end(b"/a\xff"), b"/b");
        assert_eq!(prefix_end(b""), b"\0");
    }
}
