//! Helpers for the end-to-end tests of `kiln registry serve` against real clients (skopeo,
//! podman, openssl, curl-like HTTPS through reqwest): start and kill servers, run tools with a
//! deadline and their stderr in every failure message, write OCI layouts of real (gzip'd tar)
//! images, and verify pulled layouts and the registry's contents blob by blob.
#![allow(dead_code)] // not every helper is used by every test

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kiln_image::digest::Digest;
use reqwest::blocking::Client;
use serde_json::{json, Value};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// How long any single client command may take before the test fails.
pub const TOOL_DEADLINE: Duration = Duration::from_secs(120);

pub fn kiln_bin() -> &'static str {
    env!("CARGO_BIN_EXE_kiln")
}

#[path = "../common/mod.rs"]
mod common;

/// Finds a tool on PATH; a missing tool fails the test (shared with the image-store tests).
pub use common::which;

// ---------------------------------------------------------------------------------------
// Running tools
// ---------------------------------------------------------------------------------------

/// What a finished command produced.
pub struct Outcome {
    pub what: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// stdout and stderr together, for error-message matching.
    pub fn text(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// Insists the command succeeded; returns stdout.
    pub fn ok(self) -> String {
        assert!(
            self.status.success(),
            "`{}` failed ({}):\nstderr:\n{}\nstdout:\n{}",
            self.what,
            self.status,
            self.stderr,
            self.stdout
        );
        self.stdout
    }

    /// Insists the command failed; returns stdout + stderr.
    pub fn fails(self) -> String {
        assert!(
            !self.status.success(),
            "`{}` should have failed but succeeded:\nstderr:\n{}\nstdout:\n{}",
            self.what,
            self.stderr,
            self.stdout
        );
        self.text()
    }

    /// Insists the command failed with a message containing one of `needles`
    /// (case-insensitive); returns the output.
    pub fn fails_with(self, needles: &[&str]) -> String {
        let what = self.what.clone();
        let text = self.fails();
        let lower = text.to_lowercase();
        assert!(
            needles.iter().any(|n| lower.contains(&n.to_lowercase())),
            "`{what}` failed, but its message mentions none of {needles:?}:\n{text}"
        );
        eprintln!("expected failure: {what}\n  -> {}", last_line(&text));
        text
    }
}

/// A human-readable rendering of a command line.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A command running in the background with stdout and stderr captured in files.
pub struct Proc {
    pub what: String,
    child: Child,
    out: PathBuf,
    err: PathBuf,
    started: Instant,
    pub status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` with its output going to files in `scratch`.
    pub fn spawn(mut cmd: Command, scratch: &Path) -> Proc {
        let what = describe(&cmd);
        fs::create_dir_all(scratch).expect("create scratch dir for command output");
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let out = scratch.join(format!("cmd-{n}.out"));
        let err = scratch.join(format!("cmd-{n}.err"));
        cmd.stdin(Stdio::null())
            .stdout(File::create(&out).expect("create stdout file"))
            .stderr(File::create(&err).expect("create stderr file"));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
        Proc {
            what,
            child,
            out,
            err,
            started: Instant::now(),
            status: None,
        }
    }

    /// Non-blocking: true once the command has exited.
    pub fn poll(&mut self) -> bool {
        if self.status.is_none() {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                self.status = Some(st);
            }
        }
        self.status.is_some()
    }

    /// Waits for the command, failing the test after `deadline`.
    pub fn wait(mut self, deadline: Duration) -> Outcome {
        while !self.poll() {
            if self.started.elapsed() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "`{}` did not finish within {deadline:?}; stderr so far:\n{}",
                    self.what,
                    fs::read_to_string(&self.err).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Outcome {
            what: self.what.clone(),
            status: self.status.expect("exited"),
            stdout: fs::read_to_string(&self.out).unwrap_or_default(),
            stderr: fs::read_to_string(&self.err).unwrap_or_default(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `cmd` to completion (within [`TOOL_DEADLINE`]).
pub fn run(cmd: Command, scratch: &Path) -> Outcome {
    Proc::spawn(cmd, scratch).wait(TOOL_DEADLINE)
}

// ---------------------------------------------------------------------------------------
// A per-test workspace and the clients
// ---------------------------------------------------------------------------------------

/// A test's scratch directory with an isolated client configuration: an empty auth file
/// (`REGISTRY_AUTH_FILE`) and an empty `DOCKER_CONFIG`, so no credentials leak in from the
/// host and logins stay inside the test.
pub struct Work {
    pub dir: tempfile::TempDir,
}

impl Work {
    pub fn new() -> Work {
        let dir = tempfile::tempdir().expect("create temp dir");
        let w = Work { dir };
        fs::create_dir_all(w.path("docker-config")).expect("mkdir docker-config");
        fs::write(w.auth_file(), br#"{"auths":{}}"#).expect("write auth file");
        w
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn scratch(&self) -> PathBuf {
        self.path("cmd-output")
    }

    pub fn auth_file(&self) -> PathBuf {
        self.path("auth.json")
    }

    fn isolate(&self, cmd: &mut Command) {
        cmd.env("REGISTRY_AUTH_FILE", self.auth_file())
            .env("DOCKER_CONFIG", self.path("docker-config"))
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("KILN_ROOT");
    }

    /// A `skopeo` command with the test's isolated configuration.
    pub fn skopeo(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(which("skopeo"));
        cmd.args(args);
        self.isolate(&mut cmd);
        cmd
    }

    pub fn run_skopeo(&self, args: &[&str]) -> Outcome {
        run(self.skopeo(args), &self.scratch())
    }

    /// A `podman` instance with its own storage (vfs), run root and tmp dir under `name`.
    pub fn podman(&self, name: &str) -> Podman {
        which("podman");
        let base = self.path(name);
        fs::create_dir_all(&base).expect("mkdir podman dir");
        Podman {
            base,
            auth_file: self.auth_file(),
            docker_config: self.path("docker-config"),
            scratch: self.scratch(),
        }
    }

    /// A `kiln` command (for the local image store or `kiln registry gc`).
    pub fn kiln(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(kiln_bin());
        cmd.args(args);
        self.isolate(&mut cmd);
        cmd
    }

    pub fn run_kiln(&self, args: &[&str]) -> Outcome {
        run(self.kiln(args), &self.scratch())
    }

    /// Writes a bcrypt htpasswd file with the given users (via `htpasswd -Bbn`).
    pub fn htpasswd(&self, users: &[(&str, &str)]) -> PathBuf {
        let tool = which("htpasswd");
        let mut text = String::new();
        for (user, pass) in users {
            let mut cmd = Command::new(&tool);
            cmd.args(["-Bbn", user, pass]);
            text.push_str(run(cmd, &self.scratch()).ok().trim());
            text.push('\n');
        }
        let path = self.path("htpasswd");
        fs::write(&path, text).expect("write htpasswd");
        path
    }

    /// Writes a registry config file.
    pub fn config(&self, name: &str, toml: &str) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, toml).expect("write registry config");
        path
    }
}

/// podman with isolated storage; every command gets the global flags the brief asks for.
pub struct Podman {
    pub base: PathBuf,
    auth_file: PathBuf,
    docker_config: PathBuf,
    scratch: PathBuf,
}

impl Podman {
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(which("podman"));
        cmd.arg("--root")
            .arg(self.base.join("root"))
            .arg("--runroot")
            .arg(self.base.join("run"))
            .arg("--tmpdir")
            .arg(self.base.join("tmp"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ])
            .args(args)
            .env("REGISTRY_AUTH_FILE", &self.auth_file)
            .env("DOCKER_CONFIG", &self.docker_config);
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Outcome {
        run(self.cmd(args), &self.scratch)
    }

    pub fn ok(&self, args: &[&str]) -> String {
        self.run(args).ok()
    }

    /// Loads an OCI layout with `podman load` (as an OCI archive; `podman pull oci:` would
    /// name the image after the layout's path, which must then be a valid lowercase image
    /// name). Returns the image ID.
    pub fn load_layout(&self, dir: &Path) -> String {
        let archive = self.base.join("layout.tar");
        let mut builder = tar::Builder::new(File::create(&archive).expect("create OCI archive"));
        builder
            .append_dir_all(".", dir)
            .expect("tar the OCI layout");
        builder.finish().expect("finish OCI archive");
        let out = self.ok(&["load", "-i", archive.to_str().expect("utf-8 path")]);
        let name = out
            .lines()
            .find_map(|l| l.split_once("Loaded image").map(|(_, r)| r))
            .and_then(|r| r.split_once(": ").map(|(_, n)| n))
            .and_then(|n| n.split(',').next())
            .map(|n| n.trim().to_string())
            .unwrap_or_else(|| {
                panic!("`podman load` printed no `Loaded image: NAME` line:\n{out}")
            });
        self.inspect(&name, "{{.Id}}")
    }

    /// `podman image inspect --format <fmt> <image>`, trimmed.
    pub fn inspect(&self, image: &str, format: &str) -> String {
        self.ok(&["image", "inspect", "--format", format, image])
            .trim()
            .to_string()
    }
}

pub fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_else(|| panic!("expected output, got {text:?}"))
        .trim()
        .to_string()
}

// ---------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------

/// A running `kiln registry serve`. Killed on drop; its log is printed if the test fails.
pub struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT` or `https://...`.
    pub base: String,
    /// `127.0.0.1:PORT`, the registry host for image references.
    pub host: String,
    pub log: PathBuf,
}

impl Server {
    /// Starts a server on `root` (created if missing) with an optional config file; stderr
    /// goes to `log` (appended, so restarts keep earlier logs).
    pub fn start(root: &Path, config: Option<&Path>, log: &Path) -> Server {
        Server::start_at(root, config, log, "127.0.0.1:0")
    }

