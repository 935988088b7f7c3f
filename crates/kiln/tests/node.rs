//! The node agent end to end: `kiln up` (API server, controllers and node agent in one
//! process) or `kiln node` beside it, kiln's registry (with auth where a scenario needs it),
//! real kubectl, and pods as real containers on a bridge network.

mod common;
mod stack;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{which, Env};
use serde_json::Value;
use stack::*;

/// Scenario 1 (without the build): an image in kiln's registry runs as a 2-replica
/// Deployment; `kubectl logs` shows the app start; busybox httpd answers on each pod's IP;
/// `kubectl exec` runs in the pod and returns its exit code.
#[test]
fn a_deployment_runs_serves_http_and_answers_logs_and_exec() {
    let s = Stack::start(Options::default());
    let image = s.push_busybox("team/web", "v1", None);
    s.apply(&deployment("web", &image, 2, ""));
    wait_until("both pods are Ready", Duration::from_secs(60), || {
        let pods = s.pods("app=web");
        pods.len() == 2 && pods.iter().all(running_ready)
    });
    for pod in s.pods("app=web") {
        let name = pod["metadata"]["name"].as_str().expect("name");
        let ip = pod["status"]["podIP"].as_str().expect("pod IP");
        assert!(ip.starts_with("10.42."), "pod IP {ip}");
        let page = http_get(&format!("{ip}:8080")).expect("httpd answers");
        assert!(page.contains(&format!("hello from {name}")), "{page}");
        let logs = s.kubectl(&["logs", name]);
        assert_eq!(logs, format!("app starting on {name}\n"));
        let status = &pod["status"]["containerStatuses"][0];
        assert_eq!(status["ready"], true);
        assert_eq!(status["restartCount"], 0);
        assert!(
            status["imageID"]
                .as_str()
                .is_some_and(|i| i.contains("@sha256:")),
            "{status}"
        );
        assert!(status["containerID"]
            .as_str()
            .is_some_and(|i| i.starts_with("kiln://")));
    }
    let first = s.pods("app=web")[0]["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    let out = Command::new(which("kubectl"))
        .args([
            "exec",
            &first,
            "--",
            "sh",
            "-c",
            "echo inside $(hostname); exit 3",
        ])
        .env("KUBECONFIG", &s.kubeconfig)
        .env("HOME", s.env.dir.path())
        .output()
        .expect("kubectl exec");
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("inside {first}\n")
    );
    let events = s.events(&first);
    for reason in ["Scheduled", "Pulling", "Pulled", "Created", "Started"] {
        assert!(
            events.iter().any(|e| e.0 == reason),
            "no {reason} event in {events:?}"
        );
    }
    // With a terminal (kubectl -it under `script`, which gives it one).
    let out = Command::new(which("script"))
        .args([
            "-qec",
            &format!("kubectl exec -it {first} -- sh -c 'tty; exit 4'"),
            "/dev/null",
        ])
        .env("KUBECONFIG", &s.kubeconfig)
        .env("HOME", s.env.dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("script");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("/dev/pts/"),
        "no terminal in the container: {text}"
    );
    assert_eq!(out.status.code(), Some(4), "{text}");
    // Scenario 12: the node's own view, as crictl shows it.
    let ps = s.kiln_ok(&["crictl", "ps"]);
    let header: Vec<&str> = ps
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "CONTAINER",
            "IMAGE",
            "CREATED",
            "STATE",
            "NAME",
            "ATTEMPT",
            "POD",
            "ID",
            "POD",
            "NAMESPACE"
        ]
    );
    let row = ps
        .lines()
        .find(|l| l.contains(&first))
        .unwrap_or_else(|| panic!("{first} missing from crictl ps:\n{ps}"));
    assert!(row.contains("Running") && row.contains(" web "), "{row}");
    let id = row.split_whitespace().next().expect("container id");
    assert_eq!(
        s.kiln_ok(&["crictl", "logs", id]),
        format!("app starting on {first}\n")
    );
    let inspect: Value =
        serde_json::from_str(&s.kiln_ok(&["crictl", "inspect", id])).expect("inspect JSON");
    assert_eq!(inspect["status"]["state"], "CONTAINER_RUNNING");
    assert_eq!(
        inspect["status"]["labels"]["io.kubernetes.pod.name"],
        first.as_str()
    );
    let pods = s.kiln_ok(&["crictl", "pods"]);
    assert!(
        pods.lines()
            .any(|l| l.contains(&first) && l.contains("Ready")),
        "{pods}"
    );
    let images = s.kiln_ok(&["crictl", "images"]);
    assert!(
        images.contains(&format!("{}/team/web", s.registry_addr)),
        "{images}"
    );
}

