//! `kiln up` driven by the real kubectl (1.32 on PATH, 1.27 and 1.33 beside it), and its
//! API spoken to directly for what kubectl does not show (watch streams, error bodies).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{kiln_bin, which};
use serde_json::{json, Value};

/// A cluster started with `kiln up` in a scratch root, stopped with `kiln down` on drop.
struct Cluster {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    /// The plain-HTTP listener's URL, for direct API calls.
    plain: String,
    /// More `kiln up` arguments.
    extra: Vec<String>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Cluster {
    fn up() -> Cluster {
        Cluster::up_with(&[])
    }

    fn up_with(extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        let c = Cluster {
            plain: format!("http://127.0.0.1:{}", free_port()),
            kubeconfig,
            dir,
            extra: extra.iter().map(|a| a.to_string()).collect(),
        };
        c.start();
        c
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn start(&self) {
        let https = format!("127.0.0.1:{}", free_port());
        let out = Command::new(kiln_bin())
            .arg("--root")
            .arg(self.root())
            // The API server alone: these tests stand in for nodes themselves.
            .args(["up", "--no-node", "--listen", &https, "--insecure-listen"])
            .arg(self.plain.trim_start_matches("http://"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(&self.extra)
            .output()
            .expect("kiln up");
        assert!(
            out.status.success(),
            "kiln up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("kiln is up: https://"), "{text}");
    }

    fn down(&self) {
        let out = Command::new(kiln_bin())
            .arg("--root")
            .arg(self.root())
            .arg("down")
            .output()
            .expect("kiln down");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `kubectl` (a given version's binary) with this cluster's kubeconfig.
    fn kubectl_with(&self, binary: &Path, args: &[&str]) -> Output {
        Command::new(binary)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("KUBECACHEDIR", self.dir.path().join("kubecache"))
            .env("HOME", self.dir.path())
            .output()
            .expect("run kubectl")
    }

    fn kubectl(&self, args: &[&str]) -> String {
        self.ok_with(&which("kubectl"), args)
    }

    fn ok_with(&self, binary: &Path, args: &[&str]) -> String {
        let out = self.kubectl_with(binary, args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn kubectl_fails(&self, args: &[&str]) -> String {
        let out = self.kubectl_with(&which("kubectl"), args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} should have failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write manifest");
        path.display().to_string()
    }

    fn http(&self) -> reqwest::blocking::Client {
        reqwest::blocking::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .expect("client")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(kiln_bin())
            .arg("--root")
            .arg(self.root())
            .arg("down")
            .output();
    }
}

/// A kubectl of another minor version, from the folder of the one on PATH.
fn kubectl_version(minor: &str) -> PathBuf {
    let on_path = std::fs::canonicalize(which("kubectl")).expect("resolve kubectl");
    let path = on_path
        .parent()
        .expect("kubectl's folder")
        .join(format!("kubectl.1.{minor}"));
    assert!(path.is_file(), "{} is missing", path.display());
    path
}

const MANIFESTS: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: manager-firm
  labels: {app: manager-firm}
spec:
  replicas: 3
  selector:
    matchLabels: {app: manager-firm}
  template:
    metadata:
      labels: {app: manager-firm}
    spec:
      containers:
      - name: nginx
        image: nginx:1.14.2
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {tier: front}
spec:
  containers:
  - name: web
    image: nginx
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: builder
imagePullSecrets:
- name: regcred
"#;

#[test]
fn kubectl_applies_reads_edits_and_deletes() {
    let c = Cluster::up();
    let ns = c.kubectl(&["get", "namespaces"]);
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.contains(name), "{ns}");
    }
    let file = c.write("app.yaml", MANIFESTS);
    let first = c.kubectl(&["apply", "-f", &file]);
    assert_eq!(
        first,
        "deployment.apps/manager-firm created\npod/web created\nserviceaccount/builder created\n"
    );
    let again = c.kubectl(&["apply", "-f", &file]);
    assert!(
        again.contains("deployment.apps/manager-firm unchanged"),
        "{again}"
    );
    c.write("app.yaml", &MANIFESTS.replace("replicas: 3", "replicas: 5"));
    let changed = c.kubectl(&["apply", "-f", &file]);
    assert!(
        changed.contains("deployment.apps/manager-firm configured"),
        "{changed}"
    );
    let spec = c.kubectl(&[
        "get",
        "deploy",
        "manager-firm",
        "-o",
        "jsonpath={.spec.replicas} {.metadata.generation} {.spec.template.spec.containers[0].imagePullPolicy}",
    ]);
    assert_eq!(spec, "5 2 IfNotPresent");

    // kubectl's columns, narrow and wide.
    let pods = c.kubectl(&["get", "pods", "-o", "wide"]);
    let header: Vec<&str> = pods
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED",
            "NODE",
            "READINESS",
            "GATES"
        ]
    );
    assert!(
        pods.lines()
            .find(|l| l.starts_with("web "))
            .is_some_and(|l| l.starts_with("web ") && l.contains("0/1") && l.contains("Pending")),
        "{pods}"
    );
    let deploys = c.kubectl(&["get", "deploy"]);
    let header: Vec<&str> = deploys
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    assert!(deploys.contains("manager-firm   0/5"), "{deploys}");
    let wide = c.kubectl(&["get", "deploy", "-o", "wide"]);
    assert!(
        wide.contains("nginx:1.14.2") && wide.contains("app=manager-firm"),
        "{wide}"
    );
    let sa = c.kubectl(&[
        "get",
        "sa",
        "builder",
        "-o",
        "jsonpath={.imagePullSecrets[0].name}",
    ]);
    assert_eq!(sa, "regcred");
    let by_label = c.kubectl(&["get", "pods", "-l", "tier=front", "-o", "name"]);
    assert_eq!(by_label, "pod/web\n");
    let none = c.kubectl(&["get", "pods", "-l", "tier=back", "-o", "name"]);
    assert_eq!(none, "");

    // Image changes: set image (a strategic merge patch) and edit.
    let set = c.kubectl(&[
        "set",
        "image",
        "deployment/manager-firm",
        "nginx=nginx:1.16",
    ]);
    assert_eq!(set, "deployment.apps/manager-firm image updated\n");
    let edited = Command::new(which("kubectl"))
        .args(["edit", "deployment/manager-firm"])
        .env("KUBECONFIG", &c.kubeconfig)
        .env("KUBECACHEDIR", c.dir.path().join("kubecache"))
        .env("KUBE_EDITOR", "sed -i s/nginx:1.16/nginx:1.17/")
        .output()
        .expect("kubectl edit");
    assert!(
        edited.status.success(),
        "{}",
        String::from_utf8_lossy(&edited.stderr)
    );
    let image = c.kubectl(&[
        "get",
        "deploy",
        "manager-firm",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image} {.metadata.generation}",
    ]);
    assert_eq!(image, "nginx:1.17 4");

    let described = c.kubectl(&["describe", "pod", "web"]);
    assert!(
        described
            .lines()
            .any(|l| l.starts_with("Name:") && l.ends_with(" web")),
        "{described}"
    );
    assert!(
        described
            .lines()
            .any(|l| l.starts_with("QoS Class:") && l.ends_with(" BestEffort")),
        "{described}"
    );
    let described = c.kubectl(&["describe", "deployment", "manager-firm"]);
    assert!(
        described.contains("RollingUpdateStrategy:  25% max unavailable, 25% max surge"),
        "{described}"
    );

    // A stale write is refused.
    let stale = c.kubectl(&["get", "deploy", "manager-firm", "-o", "json"]);
    c.kubectl(&["scale", "deploy", "manager-firm", "--replicas", "2"]);
    let stale_file = c.write("stale.json", &stale);
    let err = c.kubectl_fails(&["replace", "-f", &stale_file]);
    assert!(err.contains("the object has been modified"), "{err}");
    let replicas = c.kubectl(&[
        "get",
        "deploy",
        "manager-firm",
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert_eq!(replicas, "2");

    let deleted = c.kubectl(&["delete", "-f", &file]);
    assert!(
        deleted.contains("deployment.apps \"manager-firm\" deleted"),
        "{deleted}"
    );
    // The deployment's ReplicaSet and pods follow it.
    eventually("everything gone", || {
        c.kubectl(&["get", "all", "-o", "name"]).is_empty()
    });
    let err = c.kubectl_fails(&["get", "pod", "web"]);
    assert!(err.contains("pods \"web\" not found"), "{err}");
}

#[test]
fn older_and_newer_kubectl_work_too() {
    let c = Cluster::up();
    let file = c.write("app.yaml", MANIFESTS);
    for minor in ["27", "33"] {
        let kubectl = kubectl_version(minor);
        let applied = c.ok_with(&kubectl, &["apply", "-f", &file]);
        assert!(
            applied.contains("deployment.apps/manager-firm created"),
            "1.{minor}: {applied}"
        );
        let got = c.ok_with(&kubectl, &["get", "deploy,pods"]);
        assert!(
            got.contains("manager-firm") && got.contains("web"),
            "1.{minor}: {got}"
        );
        let set = c.ok_with(
            &kubectl,
            &["set", "image", "deploy/manager-firm", "nginx=nginx:1.16"],
        );
        assert!(set.contains("image updated"), "1.{minor}: {set}");
        let deleted = c.ok_with(&kubectl, &["delete", "-f", &file]);
        assert!(deleted.contains("deleted"), "1.{minor}: {deleted}");
    }
}

#[test]
fn objects_survive_a_restart() {
    let c = Cluster::up();
    let file = c.write("app.yaml", MANIFESTS);
    c.kubectl(&["apply", "-f", &file]);
    let before = c.kubectl(&[
        "get",
        "deploy",
        "manager-firm",
        "-o",
        "jsonpath={.metadata.uid} {.metadata.resourceVersion}",
    ]);
    c.down();
    c.start();
    let after = c.kubectl(&[
        "get",
        "deploy",
        "manager-firm",
        "-o",
        "jsonpath={.metadata.uid} {.metadata.resourceVersion}",
    ]);
    assert_eq!(before, after);
    let created = c.kubectl(&[
        "create",
        "-f",
        &c.write(
            "cm.json",
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"data":{"a":"b"}}"#,
        ),
    ]);
    assert_eq!(created, "configmap/c created\n");
}

/// Reads newline-separated watch events until `count` have arrived.
fn read_events(response: reqwest::blocking::Response, count: usize) -> Vec<Value> {
    read_events_where(response, count, |_| true)
}

/// Reads watch events until `count` that `keep` accepts have arrived; returns those.
fn read_events_where(
    response: reqwest::blocking::Response,
    count: usize,
    keep: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    use std::io::BufRead;
    let mut events = Vec::new();
    for line in std::io::BufReader::new(response).lines() {
        let line = line.expect("watch line");
        let event = serde_json::from_str::<Value>(&line).expect("event JSON");
        if keep(&event) {
            events.push(event);
        }
        if events.len() == count {
            break;
        }
    }
    events
}

#[test]
fn watches_replay_changes_and_follow_selectors() {
    let c = Cluster::up();
    let http = c.http();
    let pods = format!("{}/api/v1/namespaces/default/pods", c.plain);
    let list: Value = http.get(&pods).send().expect("list").json().expect("json");
    let start = list["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();
    let pod = |name: &str, tier: &str| {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"tier": tier}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    };
    for (name, tier) in [("a", "front"), ("b", "back")] {
        let r = http
            .post(&pods)
            .json(&pod(name, tier))
            .send()
            .expect("create");
        assert_eq!(r.status().as_u16(), 201);
    }
    // Relabel b into the selection, then delete a.
    let r = http
        .patch(format!("{pods}/b"))
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"metadata":{"labels":{"tier":"front"}}}"#)
        .send()
        .expect("patch");
    assert_eq!(r.status().as_u16(), 200);
    let r = http.delete(format!("{pods}/a")).send().expect("delete");
    assert_eq!(r.status().as_u16(), 200);

    let watch = http
        .get(format!(
            "{pods}?watch=true&resourceVersion={start}&labelSelector=tier%3Dfront"
        ))
        .send()
        .expect("watch");
    // Controllers also write to the pods (the scheduler's conditions): only the set
    // transitions matter here.
    let events: Vec<Value> = read_events_where(watch, 3, |e| e["type"] != "MODIFIED");
    let seen: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or("").to_string(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("ADDED".into(), "a".into()),
            ("ADDED".into(), "b".into()),
            ("DELETED".into(), "a".into())
        ]
    );
    assert_eq!(events[0]["object"]["kind"], "Pod");

    // Without a version, a watch starts with the current objects.
    let watch = http.get(format!("{pods}?watch=1")).send().expect("watch");
    let current = read_events(watch, 1);
    assert_eq!(current[0]["type"], "ADDED");
    assert_eq!(current[0]["object"]["metadata"]["name"], "b");

    // A version from the future is refused rather than waited for.
    let future = http
        .get(format!("{pods}?watch=1&resourceVersion=999999999"))
        .send()
        .expect("watch");
    assert_eq!(future.status().as_u16(), 504);
}

#[test]
fn bad_requests_get_kubernetes_status_errors() {
    let c = Cluster::up();
    let http = c.http();
    let pods = format!("{}/api/v1/namespaces/default/pods", c.plain);
    let check = |r: reqwest::blocking::Response, code: u16, needle: &str| {
        assert_eq!(r.status().as_u16(), code);
        let status: Value = r.json().expect("Status JSON");
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["status"], "Failure");
        assert_eq!(status["code"], code);
        let message = status["message"].as_str().unwrap_or("");
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    };
    check(
        http.post(&pods).body("{not json").send().expect("post"),
        400,
        "not valid JSON",
    );
    check(
        http.post(&pods)
            .json(&json!({"kind": "Service", "metadata": {"name": "x"}}))
            .send()
            .expect("post"),
        400,
        "does not match the expected kind",
    );
    check(
        http.post(&pods)
            .json(&json!({"metadata": {"name": "Bad_Name"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}))
            .send()
            .expect("post"),
        422,
        "metadata.name",
    );
    check(
        http.post(&pods)
            .json(&json!({"metadata": {"name": "nocontainers"}, "spec": {}}))
            .send()
            .expect("post"),
        422,
        "spec.containers: Required value",
    );
    check(
        http.post(&pods)
            .body(vec![b' '; 4 << 20])
            .send()
            .expect("post"),
        413,
        "limit",
    );
    check(
        http.get(format!("{pods}/missing")).send().expect("get"),
        404,
        "pods \"missing\" not found",
    );
    check(
        http.post(format!("{}/api/v1/namespaces/nowhere/pods", c.plain))
            .json(&json!({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}))
            .send()
            .expect("post"),
        404,
        "namespaces \"nowhere\" not found",
    );
    check(
        http.get(format!("{pods}?labelSelector=a%20in%20("))
            .send()
            .expect("get"),
        400,
        "",
    );
    check(
        http.patch(format!("{}/api/v1/namespaces/default", c.plain))
            .header("content-type", "application/json-patch+json")
            .body(r#"[{"op":"replace","path":"/spec/missing/x","value":1}]"#)
            .send()
            .expect("patch"),
        422,
        "json patch operation 0",
    );
    check(
        http.post(&pods)
            .header("content-type", "application/x-unknown")
            .body("x")
            .send()
            .expect("post"),
        415,
        "unknown format",
    );
    // Nothing was stored by any of it.
    let list: Value = http.get(&pods).send().expect("list").json().expect("json");
    assert_eq!(list["items"], json!([]));
}

/// Polls `probe` for up to ten seconds.
fn eventually(what: &str, probe: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !probe() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "timed out: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn deletes_propagate_to_dependents_as_asked() {
    let c = Cluster::up();
    let http = c.http();
    let base = format!("{}/apis/apps/v1/namespaces/default/replicasets", c.plain);
    let pods = format!("{}/api/v1/namespaces/default/pods", c.plain);
    let exists = |url: &str| {
        http.get(url)
            .send()
            .map(|r| r.status().as_u16() == 200)
            .unwrap_or(false)
    };
    let make = |owner: &str, pod_names: &[&str]| {
        let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": owner},
            "spec": {"replicas": pod_names.len(), "selector": {"matchLabels": {"o": owner}},
                "template": {"metadata": {"labels": {"o": owner}},
                    "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let created: Value = http
            .post(&base)
            .json(&rs)
            .send()
            .expect("rs")
            .json()
            .expect("json");
        let uid = created["metadata"]["uid"]
            .as_str()
            .expect("uid")
            .to_string();
        for p in pod_names {
            let pod = json!({"metadata": {"name": p, "labels": {"o": owner}, "ownerReferences": [{"apiVersion": "apps/v1",
                "kind": "ReplicaSet", "name": owner, "uid": uid, "controller": true,
                "blockOwnerDeletion": true}]},
                "spec": {"containers": [{"name": "c", "image": "i"}]}});
            assert_eq!(
                http.post(&pods)
                    .json(&pod)
                    .send()
                    .expect("pod")
                    .status()
                    .as_u16(),
                201
            );
        }
    };
    make("background", &["b1", "b2"]);
    make("orphaner", &["o1"]);
    make("foreground", &["f1"]);

    http.delete(format!("{base}/background"))
        .send()
        .expect("delete");
    assert!(!exists(&format!("{base}/background")));
    eventually("dependents deleted in the background", || {
        !exists(&format!("{pods}/b1")) && !exists(&format!("{pods}/b2"))
    });

    http.delete(format!("{base}/orphaner"))
        .json(&json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Orphan"}))
        .send()
        .expect("delete");
    eventually("orphaning owner gone", || {
        !exists(&format!("{base}/orphaner"))
    });
    let orphan: Value = http
        .get(format!("{pods}/o1"))
        .send()
        .expect("get")
        .json()
        .expect("json");
    assert!(
        orphan["metadata"]
            .get("ownerReferences")
            .is_none_or(|r| r == &json!([])),
        "{orphan}"
    );

    http.delete(format!("{base}/foreground?propagationPolicy=Foreground"))
        .send()
        .expect("delete");
    eventually("foreground owner gone after its dependents", || {
        !exists(&format!("{pods}/f1")) && !exists(&format!("{base}/foreground"))
    });

    // A namespace takes its contents with it; kubectl waits for that.
    c.kubectl(&["create", "namespace", "scratch"]);
    let file = c.write("app.yaml", MANIFESTS);
    c.kubectl(&["apply", "-n", "scratch", "-f", &file]);
    let out = c.kubectl(&["delete", "namespace", "scratch", "--timeout=20s"]);
    assert_eq!(out, "namespace \"scratch\" deleted\n");
    let err = c.kubectl_fails(&["get", "namespace", "scratch"]);
    assert!(err.contains("not found"), "{err}");
    assert!(!exists(&format!(
        "{}/api/v1/namespaces/scratch/pods/web",
        c.plain
    )));
}

#[test]
fn a_watch_stays_correct_through_ten_thousand_changes() {
    let c = Cluster::up();
    let http = c.http();
    let maps = format!("{}/api/v1/namespaces/default/configmaps", c.plain);
    let list: Value = http.get(&maps).send().expect("list").json().expect("json");
    let start: i64 = list["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("rv");
    let watch = http
        .get(format!("{maps}?watch=true&resourceVersion={start}"))
        .send()
        .expect("watch");
    const WRITERS: usize = 4;
    const EACH: usize = 2500;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let http = c.http();
            let maps = maps.clone();
            std::thread::spawn(move || {
                for i in 0..EACH {
                    let name = format!("w{w}-{i}");
                    let body = json!({"metadata": {"name": name}, "data": {"i": i.to_string()}});
                    let r = http.post(&maps).json(&body).send().expect("create");
                    assert_eq!(r.status().as_u16(), 201, "{name}");
                }
            })
        })
        .collect();
    let events = read_events(watch, WRITERS * EACH);
    for w in writers {
        w.join().expect("writer");
    }
    let mut last = start;
    let mut names = std::collections::HashSet::new();
    for e in &events {
        assert_eq!(e["type"], "ADDED");
        let rv: i64 = e["object"]["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .expect("rv");
        assert!(rv > last, "revisions only grow: {rv} after {last}");
        last = rv;
        assert!(names.insert(
            e["object"]["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string()
        ));
    }
    assert_eq!(names.len(), WRITERS * EACH);
}

/// A stand-in for a node's kubelet API: TLS with a certificate from the cluster CA, clients
/// must present one too. Serves `/containerLogs/...` and a WebSocket `/exec/...` that reports
/// the command it was given and exits with the code in the `EXIT` environment of the test.
struct FakeNode {
    port: u16,
}

fn openssl(args: &[&str]) {
    let out = Command::new(which("openssl"))
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ws_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(n as u8),
        n => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    frame
}

impl FakeNode {
    fn start(pki: &Path, dir: &Path) -> FakeNode {
        let (key, csr, crt, ext) = (
            dir.join("node.key"),
            dir.join("node.csr"),
            dir.join("node.crt"),
            dir.join("ext"),
        );
        std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\n").expect("ext");
        let s = |p: &Path| p.display().to_string();
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &s(&key),
            "-subj",
            "/CN=node-a",
            "-out",
            &s(&csr),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &s(&csr),
            "-CA",
            &s(&pki.join("ca.crt")),
            "-CAkey",
            &s(&pki.join("ca.key")),
            "-CAcreateserial",
            "-days",
            "1",
            "-out",
            &s(&crt),
            "-extfile",
            &s(&ext),
        ]);
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(pki.join("ca.crt")).expect("ca") {
            roots.add(cert.expect("ca cert")).expect("root");
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            provider.clone(),
        )
        .build()
        .expect("verifier");
        let chain = CertificateDer::pem_file_iter(&crt)
            .expect("crt")
            .map(|c| c.expect("cert"))
            .collect();
        let key = PrivateKeyDer::from_pem_file(&key).expect("key");
        let config = std::sync::Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain, key)
                .expect("config"),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let config = config.clone();
                std::thread::spawn(move || {
                    let Ok(conn) = rustls::ServerConnection::new(config) else {
                        return;
                    };
                    let mut tls = rustls::StreamOwned::new(conn, stream);
                    let _ = serve_one(&mut tls);
                });
            }
        });
        FakeNode { port }
    }
}

fn serve_one<S: std::io::Read + std::io::Write>(tls: &mut S) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if tls.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_string())
        })
    };
    if target.starts_with("/containerLogs/") {
        let body = format!("log of {target}\n");
        write!(tls, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())?;
        return tls.flush();
    }
    let key = header("sec-websocket-key").unwrap_or_default();
    use sha1::Digest;
    let accept = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        sha1::Sha1::digest(format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes()),
    );
    write!(tls, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n")?;
    let command: Vec<String> = target
        .split_once('?')
        .map(|(_, q)| {
            q.split('&')
                .filter_map(|kv| kv.strip_prefix("command="))
                .map(|c| c.replace("%20", " "))
                .collect()
        })
        .unwrap_or_default();
    let mut out = vec![1u8];
    out.extend_from_slice(format!("ran: {}\n", command.join(" ")).as_bytes());
    tls.write_all(&ws_frame(2, &out))?;
    let exit: i32 = command.last().and_then(|c| c.parse().ok()).unwrap_or(0);
    let status = if exit == 0 {
        json!({"metadata": {}, "status": "Success"})
    } else {
        json!({"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
            "message": format!("command terminated with non-zero exit code: exit status {exit}"),
            "details": {"causes": [{"reason": "ExitCode", "message": exit.to_string()}]}})
    };
    let mut status_frame = vec![3u8];
    status_frame.extend_from_slice(status.to_string().as_bytes());
    tls.write_all(&ws_frame(2, &status_frame))?;
    tls.write_all(&ws_frame(8, &[0x03, 0xe8]))?;
    tls.flush()
}

