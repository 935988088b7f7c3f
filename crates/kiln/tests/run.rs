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

fn run(env: &Env, args: &[&str]) -> (i32, String, String) {
    let mut full = vec!["run"];
    full.extend_from_slice(args);
    let out = env.cmd(&full).output().expect("run kiln");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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

    // Errors of kiln's own exit 125, as docker's.
    let (code, _, err) = run(&env, &["--rm", "busybox:test", "--no-such-image-flag"]);
    assert_ne!(code, 0, "{err}");
    let (code, _, err) = run(&env, &["--rm", "nosuch:image", "true"]);
    assert_eq!(code, 125, "{err}");
}
