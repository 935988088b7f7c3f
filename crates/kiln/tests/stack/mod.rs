//! A test cluster: kiln's registry, `kiln up` with its node agent (or `kiln node` beside
//! it) on scratch roots, and helpers to drive it with real kubectl.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{kiln_bin, which, Env};
use serde_json::Value;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Nodes make network namespaces and run containers as root; a test that cannot fails
/// loudly rather than passing without having run.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "node tests need root (network namespaces, runc)"
    );
    which("runc");
    assert!(
        Path::new("/usr/lib/cni/bridge").is_file(),
        "CNI plugins missing: run scripts/install-deps (containernetworking-plugins)"
    );
}

/// A registry, a store with busybox images in it, and a cluster with a node.
pub struct Stack {
    pub env: Env,
    pub registry: Child,
    pub registry_addr: String,
    pub kubeconfig: PathBuf,
    /// A separately started `kiln node`, if any.
    pub node: Option<Child>,
    pub up_args: Vec<String>,
}

pub struct Options<'a> {
    pub registry_config: Option<&'a str>,
    pub kubelet_config: Option<&'a str>,
    /// Run the node agent as its own process (`kiln up --no-node` + `kiln node`).
    pub separate_node: bool,
    /// More `kiln up` flags (admission plugins).
    pub up_flags: &'a [&'a str],
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            registry_config: None,
            kubelet_config: Some(FAST_BACKOFF),
            separate_node: false,
            up_flags: &[],
        }
    }
}

/// Back-offs shortened so the scenarios finish in seconds (kiln's extension of the kubelet
/// configuration; the kubelet itself hard-codes 10 s and 300 s).
pub const FAST_BACKOFF: &str = "apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
imagePullBackOff: {initial: 2s, max: 8s}
crashLoopBackOff: {initial: 1s, max: 4s}
";

impl Stack {
    pub fn start(options: Options) -> Stack {
        require_root();
        which("kubectl");
        let env = Env::new();
        let registry_addr = format!("127.0.0.1:{}", free_port());
        let mut serve = Command::new(kiln_bin());
        serve.arg("--root").arg(env.path("registry")).args([
            "registry",
            "serve",
            "--addr",
            &registry_addr,
        ]);
        if let Some(config) = options.registry_config {
            let path = env.path("registry.toml");
            std::fs::write(&path, config).expect("registry config");
            serve.arg("--config").arg(path);
        }
        let log = std::fs::File::create(env.path("registry.log")).expect("log");
        let registry = serve
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("kiln registry serve");
        wait_until("the registry listens", Duration::from_secs(10), || {
            std::net::TcpStream::connect(&registry_addr).is_ok()
        });
        let kubeconfig = env.path("kubeconfig");
        let mut up_args = vec![
            "--listen".to_string(),
            format!("127.0.0.1:{}", free_port()),
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
            "--node-listen".into(),
            "127.0.0.1:0".into(),
        ];
        up_args.extend(options.up_flags.iter().map(|f| f.to_string()));
        if let Some(config) = options.kubelet_config {
            let path = env.path("kubelet.yaml");
            std::fs::write(&path, config).expect("kubelet config");
            up_args.push("--node-config".into());
            up_args.push(path.display().to_string());
        }
        let mut stack = Stack {
            env,
            registry,
            registry_addr,
            kubeconfig,
            node: None,
            up_args,
        };
        if options.separate_node {
            let mut args = stack.up_args.clone();
            args.insert(0, "--no-node".into());
            stack.kiln_ok(
                &[
                    &["up"],
                    &args.iter().map(String::as_str).collect::<Vec<_>>()[..],
                ]
                .concat(),
            );
            stack.start_node();
        } else {
            let args: Vec<&str> = stack.up_args.iter().map(String::as_str).collect();
            stack.kiln_ok(&[&["up"], &args[..]].concat());
        }
        stack.wait_for_node();
        stack
    }

    pub fn root(&self) -> PathBuf {
        self.env.path("root")
    }

    pub fn kiln(&self, args: &[&str]) -> Output {
        Command::new(kiln_bin())
            .arg("--root")
            .arg(self.root())
            .args(args)
            .output()
            .expect("run kiln")
    }