/// Scenario 11 on a node: with AlwaysPullImages, even an `IfNotPresent` pod asks the
/// registry each time.
#[test]
fn always_pull_images_admission_makes_every_pod_pull() {
    let s = Stack::start(Options {
        up_flags: &["--always-pull-images"],
        ..Options::default()
    });
    let image = s.push_busybox("app", "v1", None);
    let mut seen = Vec::new();
    for name in ["one", "two"] {
        s.apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: {image}\n    imagePullPolicy: IfNotPresent\n    command: [sleep, '3600']\n"
        ));
        wait_until(&format!("{name} runs"), Duration::from_secs(30), || {
            s.json(&["get", "pod", name])["status"]["phase"] == "Running"
        });
        assert_eq!(
            s.json(&["get", "pod", name])["spec"]["containers"][0]["imagePullPolicy"],
            "Always"
        );
        seen.push(s.registry_requests("manifest", "GET"));
    }
    assert!(
        seen[0] >= 1 && seen[1] > seen[0],
        "manifest GETs after each pod: {seen:?}"
    );
}

/// Scenarios 2 and 3: `set image` rolls the Deployment to a new tag; `rollout status`
/// succeeds; `rollout undo` brings the old image back, on running containers.
#[test]
fn set_image_rolls_out_and_undo_restores_the_old_image() {
    let s = Stack::start(Options::default());
    let v1 = s.push_busybox("app", "v1", None);
    let v2 = s.push_busybox("app", "v2", None);
    s.apply(&deployment("app", &v1, 2, ""));
    s.kubectl(&["rollout", "status", "deployment/app", "--timeout=60s"]);
    s.kubectl(&["set", "image", "deployment/app", &format!("web={v2}")]);
    let status = s.kubectl(&["rollout", "status", "deployment/app", "--timeout=60s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
    let images = |s: &Stack| -> Vec<String> {
        s.pods("app=app")
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| {
                p["status"]["containerStatuses"][0]["image"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    };
    wait_until("every pod runs v2", Duration::from_secs(30), || {
        let i = images(&s);
        i.len() == 2 && i.iter().all(|i| *i == v2)
    });
    s.kubectl(&["rollout", "undo", "deployment/app"]);
    s.kubectl(&["rollout", "status", "deployment/app", "--timeout=60s"]);
    wait_until("every pod runs v1 again", Duration::from_secs(30), || {
        let pods = s.pods("app=app");
        let live: Vec<&Value> = pods
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        live.len() == 2
            && live.iter().all(|p| {
                running_ready(p) && p["status"]["containerStatuses"][0]["image"] == v1.as_str()
            })
    });
}

/// Scenario 4: a wrong tag gives ErrImagePull, then ImagePullBackOff with a growing
/// back-off (the BackOff event's count rises, as `kubectl describe` shows); fixing the
/// image recovers the pod.
#[test]
fn a_wrong_tag_backs_off_and_recovers_when_fixed() {
    let s = Stack::start(Options::default());
    let good = s.push_busybox("app", "v1", None);
    let wrong = good.replace(":v1", ":nope");
    s.apply(&deployment("app", &wrong, 1, ""));
    let mut reasons = Vec::new();
    wait_until(
        "ErrImagePull then ImagePullBackOff",
        Duration::from_secs(60),
        || {
            if let Some(pod) = s.pods("app=app").first() {
                let r = waiting_reason(pod);
                if !r.is_empty() && reasons.last() != Some(&r) {
                    reasons.push(r);
                }
            }
            reasons.contains(&"ErrImagePull".to_string())
                && reasons.contains(&"ImagePullBackOff".to_string())
        },
    );
    let pod = s.pods("app=app")[0]["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    // Back-off 2 s, 4 s, 8 s: within ~20 s there are several attempts, each further apart.
    wait_until("several pull attempts", Duration::from_secs(40), || {
        s.events(&pod)
            .iter()
            .filter(|e| e.0 == "Failed" && e.1.starts_with("Failed to pull image"))
            .map(|e| e.2)
            .sum::<u64>()
            >= 3
    });
    let describe = s.kubectl(&["describe", "pod", &pod]);
    assert!(
        describe.contains(&format!("Failed to pull image \"{wrong}\"")),
        "{describe}"
    );
    assert!(
        describe.contains(&format!("Back-off pulling image \"{wrong}\"")),
        "{describe}"
    );
    assert!(
        describe.contains("ImagePullBackOff") || describe.contains("ErrImagePull"),
        "{describe}"
    );
    let backoffs = s
        .events(&pod)
        .iter()
        .filter(|e| e.0 == "BackOff")
        .map(|e| e.2)
        .sum::<u64>();
    assert!(backoffs >= 2, "the back-off repeats: {:?}", s.events(&pod));
    s.kubectl(&["set", "image", "deployment/app", &format!("web={good}")]);
    s.kubectl(&["rollout", "status", "deployment/app", "--timeout=60s"]);
    wait_until("the fixed pod is Ready", Duration::from_secs(30), || {
        s.pods("app=app").iter().any(|p| {
            running_ready(p) && p["status"]["containerStatuses"][0]["image"] == good.as_str()
        })
    });
}

/// Scenario 5: a private repository without a secret is refused; `kubectl create secret
/// docker-registry` plus imagePullSecrets on the pod lets it pull; then the same through
/// the ServiceAccount.
#[test]
fn private_images_need_pull_secrets_on_the_pod_or_service_account() {
    let env = Env::new();
    let htpasswd = env.path("htpasswd");
    let line = common::sh(Command::new(which("htpasswd")).args(["-Bbn", "alice", "secret"]));
    std::fs::write(&htpasswd, line).expect("htpasswd");
    let config = format!(
        "[auth.htpasswd]\nrealm = \"kiln\"\npath = \"{}\"\n\n[[access]]\nrepository = \"**\"\npull = \"authenticated\"\npush = \"authenticated\"\n",
        htpasswd.display()
    );
    let s = Stack::start(Options {
        registry_config: Some(&config),
        ..Options::default()
    });
    let image = s.push_busybox("private/app", "v1", Some(("alice", "secret")));
    let pod = |name: &str, secrets: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n{secrets}  containers:\n  - name: app\n    image: {image}\n    command: [sleep, '3600']\n"
        )
    };
    s.apply(&pod("no-secret", ""));
    wait_until("the pull is refused", Duration::from_secs(30), || {
        s.json(&["get", "pod", "no-secret"]).pipe(|p| {
            waiting_reason(&p) == "ErrImagePull" || waiting_reason(&p) == "ImagePullBackOff"
        })
    });
    let failed = s.events("no-secret");
    assert!(
        failed
            .iter()
            .any(|e| e.0 == "Failed" && e.1.contains("unauthorized")),
        "{failed:?}"
    );
    s.kubectl(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        &format!("--docker-server={}", s.registry_addr),
        "--docker-username=alice",
        "--docker-password=secret",
    ]);
    s.apply(&pod(
        "with-secret",
        "  imagePullSecrets: [{name: regcred}]\n",
    ));
    wait_until(
        "the pod with the secret runs",
        Duration::from_secs(30),
        || s.json(&["get", "pod", "with-secret"])["status"]["phase"] == "Running",
    );
    // Through the ServiceAccount: admission copies its imagePullSecrets into the pod.
    s.kubectl(&[
        "patch",
        "serviceaccount",
        "default",
        "-p",
        r#"{"imagePullSecrets":[{"name":"regcred"}]}"#,
    ]);
    s.apply(&pod("via-account", ""));
    wait_until(
        "the pod of the account runs",
        Duration::from_secs(30),
        || s.json(&["get", "pod", "via-account"])["status"]["phase"] == "Running",
    );
}

trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}
impl Pipe for Value {}

/// Scenarios 6 and 7: Never, IfNotPresent and Always as the registry's request counts show
/// them, and a digest-pinned pod unmoved by a re-tag.
#[test]
fn pull_policies_show_at_the_registry_and_digests_pin() {
    let s = Stack::start(Options::default());
    let image = s.push_busybox("app", "v1", None);
    let pod = |name: &str, image: &str, policy: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: {image}\n    imagePullPolicy: {policy}\n    command: [sleep, '3600']\n"
        )
    };
    let running = |name: &str| {
        wait_until(&format!("{name} runs"), Duration::from_secs(30), || {
            s.json(&["get", "pod", name])["status"]["phase"] == "Running"
        })
    };
    // Never, before the image is on the node.
    s.apply(&pod("never", &image, "Never"));
    wait_until("ErrImageNeverPull", Duration::from_secs(30), || {
        waiting_reason(&s.json(&["get", "pod", "never"])) == "ErrImageNeverPull"
    });
    assert_eq!(s.registry_requests("manifest", "GET"), 0);
    // IfNotPresent pulls once.
    s.apply(&pod("first", &image, "IfNotPresent"));
    running("first");
    let after_first = s.registry_requests("manifest", "GET");
    assert!(after_first >= 1);
    s.apply(&pod("second", &image, "IfNotPresent"));
    running("second");
    assert_eq!(
        s.registry_requests("manifest", "GET"),
        after_first,
        "IfNotPresent asked the registry again"
    );
    let second = s.events("second");
    assert!(
        second.iter().any(|e| e.0 == "Pulled"
            && e.1 == format!("Container image \"{image}\" already present on machine")),
        "{second:?}"
    );
    // Always asks every time.
    s.apply(&pod("always", &image, "Always"));
    running("always");
    assert!(
        s.registry_requests("manifest", "GET") > after_first,
        "Always did not ask the registry"
    );
    // A digest pin survives a moved tag.
    let digest = s.json(&["get", "pod", "first"])["status"]["containerStatuses"][0]["imageID"]
        .as_str()
        .expect("imageID")
        .rsplit('@')
        .next()
        .expect("digest")
        .to_string();
    let pinned = format!("{}/app@{digest}", s.registry_addr);
    let moved = s.push_busybox("app", "v1-moved", None);
    s.kiln_ok(&["pull", &moved]);
    s.kiln_ok(&["tag", &moved, &image]);
    s.kiln_ok(&["push", &image]);
    s.apply(&pod("pinned", &pinned, "Always"));
    running("pinned");
    let id = s.json(&["get", "pod", "pinned"])["status"]["containerStatuses"][0]["imageID"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(id.ends_with(&digest), "{id} is not pinned to {digest}");
    s.apply(&pod("retagged", &image, "Always"));
    running("retagged");
    let id = s.json(&["get", "pod", "retagged"])["status"]["containerStatuses"][0]["imageID"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        !id.ends_with(&digest),
        "the re-tagged image should be the new one: {id}"
    );
}

