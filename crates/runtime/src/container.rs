//! Containers run by an OCI runtime binary (runc by default; crun or youki by choice): a
//! bundle directory per container with its root filesystem and `config.json`, and the
//! runtime's own state under kiln's root.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use kiln_image::store::blobs::BlobStore;
use kiln_image::Image;

use crate::bundle::{self, BundleError, RunConfig};
use crate::snapshot::{RootFs, SnapshotError, Snapshots};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "OCI runtime {runtime:?} cannot be run: {source} (install it, e.g. scripts/install-deps)"
    )]
    Missing {
        runtime: String,
        source: std::io::Error,
    },
    #[error("OCI runtime {runtime} failed for container {id}: {reason}")]
    Runtime {
        runtime: String,
        id: String,
        reason: String,
    },
}

/// Where containers live and which runtime runs them.
pub struct Runtime {
    /// The OCI runtime binary (`runc`, `crun`, a path).
    pub binary: String,
    /// kiln's container directory: bundles under `containers/<id>`, snapshots beside.
    pub dir: PathBuf,
}

/// How a container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The process's exit code, or 128 + signal number, as docker reports them.
    pub code: i32,
}

impl From<ExitStatus> for Exit {
    fn from(status: ExitStatus) -> Exit {
        use std::os::unix::process::ExitStatusExt;
        let code = status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .unwrap_or(255);
        Exit { code }
    }
}

impl Runtime {
    pub fn new(binary: &str, dir: &Path) -> Runtime {
        // Absolute: the bundle's root path is read by the runtime from another directory.
        Runtime {
            binary: binary.to_string(),
            dir: std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()),
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.join("runtime-state")
    }

    pub fn bundle_dir(&self, id: &str) -> PathBuf {
        self.dir.join("containers").join(id)
    }

    /// Makes a container's bundle: root filesystem from `image`, `config.json` from its
    /// config and `run`.
    pub fn create_bundle(
        &self,
        blobs: &BlobStore,
        image: &Image,
        id: &str,
        run: &RunConfig,
    ) -> Result<RootFs, RuntimeError> {
        let bundle = self.bundle_dir(id);
        std::fs::create_dir_all(&bundle).map_err(|source| RuntimeError::Io {
            path: bundle.clone(),
            source,
        })?;
        let snapshots = Snapshots::open(&self.dir.join("snapshots"))?;
        let rootfs = snapshots.prepare(blobs, image, &bundle)?;
        let host_env = |k: &str| std::env::var(k).ok();
        let spec = bundle::spec(&image.config, run, rootfs.path(), &host_env);
        let spec = match spec {
            Ok(s) => s,
            Err(e) => {
                let _ = rootfs.unmount();
                return Err(e.into());
            }
        };
        let config = bundle.join("config.json");
        spec.save(&config).map_err(|e| RuntimeError::Io {
            path: config.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(rootfs)
    }

    /// Runs a prepared bundle in the foreground, with this process's stdout and stderr
    /// (and stdin when `interactive`), until the container's process exits.
    pub fn run_foreground(&self, id: &str, interactive: bool) -> Result<Exit, RuntimeError> {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root")
            .arg(self.state_dir())
            .arg("run")
            .arg("--bundle")
            .arg(self.bundle_dir(id))
            .arg(id)
            .stdin(if interactive {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        let status = cmd.status().map_err(|source| RuntimeError::Missing {
            runtime: self.binary.clone(),
            source,
        })?;
        Ok(Exit::from(status))
    }

    /// Removes a container's bundle (unmounting its root filesystem first).
    pub fn remove_bundle(&self, id: &str, rootfs: &RootFs) -> Result<(), RuntimeError> {
        // The runtime removes its own state when `run` returns; make sure of it.
        let _ = Command::new(&self.binary)
            .arg("--root")
            .arg(self.state_dir())
            .args(["delete", "--force", id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        rootfs.unmount().map_err(|source| RuntimeError::Io {
            path: rootfs.path().to_path_buf(),
            source,
        })?;
        let bundle = self.bundle_dir(id);
        std::fs::remove_dir_all(&bundle).map_err(|source| RuntimeError::Io {
            path: bundle,
            source,
        })
    }
}