    pub fn kiln_ok(&self, args: &[&str]) -> String {
        let out = self.kiln(args);
        assert!(
            out.status.success(),
            "kiln {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `kiln node` with the credentials `kiln up` wrote.
    pub fn start_node(&mut self) {
        let mut args: Vec<String> = vec!["--node-listen".into(), "127.0.0.1:0".into()];
        let config = self.env.path("kubelet.yaml");
        if config.exists() {
            args.push("--node-config".into());
            args.push(config.display().to_string());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.env.path("node.log"))
            .expect("node log");
        let child = Command::new(kiln_bin())
            .arg("--root")
            .arg(self.root())
            .arg("node")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("kiln node");
        self.node = Some(child);
    }

    pub fn wait_for_node(&self) {
        wait_until("the node is Ready", Duration::from_secs(30), || {
            self.kubectl_output(&["get", "nodes", "-o", "json"])
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .is_some_and(|v| {
                    v["items"].as_array().is_some_and(|items| {
                        items.iter().any(|n| {
                            n["status"]["conditions"].as_array().is_some_and(|cs| {
                                cs.iter()
                                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
                            })
                        })
                    })
                })
        });
    }

    pub fn kubectl_output(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(which("kubectl"))
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("KUBECACHEDIR", self.env.path("kubecache"))
            .env("HOME", self.env.dir.path())
            .output()
            .expect("kubectl");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            ))
        }
    }

    pub fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl_output(args)
            .unwrap_or_else(|e| panic!("kubectl {args:?} failed: {e}"))
    }

    pub fn apply(&self, yaml: &str) {
        let path = self.env.path("apply.yaml");
        std::fs::write(&path, yaml).expect("manifest");
        self.kubectl(&["apply", "-f", path.to_str().expect("utf-8")]);
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl(&all)).expect("kubectl JSON")
    }

    pub fn pods(&self, selector: &str) -> Vec<Value> {
        self.json(&["get", "pods", "-l", selector])["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Pushes the busybox image to this stack's registry as `repo:tag`; returns the full name.
    pub fn push_busybox(&self, repo: &str, tag: &str, login: Option<(&str, &str)>) -> String {
        let name = format!("{}/{repo}:{tag}", self.registry_addr);
        // busybox, plus a file that makes each tag's image distinct.
        if !self.env.path("rootfs").exists() {
            self.env.busybox_rootfs();
        }
        std::fs::write(self.env.path("rootfs/tag"), format!("{repo}:{tag}\n")).expect("tag file");
        let tarball = self.env.path("busybox.tar");
        crate::common::tar_of(&self.env.path("rootfs"), &tarball);
        self.kiln_ok(&[
            "image",
            "import-rootfs",
            tarball.to_str().expect("utf-8"),
            &name,
            "--cmd",
            "[\"sh\"]",
        ]);
        let mut push = Command::new(kiln_bin());
        push.arg("--root").arg(self.root()).args(["push", &name]);
        push.env("DOCKER_CONFIG", self.env.path("docker"));
        if let Some((user, pass)) = login {
            let out = Command::new(kiln_bin())
                .args(["login", &self.registry_addr, "-u", user, "-p", pass])
                .env("DOCKER_CONFIG", self.env.path("docker"))
                .output()
                .expect("login");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let out = push.output().expect("push");
        assert!(
            out.status.success(),
            "push: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The node pulls it back from the registry, as a node elsewhere would.
        self.kiln_ok(&["rmi", &name]);
        name
    }

    pub fn events(&self, pod: &str) -> Vec<(String, String, u64)> {
        let list = self.json(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={pod}"),
        ]);
        list["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|e| {
                (
                    e["reason"].as_str().unwrap_or_default().to_string(),
                    e["message"].as_str().unwrap_or_default().to_string(),
                    e["count"].as_u64().unwrap_or(1),
                )
            })
            .collect()
    }

    pub fn registry_requests(&self, route: &str, method: &str) -> u64 {
        let mut s = std::net::TcpStream::connect(&self.registry_addr).expect("registry");
        write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").expect("request");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("metrics");
        text.lines()
            .filter(|l| {
                l.starts_with("kiln_registry_requests_total{")
                    && l.contains(&format!("route=\"{route}\""))
                    && l.contains(&format!("method=\"{method}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // Pods go first, so that no container outlives the test.
        let _ = self.kubectl_output(&[
            "delete",
            "deployments,pods",
            "--all",
            "--grace-period=1",
            "--timeout=60s",
        ]);
        // A finished pod leaves the API at once; the node still has to release its network.
        let pods = self.root().join("node/pods");
        let start = Instant::now();
        while std::fs::read_dir(&pods).is_ok_and(|mut d| d.next().is_some())
            && start.elapsed() < Duration::from_secs(20)
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Some(mut node) = self.node.take() {
            let _ = node.kill();
            let _ = node.wait();
        }
        let _ = self.kiln(&["down"]);
        // Whatever a failed test left running goes too.
        let left = self.kiln(&["ps", "-aq"]);
        let ids: Vec<String> = String::from_utf8_lossy(&left.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.iter().map(String::as_str));
            let _ = self.kiln(&args);
        }
        let _ = self.registry.kill();
        let _ = self.registry.wait();
    }
}

pub fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn http_get(addr: &str) -> Result<String, String> {
    let mut s = std::net::TcpStream::connect_timeout(
        &addr.parse().map_err(|e| format!("{addr}: {e}"))?,
        Duration::from_secs(3),
    )
    .map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    write!(s, "GET / HTTP/1.0\r\nHost: x\r\n\r\n").map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    Ok(text)
}

pub fn deployment(name: &str, image: &str, replicas: u32, extra_spec: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 1
{extra_spec}      containers:
      - name: web
        image: {image}
        command: ["sh", "-c", "echo app starting on $(hostname); mkdir -p /www; echo hello from $(hostname) > /www/index.html; exec httpd -f -p 8080 -h /www"]
        ports: [{{containerPort: 8080}}]
        readinessProbe:
          httpGet: {{port: 8080, path: /}}
          periodSeconds: 1
"#
    )
}

pub fn running_ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

pub fn waiting_reason(pod: &Value) -> String {
    pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}