/// (pod name, container ID) of the `app=app` pods.
fn container_ids(s: &Stack) -> Vec<(String, String)> {
    s.pods("app=app")
        .iter()
        .map(|p| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (
                text(&p["metadata"]["name"]),
                text(&p["status"]["containerStatuses"][0]["containerID"]),
            )
        })
        .collect()
}

/// Scenario: the node agent killed and restarted adopts the running pods instead of
/// restarting them.
#[test]
fn a_restarted_node_agent_adopts_running_pods() {
    let mut s = Stack::start(Options {
        separate_node: true,
        ..Options::default()
    });
    let image = s.push_busybox("app", "v1", None);
    s.apply(&deployment("app", &image, 2, ""));
    s.kubectl(&["rollout", "status", "deployment/app", "--timeout=60s"]);
    let before = container_ids(&s);
    let mut node = s.node.take().expect("node");
    node.kill().expect("kill -9 the node agent");
    let _ = node.wait();
    std::thread::sleep(Duration::from_secs(1));
    s.start_node();
    // Let the new agent sync every pod.
    std::thread::sleep(Duration::from_secs(4));
    let after = container_ids(&s);
    assert_eq!(before, after, "pods were restarted");
    for pod in s.pods("app=app") {
        assert!(running_ready(&pod));
        assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 0);
    }
    // And it still manages them: a deletion stops the container.
    let name = before[0].0.clone();
    s.kubectl(&["delete", "pod", &name, "--timeout=30s"]);
}

