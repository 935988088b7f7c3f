//! `kiln login` / `push` / `pull` / `logout` against real registries — kiln's own and CNCF
//! distribution (Debian's `docker-registry`), both behind htpasswd, once over TLS — with
//! skopeo on the other side to prove interoperability.

#[path = "registry_clients_support/mod.rs"]
mod support;

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const USER: &str = "alice";
const PASSWORD: &str = "s3cret-pw";

/// A registry under test: kiln's or distribution's, with htpasswd auth.
struct Target {
    host: String,
    /// Keeps the process alive (kiln's server or distribution's child).
    _kiln: Option<Server>,
    dist: Option<Child>,
    root: PathBuf,
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(mut c) = self.dist.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// kiln's registry with htpasswd users; Basic auth, or bearer tokens with `tokens`. With
/// authentication configured and no access rule, every action needs credentials.
fn kiln_registry(w: &Work, name: &str, tls: Option<&Pki>, tokens: bool) -> Target {
    let htpasswd = w.htpasswd(&[(USER, PASSWORD)]);
    let mut toml = format!(
        "[gc]\ninterval = 0\n[auth.htpasswd]\npath = {:?}\n",
        htpasswd.display().to_string()
    );
    if tokens {
        toml.push_str("[auth.token]\nservice = \"kiln-test\"\n");
    }
    if let Some(pki) = tls {
        toml.push_str(&format!(
            "[http.tls]\ncertificate = {:?}\nkey = {:?}\n",
            pki.server_cert.display().to_string(),
            pki.server_key.display().to_string()
        ));
    }
    let config = w.config(&format!("{name}.toml"), &toml);
    let root = w.path(name);
    let server = Server::start(&root, Some(&config), &w.path(&format!("{name}.log")));
    Target {
        host: server.host.clone(),
        _kiln: Some(server),
        dist: None,
        root,
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn distribution_registry(w: &Work, name: &str) -> Target {
    let bin = which("docker-registry");
    let htpasswd = w.htpasswd(&[(USER, PASSWORD)]);
    let root = w.path(name);
    fs::create_dir_all(&root).expect("mkdir");
    let port = free_port();
    let config = w.path(&format!("{name}.yml"));
    fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
            root.display(),
            htpasswd.display()
        ),
    )
    .expect("write distribution config");
    let log = fs::File::create(w.path(&format!("{name}.log"))).expect("log");
    let child = Command::new(bin)
        .arg("serve")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start docker-registry");
    let host = format!("127.0.0.1:{port}");
    let started = Instant::now();
    while std::net::TcpStream::connect(&host).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "docker-registry did not listen on {host}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Target {
        host,
        _kiln: None,
        dist: Some(child),
        root,
    }
}

/// `kiln` with a store at `store` (and the test's isolated credentials).
fn kiln(w: &Work, store: &Path, args: &[&str]) -> Outcome {
    let mut cmd = w.kiln(&["--root", &store.display().to_string()]);
    cmd.args(args);
    run(cmd, &w.scratch())
}

