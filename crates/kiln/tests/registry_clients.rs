//! End-to-end: `kiln registry serve` driven by real clients — skopeo and podman over plain
//! HTTP, Basic auth, bearer tokens and TLS — plus crash recovery (SIGKILL mid-push), garbage
//! collection racing pushes, and graceful shutdown.
//!
//! Every test starts its own server(s) on a fresh temporary root and port 0, and gives the
//! clients an isolated configuration (auth file, podman storage), so tests run in parallel.
//! A missing client tool fails the test; it is never skipped.

mod registry_clients_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_image::digest::Digest;
use registry_clients_support::*;
use serde_json::Value;

/// Messages clients print when a registry refuses credentials or demands them.
const DENIED: &[&str] = &[
    "unauthorized",
    "authentication required",
    "denied",
    "401",
    "403",
    "invalid username/password",
];

const TLS_UNTRUSTED: &[&str] = &["x509", "certificate", "unknown authority"];

// ---------------------------------------------------------------------------------------
// Shared setup
// ---------------------------------------------------------------------------------------

/// An image made by kiln itself: busybox-static plus a random file, imported with
/// `kiln image import-rootfs` and exported with `kiln image export`. Returns the layout
/// directory; its ref name is `tag`.
fn kiln_busybox_layout(w: &Work, tag: &str) -> PathBuf {
    let busybox = std::fs::read(which("busybox")).expect("read busybox");
    let filler = random_bytes(256 << 10);
    let tar = tar_of(&[
        ("bin/busybox", &busybox, 0o755),
        ("var/filler", &filler, 0o644),
    ]);
    let tarball = w.path("rootfs.tar");
    std::fs::write(&tarball, tar).expect("write rootfs tarball");
    let store = w.path("kiln-store");
    let store = store.to_str().expect("utf-8 path");
    let name = format!("e2e/busybox:{tag}");
    w.run_kiln(&[
        "--root",
        store,
        "image",
        "import-rootfs",
        tarball.to_str().expect("utf-8 path"),
        &name,
        "--cmd",
        r#"["/bin/busybox","sh"]"#,
    ])
    .ok();
    let dir = w.path("kiln-layout");
    w.run_kiln(&[
        "--root",
        store,
        "image",
        "export",
        &name,
        &format!("oci:{}", dir.display()),
    ])
    .ok();
    // The export names the entry after the tag.
    layout_ref(&dir, tag);
    dir
}

/// A small two-layer image in a fresh layout at `dir`, tagged `tag`.
fn small_layout(dir: &Path, tag: &str, label: &str) -> Written {
    let mut layout = Layout::new(dir);
    let img = layout.image(
        &[
            random_layer_tar("base", 300 << 10),
            tar_of(&[("etc/label", label.as_bytes(), 0o644)]),
        ],
        "amd64",
        label,
    );
    layout.tag(tag, &img);
    img
}

/// `n` images in one layout (refs `img0`..), each with the shared busybox layer plus a unique
/// random layer of `min` to `max` bytes.
fn many_images(dir: &Path, n: usize, min: usize, max: usize) -> Vec<Written> {
    let mut layout = Layout::new(dir);
    let shared = busybox_layer_tar();
    (0..n)
        .map(|i| {
            // Sizes are spread evenly over [min, max] but shuffled (7 is coprime with 20), so
            // big and small pushes run side by side.
            let k = (i * 7) % n;
            let size = min + (max - min) * k / (n - 1).max(1);
            let img = layout.image(
                &[shared.clone(), random_layer_tar(&format!("img{i}"), size)],
                "amd64",
                &format!("img{i}"),
            );
            layout.tag(&format!("img{i}"), &img);
            img
        })
        .collect()
}

/// Starts `skopeo copy` pushes of `img<i>` to `<repo_prefix><i>:v1`, all at once.
fn spawn_pushes(
    w: &Work,
    server: &Server,
    src: &Path,
    ids: &[usize],
    repo_prefix: &str,
) -> Vec<(usize, Proc)> {
    ids.iter()
        .map(|&i| {
            let cmd = w.skopeo(&[
                "copy",
                "--preserve-digests",
                "--dest-tls-verify=false",
                &oci(src, &format!("img{i}")),
                &format!("{}:v1", server.docker(&format!("{repo_prefix}{i}"))),
            ]);
            (i, Proc::spawn(cmd, &w.scratch()))
        })
        .collect()
}