/// A proxy in front of the registry that holds every blob download for a while and
/// records how many repositories were being downloaded from at once.
struct CountingProxy {
    addr: String,
    most: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CountingProxy {
    fn start(upstream: &str) -> CountingProxy {
        use std::collections::HashMap;
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let active: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let upstream = upstream.to_string();
        let most2 = most.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let upstream = upstream.clone();
                let active = active.clone();
                let most = most2.clone();
                std::thread::spawn(move || {
                    let _ = proxy_connection(client, &upstream, &active, &most);
                });
            }
        });
        CountingProxy { addr, most }
    }

    fn most_at_once(&self) -> usize {
        self.most.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn read_head(r: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if r.read(&mut byte)? == 0 {
            return Ok(None);
        }
        head.push(byte[0]);
    }
    Ok(Some(head))
}

fn content_length(head: &[u8]) -> usize {
    String::from_utf8_lossy(head)
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0)
}

fn proxy_connection(
    mut client: std::net::TcpStream,
    upstream: &str,
    active: &std::sync::Mutex<std::collections::HashMap<String, usize>>,
    most: &std::sync::atomic::AtomicUsize,
) -> std::io::Result<()> {
    let mut server = std::net::TcpStream::connect(upstream)?;
    // Not HTTP (the client tries TLS first): pass the bytes through untouched.
    let mut first = [0u8; 1];
    if client.peek(&mut first)? == 1 && !first[0].is_ascii_alphabetic() {
        let mut c2 = client.try_clone()?;
        let mut s2 = server.try_clone()?;
        std::thread::spawn(move || std::io::copy(&mut s2, &mut c2));
        std::io::copy(&mut client, &mut server)?;
        return Ok(());
    }
    loop {
        let Some(head) = read_head(&mut client)? else {
            return Ok(());
        };
        let line = String::from_utf8_lossy(&head)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        let mut body = vec![0u8; content_length(&head)];
        client.read_exact(&mut body)?;
        // /v2/<repo>/blobs/<digest>
        let repo = path
            .strip_prefix("/v2/")
            .and_then(|p| p.split_once("/blobs/"))
            .map(|(repo, _)| repo.to_string())
            .filter(|_| method == "GET");
        if let Some(repo) = &repo {
            let mut a = active.lock().expect("lock");
            *a.entry(repo.clone()).or_default() += 1;
            let repos = a.values().filter(|n| **n > 0).count();
            most.fetch_max(repos, std::sync::atomic::Ordering::SeqCst);
            drop(a);
            std::thread::sleep(Duration::from_millis(700));
        }
        server.write_all(&head)?;
        server.write_all(&body)?;
        let response = read_head(&mut server)?.unwrap_or_default();
        let length = if method == "HEAD" {
            0
        } else {
            content_length(&response)
        };
        let mut payload = vec![0u8; length];
        server.read_exact(&mut payload)?;
        client.write_all(&response)?;
        client.write_all(&payload)?;
        if let Some(repo) = &repo {
            let mut a = active.lock().expect("lock");
            if let Some(n) = a.get_mut(repo) {
                *n -= 1;
            }
        }
    }
}

