//! `kiln crictl` end to end without a cluster: a pod sandbox and its containers written as
//! the node agent writes them, busybox imported into the store, and crictl's views of them.
//! No container runs: one is recorded as exited, one has no end recorded and no runtime
//! state (the CRI's "unknown").

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use common::Env;
use kiln_node::network::PodNetwork;
use kiln_node::worker::{self, Sandbox};
use kiln_runtime::container::{Exit, Record, Runtime};
use serde_json::Value;

const POD_ID: &str = "5a1dbe11c0ffee00112233445566778899aabbccddeeff00112233445566aa01";
const POD_UID: &str = "3f2b6c1e-8d1a-4e0b-9c55-0a1b2c3d4e5f";
const WEB_ID: &str = "c0ffee5a1d00112233445566778899aabbccddeeff0011223344556677889901";
const OLD_ID: &str = "0ld5a1d0000112233445566778899aabbccddeeff00112233445566778899002";

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

fn rfc3339_utc(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .expect("a valid time")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formats")
}

/// Runs `kiln crictl ARGS` in UTC (inspect prints local times).
fn crictl(env: &Env, args: &[&str]) -> Output {
    let mut all = vec!["crictl"];
    all.extend_from_slice(args);
    env.cmd(&all).env("TZ", "UTC").output().expect("run kiln")
}