/// Pulls `<repo_prefix><i>:v1` for every id concurrently (each into its own layout) and checks
/// each against the source layout blob by blob.
fn pull_and_compare(
    w: &Work,
    server: &Server,
    src: &Path,
    images: &[Written],
    ids: &[usize],
    repo_prefix: &str,
    label: &str,
) {
    let pulls: Vec<(usize, PathBuf, Proc)> = ids
        .iter()
        .map(|&i| {
            let dst = w.path(&format!("{label}-pull-{i}"));
            let cmd = w.skopeo(&[
                "copy",
                "--preserve-digests",
                "--src-tls-verify=false",
                &format!("{}:v1", server.docker(&format!("{repo_prefix}{i}"))),
                &oci(&dst, "v1"),
            ]);
            (i, dst, Proc::spawn(cmd, &w.scratch()))
        })
        .collect();
    for (i, dst, proc) in pulls {
        let out = proc.wait(TOOL_DEADLINE);
        assert!(
            out.success(),
            "{label}: pulling {repo_prefix}{i}:v1 failed:\n{}\nserver errors:\n{}",
            out.stderr,
            server.log_problems()
        );
        // Compare against the source under the source's ref name.
        let got = layout_ref(&dst, "v1");
        assert_eq!(
            got, images[i].digest,
            "{label}: {repo_prefix}{i}:v1 pulled as {got}, pushed {}",
            images[i].digest
        );
        let src_blobs = layout_closure(src, &images[i].digest, None);
        let dst_blobs = layout_closure(&dst, &got, None);
        assert_eq!(
            src_blobs, dst_blobs,
            "{label}: {repo_prefix}{i}:v1 reaches different blobs after the pull"
        );
        for digest in src_blobs.keys() {
            assert!(
                read_layout_blob(src, digest) == read_layout_blob(&dst, digest),
                "{label}: blob {digest} of {repo_prefix}{i} differs after the pull"
            );
        }
    }
}

/// Parses `deleted N blob(s), expired M upload session(s)`.
fn parse_gc(out: &str) -> (u64, u64) {
    let line = out
        .lines()
        .find(|l| l.contains("deleted") && l.contains("expired"))
        .unwrap_or_else(|| panic!("`kiln registry gc` printed no summary line: {out:?}"));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("number"))
        .collect();
    assert!(
        line.trim().starts_with("deleted ")
            && line.contains(" blob(s), expired ")
            && line.trim_end().ends_with(" upload session(s)")
            && numbers.len() == 2,
        "unexpected `kiln registry gc` summary: {line:?}"
    );
    (numbers[0], numbers[1])
}

fn skopeo_inspect(w: &Work, args: &[&str]) -> Value {
    let mut all = vec!["inspect"];
    all.extend_from_slice(args);
    let out = w.run_skopeo(&all).ok();
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("skopeo inspect output is not JSON ({e}): {out}"))
}

// ---------------------------------------------------------------------------------------
// 1. skopeo round trip
// ---------------------------------------------------------------------------------------