#[test]
fn logs_and_exec_reach_the_pods_node() {
    let c = Cluster::up();
    let node = FakeNode::start(&c.root().join("cluster/pki"), c.dir.path());
    let http = c.http();
    let nodes = format!("{}/api/v1/nodes", c.plain);
    let r = http
        .post(&nodes)
        .json(&json!({"metadata": {"name": "node-a"}}))
        .send()
        .expect("node");
    assert_eq!(r.status().as_u16(), 201);
    let status = json!({"metadata": {"name": "node-a"}, "status": {
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": node.port}}}});
    let r = http
        .put(format!("{nodes}/node-a/status"))
        .json(&status)
        .send()
        .expect("node status");
    assert_eq!(r.status().as_u16(), 200);
    let pods = format!("{}/api/v1/namespaces/default/pods", c.plain);
    let pod = json!({"metadata": {"name": "web"}, "spec": {"nodeName": "node-a",
        "containers": [{"name": "web", "image": "nginx"}]}});
    assert_eq!(
        http.post(&pods)
            .json(&pod)
            .send()
            .expect("pod")
            .status()
            .as_u16(),
        201
    );
    let running = json!({"metadata": {"name": "web"}, "status": {"phase": "Running"}});
    assert_eq!(
        http.put(format!("{pods}/web/status"))
            .json(&running)
            .send()
            .expect("status")
            .status()
            .as_u16(),
        200
    );

    let logs = c.kubectl(&["logs", "web", "--tail", "5"]);
    assert_eq!(logs, "log of /containerLogs/default/web/web?tailLines=5\n");
    let out = c.kubectl(&["exec", "web", "--", "echo", "hi", "0"]);
    assert_eq!(out, "ran: echo hi 0\n");
    let failed = c.kubectl_with(&which("kubectl"), &["exec", "web", "--", "false", "3"]);
    assert_eq!(
        failed.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&failed.stderr)
    );

    // A pod on no node has nowhere to send the request.
    let idle = json!({"metadata": {"name": "idle"}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
    assert_eq!(
        http.post(&pods)
            .json(&idle)
            .send()
            .expect("pod")
            .status()
            .as_u16(),
        201
    );
    let err = c.kubectl_fails(&["logs", "idle"]);
    assert!(err.contains("does not have a host assigned"), "{err}");
}

#[test]
fn unknown_fields_are_refused_under_strict_validation_and_dropped_otherwise() {
    let c = Cluster::up();
    let typo = MANIFESTS.replace(
        "        image: nginx:1.14.2\n",
        "        image: nginx:1.14.2\n        imagePolicy: Always\n",
    );
    let file = c.write("typo.yaml", &typo);
    let err = c.kubectl_fails(&["apply", "-f", &file]);
    assert!(
        err.contains(
            "strict decoding error: unknown field \"spec.template.spec.containers[0].imagePolicy\""
        ),
        "{err}"
    );
    assert_eq!(c.kubectl(&["get", "deploy", "-o", "name"]), "");
    // Warn: stored without the field, and the user is told.
    let out = c.kubectl_with(
        &which("kubectl"),
        &["apply", "--validate=warn", "-f", &file],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown field \"spec.template.spec.containers[0].imagePolicy\""),
        "{stderr}"
    );
    let stored = c.kubectl(&[
        "get",
        "deploy",
        "manager-firm",
        "-o",
        "jsonpath={.spec.template.spec.containers[0]}",
    ]);
    assert!(
        stored.contains("nginx:1.14.2") && !stored.contains("imagePolicy"),
        "{stored}"
    );
    // Patches are held to the same rule.
    let out = c.kubectl_with(
        &which("kubectl"),
        &[
            "patch",
            "deploy",
            "manager-firm",
            "-p",
            r#"{"spec":{"replicaz":2}}"#,
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown field \"spec.replicaz\""),
        "{stderr}"
    );
    let spec = c.kubectl(&["get", "deploy", "manager-firm", "-o", "jsonpath={.spec}"]);
    assert!(!spec.contains("replicaz"), "{spec}");
}

#[test]
fn replica_sets_keep_their_pod_count_adopt_orphans_and_count_ready_pods() {
    let c = Cluster::up();
    let http = c.http();
    let pods = format!("{}/api/v1/namespaces/default/pods", c.plain);
    // An orphan that the ReplicaSet's selector matches: adopted, so only two more are made.
    let orphan = json!({"metadata": {"name": "orphan", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.16"}]}});
    assert_eq!(
        http.post(&pods)
            .json(&orphan)
            .send()
            .expect("orphan")
            .status()
            .as_u16(),
        201
    );
    let rs = r#"apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.16
"#;
    c.kubectl(&["apply", "-f", &c.write("rs.yaml", rs)]);
    let names = || -> Vec<String> {
        let list: Value = http
            .get(format!("{pods}?labelSelector=app%3Dweb"))
            .send()
            .expect("list")
            .json()
            .expect("json");
        list["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    eventually("three pods", || names().len() == 3);
    let adopted: Value = http
        .get(format!("{pods}/orphan"))
        .send()
        .expect("get")
        .json()
        .expect("json");
    assert_eq!(adopted["metadata"]["ownerReferences"][0]["name"], "web");
    assert!(names().iter().filter(|n| n.starts_with("web-")).count() == 2);

    // Ready pods are counted.
    let ready = json!({"metadata": {"name": "orphan"}, "status": {"phase": "Running",
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    assert_eq!(
        http.put(format!("{pods}/orphan/status"))
            .json(&ready)
            .send()
            .expect("ready")
            .status()
            .as_u16(),
        200
    );
    eventually("one ready, one available", || {
        c.kubectl(&[
            "get",
            "rs",
            "web",
            "-o",
            "jsonpath={.status.readyReplicas}/{.status.availableReplicas}/{.status.replicas}",
        ]) == "1/1/3"
    });

    // Scaled down: the unready pods go first, the ready one stays.
    c.kubectl(&["scale", "rs", "web", "--replicas=1"]);
    eventually("one pod", || names() == ["orphan"]);
    let events = c.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=web",
        "-o",
        "jsonpath={.items[*].reason}",
    ]);
    assert!(
        events.contains("SuccessfulCreate") && events.contains("SuccessfulDelete"),
        "{events}"
    );
}

#[test]
fn pending_pods_are_bound_to_ready_nodes_that_fit() {
    let c = Cluster::up();
    let http = c.http();
    let nodes = format!("{}/api/v1/nodes", c.plain);
    let pods = format!("{}/api/v1/namespaces/default/pods", c.plain);
    let pod = |name: &str, selector: Value| {
        json!({"metadata": {"name": name}, "spec": {"nodeSelector": selector,
            "containers": [{"name": "c", "image": "nginx"}]}})
    };
    // No nodes yet: the pod waits, and says why.
    assert_eq!(
        http.post(&pods)
            .json(&pod("early", json!({})))
            .send()
            .expect("pod")
            .status()
            .as_u16(),
        201
    );
    eventually("FailedScheduling", || {
        c.kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=early",
            "-o",
            "jsonpath={.items[*].message}",
        ])
        .contains("no nodes available to schedule pods")
    });
    for (name, disk) in [("node-a", "ssd"), ("node-b", "hdd")] {
        let node = json!({"metadata": {"name": name, "labels": {"disk": disk}}});
        assert_eq!(
            http.post(&nodes)
                .json(&node)
                .send()
                .expect("node")
                .status()
                .as_u16(),
            201
        );
        let status = json!({"metadata": {"name": name}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(
            http.put(format!("{nodes}/{name}/status"))
                .json(&status)
                .send()
                .expect("status")
                .status()
                .as_u16(),
            200
        );
    }
    let node_of = |name: &str| c.kubectl(&["get", "pod", name, "-o", "jsonpath={.spec.nodeName}"]);
    eventually("the early pod bound once nodes came", || {
        !node_of("early").is_empty()
    });
    assert_eq!(
        http.post(&pods)
            .json(&pod("wants-hdd", json!({"disk": "hdd"})))
            .send()
            .expect("pod")
            .status()
            .as_u16(),
        201
    );
    eventually("bound to the hdd node", || node_of("wants-hdd") == "node-b");
    assert_eq!(
        http.post(&pods)
            .json(&pod("wants-nvme", json!({"disk": "nvme"})))
            .send()
            .expect("pod")
            .status()
            .as_u16(),
        201
    );
    eventually("unschedulable, with the reason", || {
        c.kubectl(&["get", "pod", "wants-nvme", "-o", "jsonpath={.status.conditions[0].reason}: {.status.conditions[0].message}"])
            == "Unschedulable: 0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
    });
    // Spread: two more pods with no preference land one on each node's lighter side.
    for name in ["s1", "s2"] {
        assert_eq!(
            http.post(&pods)
                .json(&pod(name, json!({})))
                .send()
                .expect("pod")
                .status()
                .as_u16(),
            201
        );
    }
    eventually("spread bound", || {
        !node_of("s1").is_empty() && !node_of("s2").is_empty()
    });
    let placed = [
        node_of("early"),
        node_of("wants-hdd"),
        node_of("s1"),
        node_of("s2"),
    ];
    let on_a = placed.iter().filter(|n| *n == "node-a").count();
    assert_eq!(on_a, 2, "{placed:?}");
}

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn pod_with(name: &str, containers: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": containers}})
}

#[test]
fn pull_policies_default_by_tag_and_service_accounts_lend_pull_secrets() {
    let c = Cluster::up();
    let http = c.http();
    let pods = format!("{}/api/v1/namespaces/default/pods", c.plain);
    // Seed 004's table: no tag or :latest -> Always; other tags and digests -> IfNotPresent;
    // a policy given is kept.
    let rows = [
        ("nginx", None, "Always"),
        ("nginx:latest", None, "Always"),
        ("nginx:1.16", None, "IfNotPresent"),
        ("localhost:5000/team/app", None, "Always"),
        ("localhost:5000/team/app:v2", None, "IfNotPresent"),
        (&*format!("nginx@{DIGEST}"), None, "IfNotPresent"),
        ("nginx:latest", Some("Never"), "Never"),
        ("nginx:1.16", Some("Always"), "Always"),
    ];
    let containers: Vec<Value> = rows
        .iter()
        .enumerate()
        .map(|(i, (image, policy, _))| {
            let mut c = json!({"name": format!("c{i}"), "image": image});
            if let Some(p) = policy {
                c["imagePullPolicy"] = json!(p);
            }
            c
        })
        .collect();
    let created: Value = http
        .post(&pods)
        .json(&pod_with("table", json!(containers)))
        .send()
        .expect("pod")
        .json()
        .expect("json");
    for (i, (image, policy, want)) in rows.iter().enumerate() {
        assert_eq!(
            created["spec"]["containers"][i]["imagePullPolicy"], *want,
            "{image} {policy:?}"
        );
    }
    // A changed image keeps the policy the pod was created with.
    let d = MANIFESTS
        .split("---")
        .next()
        .unwrap_or("")
        .replace("nginx:1.14.2", "nginx");
    c.kubectl(&["apply", "-f", &c.write("d.yaml", &d)]);
    c.kubectl(&["set", "image", "deploy/manager-firm", "nginx=nginx:1.16"]);
    let policy = c.kubectl(&[
        "get",
        "deploy",
        "manager-firm",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].imagePullPolicy}",
    ]);
    assert_eq!(policy, "Always");

    // A service account's pull secrets go to pods that name none.
    let sa = json!({"metadata": {"name": "builder"}, "imagePullSecrets": [{"name": "regcred"}]});
    let r = http
        .post(format!(
            "{}/api/v1/namespaces/default/serviceaccounts",
            c.plain
        ))
        .json(&sa)
        .send()
        .expect("sa");
    assert_eq!(r.status().as_u16(), 201);
    let mut lent = pod_with("lent", json!([{"name": "c", "image": "nginx"}]));
    lent["spec"]["serviceAccountName"] = json!("builder");
    let created: Value = http
        .post(&pods)
        .json(&lent)
        .send()
        .expect("pod")
        .json()
        .expect("json");
    assert_eq!(
        created["spec"]["imagePullSecrets"],
        json!([{"name": "regcred"}])
    );
    let mut own = lent.clone();
    own["metadata"]["name"] = json!("own");
    own["spec"]["imagePullSecrets"] = json!([{"name": "mine"}]);
    let created: Value = http
        .post(&pods)
        .json(&own)
        .send()
        .expect("pod")
        .json()
        .expect("json");
    assert_eq!(
        created["spec"]["imagePullSecrets"],
        json!([{"name": "mine"}])
    );
    let plain: Value = http
        .post(&pods)
        .json(&pod_with("plain", json!([{"name": "c", "image": "nginx"}])))
        .send()
        .expect("pod")
        .json()
        .expect("json");
    assert!(plain["spec"].get("imagePullSecrets").is_none(), "{plain}");
}

#[test]
fn always_pull_images_forces_every_container_to_pull() {
    let c = Cluster::up_with(&["--always-pull-images"]);
    let http = c.http();
    let mut pod = pod_with(
        "p",
        json!([{"name": "c", "image": "nginx:1.16", "imagePullPolicy": "IfNotPresent"}]),
    );
    pod["spec"]["initContainers"] =
        json!([{"name": "i", "image": "busybox:1.36", "imagePullPolicy": "Never"}]);
    let created: Value = http
        .post(format!("{}/api/v1/namespaces/default/pods", c.plain))
        .json(&pod)
        .send()
        .expect("pod")
        .json()
        .expect("json");
    assert_eq!(
        created["spec"]["containers"][0]["imagePullPolicy"],
        "Always"
    );
    assert_eq!(
        created["spec"]["initContainers"][0]["imagePullPolicy"],
        "Always"
    );
    // Without the switch the policies stay as given (the previous test's cluster).
}

#[test]
fn the_digest_policy_refuses_unpinned_images_where_it_applies() {
    let c = Cluster::up_with(&["--require-digests-in", "secure"]);
    let http = c.http();
    c.kubectl(&["create", "namespace", "secure"]);
    let in_ns = |ns: &str| format!("{}/api/v1/namespaces/{ns}/pods", c.plain);
    let unpinned = pod_with("web", json!([{"name": "web", "image": "nginx:1.16"}]));
    let r = http
        .post(in_ns("secure"))
        .json(&unpinned)
        .send()
        .expect("pod");
    assert_eq!(r.status().as_u16(), 403);
    let status: Value = r.json().expect("status");
    let message = status["message"].as_str().unwrap_or("");
    assert!(
        message.contains("container \"web\"") && message.contains("not pinned by digest"),
        "{message}"
    );
    let pinned = pod_with(
        "web",
        json!([{"name": "web", "image": format!("nginx@{DIGEST}")}]),
    );
    assert_eq!(
        http.post(in_ns("secure"))
            .json(&pinned)
            .send()
            .expect("pod")
            .status()
            .as_u16(),
        201
    );
    assert_eq!(
        http.post(in_ns("default"))
            .json(&unpinned)
            .send()
            .expect("pod")
            .status()
            .as_u16(),
        201
    );
    // Pod templates too: kubectl shows the refusal.
    let d = MANIFESTS.split("---").next().unwrap_or("").to_string();
    let err = c.kubectl_fails(&["apply", "-n", "secure", "-f", &c.write("d.yaml", &d)]);
    assert!(err.contains("not pinned by digest"), "{err}");
}

/// A test-only node: a Ready Node object, and a loop that plays its agent — pods bound to it
/// become Running and Ready, pods being deleted are removed. Stops when dropped.
struct NodeStandIn {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NodeStandIn {
    fn start(c: &Cluster) -> NodeStandIn {
        let http = c.http();
        let nodes = format!("{}/api/v1/nodes", c.plain);
        let r = http
            .post(&nodes)
            .json(&json!({"metadata": {"name": "stand-in"}}))
            .send()
            .expect("node");
        assert_eq!(r.status().as_u16(), 201);
        let status = json!({"metadata": {"name": "stand-in"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(
            http.put(format!("{nodes}/stand-in/status"))
                .json(&status)
                .send()
                .expect("status")
                .status()
                .as_u16(),
            200
        );
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let base = c.plain.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(list) = http
                    .get(format!(
                        "{base}/api/v1/pods?fieldSelector=spec.nodeName%3Dstand-in"
                    ))
                    .send()
                else {
                    continue;
                };
                let list: Value = list.json().unwrap_or(json!({}));
                for pod in list["items"].as_array().cloned().unwrap_or_default() {
                    let ns = pod["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or("default")
                        .to_string();
                    let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
                    let url = format!("{base}/api/v1/namespaces/{ns}/pods/{name}");
                    if pod["metadata"].get("deletionTimestamp").is_some() {
                        let _ = http.delete(format!("{url}?gracePeriodSeconds=0")).send();
                    } else if pod["status"]["phase"] != "Running"
                        && !pod["spec"]["containers"][0]["image"]
                            .as_str()
                            .unwrap_or("")
                            .ends_with(":broken")
                    {
                        let now = time::OffsetDateTime::now_utc()
                            .format(&time::format_description::well_known::Rfc3339)
                            .unwrap_or_default();
                        let status = json!({"metadata": {"name": name}, "status": {"phase": "Running",
                            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}]}});
                        let _ = http.put(format!("{url}/status")).json(&status).send();
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        });
        NodeStandIn {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for NodeStandIn {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn deployments_roll_out_roll_back_and_report_with_kubectl() {
    let c = Cluster::up();
    let _node = NodeStandIn::start(&c);
    let d = MANIFESTS.split("---").next().unwrap_or("").to_string();
    c.kubectl(&["apply", "-f", &c.write("d.yaml", &d)]);
    let status = c.kubectl(&[
        "rollout",
        "status",
        "deployment/manager-firm",
        "--timeout=60s",
    ]);
    assert!(
        status.ends_with("deployment \"manager-firm\" successfully rolled out\n"),
        "{status}"
    );
    c.kubectl(&[
        "set",
        "image",
        "deployment/manager-firm",
        "nginx=nginx:1.16",
    ]);
    c.kubectl(&[
        "annotate",
        "deployment/manager-firm",
        "kubernetes.io/change-cause=image 1.16",
    ]);
    let status = c.kubectl(&[
        "rollout",
        "status",
        "deployment/manager-firm",
        "--timeout=60s",
    ]);
    assert!(status.ends_with("successfully rolled out\n"), "{status}");
    let rs = c.kubectl(&["get", "rs", "-o", "jsonpath={range .items[*]}{.spec.replicas} {.spec.template.spec.containers[0].image} {.metadata.annotations.deployment\\.kubernetes\\.io/revision}{\"\\n\"}{end}"]);
    let mut lines: Vec<&str> = rs.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["0 nginx:1.14.2 1", "3 nginx:1.16 2"], "{rs}");
    let history = c.kubectl(&["rollout", "history", "deployment/manager-firm"]);
    assert!(history.contains("1         <none>"), "{history}");
    assert!(history.contains("2         image 1.16"), "{history}");
    let undo = c.kubectl(&["rollout", "undo", "deployment/manager-firm"]);
    assert_eq!(undo, "deployment.apps/manager-firm rolled back\n");
    let status = c.kubectl(&[
        "rollout",
        "status",
        "deployment/manager-firm",
        "--timeout=60s",
    ]);
    assert!(status.ends_with("successfully rolled out\n"), "{status}");
    let image = c.kubectl(&["get", "deploy", "manager-firm", "-o", "jsonpath={.spec.template.spec.containers[0].image} {.metadata.annotations.deployment\\.kubernetes\\.io/revision}"]);
    assert_eq!(image, "nginx:1.14.2 3");
    let ready = c.kubectl(&[
        "get",
        "deploy",
        "manager-firm",
        "-o",
        "jsonpath={.status.readyReplicas}/{.status.updatedReplicas}/{.status.availableReplicas}",
    ]);
    assert_eq!(ready, "3/3/3");
    let events = c.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=Deployment",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(
        events.contains("Scaled up replica set manager-firm-"),
        "{events}"
    );
}

fn deployment_yaml(name: &str, replicas: u32, image: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n{extra_spec}  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n      - name: app\n        image: {image}\n"
    )
}

#[test]
fn a_hundred_replicas_roll_within_surge_and_unavailability_bounds() {
    let c = Cluster::up();
    let _node = NodeStandIn::start(&c);
    c.kubectl(&[
        "apply",
        "-f",
        &c.write("d.yaml", &deployment_yaml("big", 100, "app:1", "")),
    ]);
    c.kubectl(&["rollout", "status", "deployment/big", "--timeout=120s"]);
    let http = c.http();
    let rs_url = format!("{}/apis/apps/v1/namespaces/default/replicasets", c.plain);
    let list: Value = http
        .get(&rs_url)
        .send()
        .expect("list")
        .json()
        .expect("json");
    let from = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    // Each ReplicaSet's spec replicas, available replicas and image, as last seen.
    let seen = |rs: &Value| {
        (
            rs["spec"]["replicas"].as_i64().unwrap_or(0),
            rs["status"]["availableReplicas"].as_i64().unwrap_or(0),
            rs["spec"]["template"]["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        )
    };
    let mut state: std::collections::HashMap<String, (i64, i64, String)> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|rs| {
            (
                rs["metadata"]["name"].as_str().unwrap_or("").to_string(),
                seen(rs),
            )
        })
        .collect();
    // The watch lasts the whole rollout, which a loaded machine can stretch past the
    // client's usual 30 s.
    let watch = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(300))
        .build()
        .expect("client")
        .get(format!("{rs_url}?watch=true&resourceVersion={from}"))
        .send()
        .expect("watch");
    c.kubectl(&["set", "image", "deployment/big", "app=app:2"]);
    // Every state the ReplicaSets pass through keeps 75..=125 in bounds (25% / 25%).
    use std::io::BufRead;
    let mut steps = 0;
    for line in std::io::BufReader::new(watch).lines() {
        let event: Value = serde_json::from_str(&line.expect("line")).expect("event");
        let rs = &event["object"];
        let name = rs["metadata"]["name"].as_str().unwrap_or("").to_string();
        state.insert(name, seen(rs));
        let spec: i64 = state.values().map(|(s, _, _)| s).sum();
        let available: i64 = state.values().map(|(_, a, _)| a).sum();
        assert!(spec <= 125, "{spec} replicas asked for: {state:?}");
        assert!(available >= 75, "only {available} available: {state:?}");
        steps += 1;
        // Done whichever ReplicaSet's change came last: only the new one asks for pods,
        // and all of them are available.
        let active: Vec<&(i64, i64, String)> = state.values().filter(|(s, _, _)| *s > 0).collect();
        let done = matches!(active.as_slice(), [(_, 100, image)] if image == "app:2");
        if done {
            break;
        }
    }
    assert!(
        steps > 4,
        "the rollout went through several steps ({steps})"
    );
    let status = c.kubectl(&["rollout", "status", "deployment/big", "--timeout=60s"]);
    assert!(status.ends_with("successfully rolled out\n"), "{status}");
}

#[test]
fn pause_resume_revisions_and_a_passed_progress_deadline() {
    let c = Cluster::up();
    let _node = NodeStandIn::start(&c);
    let file = c.write(
        "d.yaml",
        &deployment_yaml("web", 2, "app:1", "  progressDeadlineSeconds: 3\n"),
    );
    c.kubectl(&["apply", "-f", &file]);
    c.kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    // Paused: a template change waits.
    c.kubectl(&["rollout", "pause", "deployment/web"]);
    c.kubectl(&["set", "image", "deployment/web", "app=app:2"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(c.kubectl(&["get", "rs", "-o", "name"]).lines().count(), 1);
    c.kubectl(&["rollout", "resume", "deployment/web"]);
    c.kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    // Back to revision 1 by number.
    c.kubectl(&["rollout", "undo", "deployment/web", "--to-revision=1"]);
    c.kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let image = c.kubectl(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]);
    assert_eq!(image, "app:1");
    // An image whose pods never become ready: the deadline passes.
    c.kubectl(&["set", "image", "deployment/web", "app=app:broken"]);
    let out = c.kubectl_with(
        &which("kubectl"),
        &["rollout", "status", "deployment/web", "--timeout=60s"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("deployment \"web\" exceeded its progress deadline"),
        "{err}"
    );
    // The old pods kept serving meanwhile.
    let available = c.kubectl(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.status.availableReplicas}",
    ]);
    assert!(available.parse::<i64>().unwrap_or(0) >= 1, "{available}");
}

#[test]
fn deployments_adopt_matching_orphan_replica_sets() {
    let c = Cluster::up();
    let _node = NodeStandIn::start(&c);
    let orphan = r#"apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: leftover
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: app
        image: app:0
"#;
    c.kubectl(&["apply", "-f", &c.write("rs.yaml", orphan)]);
    c.kubectl(&[
        "apply",
        "-f",
        &c.write("d.yaml", &deployment_yaml("web", 2, "app:1", "")),
    ]);
    c.kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let owner = c.kubectl(&["get", "rs", "leftover", "-o", "jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name} {.spec.replicas}"]);
    assert_eq!(owner, "Deployment/web 0");
}

#[test]
fn recreate_replaces_all_pods_at_once_and_history_is_pruned() {
    let c = Cluster::up();
    let _node = NodeStandIn::start(&c);
    let spec = "  revisionHistoryLimit: 1\n  strategy:\n    type: Recreate\n";
    c.kubectl(&[
        "apply",
        "-f",
        &c.write("d.yaml", &deployment_yaml("web", 3, "app:1", spec)),
    ]);
    c.kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    for image in ["app:2", "app:3"] {
        c.kubectl(&["set", "image", "deployment/web", &format!("app={image}")]);
        let status = c.kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"]);
        assert!(status.ends_with("successfully rolled out\n"), "{status}");
    }
    // One old ReplicaSet kept (revisionHistoryLimit 1) beside the current one.
    eventually("history pruned to one old ReplicaSet", || {
        c.kubectl(&["get", "rs", "-o", "name"]).lines().count() == 2
    });
    let images = c.kubectl(&[
        "get",
        "pods",
        "-o",
        "jsonpath={.items[*].spec.containers[0].image}",
    ]);
    assert_eq!(images, "app:3 app:3 app:3");
    let reason = c.kubectl(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.strategy.type} {.status.conditions[?(@.type==\"Progressing\")].reason}",
    ]);
    assert_eq!(reason, "Recreate NewReplicaSetAvailable");
}
