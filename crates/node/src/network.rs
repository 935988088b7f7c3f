//! Pod networks: one network namespace per pod (a bind mount that outlives any process, so
//! containers can join it and restart), wired to a node bridge by the standard CNI plugins
//! (`bridge` with `host-local` addresses, and `loopback`).

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("creating the network namespace {path}: {reason}")]
    Namespace { path: PathBuf, reason: String },
    #[error("CNI plugin {plugin} {command}: {reason}")]
    Plugin {
        plugin: String,
        command: &'static str,
        reason: String,
    },
}

/// How pods are wired.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// The CNI network's name; its address reservations are shared by every node agent on
    /// the host that uses the same name.
    pub name: String,
    pub bridge: String,
    /// The pod address range, e.g. `10.42.0.0/16`.
    pub subnet: String,
    /// Where the CNI plugin binaries are.
    pub plugin_dirs: Vec<PathBuf>,
    /// Where the namespaces' bind mounts live.
    pub netns_dir: PathBuf,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            name: "kiln".into(),
            bridge: "kiln0".into(),
            subnet: "10.42.0.0/16".into(),
            plugin_dirs: vec![PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")],
            netns_dir: PathBuf::from("/run/kiln/netns"),
        }
    }
}

/// A pod's network: its namespace and address.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PodNetwork {
    pub netns: PathBuf,
    pub ip: Option<IpAddr>,
}

impl NetworkConfig {
    fn bridge_config(&self) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": self.name,
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": self.subnet}]],
                "routes": [{"dst": "0.0.0.0/0"}],
            },
        })
    }

    fn plugin(&self, name: &str) -> Option<PathBuf> {
        self.plugin_dirs
            .iter()
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    }

    fn invoke(
        &self,
        plugin: &str,
        command: &'static str,
        id: &str,
        netns: &Path,
        config: &Value,
    ) -> Result<Value, NetworkError> {
        let fail = |reason: String| NetworkError::Plugin {
            plugin: plugin.to_string(),
            command,
            reason,
        };
        let binary = self.plugin(plugin).ok_or_else(|| {
            fail(format!(
                "not found in {:?} (install containernetworking-plugins)",
                self.plugin_dirs
            ))
        })?;
        let path = std::env::join_paths(&self.plugin_dirs).unwrap_or_default();
        let mut child = Command::new(&binary)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", netns)
            .env(
                "CNI_IFNAME",
                if plugin == "loopback" { "lo" } else { "eth0" },
            )
            .env("CNI_PATH", path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(e.to_string()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(config.to_string().as_bytes())
                .map_err(|e| fail(e.to_string()))?;
        }
        let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
        let result: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if !out.status.success() {
            let msg = result["msg"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_string());
            return Err(fail(msg));
        }
        Ok(result)
    }

    /// Makes the pod's namespace and address. `id` names the pod sandbox.
    pub fn setup(&self, id: &str) -> Result<PodNetwork, NetworkError> {
        let netns = self.netns_dir.join(id);
        create_namespace(&netns)?;
        let lo = json!({"cniVersion": "1.0.0", "name": "lo", "type": "loopback"});
        let wired = self
            .invoke("loopback", "ADD", id, &netns, &lo)
            .and_then(|_| self.invoke("bridge", "ADD", id, &netns, &self.bridge_config()));
        let result = match wired {
            Ok(r) => r,
            Err(e) => {
                let _ = self.teardown(id);
                return Err(e);
            }
        };
        let ip = result["ips"]
            .as_array()
            .and_then(|ips| ips.first())
            .and_then(|ip| ip["address"].as_str())
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok());
        Ok(PodNetwork { netns, ip })
    }

    /// Releases the pod's address and removes its namespace. Idempotent.
    pub fn teardown(&self, id: &str) -> Result<(), NetworkError> {
        let netns = self.netns_dir.join(id);
        let released = if netns.exists() {
            self.invoke("bridge", "DEL", id, &netns, &self.bridge_config())
                .map(|_| ())
        } else {
            // The namespace is gone; the address reservation may not be.
            self.invoke("bridge", "DEL", id, Path::new(""), &self.bridge_config())
                .map(|_| ())
        };
        remove_namespace(&netns);
        released
    }
}

/// Creates a network namespace bound at `path`: a thread unshares its own network
/// namespace and the namespace file is bind-mounted before the thread ends.
fn create_namespace(path: &Path) -> Result<(), NetworkError> {
    let fail = |reason: String| NetworkError::Namespace {
        path: path.to_path_buf(),
        reason,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    }
    if path.exists() {
        // Left from an earlier run: a mount here means the namespace is still good.
        if is_mount_point(path) {
            return Ok(());
        }
    } else {
        std::fs::File::create(path).map_err(|e| fail(e.to_string()))?;
    }
    let target = path.to_path_buf();
    let joined = std::thread::spawn(move || -> Result<(), String> {
        // SAFETY: unshare affects only this thread, which ends right after.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!("unshare: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) };
        let source = format!("/proc/self/task/{tid}/ns/net\0");
        let target = format!("{}\0", target.display());
        // SAFETY: both strings are NUL-terminated and outlive the call.
        let rc = unsafe {
            libc::mount(
                source.as_ptr().cast(),
                target.as_ptr().cast(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(format!("bind mount: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    })
    .join()
    .map_err(|_| fail("the namespace thread panicked".into()))?;
    joined.map_err(fail)
}

fn remove_namespace(path: &Path) {
    let target = format!("{}\0", path.display());
    // SAFETY: a NUL-terminated path; a failure (not mounted) is fine.
    unsafe { libc::umount2(target.as_ptr().cast(), libc::MNT_DETACH) };
    let _ = std::fs::remove_file(path);
}

fn is_mount_point(path: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = path.display().to_string();
    mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| m == wanted)
}