/// skopeo pushes a 4-layer image and a two-platform index, and pulls both back
/// byte-identical; `skopeo inspect` reports the pushed digests.
#[test]
fn skopeo_round_trip_multi_layer_and_multi_platform() {
    which("skopeo");
    let w = Work::new();
    let server = Server::start(&w.path("root"), None, &w.path("server.log"));
    let src = w.path("src");
    let mut layout = Layout::new(&src);
    let busybox = busybox_layer_tar();
    let img = layout.image(
        &[
            busybox.clone(),
            random_layer_tar("one", 700 << 10),
            random_layer_tar("two", 1 << 20),
            tar_of(&[("etc/hello", b"hello from kiln\n", 0o644)]),
        ],
        "amd64",
        "round-trip",
    );
    layout.tag("v1", &img);
    let amd = layout.image(
        &[busybox, random_layer_tar("amd", 200 << 10)],
        "amd64",
        "multi-amd64",
    );
    let arm = layout.image(
        &[random_layer_tar("arm", 300 << 10)],
        "arm64",
        "multi-arm64",
    );
    let index = layout.index(&[(&amd, "linux", "amd64"), (&arm, "linux", "arm64")]);
    layout.tag("multi", &index);

    // Single image: push, inspect, pull by tag and by digest.
    let dest = format!("{}:v1", server.docker("e2e/roundtrip"));
    w.run_skopeo(&[
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &oci(&src, "v1"),
        &dest,
    ])
    .ok();
    let info = skopeo_inspect(&w, &["--tls-verify=false", &dest]);
    assert_eq!(
        info["Digest"],
        img.digest.as_str(),
        "skopeo inspect Digest: {info}"
    );
    assert!(
        info["RepoTags"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "v1")),
        "skopeo inspect RepoTags lacks v1: {info}"
    );
    let manifest: Value = serde_json::from_slice(&img.bytes).expect("manifest JSON");
    let want_layers: Vec<&Value> = manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| &l["digest"])
        .collect();
    let got_layers: Vec<&Value> = info["Layers"].as_array().expect("Layers").iter().collect();
    assert_eq!(got_layers, want_layers, "skopeo inspect Layers");
    let raw = w
        .run_skopeo(&["inspect", "--raw", "--tls-verify=false", &dest])
        .ok();
    assert!(
        raw.as_bytes() == img.bytes.as_slice(),
        "inspect --raw returned different manifest bytes:\n{raw}"
    );

    let pulled = w.path("pulled");
    w.run_skopeo(&[
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        &dest,
        &oci(&pulled, "v1"),
    ])
    .ok();
    let blobs = assert_same_image(&src, &pulled, "v1", &img.digest);
    assert_eq!(blobs, 6, "manifest + config + 4 layers");

    let by_digest = format!("{}@{}", server.docker("e2e/roundtrip"), img.digest);
    let pulled2 = w.path("pulled-by-digest");
    w.run_skopeo(&[
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        &by_digest,
        &oci(&pulled2, "v1"),
    ])
    .ok();
    assert_same_image(&src, &pulled2, "v1", &img.digest);

    // Two-platform index with --all.
    let multi = format!("{}:v1", server.docker("e2e/multi"));
    w.run_skopeo(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &oci(&src, "multi"),
        &multi,
    ])
    .ok();
    let raw = w
        .run_skopeo(&["inspect", "--raw", "--tls-verify=false", &multi])
        .ok();
    assert!(
        raw.as_bytes() == index.bytes.as_slice(),
        "inspect --raw of the index returned different bytes:\n{raw}"
    );
    for (arch, want) in [("arm64", &arm), ("amd64", &amd)] {
        let info = skopeo_inspect(
            &w,
            &[
                "--override-os",
                "linux",
                "--override-arch",
                arch,
                "--tls-verify=false",
                &multi,
            ],
        );
        assert_eq!(
            info["Architecture"], arch,
            "platform selection through the index: {info}"
        );
        let want_manifest: Value = serde_json::from_slice(&want.bytes).expect("manifest JSON");
        let want_layers: Vec<&Value> = want_manifest["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| &l["digest"])
            .collect();
        let got_layers: Vec<&Value> = info["Layers"].as_array().expect("Layers").iter().collect();
        assert_eq!(
            got_layers, want_layers,
            "{arch} layers through the index: {info}"
        );
    }
    let pulled_multi = w.path("pulled-multi");
    w.run_skopeo(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        &multi,
        &oci(&pulled_multi, "multi"),
    ])
    .ok();
    let blobs = assert_same_image(&src, &pulled_multi, "multi", &index.digest);
    assert_eq!(
        blobs,
        1 + 2 + 2 + 3,
        "index + 2 manifests + 2 configs + 3 layers"
    );

    // The registry's own view agrees.
    let seen = verify_registry(&http_client(), &server);
    assert_eq!(
        seen.get("e2e/roundtrip:v1"),
        Some(&img.digest),
        "catalog walk: {seen:?}"
    );
    assert_eq!(
        seen.get("e2e/multi:v1"),
        Some(&index.digest),
        "catalog walk: {seen:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 2. podman with htpasswd Basic auth
// ---------------------------------------------------------------------------------------

/// Pushes kiln's busybox image with podman to `repo:v1` (podman must already be logged in),
/// pulls it into a fresh podman root and checks digest and image ID. Returns the digest.
fn podman_push_pull(
    w: &Work,
    server: &Server,
    layout: &Path,
    repo: &str,
    extra: &[&str],
    label: &str,
) -> String {
    let a = w.podman(&format!("{label}-podman-a"));
    let id = a.load_layout(layout);
    let target = format!("{}:v1", server.image(repo));
    a.ok(&["tag", &id, &target]);
    let digestfile = w.path(&format!("{label}-digest"));
    let mut push = vec!["push", "--digestfile", digestfile.to_str().expect("utf-8")];
    push.extend_from_slice(extra);
    push.push(&target);
    a.ok(&push);
    let digest = std::fs::read_to_string(&digestfile)
        .expect("read digestfile")
        .trim()
        .to_string();
    assert!(
        digest.starts_with("sha256:"),
        "podman push --digestfile wrote {digest:?}"
    );

    let b = w.podman(&format!("{label}-podman-b"));
    let mut pull = vec!["pull"];
    pull.extend_from_slice(extra);
    pull.push(&target);
    let pulled_id = last_line(&b.ok(&pull));
    assert_eq!(
        pulled_id, id,
        "the pulled image ID (config digest) differs from the pushed one"
    );
    assert_eq!(
        b.inspect(&target, "{{.Digest}}"),
        digest,
        "podman image inspect Digest after the pull"
    );
    let repo_digests = b.inspect(&target, "{{.RepoDigests}}");
    assert!(
        repo_digests.contains(&format!("{}@{digest}", server.image(repo))),
        "RepoDigests {repo_digests} lacks {}@{digest}",
        server.image(repo)
    );
    // The image is usable: podman can read its filesystem config.
    let cmd = b.inspect(&target, "{{.Config.Cmd}}");
    assert!(cmd.contains("busybox"), "pulled image config Cmd: {cmd}");
    digest
}

/// Basic auth ([auth.htpasswd] only): podman login accepts the right password and refuses a
/// wrong one or an unknown user; anonymous push/pull are refused; podman push and a pull into
/// a fresh podman root agree on the digest and image ID; skopeo agrees too.
#[test]
fn podman_basic_auth_login_push_pull() {
    which("podman");
    which("skopeo");
    let w = Work::new();
    let htpasswd = w.htpasswd(&[("alice", "secret"), ("bob", "hunter2")]);
    let config = w.config(
        "registry.toml",
        &format!(
            "[auth.htpasswd]\nrealm = \"kiln-e2e\"\npath = \"{}\"\n",
            htpasswd.display()
        ),
    );
    let server = Server::start(&w.path("root"), Some(&config), &w.path("server.log"));
    let p = w.podman("podman-login");
    let tls = "--tls-verify=false";

    p.run(&["login", tls, "-u", "alice", "-p", "wrong", &server.host])
        .fails_with(DENIED);
    p.run(&["login", tls, "-u", "mallory", "-p", "secret", &server.host])
        .fails_with(DENIED);
    let auth = std::fs::read_to_string(w.auth_file()).unwrap_or_default();
    assert!(
        !auth.contains(&server.host),
        "a failed login stored credentials: {auth}"
    );

    // Anonymous push and pull are refused (no access rules: everything needs credentials).
    let layout = kiln_busybox_layout(&w, "v1");
    let id = p.load_layout(&layout);
    let target = format!("{}:v1", server.image("e2e/anon"));
    p.ok(&["tag", &id, &target]);
    p.run(&["push", tls, &target]).fails_with(DENIED);

    let out = p.ok(&["login", tls, "-u", "alice", "-p", "secret", &server.host]);
    assert!(
        out.contains("Login Succeeded"),
        "podman login output: {out}"
    );
    let auth = std::fs::read_to_string(w.auth_file()).expect("auth file");
    assert!(
        auth.contains(&server.host),
        "podman login stored no credentials: {auth}"
    );

    let digest = podman_push_pull(&w, &server, &layout, "e2e/busybox", &[tls], "basic");

    // Another client agrees on the digest (with credentials) and is refused without them.
    let info = skopeo_inspect(
        &w,
        &[
            "--tls-verify=false",
            "--creds",
            "bob:hunter2",
            &format!("{}:v1", server.docker("e2e/busybox")),
        ],
    );
    assert_eq!(
        info["Digest"],
        digest.as_str(),
        "skopeo inspect after podman push: {info}"
    );
    w.run_skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--no-creds",
        &format!("{}:v1", server.docker("e2e/busybox")),
    ])
    .fails_with(DENIED);

    // After logout, pulls are refused again.
    p.ok(&["logout", &server.host]);
    let c = w.podman("podman-anon");
    c.run(&["pull", tls, &format!("{}:v1", server.image("e2e/busybox"))])
        .fails_with(DENIED);
}