    /// As [`Server::start`], listening on `addr` (to come back on a port clients know).
    pub fn start_at(root: &Path, config: Option<&Path>, log: &Path, addr: &str) -> Server {
        fs::create_dir_all(root).expect("create registry root");
        let log_file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open server log");
        let mut cmd = Command::new(kiln_bin());
        cmd.args(["registry", "serve", "--addr", addr, "--root"])
            .arg(root);
        if let Some(config) = config {
            cmd.arg("--config").arg(config);
        }
        cmd.env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file));
        let mut child = cmd.spawn().expect("spawn `kiln registry serve`");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut first = String::new();
            let _ = reader.read_line(&mut first);
            let _ = tx.send(first);
            let mut sink = Vec::new();
            let _ = reader.read_to_end(&mut sink);
        });
        let read_log = || fs::read_to_string(log).unwrap_or_default();
        let first = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "registry printed no `listening on` line within 30s; log:\n{}",
                    read_log()
                );
            }
        };
        let base = match first.trim_end().strip_prefix("listening on ") {
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                url.trim_end_matches('/').to_string()
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "expected first stdout line `listening on http(s)://127.0.0.1:PORT`, got {first:?}; log:\n{}",
                    read_log()
                );
            }
        };
        let host = base
            .split_once("://")
            .map(|(_, h)| h.to_string())
            .expect("scheme in base URL");
        Server {
            child: Some(child),
            base,
            host,
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// `docker://HOST/<repo>`.
    pub fn docker(&self, repo: &str) -> String {
        format!("docker://{}/{repo}", self.host)
    }

    /// `HOST/<repo>` (for podman).
    pub fn image(&self, repo: &str) -> String {
        format!("{}/{repo}", self.host)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of the server log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The server's ERROR and WARN log lines (at most 40), for failure messages.
    pub fn log_problems(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("ERROR") || l.contains("WARN"))
            .collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL the registry");
            child.wait().expect("reap the registry");
        }
    }

    /// Sends SIGTERM with the `kill` command and waits up to `deadline` for the exit.
    /// Returns the exit status and how long it took, or panics on timeout.
    pub fn terminate(&mut self, deadline: Duration) -> (ExitStatus, Duration) {
        let mut child = self.child.take().expect("server running");
        let mut kill = Command::new(which("kill"));
        kill.args(["-TERM", &child.id().to_string()]);
        let out = kill.output().expect("run kill");
        assert!(
            out.status.success(),
            "kill -TERM failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let start = Instant::now();
        loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                return (st, start.elapsed());
            }
            if start.elapsed() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "registry did not exit within {deadline:?} of SIGTERM; log tail:\n{}",
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(80)..].join("\n");
            eprintln!(
                "---- registry server log ({}, last 80 lines of {}) ----\n{tail}",
                self.base,
                self.log.display()
            );
        }
    }
}

