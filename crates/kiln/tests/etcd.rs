//! The etcd store against a real three-member etcd cluster on loopback: the same behaviour
//! as the embedded store, reads, writes and watches surviving the loss of a member, and
//! `kiln up --datastore etcd://...` serving kubectl through it.
//!
//! Needs the `etcd` binary (Debian's `etcd-server`), or `KILN_TEST_ETCD` naming one. Without
//! it these tests fail when `CI` is set, and are skipped otherwise.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use kiln_cluster::store::etcd::EtcdStore;
use kiln_cluster::store::{EventKind, Revision, Store, StoreError, WatchStream};
use tokio::time::{sleep, timeout, Instant};

/// One cluster at a time, across threads and test processes (nextest runs each test in its
/// own): each is three etcd processes, and the failover test waits on elections that a busy
/// machine slows down. The lock is released when the file is closed.
fn one_cluster_at_a_time() -> std::fs::File {
    let path = std::env::temp_dir().join("kiln-etcd-store-tests.lock");
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .expect("open the test lock file");
    file.lock().expect("take the test lock");
    file
}

fn v(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn etcd_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("KILN_TEST_ETCD") {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("etcd"))
            .find(|p| p.is_file())
    })
}

/// The etcd binary, or `None` when the test should be skipped (not under CI).
fn etcd_or_skip(test: &str) -> Option<PathBuf> {
    match etcd_binary() {
        Some(path) => Some(path),
        None if std::env::var_os("CI").is_some() => panic!(
            "etcd not found on PATH (and KILN_TEST_ETCD not set): install Debian's \
             etcd-server package (apt-get install etcd-server) for the etcd store tests"
        ),
        None => {
            eprintln!("skipping {test}: etcd not found on PATH (apt-get install etcd-server)");
            None
        }
    }
}

/// Free loopback ports, all held until every one is picked so none repeats.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

struct Member {
    name: String,
    client_url: String,
    child: Option<Child>,
    log: PathBuf,
}