fn pull_concurrency(kubelet_config: &str) -> usize {
    let s = Stack::start(Options {
        kubelet_config: Some(kubelet_config),
        ..Options::default()
    });
    let proxy = CountingProxy::start(&s.registry_addr);
    let mut pods = String::new();
    for i in 1..=3 {
        let image = s.push_busybox(&format!("app{i}"), "v1", None);
        let through_proxy = image.replace(&s.registry_addr, &proxy.addr);
        pods.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: {through_proxy}\n    command: [sleep, '3600']\n"
        ));
    }
    s.apply(&pods);
    wait_until("all three pods run", Duration::from_secs(60), || {
        (1..=3).all(|i| s.json(&["get", "pod", &format!("p{i}")])["status"]["phase"] == "Running")
    });
    proxy.most_at_once()
}

/// Scenario 9: pulls go one at a time by default; with `serializeImagePulls: false` and
/// `maxParallelImagePulls: 2`, never more than two at once, as the registry sees it.
#[test]
fn image_pulls_are_serial_by_default_and_bounded_in_parallel() {
    let serial = pull_concurrency(FAST_BACKOFF);
    assert_eq!(serial, 1, "default: one pull at a time");
    let parallel = pull_concurrency(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nserializeImagePulls: false\nmaxParallelImagePulls: 2\n",
    );
    assert_eq!(parallel, 2, "maxParallelImagePulls: 2");
}