fn login(w: &Work, host: &str, password: &str, extra: &[&str]) -> Outcome {
    let mut cmd = w.kiln(&["login", host, "-u", USER, "--password-stdin"]);
    cmd.args(extra);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let what = describe(&cmd);
    let mut child = cmd.spawn().expect("spawn kiln login");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write password");
    let out = child.wait_with_output().expect("kiln login");
    Outcome {
        what,
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Makes a two-layer image in an OCI layout and imports it into `store` as `name`.
fn local_image(w: &Work, store: &Path, name: &str, label: &str) -> String {
    let dir = w.path(&format!("layout-{label}"));
    let mut layout = Layout::new(&dir);
    let image = layout.image(
        &[busybox_layer_tar(), random_layer_tar(label, 300_000)],
        "amd64",
        label,
    );
    layout.tag("src", &image);
    kiln(
        w,
        store,
        &["image", "import", &oci(&dir, "src"), "-t", name],
    )
    .ok();
    image.digest
}

fn inspect(w: &Work, store: &Path, name: &str, format: &str) -> String {
    kiln(w, store, &["inspect", name, "--format", format])
        .ok()
        .trim()
        .to_string()
}

/// Has skopeo pull `image` whole into an OCI layout; returns the digest it stored it under.
fn skopeo_pull_digest(w: &Work, image: &str, tls: &[&str]) -> String {
    let dir = w.path("skopeo-pulled");
    let _ = fs::remove_dir_all(&dir);
    let src_tls: Vec<String> = tls.iter().map(|f| f.replace("--", "--src-")).collect();
    let mut args = vec!["copy", "--quiet"];
    args.extend(src_tls.iter().map(String::as_str));
    args.push(image);
    let dest = oci(&dir, "pulled");
    args.push(&dest);
    w.run_skopeo(&args).ok();
    layout_ref(&dir, "pulled")
}

/// login (wrong, then right), push, skopeo reads it, pull by tag and by digest into a fresh
/// store, pull what skopeo pushed, unknown tag, logout.
fn round_trip(w: &Work, target: &Target, tls: &[&str], kiln_tls: &[&str]) {
    let host = &target.host;
    let store = w.path("store-a");
    let auth_before = fs::read(w.auth_file()).expect("auth file");
    let out = login(w, host, "wrong-password", kiln_tls)
        .fails_with(&["unauthorized", "incorrect username or password"]);
    assert!(out.contains("nothing was saved"), "{out}");
    assert_eq!(
        fs::read(w.auth_file()).expect("auth file"),
        auth_before,
        "a failed login must leave the credentials file alone"
    );
    // Not logged in: the registry refuses the push, and says how to fix it.
    let name = format!("{host}/team/app:1.0");
    let digest = local_image(w, &store, &name, "app");
    let mut args = vec!["push", name.as_str()];
    args.extend_from_slice(kiln_tls);
    kiln(w, &store, &args).fails_with(&["unauthorized", "401"]);

    let out = login(w, host, PASSWORD, kiln_tls).ok();
    assert!(out.contains("Login Succeeded"), "{out}");
    let saved: Value =
        serde_json::from_slice(&fs::read(w.auth_file()).expect("auth file")).expect("json");
    assert!(saved["auths"][host.as_str()]["auth"].is_string(), "{saved}");

    let out = kiln(w, &store, &args).ok();
    assert!(
        out.contains(&format!("The push refers to repository [{host}/team/app]")),
        "{out}"
    );
    assert!(
        out.contains(&format!("1.0: digest: {digest} size: ")),
        "{out}"
    );
    // Pushing again uploads nothing.
    let again = kiln(w, &store, &args).ok();
    assert!(again.contains("Layer already exists"), "{again}");
    assert!(!again.contains(": Pushed"), "{again}");

    // skopeo pulls exactly what was pushed.
    assert_eq!(
        skopeo_pull_digest(w, &format!("docker://{name}"), tls),
        digest
    );

    // Pull into an empty store, by tag, then by digest.
    let fresh = w.path("store-b");
    let mut pull = vec!["pull", name.as_str()];
    pull.extend_from_slice(kiln_tls);
    let out = kiln(w, &fresh, &pull).ok();
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    assert!(out.contains("Status: Downloaded newer image"), "{out}");
    assert!(out.contains("Pull complete"), "{out}");
    assert_eq!(
        inspect(w, &fresh, &name, "{{.Id}}"),
        inspect(w, &store, &name, "{{.Id}}")
    );
    let out = kiln(w, &fresh, &pull).ok();
    assert!(out.contains("Status: Image is up to date"), "{out}");
    let by_digest = format!("{host}/team/app@{digest}");
    let mut pull_digest = vec!["pull", by_digest.as_str()];
    pull_digest.extend_from_slice(kiln_tls);
    kiln(w, &w.path("store-c"), &pull_digest).ok();
    assert_eq!(
        inspect(
            w,
            &w.path("store-c"),
            &by_digest,
            "{{index .RepoDigests 0}}"
        ),
        by_digest
    );

    // What skopeo pushes, kiln pulls.
    let dir = w.path("layout-skopeo");
    let mut layout = Layout::new(&dir);
    let image = layout.image(
        &[random_layer_tar("from-skopeo", 200_000)],
        "amd64",
        "skopeo",
    );
    layout.tag("s", &image);
    let dest = format!("docker://{host}/other/img:v2");
    let mut copy = vec!["copy", "--quiet"];
    let dest_tls: Vec<String> = tls.iter().map(|f| f.replace("--", "--dest-")).collect();
    copy.extend(dest_tls.iter().map(String::as_str));
    let src = oci(&dir, "s");
    copy.push(&src);
    copy.push(&dest);
    w.run_skopeo(&copy).ok();
    let other = format!("{host}/other/img:v2");
    let mut pull_other = vec!["pull", other.as_str()];
    pull_other.extend_from_slice(kiln_tls);
    let out = kiln(w, &fresh, &pull_other).ok();
    assert!(out.contains(&format!("Digest: {}", image.digest)), "{out}");

    // An unknown tag names the reference and the registry's code.
    let missing = format!("{host}/team/app:nope");
    let mut pull_missing = vec!["pull", missing.as_str()];
    pull_missing.extend_from_slice(kiln_tls);
    let out = kiln(w, &fresh, &pull_missing).fails();
    assert!(out.contains("MANIFEST_UNKNOWN"), "{out}");
    assert!(out.contains("team/app:nope"), "{out}");

    let out = w.run_kiln(&["logout", host]).ok();
    assert!(out.contains("Removing login credentials"), "{out}");
    let out = w.run_kiln(&["logout", host]).ok();
    assert!(out.contains("Not logged in"), "{out}");
    let _ = &target.root;
}

#[test]
fn kiln_registry_with_htpasswd() {
    let w = Work::new();
    let target = kiln_registry(&w, "reg", None, false);
    round_trip(&w, &target, &["--tls-verify=false"], &[]);
}

#[test]
fn kiln_registry_with_bearer_tokens() {
    let w = Work::new();
    let target = kiln_registry(&w, "reg", None, true);
    round_trip(&w, &target, &["--tls-verify=false"], &[]);
}

#[test]
fn distribution_registry_with_htpasswd() {
    let w = Work::new();
    let target = distribution_registry(&w, "dist");
    round_trip(&w, &target, &["--tls-verify=false"], &[]);
}

#[test]
fn kiln_registry_over_tls_needs_the_ca() {
    let w = Work::new();
    let pki = make_pki(&w);
    let target = kiln_registry(&w, "tls", Some(&pki), false);
    // Without the CA the certificate is refused (and plain HTTP is no way around it).
    let out = login(&w, &target.host, PASSWORD, &[]).fails();
    assert!(
        out.to_lowercase().contains("certificate") || out.contains("UnknownIssuer"),
        "{out}"
    );
    let ca = pki.ca_pem.display().to_string();
    let cert_dir = pki.cert_dir.display().to_string();
    round_trip(&w, &target, &["--cert-dir", &cert_dir], &["--ca-file", &ca]);
}

#[test]
fn multi_platform_index_pulls_the_asked_platform() {
    let w = Work::new();
    let target = kiln_registry(&w, "reg", None, false);
    login(&w, &target.host, PASSWORD, &[]).ok();
    let dir = w.path("layout-multi");
    let mut layout = Layout::new(&dir);
    let amd = layout.image(&[random_layer_tar("amd", 100_000)], "amd64", "amd");
    let arm = layout.image(&[random_layer_tar("arm", 100_000)], "arm64", "arm");
    let index = layout.index(&[(&amd, "linux", "amd64"), (&arm, "linux", "arm64")]);
    layout.tag("multi", &index);
    let name = format!("{}/multi/app:1", target.host);
    w.run_skopeo(&[
        "copy",
        "--quiet",
        "--all",
        "--dest-tls-verify=false",
        &oci(&dir, "multi"),
        &format!("docker://{name}"),
    ])
    .ok();

    let host_store = w.path("store-host");
    let out = kiln(&w, &host_store, &["pull", &name]).ok();
    assert!(out.contains(&format!("Digest: {}", index.digest)), "{out}");
    assert_eq!(
        inspect(&w, &host_store, &name, "{{.Architecture}}"),
        "amd64"
    );

    let arm_store = w.path("store-arm");
    kiln(
        &w,
        &arm_store,
        &["pull", "--platform", "linux/arm64", &name],
    )
    .ok();
    assert_eq!(inspect(&w, &arm_store, &name, "{{.Architecture}}"), "arm64");

    let out = kiln(
        &w,
        &w.path("store-x"),
        &["pull", "--platform", "linux/s390x", &name],
    )
    .fails();
    assert!(
        out.contains("linux/amd64") && out.contains("linux/arm64"),
        "{out}"
    );

    // All platforms, then push the whole index elsewhere: same digest.
    let all_store = w.path("store-all");
    kiln(&w, &all_store, &["pull", "--all-platforms", &name]).ok();
    let copy = format!("{}/copy/app:1", target.host);
    kiln(&w, &all_store, &["tag", &name, &copy]).ok();
    let out = kiln(&w, &all_store, &["push", &copy]).ok();
    assert!(
        out.contains(&format!("1: digest: {}", index.digest)),
        "{out}"
    );
    // The layers came from multi/app in the same registry: mounted, not uploaded.
    assert!(out.contains("Mounted from multi/app"), "{out}");
}

#[test]
fn a_corrupted_blob_is_refused_and_nothing_is_stored() {
    let w = Work::new();
    let target = kiln_registry(&w, "reg", None, false);
    login(&w, &target.host, PASSWORD, &[]).ok();
    let store = w.path("store-a");
    let name = format!("{}/bad/app:1", target.host);
    local_image(&w, &store, &name, "corrupt");
    kiln(&w, &store, &["push", &name]).ok();
    // Flip bytes of the big layer in the registry's storage (same size, wrong content).
    let layer = fs::read_dir(target.root.join("blobs/sha256"))
        .expect("registry blobs")
        .filter_map(|e| e.ok())
        .max_by_key(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .expect("a blob")
        .path();
    let mut bytes = fs::read(&layer).expect("read blob");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&layer, &bytes).expect("corrupt blob");

    let fresh = w.path("store-b");
    let out = kiln(&w, &fresh, &["pull", &name]).fails();
    assert!(out.contains("digest"), "{out}");
    // Nothing named, no blob of the image visible, no ingest left behind.
    let images = kiln(&w, &fresh, &["images", "--format", "{{.Repository}}"]).ok();
    assert!(images.trim().is_empty(), "{images}");
    let corrupt_hex = layer.file_name().and_then(|n| n.to_str()).expect("name");
    assert!(!fresh.join("blobs/sha256").join(corrupt_hex).exists());
    let leftovers: Vec<_> = fs::read_dir(fresh.join("ingest"))
        .map(|d| d.filter_map(|e| e.ok()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "ingest files left: {leftovers:?}");
}

/// A one-layer image of `size` random bytes, imported into `store` as `name`.
fn one_layer_image(w: &Work, store: &Path, name: &str, label: &str, size: usize) -> Written {
    let dir = w.path(&format!("layout-{label}"));
    let mut layout = Layout::new(&dir);
    let image = layout.image(&[random_layer_tar(label, size)], "amd64", label);
    layout.tag("img", &image);
    kiln(
        w,
        store,
        &["image", "import", &oci(&dir, "img"), "-t", name],
    )
    .ok();
    image
}

#[test]
fn registry_killed_mid_pull_fails_cleanly_then_pull_completes() {
    let w = Work::new();
    let mut target = kiln_registry(&w, "reg", None, false);
    login(&w, &target.host, PASSWORD, &[]).ok();
    let store = w.path("store-a");
    let name = format!("{}/big/app:1", target.host);
    let image = one_layer_image(&w, &store, &name, "big", 48 << 20);
    kiln(&w, &store, &["push", &name]).ok();

    let fresh = w.path("store-b");
    let cmd = w.kiln(&["--root", &fresh.display().to_string(), "pull", &name]);
    let pull = Proc::spawn(cmd, &w.scratch());
    // Kill the registry once the pull is writing the layer.
    let started = Instant::now();
    loop {
        let ingest: u64 = fs::read_dir(fresh.join("ingest"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        if ingest > 0 || started.elapsed() > Duration::from_secs(30) {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    target._kiln.as_mut().expect("kiln server").kill9();
    let out = pull.wait(Duration::from_secs(120));
    // Either the retry found the data (the layer was already through) or the pull failed
    // with a clear reason; the store must be consistent either way.
    if !out.success() {
        let text = out.text();
        assert!(
            text.contains("cannot reach") || text.contains("broke off"),
            "{text}"
        );
        let images = kiln(&w, &fresh, &["images", "--format", "{{.Repository}}"]).ok();
        assert!(images.trim().is_empty(), "{images}");
    }
    // The registry comes back (same storage): the pull completes and verifies.
    let server = Server::start(&target.root, Some(&w.path("reg.toml")), &w.path("reg2.log"));
    let name2 = format!("{}/big/app:1", server.host);
    login(&w, &server.host, PASSWORD, &[]).ok();
    let out = kiln(&w, &fresh, &["pull", &name2]).ok();
    assert!(out.contains(&format!("Digest: {}", image.digest)), "{out}");
    kiln(&w, &fresh, &["image", "prune"]).ok();
}

#[test]
fn credential_helpers_keep_the_secret() {
    let w = Work::new();
    let target = kiln_registry(&w, "reg", None, false);
    // A helper speaking docker's protocol, keeping secrets in one file.
    let bin = w.path("bin");
    fs::create_dir_all(&bin).expect("mkdir");
    let vault = w.path("vault.json");
    let helper = bin.join("docker-credential-kilntest");
    fs::write(
        &helper,
        format!(
            "#!/bin/sh\nvault={}\ncase \"$1\" in\n  store) cat > \"$vault\" ;;\n  get) read server; if [ -s \"$vault\" ]; then sed 's/\"ServerURL\":\"[^\"]*\",//' \"$vault\"; else echo 'credentials not found in native keychain'; exit 1; fi ;;\n  erase) read server; if [ -s \"$vault\" ]; then rm \"$vault\"; else echo 'credentials not found in native keychain'; exit 1; fi ;;\nesac\n",
            vault.display()
        ),
    )
    .expect("write helper");
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&helper, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    fs::write(w.auth_file(), r#"{"auths":{},"credsStore":"kilntest"}"#).expect("auth file");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let with_path = |mut cmd: Command| {
        cmd.env("PATH", &path);
        run(cmd, &w.scratch())
    };
    let mut cmd = w.kiln(&["login", &target.host, "-u", USER, "-p", PASSWORD]);
    cmd.env("PATH", &path);
    with_path(cmd).ok();
    let vault_text = fs::read_to_string(&vault).expect("helper stored the secret");
    assert!(vault_text.contains(PASSWORD), "{vault_text}");
    let auth = fs::read_to_string(w.auth_file()).expect("auth file");
    assert!(!auth.contains(PASSWORD), "the secret leaked into {auth}");

    let store = w.path("store");
    let name = format!("{}/helper/app:1", target.host);
    local_image(&w, &store, &name, "helper");
    let push = w.kiln(&["--root", &store.display().to_string(), "push", &name]);
    with_path(push).ok();

    let logout = w.kiln(&["logout", &target.host]);
    let out = with_path(logout).ok();
    assert!(out.contains("Removing login credentials"), "{out}");
    assert!(!vault.exists());
}

#[test]
fn push_resumes_after_the_registry_restarts_mid_upload() {
    let w = Work::new();
    let mut target = kiln_registry(&w, "reg", None, false);
    login(&w, &target.host, PASSWORD, &[]).ok();
    let store = w.path("store-a");
    let name = format!("{}/resume/app:1", target.host);
    let image = one_layer_image(&w, &store, &name, "resume", 96 << 20);

    let push = Proc::spawn(
        w.kiln(&["--root", &store.display().to_string(), "push", &name]),
        &w.scratch(),
    );
    // Wait until the registry has checkpointed part of the layer, then kill it.
    let uploads = target.root.join("uploads");
    let started = Instant::now();
    loop {
        let biggest = fs::read_dir(&uploads)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        if biggest > 40 << 20 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the upload never got going"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    target._kiln.as_mut().expect("kiln server").kill9();
    let restarted = Server::start_at(
        &target.root,
        Some(&w.path("reg.toml")),
        &w.path("reg2.log"),
        &target.host,
    );
    let out = push.wait(Duration::from_secs(120)).ok();
    // Resumed from what the registry had kept, not from the start.
    let resumed = out
        .lines()
        .find_map(|l| l.split("Retrying from byte ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no resume reported:\n{out}"));
    assert!(resumed >= 16 << 20, "resumed from byte {resumed}:\n{out}");
    assert!(
        out.contains(&format!("1: digest: {}", image.digest)),
        "{out}"
    );
    // Every byte arrived intact.
    let fresh = w.path("store-b");
    let out = kiln(&w, &fresh, &["pull", &name]).ok();
    assert!(out.contains(&format!("Digest: {}", image.digest)), "{out}");
    drop(restarted);
}

/// Pushes an artifact (empty config, one small blob) whose subject is `subject`; with
/// `fallback_tag`, also the referrers index under the spec's fallback tag (what clients
/// do for registries without the referrers API). Returns the artifact's digest.
fn put_artifact(host: &str, repo: &str, subject: (&str, u64), fallback_tag: bool) -> String {
    let http = http_client();
    let base = format!("http://{host}/v2/{repo}");
    let upload = |bytes: &[u8]| {
        let digest = kiln_image::Digest::sha256_of(bytes).to_string();
        // POST then PUT with the body: the one upload every registry takes.
        let r = http
            .post(format!("{base}/blobs/uploads/"))
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .expect("start upload");
        assert_eq!(r.status().as_u16(), 202, "start upload");
        let location = r.headers()["location"]
            .to_str()
            .expect("location")
            .to_string();
        let url = if location.starts_with("http") {
            location
        } else {
            format!("http://{host}{location}")
        };
        let sep = if url.contains('?') { '&' } else { '?' };
        let r = http
            .put(format!("{url}{sep}digest={digest}"))
            .basic_auth(USER, Some(PASSWORD))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .expect("upload");
        assert_eq!(r.status().as_u16(), 201, "upload {digest}");
        digest
    };
    let empty = upload(b"{}");
    let payload = upload(b"signature bytes");
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.kiln.test.sig",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": payload, "size": 15}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject.0, "size": subject.1},
    });
    let bytes = serde_json::to_vec(&manifest).expect("json");
    let digest = kiln_image::Digest::sha256_of(&bytes).to_string();
    let put = |reference: &str, media_type: &str, bytes: Vec<u8>| {
        let r = http
            .put(format!("{base}/manifests/{reference}"))
            .basic_auth(USER, Some(PASSWORD))
            .header("content-type", media_type)
            .body(bytes)
            .send()
            .expect("put manifest");
        assert_eq!(r.status().as_u16(), 201, "put {reference}");
    };
    put(&digest, OCI_MANIFEST, bytes.clone());
    if fallback_tag {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": digest, "size": bytes.len(),
                           "artifactType": "application/vnd.kiln.test.sig"}],
        });
        let tag = subject.0.replace(':', "-");
        put(&tag, OCI_INDEX, serde_json::to_vec(&index).expect("json"));
    }
    digest
}