// ---------------------------------------------------------------------------------------
// 3. Token auth
// ---------------------------------------------------------------------------------------

/// Bearer tokens ([auth.token]) with access rules: pushes need credentials, `private/*` pulls
/// need credentials, everything else pulls anonymously; podman logs in, pushes and pulls.
#[test]
fn token_auth_skopeo_and_podman() {
    which("podman");
    which("skopeo");
    let w = Work::new();
    let htpasswd = w.htpasswd(&[("alice", "secret")]);
    let config = w.config(
        "registry.toml",
        &format!(
            r#"[auth.htpasswd]
realm = "kiln-e2e"
path = "{}"

[auth.token]
service = "kiln-e2e"
issuer = "kiln-e2e"
expiration = 300

[[access]]
repository = "private/*"
pull = "authenticated"
push = "authenticated"

[[access]]
repository = "**"
pull = "anonymous"
push = "authenticated"
"#,
            htpasswd.display()
        ),
    );
    let server = Server::start(&w.path("root"), Some(&config), &w.path("server.log"));

    // The challenge is a bearer challenge pointing at the token endpoint.
    let resp = http_client()
        .get(server.url("/v2/"))
        .send()
        .expect("GET /v2/");
    let challenge = resp
        .headers()
        .get("WWW-Authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        resp.status().as_u16(),
        401,
        "anonymous GET /v2/ in token mode"
    );
    assert!(
        challenge.starts_with("Bearer ") && challenge.contains("/token"),
        "challenge: {challenge:?}"
    );

    let src = w.path("src");
    let img = small_layout(&src, "v1", "token");
    let public = format!("{}:v1", server.docker("public/app"));
    let private = format!("{}:v1", server.docker("private/x"));
    let push = |dest: &str, creds: Option<&str>| {
        let mut args = vec!["copy", "--preserve-digests", "--dest-tls-verify=false"];
        if let Some(c) = creds {
            args.extend_from_slice(&["--dest-creds", c]);
        }
        let src_ref = oci(&src, "v1");
        args.push(&src_ref);
        args.push(dest);
        w.run_skopeo(&args)
    };

    push(&public, None).fails_with(DENIED);
    push(&public, Some("alice:wrong")).fails_with(DENIED);
    push(&public, Some("alice:secret")).ok();
    push(&private, Some("alice:secret")).ok();

    // Anonymous pulls of public repositories work; private ones need credentials.
    let info = skopeo_inspect(&w, &["--tls-verify=false", &public]);
    assert_eq!(
        info["Digest"],
        img.digest.as_str(),
        "anonymous inspect of public/app: {info}"
    );
    w.run_skopeo(&["inspect", "--tls-verify=false", &private])
        .fails_with(DENIED);
    w.run_skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        "alice:wrong",
        &private,
    ])
    .fails_with(DENIED);
    let info = skopeo_inspect(
        &w,
        &["--tls-verify=false", "--creds", "alice:secret", &private],
    );
    assert_eq!(
        info["Digest"],
        img.digest.as_str(),
        "authenticated inspect of private/x: {info}"
    );

    let pulled = w.path("pulled-public");
    w.run_skopeo(&[
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        &public,
        &oci(&pulled, "v1"),
    ])
    .ok();
    assert_same_image(&src, &pulled, "v1", &img.digest);
    let pulled = w.path("pulled-private");
    w.run_skopeo(&[
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--src-creds",
        "alice:secret",
        &private,
        &oci(&pulled, "v1"),
    ])
    .ok();
    assert_same_image(&src, &pulled, "v1", &img.digest);

    // podman: login, push, pull through the token flow.
    let p = w.podman("podman-login");
    let tls = "--tls-verify=false";
    p.run(&["login", tls, "-u", "alice", "-p", "wrong", &server.host])
        .fails_with(DENIED);
    let out = p.ok(&["login", tls, "-u", "alice", "-p", "secret", &server.host]);
    assert!(
        out.contains("Login Succeeded"),
        "podman login output: {out}"
    );
    let digest = podman_push_pull(
        &w,
        &server,
        &kiln_busybox_layout(&w, "v1"),
        "private/pod",
        &[tls],
        "token",
    );
    p.ok(&["logout", &server.host]);
    let anon = w.podman("podman-anon");
    anon.run(&["pull", tls, &format!("{}:v1", server.image("private/pod"))])
        .fails_with(DENIED);
    let info = skopeo_inspect(
        &w,
        &[
            "--tls-verify=false",
            "--creds",
            "alice:secret",
            &format!("{}:v1", server.docker("private/pod")),
        ],
    );
    assert_eq!(
        info["Digest"],
        digest.as_str(),
        "skopeo inspect of podman's push: {info}"
    );
}