/// Writes an OCI layout holding an index of two platforms, each a busybox root with
/// `/platform` naming its own platform.
fn two_platform_layout(env: &Env, dir: &Path) {
    use sha2::Digest as _;
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("mkdir");
    let put = |bytes: &[u8]| -> (String, usize) {
        let hex = format!("{:x}", sha2::Sha256::digest(bytes));
        std::fs::write(blobs.join(&hex), bytes).expect("blob");
        (format!("sha256:{hex}"), bytes.len())
    };
    if !env.path("rootfs").exists() {
        env.busybox_rootfs();
    }
    let mut manifests = Vec::new();
    for arch in ["amd64", "arm64"] {
        std::fs::write(env.path("rootfs/platform"), format!("linux/{arch}\n")).expect("file");
        let layer = common::tar_of(&env.path("rootfs"), &env.path(&format!("{arch}.tar")));
        let (layer_digest, layer_size) = put(&layer);
        let config = serde_json::json!({
            "architecture": arch, "os": "linux",
            "config": {"Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        });
        let (config_digest, config_size) = put(config.to_string().as_bytes());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}],
        });
        let (digest, size) = put(manifest.to_string().as_bytes());
        manifests.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest, "size": size,
            "platform": {"architecture": arch, "os": "linux"},
        }));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    let (digest, size) = put(index.to_string().as_bytes());
    let top = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": digest, "size": size,
            "annotations": {"org.opencontainers.image.ref.name": "v1"},
        }],
    });
    std::fs::write(dir.join("index.json"), top.to_string()).expect("index.json");
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("oci-layout");
}

/// Scenario 10: an image index with two platforms; the node pulls and runs its own.
#[test]
fn the_node_pulls_its_own_platform_from_an_index() {
    let s = Stack::start(Options::default());
    let layout = s.env.path("multi");
    two_platform_layout(&s.env, &layout);
    let image = format!("{}/multi:v1", s.registry_addr);
    common::skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{image}"),
    ]);
    s.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: multi}}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: app\n    image: {image}\n    command: [cat, /platform]\n"
    ));
    wait_until("the pod ran", Duration::from_secs(60), || {
        s.json(&["get", "pod", "multi"])["status"]["phase"] == "Succeeded"
    });
    let node_arch = s.json(&["get", "nodes"])["items"][0]["status"]["nodeInfo"]["architecture"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        s.kubectl(&["logs", "multi"]),
        format!("linux/{node_arch}\n")
    );
    // Only that platform's layer came down: one config and one layer blob.
    assert_eq!(s.registry_requests("blob", "GET"), 2);
}

/// Image GC: with the thresholds at their lowest, images no container uses are removed
/// once past the minimum age, and an image in use never is.
#[test]
fn image_gc_removes_unused_images_but_never_one_in_use() {
    let s = Stack::start(Options {
        kubelet_config: Some(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nimageGCHighThresholdPercent: 1\nimageGCLowThresholdPercent: 0\nimageMinimumGCAge: 1s\n",
        ),
        ..Options::default()
    });
    let kept = s.push_busybox("kept", "v1", None);
    let dropped = s.push_busybox("dropped", "v1", None);
    let pod = |name: &str, image: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: {image}\n    command: [sleep, '3600']\n")
    };
    s.apply(&pod("uses-kept", &kept));
    s.apply(&pod("uses-dropped", &dropped));
    wait_until("both pods run", Duration::from_secs(60), || {
        ["uses-kept", "uses-dropped"]
            .iter()
            .all(|p| s.json(&["get", "pod", p])["status"]["phase"] == "Running")
    });
    s.kubectl(&["delete", "pod", "uses-dropped", "--timeout=30s"]);
    let images = |s: &Stack| s.kiln_ok(&["images", "--format", "{{.Repository}}"]);
    wait_until(
        "the unused image is collected",
        Duration::from_secs(40),
        || !images(&s).contains("/dropped"),
    );
    assert!(
        images(&s).contains("/kept"),
        "the image in use was removed: {}",
        images(&s)
    );
}