/// An HTTP client for the registry (follows redirects, as blob GETs may need).
pub fn http_client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("build HTTP client")
}

// ---------------------------------------------------------------------------------------
// Building images
// ---------------------------------------------------------------------------------------

/// Random bytes from the kernel (fast even in a debug build).
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    File::open("/dev/urandom")
        .expect("open /dev/urandom")
        .read_exact(&mut buf)
        .expect("read /dev/urandom");
    buf
}

/// An uncompressed tar holding `files` (path, contents, mode).
pub fn tar_of(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dirs = BTreeSet::new();
    for (path, _, _) in files {
        let mut p = Path::new(path).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.to_path_buf());
            p = d.parent();
        }
    }
    for d in &dirs {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        builder
            .append_data(&mut h, d, std::io::empty())
            .expect("tar dir");
    }
    for (path, bytes, mode) in files {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(*mode);
        h.set_size(bytes.len() as u64);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        builder.append_data(&mut h, path, *bytes).expect("tar file");
    }
    builder.into_inner().expect("finish tar")
}

/// A layer holding the host's busybox-static as `bin/busybox` (about 2 MiB).
pub fn busybox_layer_tar() -> Vec<u8> {
    let bytes = fs::read(which("busybox")).expect("read busybox");
    tar_of(&[("bin/busybox", &bytes, 0o755)])
}

