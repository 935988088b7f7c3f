//! Helpers for end-to-end tests that drive the `kiln` binary and real peers (skopeo).
#![allow(dead_code)] // each test binary uses a different subset

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kiln_image::digest::{Algorithm, Digest};

pub fn kiln_bin() -> &'static str {
    env!("CARGO_BIN_EXE_kiln")
}

/// A scratch store and work directory, removed when dropped.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(kiln_bin());
        c.args(args)
            .env("KILN_ROOT", self.root())
            .env_remove("SOURCE_DATE_EPOCH");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run kiln")
    }

    /// Runs kiln and insists it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kiln {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Runs kiln and insists it fails; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "kiln {args:?} should have failed but printed {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).expect("utf-8 output")
    }

    /// A root filesystem tarball holding busybox-static and a few applet links.
    pub fn busybox_rootfs(&self) -> PathBuf {
        let tree = self.path("rootfs");
        fs::create_dir_all(tree.join("bin")).expect("mkdir");
        let busybox = which("busybox");
        fs::copy(&busybox, tree.join("bin/busybox")).expect("copy busybox");
        for applet in [
            "sh", "ls", "echo", "cat", "httpd", "wget", "sleep", "true", "mkdir", "cp", "rm",
            "touch", "wc", "id", "stat", "date",
        ] {
            std::os::unix::fs::symlink("busybox", tree.join("bin").join(applet)).expect("symlink");
        }
        let tarball = self.path("busybox.tar");
        tar_of(&tree, &tarball);
        tarball
    }

    /// Imports the busybox rootfs as `name` and returns its manifest digest.
    pub fn busybox_image(&self, name: &str) -> String {
        let tarball = self.busybox_rootfs();
        self.ok(&[
            "image",
            "import-rootfs",
            tarball.to_str().expect("utf-8"),
            name,
            "--cmd",
            "[\"sh\"]",
        ]);
        self.ok(&["inspect", name, "--format", "{{.Descriptor.digest}}"])
            .trim()
            .to_string()
    }

    /// Imports busybox as `busybox:latest` and exports it to an OCI layout (ref `latest`).
    /// Returns the manifest digest and the layout directory.
    pub fn exported_busybox(&self) -> (String, PathBuf) {
        let digest = self.busybox_image("busybox:latest");
        let dir = self.path("exported");
        self.ok(&[
            "image",
            "export",
            "busybox",
            &format!("oci:{}", dir.display()),
        ]);
        (digest, dir)
    }

    pub fn blob_count(&self) -> usize {
        let dir = self.root().join("blobs/sha256");
        fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
    }
}

/// Finds a tool the project's install script provides. Missing tools fail the test: a
/// silently skipped end-to-end test proves nothing.
pub fn which(tool: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(tool);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("{tool} is not installed; run scripts/install-deps");
}

pub fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

pub fn skopeo(args: &[&str]) -> String {
    sh(Command::new(which("skopeo")).args(args))
}

/// Writes an OCI layout with one image whose layers are the given blobs (opaque bytes: the
/// store does not look inside layers). Returns the manifest digest.
pub fn write_layout(dir: &Path, ref_name: &str, layers: &[&[u8]]) -> Digest {
    let mut descriptors = Vec::new();
    for layer in layers {
        let d = put_blob(dir, layer);
        descriptors.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": d.to_string(), "size": layer.len(),
        }));
    }
    finish_layout(dir, ref_name, descriptors)
}

/// Like [`write_layout`] for uncompressed tar layers, whose digests are their diff IDs.
pub fn write_tar_layout(dir: &Path, ref_name: &str, layers: &[&[u8]]) -> Digest {
    let descriptors = layers
        .iter()
        .map(|layer| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": put_blob(dir, layer).to_string(), "size": layer.len(),
            })
        })
        .collect();
    finish_layout(dir, ref_name, descriptors)
}

/// A tar of the directory `tree` (its contents at the archive's root), as root-owned files.
pub fn tar_of(tree: &Path, tarball: &Path) -> Vec<u8> {
    sh(Command::new("tar")
        .arg("-C")
        .arg(tree)
        .args([
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mtime=@0",
            "-cf",
        ])
        .arg(tarball)
        .arg("."));
    fs::read(tarball).expect("read tarball")
}

/// Like [`write_layout`] with one layer of `size` pseudo-random bytes streamed to disk.
pub fn write_big_layout(dir: &Path, ref_name: &str, size: u64, seed: u64) -> Digest {
    fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir");
    let tmp = dir.join("blobs/sha256/tmp");
    let mut file = File::create(&tmp).expect("create");
    let mut hasher = Algorithm::Sha256.hasher();
    let mut state = seed | 1;
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for b in chunk.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let bytes = state.to_le_bytes();
            b.copy_from_slice(&bytes[..b.len()]);
        }
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n]).expect("write");
        hasher.update(&chunk[..n]);
        left -= n as u64;
    }
    let d = hasher.finish();
    fs::rename(&tmp, dir.join("blobs/sha256").join(d.hex())).expect("rename");
    let layer = serde_json::json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": d.to_string(), "size": size,
    });
    finish_layout(dir, ref_name, vec![layer])
}

fn finish_layout(dir: &Path, ref_name: &str, layers: Vec<serde_json::Value>) -> Digest {
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| l["digest"].as_str().unwrap_or_default().to_string())
        .collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {"Env": ["PATH=/bin"]},
    }))
    .expect("json");
    let config_digest = put_blob(dir, &config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config.len()},
        "layers": layers,
    }))
    .expect("json");
    let manifest_digest = put_blob(dir, &manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest.to_string(), "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": ref_name},
        }],
    });
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).expect("json"),
    )
    .expect("write");
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("write");
    manifest_digest
}

pub fn put_blob(dir: &Path, bytes: &[u8]) -> Digest {
    let d = Digest::sha256_of(bytes);
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).expect("mkdir");
    fs::write(blobs.join(d.hex()), bytes).expect("write blob");
    d
}