/// Restart policies with CrashLoopBackOff and `logs --previous`, liveness probes that
/// restart, completion under Never, and hostNetwork.
#[test]
fn containers_restart_as_their_policy_says_and_probes_restart_them() {
    let s = Stack::start(Options::default());
    let image = s.push_busybox("app", "v1", None);
    let pod = |name: &str, policy: &str, script: &str, extra: &str| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  restartPolicy: {policy}\n{extra}  containers:\n  - name: app\n    image: {image}\n    command: [sh, -c, '{script}']\n    volumeMounts: [{{name: data, mountPath: /data}}]\n"
        )
    };
    let liveness = "    livenessProbe:\n      exec: {command: [cat, /tmp/healthy]}\n      periodSeconds: 1\n      failureThreshold: 1\n";
    let data = "  volumes: [{name: data, emptyDir: {}}]\n";
    let mut all = pod("crasher", "Always", "echo boom $(date +%s%N); exit 2", data);
    all.push_str(&pod("done", "Never", "echo finished", data));
    // A restarted container gets a fresh filesystem; the marker lives in an emptyDir.
    all.push_str(&pod(
        "fails-once",
        "OnFailure",
        "test -f /data/again && exit 0; touch /data/again; exit 1",
        "  volumes: [{name: data, emptyDir: {}}]\n",
    ));
    all.push_str(&pod(
        "host",
        "Always",
        "sleep 3600",
        "  hostNetwork: true\n  volumes: [{name: data, emptyDir: {}}]\n",
    ));
    all.push_str(&format!(
        "{}{liveness}",
        pod(
            "unhealthy",
            "Always",
            "touch /tmp/healthy; sleep 2; rm /tmp/healthy; sleep 3600",
            data
        )
    ));
    s.apply(&all);
    wait_until(
        "the crasher is in CrashLoopBackOff after restarts",
        Duration::from_secs(60),
        || {
            let p = s.json(&["get", "pod", "crasher"]);
            let c = &p["status"]["containerStatuses"][0];
            c["restartCount"].as_u64().unwrap_or(0) >= 2 && waiting_reason(&p) == "CrashLoopBackOff"
        },
    );
    let p = s.json(&["get", "pod", "crasher"]);
    let c = &p["status"]["containerStatuses"][0];
    assert_eq!(c["lastState"]["terminated"]["exitCode"], 2, "{c}");
    assert_eq!(c["lastState"]["terminated"]["reason"], "Error", "{c}");
    assert!(
        c["state"]["waiting"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("back-off ")
                && m.contains("restarting failed container=app pod=crasher_default(")),
        "{c}"
    );
    assert!(s
        .kubectl(&["logs", "crasher", "--previous"])
        .starts_with("boom "));
    let table = s.kubectl(&["get", "pod", "crasher"]);
    assert!(
        table.contains("CrashLoopBackOff") || table.contains("Error"),
        "{table}"
    );
    assert!(
        s.events("crasher").iter().any(|e| e.0 == "BackOff"
            && e.1
                .starts_with("Back-off restarting failed container app in pod crasher_default(")),
        "{:?}",
        s.events("crasher")
    );

    wait_until("Never: the pod succeeds", Duration::from_secs(30), || {
        s.json(&["get", "pod", "done"])["status"]["phase"] == "Succeeded"
    });
    let done = s.json(&["get", "pod", "done"]);
    assert_eq!(
        done["status"]["containerStatuses"][0]["state"]["terminated"]["reason"],
        "Completed"
    );
    assert_eq!(s.kubectl(&["logs", "done"]), "finished\n");

    wait_until(
        "OnFailure: restarted once, then succeeded",
        Duration::from_secs(30),
        || {
            let p = s.json(&["get", "pod", "fails-once"]);
            p["status"]["phase"] == "Succeeded"
                && p["status"]["containerStatuses"][0]["restartCount"] == 1
        },
    );

    // Two containers of one pod share its network: the second reaches the first on localhost.
    s.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: pair}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: server\n    image: {image}\n    command: [sh, -c, 'mkdir -p /www; echo shared > /www/index.html; exec httpd -f -p 8080 -h /www']\n  - name: client\n    image: {image}\n    command: [sh, -c, 'until wget -qO- http://127.0.0.1:8080/; do sleep 0.2; done; grep -c pair /etc/hosts; sleep 3600']\n"
    ));
    wait_until(
        "the client reached the server over localhost",
        Duration::from_secs(30),
        || {
            s.kubectl_output(&["logs", "pair", "-c", "client"])
                .is_ok_and(|l| l == "shared\n1\n")
        },
    );
    wait_until("the hostNetwork pod runs", Duration::from_secs(30), || {
        s.json(&["get", "pod", "host"])["status"]["phase"] == "Running"
    });
    let host = s.json(&["get", "pod", "host"]);
    assert_eq!(host["status"]["podIP"], host["status"]["hostIP"]);

    wait_until(
        "the liveness probe restarts the container",
        Duration::from_secs(40),
        || {
            s.json(&["get", "pod", "unhealthy"])["status"]["containerStatuses"][0]["restartCount"]
                .as_u64()
                .unwrap_or(0)
                >= 1
        },
    );
    let events = s.events("unhealthy");
    assert!(
        events
            .iter()
            .any(|e| e.0 == "Unhealthy" && e.1.starts_with("Liveness probe failed:")),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.0 == "Killing"
                && e.1 == "Container app failed liveness probe, will be restarted"),
        "{events:?}"
    );
}