/// A layer with one file of `size` random bytes.
pub fn random_layer_tar(name: &str, size: usize) -> Vec<u8> {
    let bytes = random_bytes(size);
    tar_of(&[(&format!("data/{name}"), &bytes, 0o644)])
}

fn crc32_table() -> &'static [[u32; 256]; 8] {
    static TABLE: std::sync::OnceLock<[[u32; 256]; 8]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = [[0u32; 256]; 8];
        for i in 0..256u32 {
            let mut c = i;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            t[0][i as usize] = c;
        }
        for i in 0..256 {
            for k in 1..8 {
                let p = t[k - 1][i];
                t[k][i] = (p >> 8) ^ t[0][(p & 0xff) as usize];
            }
        }
        t
    })
}

/// CRC-32 (IEEE), slicing-by-8.
pub fn crc32(data: &[u8]) -> u32 {
    let t = crc32_table();
    let mut c = !0u32;
    let mut chunks = data.chunks_exact(8);
    for ch in &mut chunks {
        let lo = c ^ u32::from_le_bytes([ch[0], ch[1], ch[2], ch[3]]);
        let hi = u32::from_le_bytes([ch[4], ch[5], ch[6], ch[7]]);
        c = t[7][(lo & 0xff) as usize]
            ^ t[6][((lo >> 8) & 0xff) as usize]
            ^ t[5][((lo >> 16) & 0xff) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][(hi & 0xff) as usize]
            ^ t[2][((hi >> 8) & 0xff) as usize]
            ^ t[1][((hi >> 16) & 0xff) as usize]
            ^ t[0][(hi >> 24) as usize];
    }
    for &b in chunks.remainder() {
        c = t[0][((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// A valid gzip stream of `data` made of stored (uncompressed) deflate blocks: real gzip
/// that every client decompresses, without spending CPU on compressing random bytes.
pub fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 65535 * 5 + 32);
    // Header: magic, CM=deflate, no flags, mtime 0, XFL 0, OS unix.
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);
    let mut blocks = data.chunks(65535).peekable();
    if blocks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(block) = blocks.next() {
        let last = blocks.peek().is_none();
        out.push(u8::from(last));
        let len = block.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// An OCI image layout under construction.
pub struct Layout {
    pub dir: PathBuf,
    refs: Vec<Value>,
}

/// What [`Layout::image`] wrote.
#[derive(Clone, Debug)]
pub struct Written {
    /// The manifest (or index) descriptor, without annotations.
    pub descriptor: Value,
    pub digest: String,
    pub bytes: Vec<u8>,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir layout");
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("write oci-layout");
        Layout {
            dir: dir.to_path_buf(),
            refs: Vec::new(),
        }
    }

    /// Stores a blob (if not there yet); returns its digest.
    pub fn blob(&self, bytes: &[u8]) -> String {
        let d = Digest::sha256_of(bytes);
        let path = self.dir.join("blobs/sha256").join(d.hex());
        if !path.exists() {
            fs::write(&path, bytes).expect("write blob");
        }
        d.to_string()
    }

    /// Writes an image of gzip'd `layers` (uncompressed tars) for `arch`; returns its
    /// manifest. `label` makes the config unique.
    pub fn image(&self, layers: &[Vec<u8>], arch: &str, label: &str) -> Written {
        let mut descs = Vec::new();
        let mut diff_ids = Vec::new();
        for tar in layers {
            diff_ids.push(Digest::sha256_of(tar).to_string());
            let gz = gzip_stored(tar);
            let digest = self.blob(&gz);
            descs.push(json!({"mediaType": OCI_LAYER_GZIP, "digest": digest, "size": gz.len()}));
        }
        let config = serde_json::to_vec(&json!({
            "architecture": arch,
            "os": "linux",
            "created": "2024-01-01T00:00:00Z",
            "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/busybox", "sh"], "Labels": {"kiln.test": label}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": layers.iter().map(|_| json!({"created": "2024-01-01T00:00:00Z", "created_by": "kiln test"})).collect::<Vec<_>>(),
        }))
        .expect("serialize config");
        let config_digest = self.blob(&config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
            "layers": descs,
        }))
        .expect("serialize manifest");
        let digest = self.blob(&manifest);
        Written {
            descriptor: json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": manifest.len()}),
            digest,
            bytes: manifest,
        }
    }

    /// Writes an image index over `(manifest, os, arch)` entries.
    pub fn index(&self, manifests: &[(&Written, &str, &str)]) -> Written {
        let entries: Vec<Value> = manifests
            .iter()
            .map(|(m, os, arch)| {
                let mut d = m.descriptor.clone();
                d["platform"] = json!({"os": os, "architecture": arch});
                d
            })
            .collect();
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": entries,
        }))
        .expect("serialize index");
        let digest = self.blob(&index);
        Written {
            descriptor: json!({"mediaType": OCI_INDEX, "digest": digest, "size": index.len()}),
            digest,
            bytes: index,
        }
    }

    /// Names `what` `ref_name` in index.json (rewritten on every call).
    pub fn tag(&mut self, ref_name: &str, what: &Written) {
        let mut d = what.descriptor.clone();
        d["annotations"] = json!({"org.opencontainers.image.ref.name": ref_name});
        self.refs.push(d);
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.refs});
        fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).expect("serialize index.json"),
        )
        .expect("write index.json");
    }
}