fn ok(env: &Env, args: &[&str]) -> String {
    let out = crictl(env, args);
    assert!(
        out.status.success(),
        "kiln crictl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn fails(env: &Env, args: &[&str]) -> String {
    let out = crictl(env, args);
    assert!(
        !out.status.success(),
        "kiln crictl {args:?} should have failed but printed {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).expect("utf-8 output")
}

/// A table as crictl prints it: every cell but a row's last padded to its column's width,
/// the widest cell plus 3 and at least 20.
fn table(rows: &[&[&str]]) -> String {
    let width = |c: usize| {
        rows.iter()
            .filter(|r| c + 1 < r.len())
            .map(|r| r[c].len() + 3)
            .fold(20, usize::max)
    };
    let mut out = String::new();
    for r in rows {
        for (c, cell) in r.iter().enumerate() {
            if c + 1 < r.len() {
                out.push_str(&format!("{cell:<w$}", w = width(c)));
            } else {
                out.push_str(cell);
            }
        }
        out.push('\n');
    }
    out
}

/// go-units' HumanSizeWithPrecision(n, 3) for sizes between 1 kB and 1 GB.
fn human_size(bytes: u64) -> String {
    let (value, unit) = if bytes >= 1_000_000 {
        (bytes as f64 / 1e6, "MB")
    } else {
        (bytes as f64 / 1e3, "kB")
    };
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{value:.decimals$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{text}{unit}")
}

fn pod_labels(name: &str, attempt: u32, image_id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (worker::LABEL_POD_NAME.to_string(), "web-7d4b9".to_string()),
        (worker::LABEL_POD_NAMESPACE.to_string(), "shop".to_string()),
        (worker::LABEL_POD_UID.to_string(), POD_UID.to_string()),
        (worker::LABEL_CONTAINER_NAME.to_string(), name.to_string()),
        (worker::LABEL_ATTEMPT.to_string(), attempt.to_string()),
        (worker::LABEL_SANDBOX.to_string(), POD_ID.to_string()),
        (worker::LABEL_IMAGE_ID.to_string(), image_id.to_string()),
    ])
}

fn save(runtime: &Runtime, record: &Record) {
    std::fs::create_dir_all(runtime.bundle_dir(&record.id)).expect("bundle dir");
    runtime.save_record(record).expect("save record");
}

/// The node's state: a ready sandbox, an exited container (attempt 2) with a CRI log, an
/// older container with no recorded end, and a `kiln run` container that is no pod's.
fn write_node_state(root: &Path, repo_digest: &str, now: i64) {
    let sandbox = Sandbox {
        id: POD_ID.into(),
        uid: POD_UID.into(),
        name: "web-7d4b9".into(),
        namespace: "shop".into(),
        created: now - 7200,
        host_network: false,
        network: Some(PodNetwork {
            netns: "/run/kiln/netns/test".into(),
            ip: Some("10.42.0.7".parse().expect("ip")),
        }),
        stopped: false,
    };
    let pod_dir = root.join("node").join("pods").join(POD_UID);
    std::fs::create_dir_all(&pod_dir).expect("pod dir");
    std::fs::write(
        pod_dir.join("sandbox.json"),
        serde_json::to_vec_pretty(&sandbox).expect("sandbox json"),
    )
    .expect("write sandbox.json");

    let runtime = Runtime::new("runc", &root.join("runtime"));
    save(
        &runtime,
        &Record {
            id: WEB_ID.into(),
            image: "busybox:1.36".into(),
            command: vec!["sh".into(), "-c".into(), "echo hello".into()],
            created: now - 600,
            auto_remove: false,
            labels: pod_labels("web", 2, repo_digest),
        },
    );
    runtime
        .record_exit(WEB_ID, Exit { code: 3 })
        .expect("record exit");
    std::fs::write(
        runtime.log_path(WEB_ID),
        "2024-05-06T07:08:09.000000001Z stdout F hello\n\
         2024-05-06T07:08:09.5Z stderr F oops\n\
         2024-05-06T07:08:10Z stdout P wor\n\
         2024-05-06T07:08:11.25Z stdout F ld\n",
    )
    .expect("write log");
    save(
        &runtime,
        &Record {
            id: OLD_ID.into(),
            image: "busybox:1.36".into(),
            command: vec!["sleep".into(), "1000".into()],
            created: now - 3 * 86400,
            auto_remove: false,
            labels: pod_labels("sidecar", 0, repo_digest),
        },
    );
    save(
        &runtime,
        &Record {
            id: "plainrun".into(),
            image: "busybox:1.36".into(),
            command: vec!["true".into()],
            created: now - 60,
            auto_remove: false,
            labels: BTreeMap::new(),
        },
    );
}

#[test]
fn crictl_shows_the_node_state() {
    let env = Env::new();
    let manifest = env.busybox_image("busybox:1.36");
    let image_id = env
        .ok(&["inspect", "busybox:1.36", "--format", "{{.Id}}"])
        .trim()
        .to_string();
    let content_size: u64 = env
        .ok(&["inspect", "busybox:1.36", "--format", "{{.Size}}"])
        .trim()
        .parse()
        .expect("a size");
    let manifest_size: u64 = env
        .ok(&[
            "inspect",
            "busybox:1.36",
            "--format",
            "{{.Descriptor.size}}",
        ])
        .trim()
        .parse()
        .expect("a size");
    let image_hex = image_id.strip_prefix("sha256:").expect("sha256 image ID");
    let repo_digest = format!("docker.io/library/busybox@{manifest}");
    let now = unix_now();
    write_node_state(&env.root(), &repo_digest, now);

    // ps: running containers only (none), then all of them newest first.
    let header: &[&str] = &[
        "CONTAINER",
        "IMAGE",
        "CREATED",
        "STATE",
        "NAME",
        "ATTEMPT",
        "POD ID",
        "POD",
        "NAMESPACE",
    ];
    assert_eq!(ok(&env, &["ps"]), table(&[header]));
    let expected = table(&[
        header,
        &[
            &WEB_ID[..13],
            &image_hex[..13],
            "10 minutes ago",
            "Exited",
            "web",
            "2",
            &POD_ID[..13],
            "web-7d4b9",
            "shop",
        ],
        &[
            &OLD_ID[..13],
            &image_hex[..13],
            "3 days ago",
            "Unknown",
            "sidecar",
            "0",
            &POD_ID[..13],
            "web-7d4b9",
            "shop",
        ],
    ]);
    assert_eq!(ok(&env, &["ps", "-a"]), expected);
    assert_eq!(ok(&env, &["ps", "-aq"]), format!("{WEB_ID}\n{OLD_ID}\n"));
    assert_eq!(
        ok(&env, &["ps", "-a", "-q", "--name", "^side"]),
        format!("{OLD_ID}\n")
    );
    assert_eq!(
        ok(
            &env,
            &["ps", "-q", "--state", "exited", "--pod", &POD_ID[..8]]
        ),
        format!("{WEB_ID}\n")
    );
    let listed: Value =
        serde_json::from_str(&ok(&env, &["ps", "-a", "-o", "json"])).expect("ps json");
    let first = &listed["containers"][0];
    assert_eq!(first["id"], WEB_ID);
    assert_eq!(first["podSandboxId"], POD_ID);
    assert_eq!(first["state"], "CONTAINER_EXITED");
    assert_eq!(first["metadata"]["attempt"], 2);
    assert_eq!(first["image"]["image"], image_id.as_str());
    assert_eq!(first["createdAt"], format!("{}000000000", now - 600));

    // pods
    let pods = table(&[
        &[
            "POD ID",
            "CREATED",
            "STATE",
            "NAME",
            "NAMESPACE",
            "ATTEMPT",
            "RUNTIME",
        ],
        &[
            &POD_ID[..13],
            "2 hours ago",
            "Ready",
            "web-7d4b9",
            "shop",
            "0",
            "(default)",
        ],
    ]);
    assert_eq!(ok(&env, &["pods"]), pods);
    assert_eq!(ok(&env, &["pods", "-q"]), format!("{POD_ID}\n"));

    // images
    let size = human_size(content_size + manifest_size);
    let images = table(&[
        &["IMAGE", "TAG", "IMAGE ID", "SIZE"],
        &["docker.io/library/busybox", "1.36", &image_hex[..13], &size],
    ]);
    // The long repository name widens its column past 20.
    assert!(
        images.starts_with("IMAGE                       TAG"),
        "{images}"
    );
    assert_eq!(ok(&env, &["images"]), images);
    assert_eq!(ok(&env, &["images", "-q"]), format!("{image_id}\n"));

    // inspect, by an ID prefix
    let text = ok(&env, &["inspect", &WEB_ID[..6]]);
    assert!(text.starts_with("{\n  \"info\": {\n"), "{text}");
    let status_at = text.find("\n  \"status\": {").expect("status after info");
    let keys: Vec<&str> = text[status_at..]
        .lines()
        .filter(|l| l.starts_with("    \"") && !l.starts_with("     "))
        .map(|l| l.trim_start().split('"').nth(1).expect("a key"))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "status keys in Go's sorted order");
    let inspected: Value = serde_json::from_str(&text).expect("inspect json");
    let status = &inspected["status"];
    assert_eq!(status["id"], WEB_ID);
    assert_eq!(status["state"], "CONTAINER_EXITED");
    assert_eq!(status["exitCode"], 3);
    assert_eq!(status["reason"], "Error");
    assert_eq!(status["metadata"]["name"], "web");
    assert_eq!(status["metadata"]["attempt"], 2);
    assert_eq!(status["createdAt"], rfc3339_utc(now - 600));
    assert_eq!(status["startedAt"], rfc3339_utc(now - 600));
    assert_ne!(status["finishedAt"], "0001-01-01T00:00:00Z");
    assert_eq!(status["image"]["image"], "docker.io/library/busybox:1.36");
    assert_eq!(status["imageRef"], repo_digest.as_str());
    assert_eq!(status["imageId"], image_id.as_str());
    assert_eq!(status["labels"]["io.kubernetes.pod.namespace"], "shop");
    assert_eq!(
        status["annotations"]["io.kubernetes.container.restartCount"],
        "2"
    );
    assert_eq!(status["resources"], Value::Null);
    let runtime = Runtime::new("runc", &env.root().join("runtime"));
    assert_eq!(
        status["logPath"],
        runtime.log_path(WEB_ID).to_str().expect("utf-8 path")
    );
    assert_eq!(inspected["info"]["sandboxID"], POD_ID);
    let quiet: Value =
        serde_json::from_str(&ok(&env, &["inspect", "-q", WEB_ID])).expect("inspect -q json");
    assert!(quiet.get("info").is_none());
    let both: Value =
        serde_json::from_str(&ok(&env, &["inspect", WEB_ID, OLD_ID])).expect("inspect json");
    assert_eq!(both[1]["status"]["state"], "CONTAINER_UNKNOWN");
    assert_eq!(both[1]["status"]["finishedAt"], "0001-01-01T00:00:00Z");
    assert!(fails(&env, &["inspect", "nope"]).contains("no container matches nope"));
    // `kiln run` containers are not the CRI's.
    assert!(fails(&env, &["inspect", "plainrun"]).contains("no container matches plainrun"));

    // inspectp
    let pod: Value =
        serde_json::from_str(&ok(&env, &["inspectp", &POD_ID[..5]])).expect("inspectp json");
    let status = &pod["status"];
    assert_eq!(status["id"], POD_ID);
    assert_eq!(status["state"], "SANDBOX_READY");
    assert_eq!(status["createdAt"], rfc3339_utc(now - 7200));
    assert_eq!(status["metadata"]["name"], "web-7d4b9");
    assert_eq!(status["metadata"]["namespace"], "shop");
    assert_eq!(status["metadata"]["uid"], POD_UID);
    assert_eq!(status["network"]["ip"], "10.42.0.7");
    assert_eq!(status["linux"]["namespaces"]["options"]["network"], "POD");
    assert!(fails(&env, &["inspectp", "ffff"]).contains("no pod matches ffff"));

    // logs: stdout and stderr to their own streams; a partial line joins the next.
    let out = crictl(&env, &["logs", WEB_ID]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\nworld\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    assert_eq!(ok(&env, &["logs", "--tail", "1", WEB_ID]), "ld\n");
    let stamped = crictl(&env, &["logs", "-t", WEB_ID]);
    assert_eq!(
        String::from_utf8_lossy(&stamped.stdout),
        "2024-05-06T07:08:09.000000001Z hello\n2024-05-06T07:08:10.000000000Z world\n"
    );
    assert_eq!(
        String::from_utf8_lossy(&stamped.stderr),
        "2024-05-06T07:08:09.500000000Z oops\n"
    );

    // rmi: every name of the image goes.
    assert_eq!(
        ok(&env, &["rmi", &image_hex[..12]]),
        "Deleted: docker.io/library/busybox:1.36\n"
    );
    assert_eq!(
        ok(&env, &["images"]),
        table(&[&["IMAGE", "TAG", "IMAGE ID", "SIZE"]])
    );
}
