//! OCI runtime bundles: the `config.json` a runtime (runc, crun, youki) runs, made from an
//! image's config and the caller's overrides as `docker run` combines them.

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use kiln_image::model::ImageConfiguration;
use oci_spec::runtime::Spec;
use serde_json::{json, Value};

/// docker's PATH for images that set none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Network {
    /// The host's network namespace.
    #[default]
    Host,
    /// A namespace of its own with only loopback.
    None,
    /// An existing namespace, by path (`/proc/PID/ns/net` or a bind mount of one): a pod's,
    /// whose containers all share it.
    Join(PathBuf),
}

/// A bind mount from the host: `-v SRC:DST[:ro]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

impl Volume {
    /// Parses `SRC:DST[:ro|rw]`; both paths absolute.
    pub fn parse(spec: &str) -> Result<Volume, BundleError> {
        let bad = |why: &str| BundleError::Invalid(format!("volume {spec:?}: {why}"));
        let parts: Vec<&str> = spec.split(':').collect();
        let (source, destination, read_only) = match parts.as_slice() {
            [s, d] => (*s, *d, false),
            [s, d, "ro"] => (*s, *d, true),
            [s, d, "rw"] => (*s, *d, false),
            [_, _, other] => return Err(bad(&format!("unknown option {other:?} (ro or rw)"))),
            _ => return Err(bad("expected SRC:DST[:ro]")),
        };
        if !source.starts_with('/') || !destination.starts_with('/') {
            return Err(bad("both paths must be absolute"));
        }
        Ok(Volume {
            source: PathBuf::from(source),
            destination: destination.to_string(),
            read_only,
        })
    }
}

/// What the caller changes of the image's defaults.
#[derive(Debug, Clone, Default)]
pub struct RunConfig {
    /// `--entrypoint` (replaces the image's, and drops its Cmd).
    pub entrypoint: Option<Vec<String>>,
    /// Arguments after the image name (replace the image's Cmd when not empty).
    pub cmd: Vec<String>,
    /// `-e KEY=VALUE` (or `KEY` alone: the value is taken from `host_env`).
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub network: Network,
    pub terminal: bool,
    pub volumes: Vec<Volume>,
    pub hostname: String,
    /// Set when kiln runs unprivileged: the container then gets a user namespace in which
    /// its user is this host user.
    pub rootless: Option<HostUser>,
}

/// The unprivileged host user that a rootless container's user is mapped onto.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostUser {
    pub uid: u32,
    pub gid: u32,
}