/// `oci:<dir>:<ref>`.
pub fn oci(dir: &Path, reference: &str) -> String {
    format!("oci:{}:{reference}", dir.display())
}

/// The digest index.json of a layout names `ref_name`.
pub fn layout_ref(dir: &Path, ref_name: &str) -> String {
    let text = fs::read_to_string(dir.join("index.json"))
        .unwrap_or_else(|e| panic!("read {}/index.json: {e}", dir.display()));
    let index: Value = serde_json::from_str(&text).expect("index.json is JSON");
    index["manifests"]
        .as_array()
        .expect("index.json manifests")
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == ref_name)
        .and_then(|m| m["digest"].as_str())
        .unwrap_or_else(|| {
            panic!(
                "{}: no ref {ref_name:?} in index.json: {text}",
                dir.display()
            )
        })
        .to_string()
}

fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    let hex = digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("unexpected digest algorithm: {digest}"));
    dir.join("blobs/sha256").join(hex)
}

/// Reads a blob of a layout and checks its bytes hash to its name.
pub fn read_layout_blob(dir: &Path, digest: &str) -> Vec<u8> {
    let path = blob_path(dir, digest);
    let bytes =
        fs::read(&path).unwrap_or_else(|e| panic!("layout blob {} missing: {e}", path.display()));
    let actual = Digest::sha256_of(&bytes).to_string();
    assert_eq!(
        actual,
        digest,
        "layout blob {} does not hash to its name",
        path.display()
    );
    bytes
}

