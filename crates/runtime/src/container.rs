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

    /// The runtime binary, pointed at kiln's state directory for it.
    fn runtime_command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root").arg(self.state_dir());
        cmd
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
    /// With `terminal` (the bundle's spec asks for one), the runtime itself sets up the
    /// container's pseudo-terminal and relays it to this process's terminal.
    pub fn run_foreground(
        &self,
        id: &str,
        interactive: bool,
        terminal: bool,
    ) -> Result<Exit, RuntimeError> {
        let status = self
            .runtime_command()
            .arg("run")
            .arg("--bundle")
            .arg(self.bundle_dir(id))
            .arg(id)
            .stdin(if interactive || terminal {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .status()
            .map_err(|source| RuntimeError::Missing {
                runtime: self.binary.clone(),
                source,
            })?;
        Ok(Exit::from(status))
    }

    /// Removes a container's bundle (unmounting its root filesystem first).
    pub fn remove_bundle(&self, id: &str, rootfs: &RootFs) -> Result<(), RuntimeError> {
        // The runtime removes its own state when `run` returns; make sure of it.
        let _ = self
            .runtime_command()
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

/// What kiln keeps about a container, in `<bundle>/container.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Record {
    pub id: String,
    pub image: String,
    pub command: Vec<String>,
    /// Unix seconds.
    pub created: i64,
    /// Remove the container when it exits.
    pub auto_remove: bool,
    /// Who the container belongs to (a node agent's pod, container name and attempt, as
    /// the CRI's `io.kubernetes.*` labels).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// How a detached container ended, in `<bundle>/exit.json` (written by its shim).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Ended {
    pub code: i32,
    /// Unix seconds.
    pub finished: i64,
}

/// A container's state as `ps` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Running,
    Exited {
        code: i32,
        finished: i64,
    },
    /// Neither running nor recorded as ended (its shim died).
    Unknown,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// One CRI log line: `TIMESTAMP STREAM P|F content`.
pub fn cri_line(stream: &str, content: &[u8], full: bool) -> Vec<u8> {
    let ts = time_now_rfc3339();
    let mut line = format!("{ts} {stream} {} ", if full { "F" } else { "P" }).into_bytes();
    line.extend_from_slice(content);
    line.push(b'\n');
    line
}

/// Now, as CRI log lines stamp it (RFC 3339 in UTC with nanoseconds).
fn time_now_rfc3339() -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z"
    );
    time::OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_default()
}

/// Splits a CRI log line into (stream, full, content).
pub fn parse_cri_line(line: &[u8]) -> Option<(&str, bool, &[u8])> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let _ts = parts.next()?;
    let stream = std::str::from_utf8(parts.next()?).ok()?;
    let tag = parts.next()?;
    let content = parts.next().unwrap_or(b"");
    Some((stream, tag == b"F", content))
}

impl Runtime {
    fn record_path(&self, id: &str) -> PathBuf {
        self.bundle_dir(id).join("container.json")
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.bundle_dir(id).join("container.log")
    }

    fn exit_path(&self, id: &str) -> PathBuf {
        self.bundle_dir(id).join("exit.json")
    }

    fn io_err(path: &Path) -> impl Fn(std::io::Error) -> RuntimeError + '_ {
        move |source| RuntimeError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn save_record(&self, record: &Record) -> Result<(), RuntimeError> {
        let path = self.record_path(&record.id);
        let text = serde_json::to_vec_pretty(record)
            .map_err(|e| Self::io_err(&path)(std::io::Error::other(e)))?;
        std::fs::write(&path, text).map_err(Self::io_err(&path))
    }