/// A three-member etcd cluster in a temporary directory; its processes are killed on drop.
struct Cluster {
    members: Vec<Member>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start(etcd: &Path) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports = free_ports(6);
        let names = ["m1", "m2", "m3"];
        let peer_url = |i: usize| format!("http://127.0.0.1:{}", ports[2 * i + 1]);
        let initial = (0..3)
            .map(|i| format!("{}={}", names[i], peer_url(i)))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("kiln-test-{}", ports[0]);
        let mut members = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let client_url = format!("http://127.0.0.1:{}", ports[2 * i]);
            let log = dir.path().join(format!("{name}.log"));
            let out = std::fs::File::create(&log).expect("log file");
            let err = out.try_clone().expect("log file");
            let child = Command::new(etcd)
                .args(["--name", name])
                .arg("--data-dir")
                .arg(dir.path().join(name))
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url(i)])
                .args(["--initial-advertise-peer-urls", &peer_url(i)])
                .args(["--initial-cluster", &initial])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", &token])
                .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .expect("start etcd");
            members.push(Member {
                name: name.to_string(),
                client_url,
                child: Some(child),
                log,
            });
        }
        let cluster = Cluster { members, _dir: dir };
        cluster.wait_healthy().await;
        cluster
    }

    fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// Every member answers a linearizable read (so there is a leader and a quorum).
    async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        for member in &self.members {
            loop {
                let ok = async {
                    let mut client = etcd_client::Client::connect([&member.client_url], None)
                        .await
                        .ok()?;
                    timeout(Duration::from_secs(2), client.get("/health", None))
                        .await
                        .ok()?
                        .ok()
                };
                if ok.await.is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    panic!("etcd cluster not healthy in time:\n{}", self.logs());
                }
                sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// The index of the member that leads now.
    async fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for (i, member) in self.members.iter().enumerate() {
                if member.child.is_none() {
                    continue;
                }
                let Ok(mut client) = etcd_client::Client::connect([&member.client_url], None).await
                else {
                    continue;
                };
                if let Ok(Ok(status)) = timeout(Duration::from_secs(2), client.status()).await {
                    let id = status.header().map(|h| h.member_id());
                    if id == Some(status.leader()) {
                        return i;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no etcd leader:\n{}",
                self.logs()
            );
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILLs member `i`: no goodbye to its peers or clients.
    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            child.kill().expect("kill etcd");
            child.wait().expect("reap etcd");
        }
    }

    fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                let log = std::fs::read_to_string(&m.log).unwrap_or_default();
                let tail: Vec<_> = log.lines().rev().take(20).collect();
                let tail: Vec<_> = tail.into_iter().rev().collect();
                format!("--- {} ---\n{}", m.name, tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            if let Some(mut child) = self.members[i].child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

async fn store(cluster: &Cluster) -> EtcdStore {
    EtcdStore::connect(&cluster.endpoints(), "/kiln")
        .await
        .expect("connect")
}

async fn next(watch: &mut WatchStream) -> kiln_cluster::store::Event {
    timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("an event in time")
        .expect("the watch goes on")
        .expect("an event, not an error")
}

/// A fresh cluster for one test, or `None` when the test is skipped.
async fn cluster_for(test: &str) -> Option<(std::fs::File, Cluster)> {
    let etcd = etcd_or_skip(test)?;
    let serial = one_cluster_at_a_time();
    let cluster = Cluster::start(&etcd).await;
    Some((serial, cluster))
}

fn keys(entries: &[kiln_cluster::store::Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.key.as_str()).collect()
}

#[tokio::test]
async fn writes_are_revisioned_and_conditional() {
    let Some((_serial, cluster)) = cluster_for("writes_are_revisioned_and_conditional").await
    else {
        return;
    };
    let store = store(&cluster).await;
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
    assert!(r3 > r2);
    assert!(store.get("/a/x").await.expect("get").is_none());
    assert!(matches!(
        store.update("/a/x", v("3"), r3).await,
        Err(StoreError::NotFound(_))
    ));
    // An absent key's mod revision reads as 0 in etcd: expecting 0 must not create it.
    assert!(matches!(
        store.update("/a/x", v("3"), 0).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.delete("/a/x", None).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.delete("/a/x", Some(0)).await,
        Err(StoreError::NotFound(_))
    ));
    // Re-created: a new life with its own create revision.
    let r4 = store.create("/a/x", v("new")).await.expect("recreate");
    let entry = store.get("/a/x").await.expect("get").expect("present");
    assert_eq!((entry.create_revision, entry.mod_revision), (r4, r4));
    assert_eq!(store.current_revision().await.expect("rev"), r4);
    let (r5, deleted) = store.delete("/a/x", None).await.expect("delete");
    assert_eq!((r5, deleted), (r4 + 1, v("new")));
}

#[tokio::test]
async fn lists_page_in_key_order_as_of_a_revision() {
    let Some((_serial, cluster)) = cluster_for("lists_page_in_key_order_as_of_a_revision").await
    else {
        return;
    };
    let store = store(&cluster).await;
    for name in ["c", "a", "b", "d"] {
        store
            .create(&format!("/p/{name}"), v(name))
            .await
            .expect("create");
    }
    store.create("/pz", v("outside")).await.expect("create");
    store.create("/o/a", v("outside")).await.expect("create");
    let page = store.list("/p/", None, 3, None).await.expect("list");
    assert_eq!(keys(&page.entries), ["/p/a", "/p/b", "/p/c"]);
    assert!(page.more);
    let at = page.revision;
    // Changes after the first page do not show in the rest of it.
    store.delete("/p/d", None).await.expect("delete");
    store.create("/p/e", v("e")).await.expect("create");
    let rest = store
        .list("/p/", Some("/p/c"), 3, Some(at))
        .await
        .expect("list");
    assert_eq!(keys(&rest.entries), ["/p/d"]);
    assert_eq!(rest.revision, at);
    assert!(!rest.more);
    let now = store.list("/p/", None, 0, None).await.expect("list");
    assert_eq!(keys(&now.entries), ["/p/a", "/p/b", "/p/c", "/p/e"]);
    assert_eq!(now.revision, store.current_revision().await.expect("rev"));
    assert!(!now.more);
    match store.list("/p/", None, 0, Some(now.revision + 5)).await {
        Err(StoreError::FutureRevision { requested, current }) => {
            assert_eq!((requested, current), (now.revision + 5, now.revision))
        }
        other => panic!("expected a future revision, got {other:?}"),
    }
    // A page boundary exactly at the end of the keys, a start before the prefix, and a
    // start past every key.
    let two = store
        .list("/p/", Some("/p/b"), 2, None)
        .await
        .expect("list");
    assert_eq!(keys(&two.entries), ["/p/c", "/p/e"]);
    assert!(!two.more);
    let from_before = store.list("/p/", Some("/a"), 1, None).await.expect("list");
    assert_eq!(keys(&from_before.entries), ["/p/a"]);
    assert!(from_before.more);
    let past = store.list("/p/", Some("/q"), 0, None).await.expect("list");
    assert!(past.entries.is_empty() && !past.more);
    let past_then = store
        .list("/p/", Some("/p/z"), 0, Some(at))
        .await
        .expect("list");
    assert_eq!((past_then.entries.len(), past_then.revision), (0, at));
    // Nothing existed before etcd's first revision.
    let origin = store.list("/p/", None, 0, Some(0)).await.expect("list");
    assert_eq!((origin.entries.len(), origin.revision), (0, 0));
    // An empty prefix lists everything, in key order.
    let all = store.list("", None, 0, None).await.expect("list");
    assert_eq!(
        keys(&all.entries),
        ["/o/a", "/p/a", "/p/b", "/p/c", "/p/e", "/pz"]
    );
}

#[tokio::test]
async fn stores_under_different_prefixes_do_not_see_each_other() {
    let Some((_serial, cluster)) =
        cluster_for("stores_under_different_prefixes_do_not_see_each_other").await
    else {
        return;
    };
    let one = store(&cluster).await;
    // "/kiln2" starts with "/kiln": its keys must still stay out of "/kiln"'s lists.
    let two = EtcdStore::connect(&cluster.endpoints(), "/kiln2/")
        .await
        .expect("connect");
    let start = one.current_revision().await.expect("rev");
    let mut watch = one.watch("", start).await.expect("watch");
    two.create("/x/a", v("two")).await.expect("create");
    one.create("/x/b", v("one")).await.expect("create");
    assert!(one.get("/x/a").await.expect("get").is_none());
    let listed = one.list("", None, 0, None).await.expect("list");
    assert_eq!(keys(&listed.entries), ["/x/b"]);
    let listed = two.list("/x/", None, 0, None).await.expect("list");
    assert_eq!(keys(&listed.entries), ["/x/a"]);
    let event = next(&mut watch).await;
    assert_eq!(event.key, "/x/b", "the other prefix's write is not seen");
    // Keys are paths: one without a leading '/' could reach another prefix's keys.
    assert!(matches!(
        one.create("2/x/a", v("escape")).await,
        Err(StoreError::Backend(_))
    ));
    let raw = etcd_client::Client::connect(cluster.endpoints(), None)
        .await
        .expect("connect")
        .get("/kiln2/x/a", None)
        .await
        .expect("get");
    assert_eq!(
        raw.kvs()[0].value(),
        b"two",
        "kept under the prefix as given"
    );
}

#[tokio::test]
async fn watches_replay_then_follow() {
    let Some((_serial, cluster)) = cluster_for("watches_replay_then_follow").await else {
        return;
    };
    let store = store(&cluster).await;
    let r1 = store.create("/w/a", v("1")).await.expect("create");
    store.update("/w/a", v("2"), r1).await.expect("update");
    store.create("/x/other", v("x")).await.expect("create");
    let mut watch = store.watch("/w/", r1).await.expect("watch");
    let first = next(&mut watch).await;
    assert_eq!((first.kind, first.value.clone()), (EventKind::Put, v("2")));
    assert_eq!(first.prev_value, Some(v("1")));
    assert_eq!(first.key, "/w/a");
    assert!(!first.created);
    store.create("/w/b", v("b")).await.expect("create");
    let (deleted_at, _) = store.delete("/w/a", None).await.expect("delete");
    let second = next(&mut watch).await;
    assert_eq!((second.key.as_str(), second.created), ("/w/b", true));
    assert_eq!(second.prev_value, None);
    let third = next(&mut watch).await;
    assert_eq!((third.kind, third.value), (EventKind::Delete, v("2")));
    assert_eq!(third.prev_value, Some(v("2")));
    assert_eq!(third.revision, deleted_at);
    assert!(!third.created);
    let now = store.current_revision().await.expect("rev");
    match store.watch("/w/", now + 1).await.err() {
        Some(StoreError::FutureRevision { requested, current }) => {
            assert_eq!((requested, current), (now + 1, now))
        }
        other => panic!("expected a future revision, got {other:?}"),
    }
    // From the current revision: nothing replayed, the next change delivered.
    let mut live = store.watch("/w/", now).await.expect("watch");
    let r = store.create("/w/c", v("c")).await.expect("create");
    assert_eq!(next(&mut live).await.revision, r);
}

#[tokio::test]
async fn long_and_large_histories_replay_in_order() {
    let Some((_serial, cluster)) = cluster_for("long_and_large_histories_replay_in_order").await
    else {
        return;
    };
    let store = store(&cluster).await;
    let start = store.current_revision().await.expect("rev");
    // Together past the gRPC client's default 4 MiB message limit, in one watch response
    // and in one list response.
    let big = vec![b'x'; 256 * 1024];
    for i in 0..24 {
        store
            .create(&format!("/k/big{i:02}"), big.clone())
            .await
            .expect("create");
    }
    let mut watch = store.watch("/k/", start).await.expect("watch");
    let total = 24 + 300;
    for i in 0..300 {
        store
            .create(&format!("/k/{i:05}"), v("x"))
            .await
            .expect("create");
    }
    let mut last = start;
    for _ in 0..total {
        let event = next(&mut watch).await;
        assert_eq!(event.revision, last + 1, "no change skipped or repeated");
        last = event.revision;
    }
    let all = store.list("/k/", None, 0, None).await.expect("list");
    assert_eq!(all.entries.len(), total);
    let mut paged = 0;
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list("/k/", after.as_deref(), 50, Some(all.revision))
            .await
            .expect("list");
        paged += page.entries.len();
        after = page.entries.last().map(|e| e.key.clone());
        if !page.more {
            break;
        }
    }
    assert_eq!(paged, total);
}

#[tokio::test]
async fn compaction_keeps_current_values_and_refuses_old_revisions() {
    let Some((_serial, cluster)) =
        cluster_for("compaction_keeps_current_values_and_refuses_old_revisions").await
    else {
        return;
    };
    let keep;
    let r1;
    {
        let store = store(&cluster).await;
        r1 = store.create("/c/a", v("1")).await.expect("create");
        let r2 = store.update("/c/a", v("2"), r1).await.expect("update");
        store.create("/c/gone", v("g")).await.expect("create");
        store.delete("/c/gone", None).await.expect("delete");
        keep = store.update("/c/a", v("3"), r2).await.expect("update");
        store.compact(keep).await.expect("compact");
        match store.watch("/c/", r1).await.err() {
            Some(StoreError::Compacted {
                requested,
                compacted,
            }) => assert_eq!((requested, compacted), (r1, keep)),
            other => panic!("expected compacted, got {other:?}"),
        }
        // Compacting again, or to an older revision, changes nothing.
        store.compact(keep).await.expect("compact again");
        store.compact(r1).await.expect("compact older");
    }
    // Another connection (another API server): values, revision and compaction point are
    // the cluster's.
    let store = store(&cluster).await;
    assert_eq!(store.current_revision().await.expect("rev"), keep);
    let page = store.list("/c/", None, 0, None).await.expect("list");
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].value, v("3"));
    assert!(matches!(
        store.list("/c/", None, 0, Some(keep - 1)).await,
        Err(StoreError::Compacted { .. })
    ));
    assert!(matches!(
        store.list("/c/", None, 0, Some(0)).await,
        Err(StoreError::Compacted { .. })
    ));
    let at_keep = store.list("/c/", None, 0, Some(keep)).await.expect("list");
    assert_eq!(at_keep.entries[0].value, v("3"));
    // A watch from the compaction point still replays what came after it.
    let mut watch = store.watch("/c/", keep).await.expect("watch");
    let next_rev = store.create("/c/b", v("b")).await.expect("create");
    assert_eq!(next_rev, keep + 1, "revisions are never reused");
    assert_eq!(next(&mut watch).await.revision, next_rev);
    // Compacting past the present compacts to the present.
    store.compact(next_rev + 100).await.expect("compact");
    assert!(matches!(
        store.list("/c/", None, 0, Some(keep)).await,
        Err(StoreError::Compacted { .. })
    ));
}