impl HostUser {
    /// The calling user, unless it is root.
    pub fn unprivileged() -> Option<HostUser> {
        // SAFETY: geteuid and getegid have no preconditions.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        (uid != 0).then_some(HostUser { uid, gid })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{0}")]
    Invalid(String),
    #[error("no command: the image has no Entrypoint or Cmd, and none was given")]
    NoCommand,
    #[error("user {user:?}: {reason}")]
    User { user: String, reason: String },
    #[error("building the runtime spec: {0}")]
    Spec(String),
}

/// The process's argv, as docker combines them.
pub fn command(image: &ImageConfiguration, run: &RunConfig) -> Result<Vec<String>, BundleError> {
    let config = image.config().clone().unwrap_or_default();
    let (entrypoint, default_cmd) = match &run.entrypoint {
        // An explicit entrypoint drops the image's Cmd, as in docker.
        Some(e) => (e.clone(), Vec::new()),
        None => (
            config.entrypoint().clone().unwrap_or_default(),
            config.cmd().clone().unwrap_or_default(),
        ),
    };
    let cmd = if run.cmd.is_empty() {
        default_cmd
    } else {
        run.cmd.clone()
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(BundleError::NoCommand);
    }
    Ok(args)
}

/// The environment: the image's, then the caller's by key; PATH and HOSTNAME always set.
pub fn environment(
    image: &ImageConfiguration,
    run: &RunConfig,
    host_env: &dyn Fn(&str) -> Option<String>,
) -> Vec<String> {
    let mut out: Vec<String> = vec![format!("HOSTNAME={}", run.hostname)];
    let mut set = |entry: String| {
        let key = entry.split('=').next().unwrap_or("").to_string();
        out.retain(|e| e.split('=').next() != Some(key.as_str()));
        out.push(entry);
    };
    let image_env = image
        .config()
        .as_ref()
        .and_then(|c| c.env().clone())
        .unwrap_or_default();
    for e in image_env {
        set(e);
    }
    for e in &run.env {
        if e.contains('=') {
            set(e.clone());
        } else if let Some(v) = host_env(e) {
            set(format!("{e}={v}"));
        }
    }
    if !out.iter().any(|e| e.starts_with("PATH=")) {
        out.insert(0, DEFAULT_PATH.to_string());
    }
    out
}

/// Opens `path` of the container's root filesystem, resolving links inside it.
fn open_in_rootfs(rootfs: &Path, path: &str) -> Option<std::fs::File> {
    use std::os::fd::FromRawFd;
    let root = std::fs::File::open(rootfs).ok()?;
    let fd = crate::unpack::open_in_root(
        root.as_raw_fd(),
        path.trim_start_matches('/').as_bytes(),
        libc::O_RDONLY,
    )
    .ok()?;
    // SAFETY: an owned descriptor converted into a File that now owns it.
    Some(unsafe { std::fs::File::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(fd)) })
}

/// `(name, id, gid-or-members)` rows of a passwd- or group-style file.
fn rows(rootfs: &Path, file: &str) -> Vec<Vec<String>> {
    let Some(f) = open_in_rootfs(rootfs, file) else {
        return Vec::new();
    };
    BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(':').map(str::to_string).collect())
        .collect()
}

/// Resolves `user[:group]` (names or numbers) against the image's /etc/passwd and
/// /etc/group: `(uid, gid, additional gids)`.
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<(u32, u32, Vec<u32>), BundleError> {
    let fail = |reason: String| BundleError::User {
        user: user.to_string(),
        reason,
    };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    if u.is_empty() {
        return Err(fail("empty user name".into()));
    }
    let passwd = rows(rootfs, "etc/passwd");
    let entry = passwd
        .iter()
        .find(|r| r.first().map(String::as_str) == Some(u));
    let (uid, name, default_gid) = match (u.parse::<u32>(), entry) {
        (Ok(n), _) => {
            let by_id = passwd
                .iter()
                .find(|r| r.get(2).and_then(|x| x.parse().ok()) == Some(n));
            (
                n,
                by_id.and_then(|r| r.first().cloned()),
                by_id
                    .and_then(|r| r.get(3))
                    .and_then(|g| g.parse().ok())
                    .unwrap_or(0),
            )
        }
        (Err(_), Some(r)) => (
            r.get(2)
                .and_then(|x| x.parse().ok())
                .ok_or_else(|| fail("bad passwd entry".into()))?,
            Some(u.to_string()),
            r.get(3).and_then(|x| x.parse().ok()).unwrap_or(0),
        ),
        (Err(_), None) => return Err(fail("no such user in the image's /etc/passwd".into())),
    };
    let groups = rows(rootfs, "etc/group");
    let gid = match g {
        None => default_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .iter()
                .find(|r| r.first().map(String::as_str) == Some(g))
                .and_then(|r| r.get(2))
                .and_then(|x| x.parse().ok())
                .ok_or_else(|| fail(format!("no group {g:?} in the image's /etc/group")))?,
        },
    };
    let mut additional = Vec::new();
    if let (None, Some(name)) = (g, name) {
        for r in &groups {
            let members = r.get(3).map(String::as_str).unwrap_or("");
            if members.split(',').any(|m| m == name) {
                if let Some(id) = r.get(2).and_then(|x| x.parse::<u32>().ok()) {
                    if id != gid && !additional.contains(&id) {
                        additional.push(id);
                    }
                }
            }
        }
    }
    Ok((uid, gid, additional))
}