// ---------------------------------------------------------------------------------------
// 4. TLS
// ---------------------------------------------------------------------------------------

/// [http.tls] with an openssl-made CA and a 127.0.0.1 server certificate: clients trusting the
/// CA (reqwest, skopeo --dest-cert-dir/--src-cert-dir, podman --cert-dir) work; clients that do
/// not trust it fail on the certificate.
#[test]
fn tls_with_skopeo_podman_and_https_client() {
    which("skopeo");
    which("podman");
    let w = Work::new();
    let pki = make_pki(&w);
    let htpasswd = w.htpasswd(&[("alice", "secret")]);
    let config = w.config(
        "registry.toml",
        &format!(
            "[http.tls]\ncertificate = \"{}\"\nkey = \"{}\"\n\n[auth.htpasswd]\nrealm = \"kiln-e2e\"\npath = \"{}\"\n",
            pki.server_cert.display(),
            pki.server_key.display(),
            htpasswd.display()
        ),
    );
    let server = Server::start(&w.path("root"), Some(&config), &w.path("server.log"));
    assert!(
        server.base.starts_with("https://"),
        "with [http.tls] the server announces {}",
        server.base
    );

    // An HTTPS client trusting the CA.
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca_pem).expect("read ca.pem"))
        .expect("parse CA");
    let trusting = reqwest::blocking::Client::builder()
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTPS client");
    let resp = trusting
        .get(server.url("/v2/"))
        .basic_auth("alice", Some("secret"))
        .send()
        .unwrap_or_else(|e| {
            panic!(
                "GET {}/v2/ over TLS with the CA trusted: {e:?}",
                server.base
            )
        });
    assert_eq!(
        resp.status().as_u16(),
        200,
        "GET /v2/ over TLS with credentials"
    );
    let resp = trusting
        .get(server.url("/v2/"))
        .send()
        .expect("GET /v2/ anonymous");
    assert_eq!(
        resp.status().as_u16(),
        401,
        "GET /v2/ over TLS without credentials"
    );
    let untrusting = http_client();
    match untrusting.get(server.url("/v2/")).send() {
        Ok(resp) => panic!(
            "a client without the CA accepted the server certificate ({})",
            resp.status()
        ),
        Err(e) => {
            let chain = format!("{e:?}");
            assert!(
                chain.contains("Certificate") || chain.contains("certificate"),
                "a client without the CA should fail on the certificate, got: {chain}"
            );
        }
    }
    // Plain HTTP to the TLS port gets no registry answer.
    let plain = untrusting.get(format!("http://{}/v2/", server.host)).send();
    assert!(
        plain
            .as_ref()
            .map(|r| r.status().as_u16() != 200)
            .unwrap_or(true),
        "plain HTTP on the TLS port answered 200"
    );

    let cert_dir = pki.cert_dir.to_str().expect("utf-8");
    let src = w.path("src");
    let img = small_layout(&src, "v1", "tls");
    let dest = format!("{}:v1", server.docker("secure/app"));
    // Without the CA, skopeo refuses the certificate.
    w.run_skopeo(&[
        "copy",
        "--dest-creds",
        "alice:secret",
        &oci(&src, "v1"),
        &dest,
    ])
    .fails_with(TLS_UNTRUSTED);
    w.run_skopeo(&[
        "copy",
        "--preserve-digests",
        "--dest-cert-dir",
        cert_dir,
        "--dest-creds",
        "alice:secret",
        &oci(&src, "v1"),
        &dest,
    ])
    .ok();
    let pulled = w.path("pulled");
    w.run_skopeo(&[
        "copy",
        "--preserve-digests",
        "--src-cert-dir",
        cert_dir,
        "--src-creds",
        "alice:secret",
        &dest,
        &oci(&pulled, "v1"),
    ])
    .ok();
    assert_same_image(&src, &pulled, "v1", &img.digest);

    // podman over TLS with the CA directory.
    let p = w.podman("podman-login");
    p.run(&["login", "-u", "alice", "-p", "secret", &server.host])
        .fails_with(TLS_UNTRUSTED);
    let out = p.ok(&[
        "login",
        "--cert-dir",
        cert_dir,
        "-u",
        "alice",
        "-p",
        "secret",
        &server.host,
    ]);
    assert!(
        out.contains("Login Succeeded"),
        "podman login output: {out}"
    );
    podman_push_pull(
        &w,
        &server,
        &kiln_busybox_layout(&w, "v1"),
        "secure/pod",
        &["--cert-dir", cert_dir],
        "tls",
    );
}