/// The next event of a watch that must survive members dying: when the watch ends or
/// errors, it is opened again from the last revision delivered, as an API client would.
async fn follow(
    store: &EtcdStore,
    prefix: &str,
    watch: &mut WatchStream,
    last: &mut Revision,
) -> kiln_cluster::store::Event {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "no event in time");
        match timeout(Duration::from_secs(10), watch.next()).await {
            Ok(Some(Ok(event))) => {
                assert!(event.revision > *last, "no change repeated");
                *last = event.revision;
                return event;
            }
            Ok(Some(Err(_)) | None) => match store.watch(prefix, *last).await {
                Ok(again) => *watch = again,
                Err(e) => {
                    eprintln!("re-watch failed, trying again: {e}");
                    sleep(Duration::from_millis(200)).await;
                }
            },
            Err(_) => panic!("a watch hung after a member died"),
        }
    }
}

#[tokio::test]
async fn reads_writes_and_watches_survive_a_dead_member() {
    let Some((_serial, mut cluster)) =
        cluster_for("reads_writes_and_watches_survive_a_dead_member").await
    else {
        return;
    };
    let store = store(&cluster).await;
    let leader = cluster.leader().await;
    // A store that can only reach the leader, whose watch must end when the leader dies.
    let on_leader = EtcdStore::connect(&[cluster.endpoints()[leader].clone()], "/kiln")
        .await
        .expect("connect");
    let r0 = store.current_revision().await.expect("rev");
    let mut pinned = on_leader.watch("/f/", r0).await.expect("watch");
    let mut watch = store.watch("/f/", r0).await.expect("watch");
    let mut last = r0;
    let r1 = store.create("/f/a", v("1")).await.expect("create");
    assert_eq!(next(&mut pinned).await.revision, r1);
    assert_eq!(
        follow(&store, "/f/", &mut watch, &mut last).await.revision,
        r1
    );

    cluster.kill(leader);

    // The watch on the dead member says so, rather than hanging.
    match timeout(Duration::from_secs(60), pinned.next()).await {
        Ok(Some(Err(e))) => eprintln!("watch on the dead member ended: {e}"),
        Ok(None) => eprintln!("watch on the dead member ended"),
        Ok(Some(Ok(event))) => panic!("event from a dead member: {event:?}"),
        Err(_) => panic!("the watch on the dead member hung"),
    }
    // Reads go on at once, through the election.
    let entry = store.get("/f/a").await.expect("get").expect("present");
    assert_eq!(entry.mod_revision, r1);
    // Writes that reach a member before it notices the leader is gone may time out
    // (etcd cannot tell whether they were applied); after the election they all land.
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, leader);
    let mut written = vec![r1];
    let mut current = r1;
    for i in 0..20 {
        written.push(
            store
                .create(&format!("/f/n{i:02}"), v("n"))
                .await
                .expect("create"),
        );
        current = store
            .update("/f/a", v(&i.to_string()), current)
            .await
            .expect("update");
        written.push(current);
        assert_eq!(
            store
                .get("/f/a")
                .await
                .expect("get")
                .expect("present")
                .mod_revision,
            current
        );
    }
    let page = store.list("/f/", None, 0, None).await.expect("list");
    assert_eq!(page.entries.len(), 21);
    // The watch from before the failure, re-opened if it was on the dead member, sees every
    // change once, in order.
    for expected in &written[1..] {
        let event = follow(&store, "/f/", &mut watch, &mut last).await;
        assert_eq!(event.revision, *expected);
    }
    // Re-watching from the last revision the dead member's watch delivered, through the
    // survivors: nothing missed.
    let mut replay = store.watch("/f/", r1).await.expect("watch");
    for expected in &written[1..] {
        assert_eq!(next(&mut replay).await.revision, *expected);
    }
    // A new connection given every endpoint, the dead one too, works as well.
    let fresh = EtcdStore::connect(&cluster.endpoints(), "/kiln")
        .await
        .expect("connect");
    for i in 0..10 {
        let r = fresh
            .create(&format!("/f/fresh{i}"), v("f"))
            .await
            .expect("create");
        assert_eq!(
            fresh
                .get(&format!("/f/fresh{i}"))
                .await
                .expect("get")
                .expect("present")
                .mod_revision,
            r
        );
        let listed = fresh.list("/f/", None, 0, None).await.expect("list");
        assert_eq!(listed.entries.len(), 22 + i);
    }
}