/// A new image set on a running pod restarts its container with that image, as the
/// kubelet does when a container's definition changes.
#[test]
fn a_changed_container_definition_restarts_the_container() {
    let s = Stack::start(Options::default());
    let v1 = s.push_busybox("app", "v1", None);
    let v2 = s.push_busybox("app", "v2", None);
    s.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: single}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: {v1}\n    command: [sh, -c, 'cat /tag; exec sleep 3600']\n"
    ));
    wait_until("v1 runs", Duration::from_secs(30), || {
        s.kubectl_output(&["logs", "single"])
            .is_ok_and(|l| l == "app:v1\n")
    });
    s.kubectl(&["set", "image", "pod/single", &format!("app={v2}")]);
    wait_until("v2 runs in the same pod", Duration::from_secs(30), || {
        s.kubectl_output(&["logs", "single"])
            .is_ok_and(|l| l == "app:v2\n")
    });
    let status = &s.json(&["get", "pod", "single"])["status"]["containerStatuses"][0];
    assert_eq!(status["restartCount"], 1, "{status}");
    assert_eq!(status["image"], v2.as_str(), "{status}");
    assert!(
        s.events("single")
            .iter()
            .any(|e| e.0 == "Killing"
                && e.1 == "Container app definition changed, will be restarted"),
        "{:?}",
        s.events("single")
    );
}

/// Graceful termination: SIGTERM first; a process that handles it ends at once, one that
/// ignores it is killed when the grace period ends.
#[test]
fn deletion_sends_sigterm_then_sigkill_after_the_grace_period() {
    let s = Stack::start(Options::default());
    let image = s.push_busybox("app", "v1", None);
    let pod = |name: &str, grace: u32, script: &str| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: {grace}\n  containers:\n  - name: app\n    image: {image}\n    command: [sh, -c, '{script}']\n"
        )
    };
    let mut all = pod(
        "polite",
        30,
        "trap \"echo got TERM; exit 0\" TERM; echo ready; while true; do sleep 0.1; done",
    );
    // As PID 1 in its namespace, a shell without a handler ignores SIGTERM.
    all.push_str(&pod(
        "stubborn",
        3,
        "echo ready; while true; do sleep 0.1; done",
    ));
    s.apply(&all);
    wait_until("both run", Duration::from_secs(30), || {
        ["polite", "stubborn"].iter().all(|p| {
            s.kubectl_output(&["logs", p])
                .is_ok_and(|l| l.contains("ready"))
        })
    });
    let started = Instant::now();
    s.kubectl(&["delete", "pod", "polite", "--timeout=30s"]);
    let polite = started.elapsed();
    assert!(
        polite < Duration::from_secs(8),
        "a TERM handler should end it quickly: {polite:?}"
    );
    let started = Instant::now();
    s.kubectl(&["delete", "pod", "stubborn", "--timeout=30s"]);
    let stubborn = started.elapsed();
    assert!(
        stubborn >= Duration::from_secs(3) && stubborn < Duration::from_secs(12),
        "SIGKILL should come when the 3 s grace period ends: {stubborn:?}"
    );
}
