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
        let stdin = if interactive || terminal {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        self.run_with_stdio(id, stdin, Stdio::inherit(), Stdio::inherit())
    }

    /// Runs a prepared bundle until the container's process exits, its standard streams
    /// connected to the given ones (a build step's output goes to a pipe, for example).
    pub fn run_with_stdio(
        &self,
        id: &str,
        stdin: Stdio,
        stdout: Stdio,
        stderr: Stdio,
    ) -> Result<Exit, RuntimeError> {
        let status = self
            .runtime_command()
            .arg("run")
            .arg("--bundle")
            .arg(self.bundle_dir(id))
            .arg(id)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr)
            .status()
            .map_err(|source| RuntimeError::Missing {
                runtime: self.binary.clone(),
                source,
            })?;
        Ok(Exit::from(status))
    }

    /// Has the runtime forget the container (killing what is left of it).
    pub fn delete_runtime_state(&self, id: &str) {
        let _ = self
            .runtime_command()
            .args(["delete", "--force", id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Removes a container's bundle (unmounting its root filesystem first).
    pub fn remove_bundle(&self, id: &str, rootfs: &RootFs) -> Result<(), RuntimeError> {
        // The runtime removes its own state when `run` returns; make sure of it.
        self.delete_runtime_state(id);
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

/// The environment variable naming the descriptor on which a shim reports the start.
const SHIM_READY_FD: &str = "KILN_SHIM_READY_FD";

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
    /// [`Runtime::shim`] for it, detached from the caller). Returns once the container's
    /// process runs, or with the reason it could not start.
    pub fn start_detached(&self, id: &str, shim: &mut Command) -> Result<(), RuntimeError> {
        use std::io::Read;
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        use std::os::unix::process::CommandExt;
        let failed = |reason: String| RuntimeError::Runtime {
            runtime: self.binary.clone(),
            id: id.to_string(),
            reason,
        };
        // The shim reports on this pipe when the container runs (or why it does not): no
        // polling of the runtime. Both ends are close-on-exec; only the shim gets the
        // writing end, as fd 3.
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the two-element array on success.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(failed(format!("pipe: {}", std::io::Error::last_os_error())));
        }
        // SAFETY: the descriptors were just created and are owned here alone.
        let (read_end, write_end) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let ready_fd = write_end.as_raw_fd();
        shim.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .env(SHIM_READY_FD, "3");
        // SAFETY: setsid, dup2, fork and _exit are async-signal-safe. setsid detaches the shim
        // from the caller's terminal and process group, so it outlives the command that
        // started it; the extra fork makes it nobody's child but init's, so a long-lived
        // caller (the node agent) leaves no zombie behind when it ends.
        unsafe {
            shim.pre_exec(move || {
                libc::setsid();
                if ready_fd == 3 {
                    // dup2 onto itself would keep close-on-exec set.
                    if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(ready_fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                match libc::fork() {
                    -1 => Err(std::io::Error::last_os_error()),
                    0 => Ok(()),
                    _ => libc::_exit(0),
                }
            });
        }
        let spawned = shim.spawn();
        drop(write_end);
        let mut intermediate = spawned.map_err(|source| RuntimeError::Missing {
            runtime: "kiln shim".into(),
            source,
        })?;
        let _ = intermediate.wait();
        let mut report = String::new();
        let _ = std::fs::File::from(read_end).read_to_string(&mut report);
        match report.strip_prefix("ok") {
            Some(_) => Ok(()),
            None if report.is_empty() => Err(failed(format!(
                "the shim ended before the container started; see {}",
                self.log_path(id).display()
            ))),
            None => Err(failed(report.trim().to_string())),
        }
    }

    /// The shim: creates and starts the container with its output into the CRI log, waits
    /// for its process (as the subreaper it is reparented to once the runtime exits, so no
    /// runtime process stays resident per container), records its end, and removes it if
    /// asked. Blocks until the container exits.
    pub fn shim(&self, id: &str) -> Result<(), RuntimeError> {
        use std::io::{BufRead, Write};
        use std::os::fd::FromRawFd;
        let mut ready: Option<std::fs::File> = std::env::var(SHIM_READY_FD)
            .ok()
            .and_then(|fd| fd.parse::<i32>().ok())
            // SAFETY: start_detached hands the shim this descriptor and nothing else uses it.
            .map(|fd| unsafe { std::fs::File::from_raw_fd(fd) });
        let mut tell = |message: &str| {
            if let Some(mut r) = ready.take() {
                let _ = r.write_all(message.as_bytes());
            }
        };
        // SAFETY: prctl with PR_SET_CHILD_SUBREAPER only changes this process's attributes.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        let log_path = self.log_path(id);
        let log = std::sync::Arc::new(std::sync::Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(Self::io_err(&log_path))?,
        ));
        let bundle = self.bundle_dir(id);
        let pid_file = bundle.join("init.pid");
        let _ = std::fs::remove_file(&pid_file);
        let mut create = self
            .runtime_command()
            .arg("create")
            .arg("--bundle")
            .arg(&bundle)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| RuntimeError::Missing {
                runtime: self.binary.clone(),
                source,
            })?;
        // The container's process inherits these pipes from the runtime and keeps them
        // after the runtime exits.
        let mut pumps = Vec::new();
        let streams: Vec<(&str, Option<Box<dyn std::io::Read + Send>>)> = vec![
            (
                "stdout",
                create
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            ),
            (
                "stderr",
                create
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            ),
        ];
        for (name, stream) in streams {
            let Some(stream) = stream else { continue };
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
        let finish =
            |code: i32, pumps: Vec<std::thread::JoinHandle<()>>| -> Result<(), RuntimeError> {
                for p in pumps {
                    let _ = p.join();
                }
                self.record_exit(id, Exit { code })?;
                // The runtime keeps a created container's state until it is deleted.
                self.delete_runtime_state(id);
                if self.record(id)?.is_some_and(|r| r.auto_remove) {
                    self.remove(id)?;
                }
                Ok(())
            };
        let created = create.wait().map_err(Self::io_err(&log_path))?;
        let pid: Option<i32> = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse().ok());
        let (Some(pid), true) = (pid, created.success()) else {
            tell(&format!(
                "creating the container failed (exit {}); see {}",
                Exit::from(created).code,
                log_path.display()
            ));
            return finish(Exit::from(created).code.max(1), pumps);
        };
        let started = self
            .runtime_command()
            .args(["start", id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .output();
        match started {
            Ok(o) if o.status.success() => tell("ok"),
            other => {
                let reason = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                    Err(e) => e.to_string(),
                };
                tell(&format!("starting the container failed: {reason}"));
                let _ = self
                    .runtime_command()
                    .args(["kill", id, "KILL"])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        // Reap until the container's process ends; anything else reparented here is reaped
        // on the way.
        let code = loop {
            let mut status = 0;
            // SAFETY: waitpid writes the status of a child of this process.
            let reaped = unsafe { libc::waitpid(-1, &mut status, 0) };
            if reaped == pid {
                break if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else if libc::WIFSIGNALED(status) {
                    128 + libc::WTERMSIG(status)
                } else {
                    255
                };
            }
            if reaped < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                // No children left: the process was not ours to wait for.
                break 255;
            }
        };
        finish(code, pumps)
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
            // The shim's record of the end, not the runtime: a runtime call per poll would
            // cost a process for every container being stopped.
            if self.ended(id).is_some() {
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