// ---------------------------------------------------------------------------------------
// 5. Crash mid-push
// ---------------------------------------------------------------------------------------

/// SIGKILL while 20 skopeo pushes run, restart on the same root: every push skopeo reported
/// successful pulls byte-identical, every tag the registry lists is complete and is what was
/// pushed, no blob is served partially, and the interrupted pushes then succeed.
#[test]
fn sigkill_during_concurrent_pushes_serves_nothing_partial() {
    which("skopeo");
    const N: usize = 20;
    let w = Work::new();
    let src = w.path("src");
    let images = many_images(&src, N, 2 << 20, 8 << 20);
    let root = w.path("root");
    let log = w.path("server.log");
    let mut server = Server::start(&root, None, &log);

    let ids: Vec<usize> = (0..N).collect();
    let mut procs = spawn_pushes(&w, &server, &src, &ids, "crash/img");
    let start = Instant::now();
    let done_before_kill = loop {
        let done: Vec<usize> = procs
            .iter_mut()
            .filter_map(|(i, p)| (p.poll() && p.status.is_some_and(|s| s.success())).then_some(*i))
            .collect();
        let all_exited = procs.iter_mut().all(|(_, p)| p.poll());
        if done.len() >= 3 || all_exited {
            server.kill9();
            break done;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "fewer than 3 of {N} pushes finished within 90s; server errors:\n{}",
            server.log_problems()
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut succeeded = BTreeSet::new();
    let mut failures = Vec::new();
    for (i, p) in procs {
        let out = p.wait(TOOL_DEADLINE);
        if out.success() {
            succeeded.insert(i);
        } else {
            failures.push((i, out.stderr.lines().last().unwrap_or_default().to_string()));
        }
    }
    eprintln!(
        "crash: {} pushes done when SIGKILL was sent, {} reported success in total, {} were interrupted",
        done_before_kill.len(),
        succeeded.len(),
        failures.len()
    );
    for (i, f) in &failures {
        eprintln!("  interrupted push img{i}: {f}");
    }
    assert!(
        succeeded.len() >= 3,
        "at least the 3 finished pushes succeeded"
    );

    // Restart on the same root.
    let server = Server::start(&root, None, &log);
    let client = http_client();

    // Every push skopeo reported successful pulls completely and byte-identical.
    let ok_ids: Vec<usize> = succeeded.iter().copied().collect();
    pull_and_compare(
        &w,
        &server,
        &src,
        &images,
        &ok_ids,
        "crash/img",
        "after-crash",
    );

    // Whatever the registry lists is complete and is exactly what was pushed.
    let seen = verify_registry(&client, &server);
    for i in &succeeded {
        assert_eq!(
            seen.get(&format!("crash/img{i}:v1")),
            Some(&images[*i].digest),
            "a push skopeo reported successful is missing after the restart; registry has {seen:?}"
        );
    }
    for (name, digest) in &seen {
        let i: usize = name
            .strip_prefix("crash/img")
            .and_then(|r| r.strip_suffix(":v1"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected tag {name} in the registry"));
        assert_eq!(
            digest, &images[i].digest,
            "{name} serves a manifest that was never pushed"
        );
    }

    // Nothing partial is served: every blob of every image, pushed completely or not, is
    // either unknown or complete (HEAD size and GET bytes match its descriptor).
    let mut present = 0;
    let mut absent = 0;
    for (i, img) in images.iter().enumerate() {
        let repo = format!("crash/img{i}");
        let manifest: Value = serde_json::from_slice(&img.bytes).expect("manifest JSON");
        for (digest, size) in children(&manifest) {
            match head_blob_len(&client, &server, &repo, &digest) {
                (200, len) => {
                    assert_eq!(
                        len,
                        Some(size),
                        "HEAD {repo}/blobs/{digest} after the crash: Content-Length differs from the blob size"
                    );
                    check_blob(&client, &server, &repo, &digest, size);
                    present += 1;
                }
                (404, _) => {
                    assert!(
                        !succeeded.contains(&i),
                        "blob {digest} of {repo}, whose push succeeded, is gone after the crash"
                    );
                    absent += 1;
                }
                (status, _) => panic!(
                    "HEAD {repo}/blobs/{digest} after the crash answered {status}; log tail:\n{}",
                    server.log_tail(20)
                ),
            }
        }
    }
    eprintln!("crash: after restart {present} blobs complete, {absent} unknown, none partial");

    // The interrupted pushes go through on the restarted server.
    let retry: Vec<usize> = (0..N).filter(|i| !succeeded.contains(i)).collect();
    for (i, p) in spawn_pushes(&w, &server, &src, &retry, "crash/img") {
        let out = p.wait(TOOL_DEADLINE);
        assert!(
            out.success(),
            "re-pushing img{i} after the restart failed:\n{}\nserver errors:\n{}",
            out.stderr,
            server.log_problems()
        );
    }
    let seen = verify_registry(&client, &server);
    assert_eq!(seen.len(), N, "all {N} images after the re-push: {seen:?}");
    for (i, img) in images.iter().enumerate() {
        assert_eq!(seen.get(&format!("crash/img{i}:v1")), Some(&img.digest));
    }
}

// ---------------------------------------------------------------------------------------
// 6. Garbage collection
// ---------------------------------------------------------------------------------------

/// GC (background every second plus `kiln registry gc` in a loop) while 20 skopeo pushes run,
/// with a 60 s grace: nothing is deleted, every push succeeds, every image pulls completely.
#[test]
fn gc_racing_concurrent_pushes_keeps_everything() {
    which("skopeo");
    const N: usize = 20;
    let w = Work::new();
    let src = w.path("src");
    let images = many_images(&src, N, 1 << 20, 3 << 20);
    let root = w.path("root");
    let config = w.config(
        "registry.toml",
        "[gc]\ninterval = 1\ngrace = 60\nupload_expiry = 3600\n",
    );
    let server = Server::start(&root, Some(&config), &w.path("server.log"));

    let stop = Arc::new(AtomicBool::new(false));
    let gc_loop = {
        let stop = Arc::clone(&stop);
        let cmd_args: Vec<String> = vec![
            "registry".into(),
            "gc".into(),
            "--root".into(),
            root.display().to_string(),
            "--config".into(),
            config.display().to_string(),
        ];
        let scratch = w.scratch();
        std::thread::spawn(move || {
            let mut runs = 0u32;
            let mut deleted = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut cmd = std::process::Command::new(kiln_bin());
                cmd.args(&cmd_args);
                let (d, _) = parse_gc(&run(cmd, &scratch).ok());
                deleted += d;
                runs += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            (runs, deleted)
        })
    };

    let ids: Vec<usize> = (0..N).collect();
    let mut failed = Vec::new();
    let mut pushed = Vec::new();
    for (i, p) in spawn_pushes(&w, &server, &src, &ids, "gc/img") {
        let out = p.wait(TOOL_DEADLINE);
        if out.success() {
            pushed.push(i);
        } else {
            failed.push(format!("img{i}: {}", out.stderr.trim()));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (runs, deleted) = match gc_loop.join() {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e),
    };
    eprintln!(
        "gc: {runs} `kiln registry gc` passes ran during the pushes; {} of {N} pushes succeeded",
        pushed.len()
    );
    assert!(runs >= 1, "`kiln registry gc` never ran during the pushes");
    assert_eq!(
        deleted, 0,
        "gc deleted {deleted} blob(s) during the pushes, though every blob was uploaded within the 60s grace"
    );
    // Give the background pass (interval 1s) a chance too, then one more explicit pass.
    std::thread::sleep(Duration::from_millis(1500));
    let (d, _) = parse_gc(
        &w.run_kiln(&[
            "registry",
            "gc",
            "--root",
            root.to_str().expect("utf-8"),
            "--config",
            config.to_str().expect("utf-8"),
        ])
        .ok(),
    );
    assert_eq!(
        d, 0,
        "a gc pass after the pushes deleted referenced or in-grace blobs"
    );

    // Every image whose push succeeded pulls completely; whatever the registry lists is
    // complete. (Checked before reporting failed pushes, so one run shows both.)
    pull_and_compare(&w, &server, &src, &images, &pushed, "gc/img", "after-gc");
    let seen = verify_registry(&http_client(), &server);
    for i in &pushed {
        assert_eq!(
            seen.get(&format!("gc/img{i}:v1")),
            Some(&images[*i].digest),
            "gc/img{i}:v1 after gc: {seen:?}"
        );
    }
    assert!(
        failed.is_empty(),
        "{} of {N} pushes failed while gc ran:\n{}\nserver errors:\n{}",
        failed.len(),
        failed.join("\n"),
        server.log_problems()
    );
    assert_eq!(seen.len(), N, "every pushed image is listed: {seen:?}");
}

/// With a 1 s grace, `kiln registry gc` deletes a blob no manifest references (HEAD -> 404)
/// and keeps every blob an image manifest references.
#[test]
fn gc_deletes_unreferenced_blob_after_grace() {
    which("skopeo");
    let w = Work::new();
    let root = w.path("root");
    let config = w.config("registry.toml", "[gc]\ninterval = 0\ngrace = 1\n");
    let server = Server::start(&root, Some(&config), &w.path("server.log"));
    let client = http_client();

    let src = w.path("src");
    let img = small_layout(&src, "v1", "kept");
    let dest = format!("{}:v1", server.docker("gc/kept"));
    w.run_skopeo(&[
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &oci(&src, "v1"),
        &dest,
    ])
    .ok();

    // A lone blob through the HTTP API: POST then monolithic PUT.
    let lone = random_bytes(64 << 10);
    let lone_digest = Digest::sha256_of(&lone).to_string();
    let resp = client
        .post(server.url("/v2/gc/lone/blobs/uploads/"))
        .header("Content-Length", "0")
        .send()
        .expect("POST upload");
    assert_eq!(
        resp.status().as_u16(),
        202,
        "POST /v2/gc/lone/blobs/uploads/"
    );
    let location = resp
        .headers()
        .get("Location")
        .and_then(|v| v.to_str().ok())
        .expect("Location on 202")
        .to_string();
    let mut url = reqwest::Url::parse(&server.base)
        .expect("base URL")
        .join(&location)
        .expect("Location resolves");
    url.query_pairs_mut().append_pair("digest", &lone_digest);
    let resp = client
        .put(url)
        .header("Content-Type", "application/octet-stream")
        .body(lone.clone())
        .send()
        .expect("PUT upload");
    assert_eq!(
        resp.status().as_u16(),
        201,
        "PUT upload: {}",
        resp.text().unwrap_or_default()
    );
    assert_eq!(
        head_blob(&client, &server, "gc/lone", &lone_digest),
        200,
        "lone blob after upload"
    );

    std::thread::sleep(Duration::from_millis(2500));
    let out = w
        .run_kiln(&[
            "registry",
            "gc",
            "--root",
            root.to_str().expect("utf-8"),
            "--config",
            config.to_str().expect("utf-8"),
        ])
        .ok();
    let (deleted, _) = parse_gc(&out);
    assert_eq!(
        deleted, 1,
        "gc should delete exactly the one unreferenced blob: {out}"
    );
    assert_eq!(
        head_blob(&client, &server, "gc/lone", &lone_digest),
        404,
        "the unreferenced blob is still served after gc"
    );

    // Everything the manifest references survives, and the image still pulls.
    let manifest: Value = serde_json::from_slice(&img.bytes).expect("manifest JSON");
    for (digest, size) in children(&manifest) {
        assert_eq!(
            head_blob(&client, &server, "gc/kept", &digest),
            200,
            "referenced blob {digest} after gc"
        );
        check_blob(&client, &server, "gc/kept", &digest, size);
    }
    let pulled = w.path("pulled");
    w.run_skopeo(&[
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        &dest,
        &oci(&pulled, "v1"),
    ])
    .ok();
    assert_same_image(&src, &pulled, "v1", &img.digest);
    let (deleted, _) = parse_gc(
        &w.run_kiln(&[
            "registry",
            "gc",
            "--root",
            root.to_str().expect("utf-8"),
            "--config",
            config.to_str().expect("utf-8"),
        ])
        .ok(),
    );
    assert_eq!(deleted, 0, "a second gc pass found more to delete");
}

// ---------------------------------------------------------------------------------------
// 7. Graceful shutdown
// ---------------------------------------------------------------------------------------

/// SIGTERM on an idle server: exit status 0 within 5 s, and the data is there after a restart.
#[test]
fn sigterm_when_idle_exits_zero_promptly() {
    which("skopeo");
    let w = Work::new();
    let root = w.path("root");
    let log = w.path("server.log");
    let mut server = Server::start(&root, None, &log);
    let src = w.path("src");
    let img = small_layout(&src, "v1", "shutdown");
    let dest = format!("{}:v1", server.docker("shutdown/app"));
    w.run_skopeo(&[
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &oci(&src, "v1"),
        &dest,
    ])
    .ok();
    let resp = http_client()
        .get(server.url("/v2/"))
        .send()
        .expect("GET /v2/");
    assert_eq!(resp.status().as_u16(), 200);
    drop(resp);

    let (status, took) = server.terminate(Duration::from_secs(5));
    assert!(
        status.success(),
        "kiln registry serve exited with {status} after SIGTERM; log tail:\n{}",
        server.log_tail(30)
    );
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    eprintln!("shutdown: exited {status} {took:?} after SIGTERM");

    // The data survives a graceful restart.
    let server = Server::start(&root, None, &log);
    let seen = verify_registry(&http_client(), &server);
    assert_eq!(
        seen.get("shutdown/app:v1"),
        Some(&img.digest),
        "after restart: {seen:?}"
    );
}