fn referrers_of(host: &str, repo: &str, subject: &str, artifact_type: Option<&str>) -> Vec<String> {
    let mut creds = std::collections::BTreeMap::new();
    creds.insert(
        host.to_string(),
        kiln_client::Credentials::new(USER, PASSWORD),
    );
    let client = kiln_client::Client::new(
        kiln_client::TransportOptions::default(),
        std::sync::Arc::new(kiln_client::credentials::StaticCredentials(creds)),
    )
    .expect("client");
    let reference =
        kiln_image::Reference::parse_normalized(&format!("{host}/{repo}")).expect("ref");
    let subject = kiln_image::Digest::parse(subject).expect("digest");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime
        .block_on(client.referrers(&reference, &subject, artifact_type))
        .expect("referrers")
        .iter()
        .map(|d| d.digest().to_string())
        .collect()
}

#[test]
fn referrers_through_the_api_and_the_fallback_tag() {
    let w = Work::new();
    for (target, fallback) in [
        (kiln_registry(&w, "reg", None, false), false),
        (distribution_registry(&w, "dist"), true),
    ] {
        login(&w, &target.host, PASSWORD, &[]).ok();
        let store = w.path(&format!("store-{fallback}"));
        let name = format!("{}/sig/app:1", target.host);
        let digest = local_image(&w, &store, &name, &format!("ref-{fallback}"));
        kiln(&w, &store, &["push", &name]).ok();
        let size = fs::metadata(store.join("blobs/sha256").join(&digest[7..]))
            .expect("manifest in store")
            .len();
        // Nothing refers to it yet: an empty list, not an error.
        assert!(referrers_of(&target.host, "sig/app", &digest, None).is_empty());
        let artifact = put_artifact(&target.host, "sig/app", (&digest, size), fallback);
        assert_eq!(
            referrers_of(&target.host, "sig/app", &digest, None),
            vec![artifact.clone()]
        );
        assert_eq!(
            referrers_of(
                &target.host,
                "sig/app",
                &digest,
                Some("application/vnd.kiln.test.sig")
            ),
            vec![artifact]
        );
        assert!(referrers_of(&target.host, "sig/app", &digest, Some("other/type")).is_empty());
    }
}