/// The capabilities docker (moby's `oci/caps/defaults.go`) gives a container.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The runtime spec for a container whose root filesystem is `rootfs`.
pub fn spec(
    image: &ImageConfiguration,
    run: &RunConfig,
    rootfs: &Path,
    host_env: &dyn Fn(&str) -> Option<String>,
) -> Result<Spec, BundleError> {
    let args = command(image, run)?;
    let env = environment(image, run, host_env);
    let config = image.config().clone().unwrap_or_default();
    let cwd = run
        .workdir
        .clone()
        .or_else(|| config.working_dir().clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".to_string());
    if !cwd.starts_with('/') {
        return Err(BundleError::Invalid(format!(
            "working directory {cwd:?} is not absolute"
        )));
    }
    let user = run
        .user
        .clone()
        .or_else(|| config.user().clone())
        .filter(|u| !u.is_empty());
    let (uid, gid, additional) = match &user {
        Some(u) => resolve_user(rootfs, u)?,
        None => (0, 0, Vec::new()),
    };
    let base = match run.rootless {
        // A user namespace, no cgroup limits, /sys bound from the host rather than mounted.
        Some(host) => Spec::rootless(host.uid, host.gid),
        None => Spec::default(),
    };
    let mut v = serde_json::to_value(&base).map_err(|e| BundleError::Spec(e.to_string()))?;
    let additional = match run.rootless {
        Some(host) => {
            // Without subordinate id ranges only one user and one group exist in the
            // namespace: the container's own, standing for the host user who owns every
            // file of the unpacked image. Supplementary groups cannot be mapped.
            v["linux"]["uidMappings"] =
                json!([{"containerID": uid, "hostID": host.uid, "size": 1}]);
            v["linux"]["gidMappings"] =
                json!([{"containerID": gid, "hostID": host.gid, "size": 1}]);
            Vec::new()
        }
        None => additional,
    };
    v["process"]["args"] = json!(args);
    // Docker's default capability set: package managers and daemons that drop privileges
    // (setuid/setgid, chown) work as they do under docker.
    let caps = json!(DEFAULT_CAPABILITIES);
    v["process"]["capabilities"] = json!({
        "bounding": caps,
        "effective": caps,
        "permitted": caps,
    });
    v["process"]["env"] = json!(env);
    v["process"]["cwd"] = json!(cwd);
    v["process"]["terminal"] = json!(run.terminal);
    v["process"]["user"] = json!({"uid": uid, "gid": gid, "additionalGids": additional});
    v["hostname"] = json!(run.hostname);
    v["root"] = json!({"path": rootfs.display().to_string(), "readonly": false});
    if let Some(Value::Array(namespaces)) = v["linux"].get_mut("namespaces") {
        namespaces.retain(|n| n["type"] != "network");
        match &run.network {
            Network::Host => {}
            Network::None => namespaces.push(json!({"type": "network"})),
            Network::Join(path) => {
                namespaces.push(json!({"type": "network", "path": path.display().to_string()}))
            }
        }
    }
    if let Some(Value::Array(mounts)) = v.get_mut("mounts") {
        for vol in &run.volumes {
            let mut options = vec!["rbind", "rprivate"];
            if vol.read_only {
                options.push("ro");
            }
            mounts.push(json!({
                "destination": vol.destination,
                "type": "bind",
                "source": vol.source.display().to_string(),
                "options": options,
            }));
        }
        if run.network == Network::Host {
            // Name resolution as on the host.
            for f in ["/etc/resolv.conf", "/etc/hosts"] {
                if Path::new(f).exists() {
                    mounts.push(json!({
                        "destination": f, "type": "bind", "source": f,
                        "options": ["rbind", "rprivate", "ro"],
                    }));
                }
            }
        }
    }
    serde_json::from_value(v).map_err(|e| BundleError::Spec(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(config: Value) -> ImageConfiguration {
        serde_json::from_value(json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
            "config": config,
        }))
        .expect("config")
    }

    fn no_host(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn command_combines_like_docker() {
        let img = image(json!({"Entrypoint": ["/bin/app"], "Cmd": ["--serve"]}));
        let run = RunConfig::default();
        assert_eq!(command(&img, &run).expect("cmd"), ["/bin/app", "--serve"]);
        let run = RunConfig {
            cmd: vec!["--check".into()],
            ..RunConfig::default()
        };
        assert_eq!(command(&img, &run).expect("cmd"), ["/bin/app", "--check"]);
        // --entrypoint drops the image's Cmd.
        let run = RunConfig {
            entrypoint: Some(vec!["sh".into()]),
            ..RunConfig::default()
        };
        assert_eq!(command(&img, &run).expect("cmd"), ["sh"]);
        let empty = image(json!({}));
        assert!(matches!(
            command(&empty, &RunConfig::default()),
            Err(BundleError::NoCommand)
        ));
    }

    #[test]
    fn environment_overrides_by_key_and_defaults_path() {
        let img = image(json!({"Env": ["A=1", "B=2"], "Cmd": ["x"]}));
        let run = RunConfig {
            env: vec!["B=3".into(), "FROM_HOST".into(), "UNSET".into()],
            hostname: "c1".into(),
            ..RunConfig::default()
        };
        let host = |k: &str| (k == "FROM_HOST").then(|| "h".to_string());
        let env = environment(&img, &run, &host);
        assert_eq!(
            env,
            [DEFAULT_PATH, "HOSTNAME=c1", "A=1", "B=3", "FROM_HOST=h"]
        );
        let img = image(json!({"Env": ["PATH=/x"], "Cmd": ["x"]}));
        assert_eq!(
            environment(&img, &RunConfig::default(), &no_host)[1],
            "PATH=/x"
        );
    }

    #[test]
    fn users_resolve_in_the_image() {
        let t = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(t.path().join("etc")).expect("mkdir");
        std::fs::write(
            t.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33::/var/www:/bin/false\n",
        )
        .expect("passwd");
        std::fs::write(
            t.path().join("etc/group"),
            "root:x:0:\nwww:x:33:\nlogs:x:4:www,root\n",
        )
        .expect("group");
        assert_eq!(
            resolve_user(t.path(), "www").expect("www"),
            (33, 33, vec![4])
        );
        assert_eq!(
            resolve_user(t.path(), "www:logs").expect("www:logs"),
            (33, 4, vec![])
        );
        assert_eq!(
            resolve_user(t.path(), "1000").expect("numeric"),
            (1000, 0, vec![])
        );
        assert_eq!(
            resolve_user(t.path(), "1000:1000").expect("numeric"),
            (1000, 1000, vec![])
        );
        let err = resolve_user(t.path(), "nobody")
            .expect_err("unknown")
            .to_string();
        assert!(err.contains("/etc/passwd"), "{err}");
        assert!(resolve_user(t.path(), "www:nogroup").is_err());
    }

    #[test]
    fn passwd_is_read_inside_the_rootfs_even_through_links() {
        let t = tempfile::tempdir().expect("tempdir");
        let rootfs = t.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).expect("mkdir");
        // A link to the host's passwd must mean the image's own /etc/passwd (absent here).
        std::os::unix::fs::symlink("/etc/passwd", rootfs.join("etc/passwd")).expect("link");
        assert!(resolve_user(&rootfs, "root").is_err());
    }

    #[test]
    fn spec_carries_process_network_and_volumes() {
        let t = tempfile::tempdir().expect("tempdir");
        let img = image(json!({"Cmd": ["echo", "hi"], "WorkingDir": "/srv"}));
        let run = RunConfig {
            network: Network::None,
            volumes: vec![Volume::parse("/data:/mnt/data:ro").expect("volume")],
            hostname: "c1".into(),
            ..RunConfig::default()
        };
        let spec = spec(&img, &run, t.path(), &no_host).expect("spec");
        let v = serde_json::to_value(&spec).expect("json");
        assert_eq!(v["process"]["args"], json!(["echo", "hi"]));
        assert_eq!(v["process"]["cwd"], "/srv");
        assert_eq!(v["hostname"], "c1");
        let namespaces = v["linux"]["namespaces"].as_array().expect("namespaces");
        assert!(namespaces.iter().any(|n| n["type"] == "network"));
        let mounts = v["mounts"].as_array().expect("mounts");
        assert!(mounts.iter().any(|m| m["destination"] == "/mnt/data"
            && m["options"]
                .as_array()
                .is_some_and(|o| o.contains(&json!("ro")))));
        let host = spec_for_host(&img, t.path());
        assert!(!host["linux"]["namespaces"]
            .as_array()
            .expect("namespaces")
            .iter()
            .any(|n| n["type"] == "network"));
    }

    #[test]
    fn a_rootless_spec_maps_the_container_user_onto_the_caller() {
        let t = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(t.path().join("etc")).expect("mkdir");
        std::fs::write(t.path().join("etc/passwd"), "www:x:33:44::/:/bin/sh\n").expect("passwd");
        std::fs::write(t.path().join("etc/group"), "www:x:44:\nlogs:x:50:www\n").expect("group");
        let img = image(json!({"Cmd": ["id"], "User": "www"}));
        let run = RunConfig {
            network: Network::Host,
            rootless: Some(HostUser {
                uid: 1000,
                gid: 1001,
            }),
            ..RunConfig::default()
        };
        let v = serde_json::to_value(spec(&img, &run, t.path(), &no_host).expect("spec"))
            .expect("json");
        let namespaces = v["linux"]["namespaces"].as_array().expect("namespaces");
        assert!(namespaces.iter().any(|n| n["type"] == "user"));
        assert!(!namespaces.iter().any(|n| n["type"] == "network"));
        assert_eq!(
            v["linux"]["uidMappings"],
            json!([{"containerID": 33, "hostID": 1000, "size": 1}])
        );
        assert_eq!(
            v["linux"]["gidMappings"],
            json!([{"containerID": 44, "hostID": 1001, "size": 1}])
        );
        assert_eq!(v["process"]["user"]["uid"], 33);
        assert_eq!(v["process"]["user"]["additionalGids"], json!([]));
        assert!(
            v["linux"]["resources"].is_null(),
            "no cgroup limits without privilege"
        );
        let sys = v["mounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .find(|m| m["destination"] == "/sys")
            .expect("/sys");
        assert_eq!(sys["source"], "/sys");

        let none = RunConfig {
            network: Network::None,
            ..run
        };
        let v = serde_json::to_value(spec(&img, &none, t.path(), &no_host).expect("spec"))
            .expect("json");
        let namespaces = v["linux"]["namespaces"].as_array().expect("namespaces");
        assert!(namespaces.iter().any(|n| n["type"] == "network"));
    }

    fn spec_for_host(img: &ImageConfiguration, rootfs: &Path) -> Value {
        let run = RunConfig {
            network: Network::Host,
            ..RunConfig::default()
        };
        serde_json::to_value(spec(img, &run, rootfs, &no_host).expect("spec")).expect("json")
    }

    #[test]
    fn volumes_must_be_well_formed() {
        for bad in ["relative:/x", "/x:relative", "/x", "/x:/y:rx", "/x:/y:ro:z"] {
            assert!(Volume::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Volume::parse("/a:/b").expect("ok"),
            Volume {
                source: "/a".into(),
                destination: "/b".into(),
                read_only: false
            }
        );
    }
}
