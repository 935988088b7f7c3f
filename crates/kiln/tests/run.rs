//! `kiln run` end to end: a busybox image imported offline, run by runc.

mod common;

use common::Env;

/// Running containers needs root (mounts, namespaces); in CI its absence is a failure.
fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        assert!(std::env::var_os("CI").is_none(), "kiln run tests need root");
        eprintln!("skipped: kiln run needs root");
    }
    root
}

/// `kiln run ARGS`: exit code, stdout, stderr.
fn run(env: &Env, args: &[&str]) -> (i32, String, String) {
    let mut full = vec!["run"];
    full.extend_from_slice(args);
    kiln(env, &full)
}

#[test]
fn busybox_runs_prints_and_reports_exit_codes() {
    if !require_root() {
        return;
    }
    common::which("runc");
    let env = Env::new();
    env.busybox_image("busybox:test");
    let (code, out, err) = run(&env, &["--rm", "busybox:test", "echo", "hello from kiln"]);
    assert_eq!((code, out.as_str()), (0, "hello from kiln\n"), "{err}");

    let (code, _, err) = run(&env, &["--rm", "busybox:test", "sh", "-c", "exit 3"]);
    assert_eq!(code, 3, "{err}");

    let (code, out, err) = run(
        &env,
        &[
            "--rm",
            "-e",
            "GREETING=hi",
            "-w",
            "/bin",
            "busybox:test",
            "sh",
            "-c",
            "echo $GREETING; pwd; echo $PATH",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "hi\n/bin\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
    );

    // A bind mount, read-only.
    let data = env.path("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::write(data.join("note"), "from the host").expect("write");
    let volume = format!("{}:/data:ro", data.display());
    let (code, out, err) = run(
        &env,
        &[
            "--rm",
            "-v",
            &volume,
            "busybox:test",
            "sh",
            "-c",
            "cat /data/note; echo x > /data/new",
        ],
    );
    assert_ne!(code, 0, "writing a read-only volume must fail: {out}{err}");
    assert!(out.starts_with("from the host"), "{out}{err}");
    assert!(!data.join("new").exists());

    // --network none: only loopback.
    let (code, out, err) = run(
        &env,
        &[
            "--rm",
            "--network",
            "none",
            "busybox:test",
            "ls",
            "/sys/class/net",
        ],
    );
    assert_eq!((code, out.trim()), (0, "lo"), "{err}");

    // No container is left behind: no bundle, no overlay mount.
    let containers = env.root().join("runtime/containers");
    let left: Vec<_> = std::fs::read_dir(&containers)
        .map(|d| d.filter_map(|e| e.ok()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
    assert!(
        !mounts.contains(&containers.display().to_string()),
        "{mounts}"
    );

    // Without --rm the container is kept, stopped, until `rm`.
    let (code, _, err) = run(
        &env,
        &["--name", "kept", "busybox:test", "sh", "-c", "exit 5"],
    );
    assert_eq!(code, 5, "{err}");
    let out = env.ok(&[
        "inspect",
        "kept",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}} {{.Name}}",
    ]);
    assert_eq!(out, "exited 5 /kept\n");
    let ps = env.ok(&["ps", "-a"]);
    assert!(ps.contains("Exited (5)"), "{ps}");
    env.ok(&["rm", "kept"]);
    assert!(!env.ok(&["ps", "-a"]).contains("kept"));

    // Errors of kiln's own exit 125, as docker's.
    let (code, _, err) = run(&env, &["--rm", "busybox:test", "--no-such-image-flag"]);
    assert_ne!(code, 0, "{err}");
    let (code, _, err) = run(&env, &["--rm", "nosuch:image", "true"]);
    assert_eq!(code, 125, "{err}");
}

/// `kiln ARGS`: exit code, stdout, stderr.
fn kiln(env: &Env, args: &[&str]) -> (i32, String, String) {
    let out = env.cmd(args).output().expect("run kiln");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn detached_httpd_serves_execs_logs_stops_and_is_removed() {
    if !require_root() {
        return;
    }
    common::which("runc");
    let env = Env::new();
    env.busybox_image("busybox:test");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let script = format!(
        "mkdir -p /www && echo served-by-kiln > /www/index.html && echo started && echo to-stderr >&2 && exec httpd -f -p 127.0.0.1:{port} -h /www"
    );
    let (code, out, err) = kiln(
        &env,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "--runtime",
            "runc",
            "busybox:test",
            "sh",
            "-c",
            &script,
        ],
    );
    assert_eq!((code, out.trim()), (0, "web"), "{err}");

    // It answers on the host network.
    let started = std::time::Instant::now();
    let body = loop {
        let (code, out, _) = kiln(
            &env,
            &[
                "exec",
                "web",
                "wget",
                "-q",
                "-O-",
                &format!("http://127.0.0.1:{port}/"),
            ],
        );
        if code == 0 {
            break out;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "httpd never answered"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(body, "served-by-kiln\n");
    let mut host =
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("reachable from the host");
    use std::io::{Read, Write};
    host.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("request");
    let mut reply = String::new();
    host.read_to_string(&mut reply).expect("reply");
    assert!(reply.contains("served-by-kiln"), "{reply}");

    let (code, out, _) = kiln(&env, &["exec", "web", "sh", "-c", "exit 4"]);
    assert_eq!(code, 4, "{out}");

    let (_, ps, _) = kiln(&env, &["ps"]);
    assert!(
        ps.lines()
            .nth(1)
            .is_some_and(|l| l.contains("Up ") && l.ends_with("web")),
        "{ps}"
    );

    // Stop (httpd as PID 1 takes SIGTERM); logs stay readable afterwards.
    let (code, _, err) = kiln(&env, &["stop", "-t", "5", "web"]);
    assert_eq!(code, 0, "{err}");
    let (_, ps, _) = kiln(&env, &["ps", "-a"]);
    assert!(ps.contains("Exited ("), "{ps}");
    let (_, ps_running, _) = kiln(&env, &["ps", "-q"]);
    assert!(ps_running.trim().is_empty(), "{ps_running}");
    let (code, out, err) = kiln(&env, &["logs", "web"]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (0, "started\n", "to-stderr\n")
    );
    let log = std::fs::read_to_string(env.root().join("runtime/containers/web/container.log"))
        .expect("CRI log");
    for line in log.lines() {
        let parts: Vec<&str> = line.splitn(4, ' ').collect();
        assert!(
            parts.len() == 4
                && parts[0].ends_with('Z')
                && ["stdout", "stderr"].contains(&parts[1])
                && parts[2] == "F",
            "{line}"
        );
    }

    let (code, _, err) = kiln(&env, &["rm", "web"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = kiln(&env, &["logs", "web"]);
    assert_ne!(code, 0);
    assert!(err.contains("No such container"), "{err}");
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
    assert!(
        !mounts.contains(&env.root().join("runtime").display().to_string()),
        "{mounts}"
    );
}

#[test]
fn logs_follow_until_the_container_ends() {
    if !require_root() {
        return;
    }
    common::which("runc");
    let env = Env::new();
    env.busybox_image("busybox:test");
    let (code, _, err) = kiln(
        &env,
        &[
            "run",
            "-d",
            "--name",
            "ticker",
            "busybox:test",
            "sh",
            "-c",
            "for i in 1 2 3; do echo tick $i; sleep 0.3; done",
        ],
    );
    assert_eq!(code, 0, "{err}");
    // Started right away: follows the lines as they come and returns when the container ends.
    let started = std::time::Instant::now();
    let (code, out, err) = kiln(&env, &["logs", "-f", "ticker"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "tick 1\ntick 2\ntick 3\n");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(400),
        "did not wait for the output"
    );
    let (_, out, _) = kiln(&env, &["logs", "--tail", "1", "ticker"]);
    assert_eq!(out, "tick 3\n");
    let (code, _, err) = kiln(&env, &["rm", "ticker"]);
    assert_eq!(code, 0, "{err}");
}

/// Runs `kiln ARGS` under a pseudo-terminal (util-linux `script`), feeding `input`.
fn kiln_on_terminal(env: &Env, args: &str, input: &str) -> (i32, String) {
    use std::io::Write;
    let command = format!("{} {args}", common::kiln_bin());
    let mut child = std::process::Command::new(common::which("script"))
        .args(["-qec", &command, "/dev/null"])
        .env("KILN_ROOT", env.root())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("input");
    let out = child.wait_with_output().expect("script");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn terminals_for_run_and_exec() {
    if !require_root() {
        return;
    }
    common::which("runc");
    let env = Env::new();
    env.busybox_image("busybox:test");
    let (code, out) = kiln_on_terminal(&env, "run --rm -t busybox:test sh -c 'tty; exit 7'", "");
    assert_eq!(code, 7, "{out}");
    assert!(out.contains("/dev/pts/"), "{out}");

    let (code, _, err) = kiln(
        &env,
        &["run", "-d", "--name", "box", "busybox:test", "sleep", "30"],
    );
    assert_eq!(code, 0, "{err}");
    let (code, out) = kiln_on_terminal(&env, "exec -it box sh", "echo typed-$((40+2))\nexit 9\n");
    assert_eq!(code, 9, "{out}");
    assert!(out.contains("typed-42"), "{out}");
    let (code, _, err) = kiln(&env, &["rm", "-f", "box"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn an_unprivileged_user_runs_containers_in_a_user_namespace() {
    use std::os::unix::process::CommandExt;
    if !require_root() {
        return;
    }
    common::which("runc");
    let env = Env::new();
    env.busybox_image("busybox:test");
    // Hand the store over to an unprivileged user, who then works with it alone.
    let nobody = 65534;
    common::sh(
        std::process::Command::new("chown")
            .arg("-R")
            .arg(format!("{nobody}:{nobody}"))
            .arg(env.dir.path()),
    );
    std::fs::set_permissions(
        env.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let as_user = |args: &[&str]| {
        let out = env
            .cmd(args)
            .uid(nobody)
            .gid(nobody)
            .env("HOME", env.dir.path())
            .output()
            .expect("run kiln");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // Root inside, the caller outside.
    let (code, out, err) = as_user(&[
        "run",
        "--rm",
        "busybox:test",
        "sh",
        "-c",
        "cat /proc/self/uid_map; echo written > /f && cat /f",
    ]);
    assert_eq!(code, 0, "{err}");
    let map: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(map, ["0", "65534", "1"], "{out}");
    assert!(out.ends_with("written\n"), "{out}");

    let (code, _, err) = as_user(&["run", "--rm", "busybox:test", "sh", "-c", "exit 4"]);
    assert_eq!(code, 4, "{err}");

    // The whole life of a detached container.
    let (code, _, err) = as_user(&[
        "run",
        "-d",
        "--name",
        "idle",
        "busybox:test",
        "sleep",
        "300",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = as_user(&["exec", "idle", "cat", "/proc/self/uid_map"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.split_whitespace().eq(["0", "65534", "1"]), "{out}");
    let (code, out, err) = as_user(&["ps"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("idle"), "{out}");
    let (code, _, err) = as_user(&["stop", "-t", "1", "idle"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = as_user(&["rm", "idle"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = as_user(&["ps", "-a"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("idle"), "{out}");
}

/// Three layers over busybox: files, then a whiteout and an opaque directory, then an
/// addition. The container sees the merged result, through overlayfs or a copy.
#[test]
fn layers_whiteouts_and_opaque_directories_merge() {
    if !require_root() {
        return;
    }
    common::which("runc");
    let env = Env::new();
    let busybox = std::fs::read(env.busybox_rootfs()).expect("busybox tarball");
    let layer = |name: &str, files: &[&str]| {
        let tree = env.path(name);
        for file in files {
            let path = tree.join(file);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, name).expect("write");
        }
        common::tar_of(&tree, &env.path(&format!("{name}.tar")))
    };
    let first = layer(
        "first",
        &["data/keep", "data/gone", "opaque/old", "opaque/sub/deep"],
    );
    let second = layer(
        "second",
        &["data/.wh.gone", "opaque/.wh..wh..opq", "opaque/new"],
    );
    let third = layer("third", &["data/added"]);
    let layout = env.path("layout");
    common::write_tar_layout(&layout, "layers", &[&busybox, &first, &second, &third]);
    env.ok(&[
        "image",
        "import",
        &format!("oci:{}:layers", layout.display()),
        "-t",
        "layers:test",
    ]);
    let (code, out, err) = run(
        &env,
        &[
            "--rm",
            "layers:test",
            "sh",
            "-c",
            "ls -a /data /opaque; cat /data/keep /opaque/new",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "/data:\n.\n..\nadded\nkeep\n\n/opaque:\n.\n..\nnew\nfirstsecond"
    );
}