/// Every blob reachable from `digest` in a layout (manifests, indexes, configs, layers), as
/// digest -> declared size. Checks each blob exists, has the declared size and hashes to its
/// name.
pub fn layout_closure(dir: &Path, digest: &str, size: Option<u64>) -> BTreeMap<String, u64> {
    let mut found = BTreeMap::new();
    walk_layout(dir, digest, size, &mut found);
    found
}

fn walk_layout(dir: &Path, digest: &str, size: Option<u64>, found: &mut BTreeMap<String, u64>) {
    let bytes = read_layout_blob(dir, digest);
    if let Some(size) = size {
        assert_eq!(
            bytes.len() as u64,
            size,
            "{}: blob {digest} has {} bytes, its descriptor says {size}",
            dir.display(),
            bytes.len()
        );
    }
    found.insert(digest.to_string(), bytes.len() as u64);
    // Manifests and indexes have a schemaVersion; configs and layers have no children.
    if let Ok(doc) = serde_json::from_slice::<Value>(&bytes) {
        for (child, size) in children(&doc) {
            walk_layout(dir, &child, Some(size), found);
        }
    }
}

/// Descriptors a manifest or index refers to: (digest, size).
pub fn children(doc: &Value) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut push = |d: &Value| {
        if let (Some(digest), Some(size)) = (d["digest"].as_str(), d["size"].as_u64()) {
            out.push((digest.to_string(), size));
        }
    };
    if doc.get("schemaVersion").is_none() {
        return out;
    }
    if let Some(c) = doc.get("config") {
        push(c);
    }
    for key in ["layers", "manifests"] {
        if let Some(list) = doc[key].as_array() {
            for d in list {
                push(d);
            }
        }
    }
    out
}

/// Asserts that `pulled` names `ref_name` with `expect_digest`, and that every blob it
/// reaches is present, hashes to its name, and is byte-identical to the same blob in `src`.
/// Returns the number of blobs compared.
pub fn assert_same_image(src: &Path, pulled: &Path, ref_name: &str, expect_digest: &str) -> usize {
    let got = layout_ref(pulled, ref_name);
    assert_eq!(
        got,
        expect_digest,
        "pulled layout {} names {ref_name} -> {got}, pushed {expect_digest}",
        pulled.display()
    );
    let src_blobs = layout_closure(src, expect_digest, None);
    let pulled_blobs = layout_closure(pulled, expect_digest, None);
    assert_eq!(
        src_blobs.keys().collect::<Vec<_>>(),
        pulled_blobs.keys().collect::<Vec<_>>(),
        "the pulled image reaches different blobs than the pushed one"
    );
    for digest in src_blobs.keys() {
        let a = read_layout_blob(src, digest);
        let b = read_layout_blob(pulled, digest);
        assert!(a == b, "blob {digest} differs after the round trip");
    }
    src_blobs.len()
}

