//! The whole first scenario: the seed's Flask app built by `kiln build` on a Debian base
//! made offline (debootstrap, then `kiln image import-rootfs`; Python and Flask from Debian's
//! packages through `RUN apt-get`), run with `kiln run`, pushed to kiln's registry and run as
//! the seed's 2-replica Deployment on `kiln up`. Slow (a Debian install): its own test target.

mod common;
mod stack;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{kiln_bin, which};
use stack::*;

const APP_PY: &str = r#"from flask import Flask
app = Flask(__name__)

@app.route('/')
def hello():
    return "Hello, CKA!"

if __name__ == "__main__":
    app.run(host="0.0.0.0", port=5000)
"#;

/// The seed's Dockerfile, with the Debian base standing in for python:3.9-slim.
const DOCKERFILE: &str = r#"FROM localhost/debian:bookworm

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-flask \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY app.py .

EXPOSE 5000
CMD ["python3", "app.py"]
"#;

#[test]
fn the_flask_app_is_built_run_pushed_and_served_by_a_deployment() {
    let s = Stack::start(Options::default());
    which("debootstrap");
    // The debootstrap tarball is kept between runs of this machine (it takes ~35 s to make).
    let cache = std::env::var_os("KILN_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/kiln-test-cache"));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/make-debian-base");
    let out = Command::new(&script)
        .arg(s.root())
        .arg("localhost/debian:bookworm")
        .arg(&cache)
        .env("KILN", kiln_bin())
        .output()
        .expect("make-debian-base");
    assert!(
        out.status.success(),
        "make-debian-base: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let ctx = s.env.path("flask");
    std::fs::create_dir_all(&ctx).expect("mkdir");
    std::fs::write(ctx.join("app.py"), APP_PY).expect("app.py");
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).expect("Dockerfile");
    let built = s.kiln(&[
        "build",
        "--progress",
        "plain",
        "-t",
        "my-app:1.0",
        ctx.to_str().expect("utf-8"),
    ]);
    let log = String::from_utf8_lossy(&built.stderr).into_owned();
    assert!(built.status.success(), "kiln build failed:\n{log}");
    assert!(log.contains("Setting up python3-flask"), "{log}");

    // kiln run: the app answers on the host's network.
    let id = s
        .kiln_ok(&["run", "-d", "--name", "flask", "my-app:1.0"])
        .trim()
        .to_string();
    let mut answer = String::new();
    wait_until("the Flask app answers", Duration::from_secs(60), || {
        answer = http_get("127.0.0.1:5000").unwrap_or_default();
        answer.contains("Hello, CKA!")
    });
    s.kiln_ok(&["rm", "-f", &id]);

    // Pushed to kiln's registry, it runs as the seed's Deployment, with its pull secret.
    let image = format!("{}/my-app:1.0", s.registry_addr);
    s.kiln_ok(&["tag", "my-app:1.0", &image]);
    s.kiln_ok(&["push", &image]);
    s.kubectl(&[
        "create",
        "secret",
        "docker-registry",
        "registry-secret",
        &format!("--docker-server={}", s.registry_addr),
        "--docker-username=ci",
        "--docker-password=ci",
    ]);
    s.apply(&format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: private-app
  namespace: default
spec:
  replicas: 2
  selector:
    matchLabels:
      app: private-app
  template:
    metadata:
      labels:
        app: private-app
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: {image}
        ports:
        - containerPort: 5000
      imagePullSecrets:
      - name: registry-secret
"#
    ));
    s.kubectl(&[
        "rollout",
        "status",
        "deployment/private-app",
        "--timeout=180s",
    ]);
    let pods = s.pods("app=private-app");
    assert_eq!(pods.len(), 2, "{pods:?}");
    for pod in &pods {
        let ip = pod["status"]["podIP"].as_str().expect("pod IP").to_string();
        let mut answer = String::new();
        wait_until(
            &format!("the pod at {ip} answers"),
            Duration::from_secs(60),
            || {
                answer = http_get(&format!("{ip}:5000")).unwrap_or_default();
                answer.contains("Hello, CKA!")
            },
        );
    }
    let logs = s.kubectl(&["logs", "deployment/private-app"]);
    assert!(logs.contains("Running on"), "{logs}");
}