    pub fn record(&self, id: &str) -> Result<Option<Record>, RuntimeError> {
        let path = self.record_path(id);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Self::io_err(&path)(std::io::Error::other(e))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::io_err(&path)(e)),
        }
    }

    /// Every container kiln knows, oldest first.
    pub fn records(&self) -> Result<Vec<Record>, RuntimeError> {
        let dir = self.dir.join("containers");
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Self::io_err(&dir)(e)),
        };
        for entry in entries.flatten() {
            if let Some(id) = entry.file_name().to_str() {
                if let Some(r) = self.record(id)? {
                    out.push(r);
                }
            }
        }
        out.sort_by_key(|r| r.created);
        Ok(out)
    }

    /// Finds a container by name or unambiguous ID prefix.
    pub fn find(&self, name: &str) -> Result<Option<Record>, RuntimeError> {
        if let Some(r) = self.record(name)? {
            return Ok(Some(r));
        }
        let matches: Vec<Record> = self
            .records()?
            .into_iter()
            .filter(|r| r.id.starts_with(name))
            .collect();
        Ok(if matches.len() == 1 {
            matches.into_iter().next()
        } else {
            None
        })
    }

    pub fn status(&self, id: &str) -> Status {
        if let Some(e) = self.ended(id) {
            return Status::Exited {
                code: e.code,
                finished: e.finished,
            };
        }
        let state = self
            .runtime_command()
            .args(["state", id])
            .stderr(Stdio::null())
            .output();
        match state {
            Ok(o) if o.status.success() => {
                let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
                match v["status"].as_str() {
                    Some("running") | Some("created") | Some("paused") => Status::Running,
                    _ => Status::Unknown,
                }
            }
            _ => Status::Unknown,
        }
    }

    /// Starts the prepared bundle `id` under a shim (`shim` is the command line that runs
    /// [`Runtime::shim`] for it, detached from the caller).
    pub fn start_detached(&self, id: &str, shim: &mut Command) -> Result<(), RuntimeError> {
        use std::os::unix::process::CommandExt;
        shim.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: setsid, fork and _exit are async-signal-safe. setsid detaches the shim from
        // the caller's terminal and process group, so it outlives the command that started
        // it; the extra fork makes it nobody's child but init's, so a long-lived caller (the
        // node agent) leaves no zombie behind when it ends.
        unsafe {
            shim.pre_exec(|| {
                libc::setsid();
                match libc::fork() {
                    -1 => Err(std::io::Error::last_os_error()),
                    0 => Ok(()),
                    _ => libc::_exit(0),
                }
            });
        }
        let mut intermediate = shim.spawn().map_err(|source| RuntimeError::Missing {
            runtime: "kiln shim".into(),
            source,
        })?;
        let _ = intermediate.wait();
        // Wait until the runtime knows the container (or the shim recorded its end).
        for _ in 0..500 {
            if self.status(id) != Status::Unknown {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Err(RuntimeError::Runtime {
            runtime: self.binary.clone(),
            id: id.to_string(),
            reason: format!(
                "the container did not start; see {}",
                self.log_path(id).display()
            ),
        })
    }

    /// The shim: runs the container with its output into the CRI log, records its end, and
    /// removes it if asked. Blocks until the container exits.
    pub fn shim(&self, id: &str) -> Result<(), RuntimeError> {
        use std::io::{BufRead, Write};
        let log_path = self.log_path(id);
        let log = std::sync::Arc::new(std::sync::Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(Self::io_err(&log_path))?,
        ));
        let mut child = self
            .runtime_command()
            .arg("run")
            .arg("--bundle")
            .arg(self.bundle_dir(id))
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| RuntimeError::Missing {
                runtime: self.binary.clone(),
                source,
            })?;
        let mut pumps = Vec::new();
        let streams: Vec<(&str, Box<dyn std::io::Read + Send>)> = vec![
            (
                "stdout",
                Box::new(child.stdout.take().expect("piped stdout")),
            ),
            (
                "stderr",
                Box::new(child.stderr.take().expect("piped stderr")),
            ),
        ];
        for (name, stream) in streams {
            let log = log.clone();
            pumps.push(std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(stream);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match reader.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let full = line.last() == Some(&b'\n');
                            let content = if full {
                                &line[..line.len() - 1]
                            } else {
                                &line[..]
                            };
                            if let Ok(mut f) = log.lock() {
                                let _ = f.write_all(&cri_line(name, content, true));
                            }
                        }
                    }
                }
            }));
        }
        let status = child.wait().map_err(Self::io_err(&log_path))?;
        for p in pumps {
            let _ = p.join();
        }
        let ended = Ended {
            code: Exit::from(status).code,
            finished: now(),
        };
        let exit_path = self.exit_path(id);
        let text = serde_json::to_vec(&ended).unwrap_or_default();
        std::fs::write(&exit_path, text).map_err(Self::io_err(&exit_path))?;
        if self.record(id)?.is_some_and(|r| r.auto_remove) {
            self.remove(id)?;
        }
        Ok(())
    }

    /// Sends `signal` (e.g. "TERM", "KILL") to the container's init process, as docker does.
    /// The container has its own PID namespace, so when init dies the kernel kills the rest;
    /// signalling every process (`--all`) would need the cgroup, which rootless containers
    /// may lack.
    pub fn kill(&self, id: &str, signal: &str) -> Result<(), RuntimeError> {
        let out = self
            .runtime_command()
            .args(["kill", id, signal])
            .output()
            .map_err(|source| RuntimeError::Missing {
                runtime: self.binary.clone(),
                source,
            })?;
        if out.status.success() || self.status(id) != Status::Running {
            Ok(())
        } else {
            Err(RuntimeError::Runtime {
                runtime: self.binary.clone(),
                id: id.to_string(),
                reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// Waits up to `timeout` for the container to end; true if it did.
    pub fn wait_ended(&self, id: &str, timeout: std::time::Duration) -> bool {
        let start = std::time::Instant::now();
        loop {
            if matches!(self.status(id), Status::Exited { .. }) {
                return true;
            }
            if start.elapsed() >= timeout {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// docker stop: SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&self, id: &str, grace: std::time::Duration) -> Result<(), RuntimeError> {
        if self.status(id) != Status::Running {
            return Ok(());
        }
        self.kill(id, "TERM")?;
        if !self.wait_ended(id, grace) {
            self.kill(id, "KILL")?;
            self.wait_ended(id, std::time::Duration::from_secs(10));
        }
        Ok(())
    }

    /// Removes an ended container: runtime state, root filesystem mount, bundle.
    pub fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let bundle = self.bundle_dir(id);
        let rootfs = if bundle.join("upper").is_dir() {
            RootFs::Overlay {
                merged: bundle.join("rootfs"),
                upper: bundle.join("upper"),
            }
        } else {
            RootFs::Copied {
                dir: bundle.join("rootfs"),
            }
        };
        self.remove_bundle(id, &rootfs)
    }

    /// The command that runs `args` in the running container `id`; the caller sets its
    /// stdio. With `terminal`, the runtime gives the process a pseudo-terminal and relays it.
    pub fn exec_command(&self, id: &str, args: &[String], terminal: bool) -> Command {
        let mut cmd = self.runtime_command();
        cmd.arg("exec")
            .args(terminal.then_some("--tty"))
            .arg(id)
            .args(args);
        cmd
    }

    /// How the container ended, if its shim recorded it: a file read, no runtime call, so
    /// cheap enough to poll.
    pub fn ended(&self, id: &str) -> Option<Ended> {
        let bytes = std::fs::read(self.exit_path(id)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Runs `args` in the running container `id`, with this process's stdio; its exit code.
    pub fn exec(
        &self,
        id: &str,
        args: &[String],
        interactive: bool,
        terminal: bool,
    ) -> Result<Exit, RuntimeError> {
        let status = self
            .exec_command(id, args, terminal)
            .stdin(if interactive || terminal {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .status()
            .map_err(|source| RuntimeError::Missing {
                runtime: self.binary.clone(),
                source,
            })?;
        Ok(Exit::from(status))
    }
}

impl Runtime {
    /// Records how a foreground container ended (kept for `ps -a` until `rm`).
    pub fn record_exit(&self, id: &str, exit: Exit) -> Result<(), RuntimeError> {
        let path = self.exit_path(id);
        let ended = Ended {
            code: exit.code,
            finished: now(),
        };
        let text = serde_json::to_vec(&ended).unwrap_or_default();
        std::fs::write(&path, text).map_err(Self::io_err(&path))
    }
}

pub fn unix_now() -> i64 {
    now()
}