// ---------------------------------------------------------------------------------------
// Checking the registry over HTTP
// ---------------------------------------------------------------------------------------

/// Every repository in `/v2/_catalog`, following `Link` pagination.
pub fn catalog(client: &Client, server: &Server) -> Vec<String> {
    let mut repos = Vec::new();
    let mut url = server.url("/v2/_catalog?n=1000");
    loop {
        let resp = client
            .get(&url)
            .send()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = resp.status();
        let link = resp
            .headers()
            .get("Link")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp.text().unwrap_or_default();
        assert!(status.is_success(), "GET {url}: {status}: {text}");
        let doc: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("GET {url}: body is not JSON ({e}): {text}"));
        for r in doc["repositories"].as_array().into_iter().flatten() {
            repos.push(r.as_str().expect("repository name").to_string());
        }
        match link.and_then(|l| {
            l.trim()
                .strip_prefix('<')
                .and_then(|r| r.split_once('>'))
                .map(|(u, _)| u.to_string())
        }) {
            Some(next) if next.starts_with('/') => url = server.url(&next),
            Some(next) => url = next,
            None => break,
        }
    }
    repos
}

/// Tags of a repository.
pub fn tags(client: &Client, server: &Server, repo: &str) -> Vec<String> {
    let url = server.url(&format!("/v2/{repo}/tags/list?n=1000"));
    let resp = client
        .get(&url)
        .send()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status();
    let text = resp.text().unwrap_or_default();
    assert!(status.is_success(), "GET {url}: {status}: {text}");
    let doc: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("GET {url}: body is not JSON ({e}): {text}"));
    doc["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| t.as_str().expect("tag").to_string())
        .collect()
}