/// `kiln ARGS` with a scratch root.
fn kiln(root: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("run kiln")
}

fn kubectl(kubeconfig: &Path, cache: &Path, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("KUBECACHEDIR", cache)
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn kiln_up_on_etcd_keeps_serving_when_a_member_dies() {
    let Some((_serial, mut cluster)) =
        cluster_for("kiln_up_on_etcd_keeps_serving_when_a_member_dies").await
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    let kubeconfig = dir.path().join("kubeconfig");
    let cache = dir.path().join("cache");
    let port = free_ports(1)[0];
    let datastore = format!(
        "etcd://{}",
        cluster
            .endpoints()
            .iter()
            .map(|e| e.trim_start_matches("http://").to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let up = kiln(
        &root,
        &[
            "up",
            "--no-node",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--kubeconfig",
            &kubeconfig.display().to_string(),
            "--datastore",
            &datastore,
        ],
    );
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let created = kubectl(
        &kubeconfig,
        &cache,
        &["create", "configmap", "before", "--from-literal=a=1"],
    );
    assert_eq!(created, "configmap/before created\n");
    let leader = cluster.leader().await;
    cluster.kill(leader);
    let created = kubectl(
        &kubeconfig,
        &cache,
        &["create", "configmap", "after", "--from-literal=b=2"],
    );
    assert_eq!(created, "configmap/after created\n");
    let names = kubectl(&kubeconfig, &cache, &["get", "configmaps", "-o", "name"]);
    assert_eq!(names, "configmap/after\nconfigmap/before\n");
    let ns = kubectl(&kubeconfig, &cache, &["get", "namespaces", "-o", "name"]);
    assert!(ns.contains("namespace/kube-system"), "{ns}");
    let down = kiln(&root, &["down"]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
}