/// GETs a manifest; checks Docker-Content-Digest against the bytes. Returns (digest, bytes).
pub fn get_manifest(
    client: &Client,
    server: &Server,
    repo: &str,
    reference: &str,
) -> (String, Vec<u8>) {
    let url = server.url(&format!("/v2/{repo}/manifests/{reference}"));
    let resp = client
        .get(&url)
        .header("Accept", ACCEPT_MANIFESTS)
        .send()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status();
    let header = resp
        .headers()
        .get("Docker-Content-Digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = resp
        .bytes()
        .unwrap_or_else(|e| panic!("GET {url}: reading body: {e}"))
        .to_vec();
    assert!(
        status.is_success(),
        "GET {url}: {status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    let digest = Digest::sha256_of(&bytes).to_string();
    if reference.starts_with("sha256:") {
        assert_eq!(
            digest, reference,
            "GET {url}: body does not hash to the digest asked for"
        );
    }
    if let Some(h) = header {
        assert_eq!(
            h, digest,
            "GET {url}: Docker-Content-Digest disagrees with the body"
        );
    }
    (digest, bytes)
}

/// GETs a blob and checks it is exactly `size` bytes hashing to `digest`.
pub fn check_blob(client: &Client, server: &Server, repo: &str, digest: &str, size: u64) {
    let url = server.url(&format!("/v2/{repo}/blobs/{digest}"));
    let resp = client
        .get(&url)
        .send()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status();
    let bytes = resp
        .bytes()
        .unwrap_or_else(|e| panic!("GET {url}: reading body failed (truncated blob?): {e}"))
        .to_vec();
    assert!(
        status.is_success(),
        "GET {url}: {status}: {}",
        String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
    );
    assert_eq!(
        bytes.len() as u64,
        size,
        "GET {url}: served {} bytes, the manifest says {size}",
        bytes.len()
    );
    let actual = Digest::sha256_of(&bytes).to_string();
    assert_eq!(actual, digest, "GET {url}: served bytes hash to {actual}");
}

/// Status of `HEAD /v2/<repo>/blobs/<digest>`.
pub fn head_blob(client: &Client, server: &Server, repo: &str, digest: &str) -> u16 {
    let url = server.url(&format!("/v2/{repo}/blobs/{digest}"));
    client
        .head(&url)
        .send()
        .unwrap_or_else(|e| panic!("HEAD {url}: {e}"))
        .status()
        .as_u16()
}

/// `HEAD /v2/<repo>/blobs/<digest>`: status and Content-Length.
pub fn head_blob_len(
    client: &Client,
    server: &Server,
    repo: &str,
    digest: &str,
) -> (u16, Option<u64>) {
    let url = server.url(&format!("/v2/{repo}/blobs/{digest}"));
    let resp = client
        .head(&url)
        .send()
        .unwrap_or_else(|e| panic!("HEAD {url}: {e}"));
    let len = resp
        .headers()
        .get("Content-Length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    (resp.status().as_u16(), len)
}

/// Walks the catalog, every tag, and every manifest (recursively through indexes), checking
/// each manifest and blob is complete. Returns `repo:tag -> manifest digest`.
pub fn verify_registry(client: &Client, server: &Server) -> BTreeMap<String, String> {
    let mut seen = BTreeMap::new();
    for repo in catalog(client, server) {
        for tag in tags(client, server, &repo) {
            let (digest, bytes) = get_manifest(client, server, &repo, &tag);
            verify_manifest_tree(client, server, &repo, &bytes);
            seen.insert(format!("{repo}:{tag}"), digest);
        }
    }
    seen
}

fn verify_manifest_tree(client: &Client, server: &Server, repo: &str, bytes: &[u8]) {
    let doc: Value = serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "{repo}: manifest is not JSON ({e}): {}",
            String::from_utf8_lossy(bytes)
        )
    });
    if let Some(list) = doc["manifests"].as_array() {
        for m in list {
            let digest = m["digest"].as_str().expect("child digest");
            let (_, child) = get_manifest(client, server, repo, digest);
            assert_eq!(
                child.len() as u64,
                m["size"].as_u64().expect("child size"),
                "{repo}@{digest}: size differs from the index's descriptor"
            );
            verify_manifest_tree(client, server, repo, &child);
        }
    } else {
        for (digest, size) in children(&doc) {
            check_blob(client, server, repo, &digest, size);
        }
    }
}

// ---------------------------------------------------------------------------------------
// TLS material
// ---------------------------------------------------------------------------------------

/// A CA and a server certificate for 127.0.0.1 made with the openssl CLI.
pub struct Pki {
    /// CA certificate (PEM).
    pub ca_pem: PathBuf,
    /// A directory holding only `ca.crt`, for `--cert-dir` options.
    pub cert_dir: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

pub fn make_pki(work: &Work) -> Pki {
    let openssl = which("openssl");
    let dir = work.path("pki");
    fs::create_dir_all(&dir).expect("mkdir pki");
    let p = |n: &str| dir.join(n);
    let openssl_run = |args: &[&str]| {
        let mut cmd = Command::new(&openssl);
        cmd.args(args).current_dir(&dir);
        run(cmd, &work.scratch()).ok();
    };
    openssl_run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=kiln test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl_run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    fs::write(
        p("server.ext"),
        "basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\n\
         subjectAltName=IP:127.0.0.1\n",
    )
    .expect("write server.ext");
    openssl_run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    let cert_dir = work.path("certs.d");
    fs::create_dir_all(&cert_dir).expect("mkdir cert dir");
    fs::copy(p("ca.pem"), cert_dir.join("ca.crt")).expect("copy ca.crt");
    Pki {
        ca_pem: p("ca.pem"),
        cert_dir,
        server_cert: p("server.pem"),
        server_key: p("server.key"),
    }
}
