//! `kiln build` end to end: Dockerfiles built on a busybox base imported offline, the images
//! run by `kiln run` and podman, pushed to kiln's registry.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::Env;

const BASE: &str = "localhost/busybox:base";

/// Building runs steps in overlay filesystems and containers: root only. In CI its absence
/// is a failure.
fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "kiln build tests need root"
        );
        eprintln!("skipped: kiln build needs root");
    }
    root
}

/// A store with the busybox base image, and a context directory.
fn setup() -> Env {
    common::which("runc");
    let env = Env::new();
    env.busybox_image(BASE);
    fs::create_dir_all(env.path("ctx")).expect("mkdir");
    env
}

fn write(env: &Env, rel: &str, text: &str) {
    let path = env.path("ctx").join(rel);
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, text).expect("write");
}

fn ctx(env: &Env) -> String {
    env.path("ctx").display().to_string()
}

/// `kiln build --progress plain ARGS CONTEXT`: the output, insisting on success.
fn build(env: &Env, args: &[&str]) -> String {
    let c = ctx(env);
    let mut full = vec!["build", "--progress", "plain"];
    full.extend_from_slice(args);
    full.push(&c);
    let out = env.run(&full);
    assert!(
        out.status.success(),
        "kiln {full:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What `kiln run --rm IMAGE ARGS...` prints.
fn run(env: &Env, image: &str, args: &[&str]) -> String {
    let mut full = vec!["run", "--rm", image];
    full.extend_from_slice(args);
    env.ok(&full)
}

fn inspect(env: &Env, image: &str, format: &str) -> String {
    env.ok(&["inspect", image, "--format", format])
        .trim()
        .to_string()
}

/// The step titles that were cached and those that ran, from plain output.
fn steps(output: &str) -> (Vec<String>, Vec<String>) {
    let mut titles = std::collections::BTreeMap::new();
    let mut cached = Vec::new();
    let mut ran = Vec::new();
    for line in output.lines() {
        let Some(rest) = line.strip_prefix('#') else {
            continue;
        };
        let Some((n, text)) = rest.split_once(' ') else {
            continue;
        };
        if text.starts_with('[') {
            titles.insert(n.to_string(), text.to_string());
        } else if text == "CACHED" {
            cached.push(titles[n].clone());
        } else if text.starts_with("DONE") {
            if let Some(t) = titles.get(n) {
                if !t.contains(" FROM ") && !t.starts_with("[internal]") {
                    ran.push(t.clone());
                }
            }
        }
    }
    (cached, ran)
}

#[test]
fn a_multi_stage_image_is_smaller_and_dockerignore_keeps_files_out() {
    if !require_root() {
        return;
    }
    let env = setup();
    // A "toolchain" the build needs and the result does not.
    let tool: String = (0..60_000).map(|i| format!("{i:08x}\n")).collect();
    write(&env, "toolchain/compiler.bin", &tool);
    write(&env, "main.src", "source code\n");
    write(&env, "secret.key", "do not ship\n");
    write(&env, "notes/draft.md", "draft\n");
    write(&env, "notes/keep.md", "kept\n");
    write(&env, ".dockerignore", "*.key\nnotes/\n!notes/keep.md\n");
    write(
        &env,
        "Dockerfile.single",
        &format!(
            "FROM {BASE}\nWORKDIR /src\nCOPY . .\nRUN cat main.src > /app.out\nCMD [\"cat\", \"/app.out\"]\n"
        ),
    );
    write(
        &env,
        "Dockerfile.multi",
        &format!(
            "FROM {BASE} AS build\nWORKDIR /src\nCOPY . .\nRUN cat main.src > /app.out\n\
             FROM {BASE}\nCOPY --from=build /app.out /app.out\nCMD [\"cat\", \"/app.out\"]\n"
        ),
    );
    let df = |name: &str| env.path("ctx").join(name).display().to_string();
    build(&env, &["-f", &df("Dockerfile.single"), "-t", "app:single"]);
    build(&env, &["-f", &df("Dockerfile.multi"), "-t", "app:multi"]);
    assert_eq!(run(&env, "app:single", &[]), "source code\n");
    assert_eq!(run(&env, "app:multi", &[]), "source code\n");
    let size = |image: &str| -> u64 { inspect(&env, image, "{{.Size}}").parse().expect("size") };
    assert!(
        size("app:multi") < size("app:single"),
        "multi-stage {} should be smaller than single-stage {}",
        size("app:multi"),
        size("app:single")
    );
    let listed = run(
        &env,
        "app:single",
        &["sh", "-c", "cd /src && ls -a . notes"],
    );
    assert!(listed.contains("main.src"), "{listed}");
    assert!(
        listed.contains("keep.md"),
        "an exception re-includes: {listed}"
    );
    assert!(!listed.contains("secret.key"), "{listed}");
    assert!(!listed.contains("draft.md"), "{listed}");
    // The multi-stage image holds no trace of the toolchain.
    let out = run(&env, "app:multi", &["sh", "-c", "ls /src 2>&1 || true"]);
    assert!(out.contains("No such file"), "{out}");
}

/// A registry on a free loopback port, stopped when dropped.
struct Registry {
    child: Child,
    host: String,
}

impl Registry {
    fn start(env: &Env) -> Registry {
        let mut child = Command::new(common::kiln_bin())
            .args(["registry", "serve", "--addr", "127.0.0.1:0", "--root"])
            .arg(env.path("registry"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kiln registry");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("listening line");
        let address = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        let host = address
            .strip_prefix("http://")
            .unwrap_or(address)
            .to_string();
        Registry { child, host }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn changing_the_app_rebuilds_only_the_last_steps_and_pushes_only_new_layers() {
    if !require_root() {
        return;
    }
    let env = setup();
    let registry = Registry::start(&env);
    write(&env, "deps.txt", "flask\n");
    write(&env, "app.py", "print('v1')\n");
    write(
        &env,
        "Dockerfile",
        &format!(
            "FROM {BASE}\nWORKDIR /app\nCOPY deps.txt .\nRUN cp deps.txt installed.txt\n\
             COPY app.py .\nRUN cat app.py > built.txt\nCMD [\"cat\", \"/app/built.txt\"]\n"
        ),
    );
    let name = format!("{}/team/app", registry.host);
    // Short IDs of what a push lists: every layer and the config.
    let blobs = |image: &str| -> std::collections::BTreeSet<String> {
        inspect(
            &env,
            image,
            "{{range .Manifest.Layers}}{{.Digest}} {{end}}{{.Id}}",
        )
        .split_whitespace()
        .map(|d| d.trim_start_matches("sha256:")[..12].to_string())
        .collect()
    };
    let pushed_ids = |out: &str, status: &str| -> std::collections::BTreeSet<String> {
        out.lines()
            .filter_map(|l| l.strip_suffix(status))
            .map(|id| id.trim_end_matches(": ").to_string())
            .collect()
    };
    let first = build(&env, &["-t", &format!("{name}:1")]);
    let (cached, ran) = steps(&first);
    assert!(cached.is_empty(), "{first}");
    assert_eq!(ran.len(), 5, "{first}");
    let v1 = blobs(&format!("{name}:1"));
    // The base layer, one per step that changed files, and the config.
    assert_eq!(v1.len(), 7, "{v1:?}");
    let pushed = env.ok(&["push", &format!("{name}:1")]);
    assert_eq!(pushed_ids(&pushed, "Pushed"), v1, "{pushed}");

    // The same build again: every step from the cache, the same image.
    let again = build(&env, &["-t", &format!("{name}:1")]);
    assert_eq!(steps(&again).0.len(), 5, "{again}");
    assert_eq!(blobs(&format!("{name}:1")), v1);

    write(&env, "app.py", "print('v2')\n");
    let second = build(&env, &["-t", &format!("{name}:2")]);
    let (cached, ran) = steps(&second);
    assert_eq!(
        cached,
        vec![
            "[2/6] WORKDIR /app".to_string(),
            "[3/6] COPY deps.txt .".to_string(),
            "[4/6] RUN cp deps.txt installed.txt".to_string()
        ],
        "{second}"
    );
    assert_eq!(
        ran,
        vec![
            "[5/6] COPY app.py .".to_string(),
            "[6/6] RUN cat app.py > built.txt".to_string()
        ],
        "{second}"
    );
    assert_eq!(run(&env, &format!("{name}:2"), &[]), "print('v2')\n");
    let v2 = blobs(&format!("{name}:2"));
    let new: std::collections::BTreeSet<String> = v2.difference(&v1).cloned().collect();
    // Two layers and the config are new; the base and three cached layers are not.
    assert_eq!(new.len(), 3, "{v1:?} {v2:?}");
    let pushed = env.ok(&["push", &format!("{name}:2")]);
    assert_eq!(pushed_ids(&pushed, "Pushed"), new, "{pushed}");
    assert_eq!(
        pushed_ids(&pushed, "Layer already exists").len(),
        4,
        "{pushed}"
    );

    // --push: built and uploaded in one command; ADD of a URL downloads it.
    write(
        &env,
        "Dockerfile",
        &format!(
            "FROM {BASE}\nADD http://{}/v2/ /api-root.json\nCMD [\"cat\", \"/api-root.json\"]\n",
            registry.host
        ),
    );
    let id = env.ok(&[
        "build",
        "-q",
        "--push",
        "-t",
        &format!("{name}:3"),
        &ctx(&env),
    ]);
    assert_eq!(id.trim(), inspect(&env, &format!("{name}:3"), "{{.Id}}"));
    let fresh = Env::new();
    fresh.ok(&["pull", &format!("{name}:3")]);
    assert_eq!(run(&fresh, &format!("{name}:3"), &[]), "{}");
    assert_eq!(
        run(
            &fresh,
            &format!("{name}:3"),
            &["stat", "-c", "%a", "/api-root.json"]
        ),
        "600\n"
    );
}

#[test]
fn the_same_source_date_epoch_gives_the_same_digest() {
    if !require_root() {
        return;
    }
    let digest_in = |env: &Env, compression: &str| -> String {
        let mut c = env.cmd(&[
            "build",
            "-q",
            "--compression",
            compression,
            "-t",
            "repro:1",
            &ctx(env),
        ]);
        let out = c
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .expect("build");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        inspect(env, "repro:1", "{{.Descriptor.digest}}")
    };
    let make = || {
        let env = Env::new();
        let tarball = env.busybox_rootfs();
        let out = env
            .cmd(&[
                "image",
                "import-rootfs",
                tarball.to_str().expect("utf-8"),
                BASE,
                "--cmd",
                "[\"sh\"]",
            ])
            .env("SOURCE_DATE_EPOCH", "0")
            .output()
            .expect("import");
        assert!(out.status.success());
        write(&env, "a.txt", "same input\n");
        write(
            &env,
            "Dockerfile",
            &format!(
                "FROM {BASE}\nWORKDIR /w\nCOPY a.txt .\nRUN mkdir -p /var/x && echo hi > /var/x/y\nENV A=1\n"
            ),
        );
        env
    };
    let a = make();
    let first = digest_in(&a, "gzip");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = make();
    assert_eq!(digest_in(&b, "gzip"), first);
    // zstd layers: a different image, read back by kiln's runtime.
    let z = digest_in(&b, "zstd");
    assert_ne!(z, first);
    assert_eq!(run(&b, "repro:1", &["cat", "/var/x/y"]), "hi\n");
    let media = inspect(
        &b,
        "repro:1",
        "{{range .Manifest.Layers}}{{.MediaType}} {{end}}",
    );
    assert!(media.ends_with("tar+zstd"), "{media}");
}

#[test]
fn podman_runs_images_kiln_built() {
    if !require_root() {
        return;
    }
    let env = setup();
    common::which("podman");
    write(&env, "msg", "built by kiln\n");
    write(
        &env,
        "Dockerfile",
        &format!(
            "FROM {BASE}\nCOPY msg /msg\nRUN echo ok > /ran\nCMD [\"cat\", \"/msg\", \"/ran\"]\n"
        ),
    );
    // podman names an oci: image after its path, which must be lower case.
    let lower = std::path::PathBuf::from(format!("/tmp/kiln-build-podman-{}", std::process::id()));
    for compression in ["gzip", "zstd"] {
        let layout = lower.join(format!("layout-{compression}"));
        build(
            &env,
            &[
                "-t",
                &format!("podman-test:{compression}"),
                "--compression",
                compression,
                "--output",
                &format!("type=oci,dest={}", layout.display()),
            ],
        );
        let podman = Command::new("podman")
            .arg("--root")
            .arg(env.path("podman-root"))
            .arg("--runroot")
            .arg(env.path("podman-run"))
            .args([
                "--runtime",
                "runc",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
                "run",
                "--rm",
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=4096:4096",
            ])
            .arg(format!("oci:{}", layout.display()))
            .output()
            .expect("podman");
        assert!(
            podman.status.success(),
            "{compression}: {}",
            String::from_utf8_lossy(&podman.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&podman.stdout),
            "built by kiln\nok\n",
            "{compression}"
        );
    }
    let _ = fs::remove_dir_all(&lower);
}

#[test]
fn a_failing_run_shows_its_output_and_exit_code_and_tags_nothing() {
    if !require_root() {
        return;
    }
    let env = setup();
    write(
        &env,
        "Dockerfile",
        &format!(
            "FROM {BASE}\nRUN echo preparing\nRUN echo on stdout; echo on stderr >&2; exit 3\nCMD [\"sh\"]\n"
        ),
    );
    for style in ["plain", "tty"] {
        let c = ctx(&env);
        let out = env.run(&["build", "--progress", style, "-t", "broken:1", &c]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("on stdout"), "{style}: {err}");
        assert!(err.contains("on stderr"), "{style}: {err}");
        assert!(err.contains("Dockerfile:3"), "{style}: {err}");
        assert!(
            err.contains(
                "process \"/bin/sh -c echo on stdout; echo on stderr >&2; exit 3\" did not complete successfully: exit code: 3"
            ),
            "{style}: {err}"
        );
    }
    assert!(
        !env.run(&["inspect", "broken:1"]).status.success(),
        "a failed build must not tag"
    );

    for (text, line, message) in [
        ("FROM busybox\nRUNN echo\n", 2, "unknown instruction: RUNN"),
        (
            "FROM busybox\nCOPY\n",
            2,
            "COPY requires at least two arguments",
        ),
        ("RUN echo\n", 1, "no build stage in current context"),
        (
            "FROM busybox\nRUN <<EOF\necho never ends\n",
            2,
            "unterminated heredoc",
        ),
    ] {
        write(&env, "Dockerfile", text);
        let c = ctx(&env);
        let out = env.run(&["build", &c]);
        assert!(!out.status.success(), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("Dockerfile:{line}:")) && err.contains(message),
            "{text:?}: {err}"
        );
    }
    write(
        &env,
        "Dockerfile",
        &format!("FROM {BASE}\nCOPY missing.txt /\n"),
    );
    let c = ctx(&env);
    let err = String::from_utf8_lossy(&env.run(&["build", &c]).stderr).into_owned();
    assert!(
        err.contains("Dockerfile:2") && err.contains("missing.txt") && err.contains("not found"),
        "{err}"
    );
}

fn tar_with(env: &Env, name: &str, files: &[(&str, &str)]) {
    let dir = env.path(&format!("{name}.tree"));
    for (path, text) in files {
        let p = dir.join(path);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, text).expect("write");
    }
    let status = Command::new("tar")
        .arg("-czf")
        .arg(env.path("ctx").join(name))
        .arg("-C")
        .arg(&dir)
        .arg(".")
        .status()
        .expect("tar");
    assert!(status.success());
}

#[test]
fn instructions_and_flags_do_what_docker_does() {
    if !require_root() {
        return;
    }
    let env = setup();
    tar_with(
        &env,
        "bundle.tar.gz",
        &[("lib/one.txt", "1\n"), ("two.txt", "2\n")],
    );
    write(&env, "app.sh", "echo app\n");
    write(&env, "secret.txt", "s3cret\n");
    write(&env, "docs/guide.md", "guide\n");
    write(&env, "docs/api/ref.md", "ref\n");
    write(&env, "docs/api/schema.json", "{}\n");
    write(
        &env,
        "Dockerfile",
        &format!(
            r#"# syntax=docker/dockerfile:1
ARG BASE={BASE}
FROM ${{BASE}} AS tools
RUN mkdir -p /tools && echo tool > /tools/t.txt

FROM ${{BASE}} AS unused
RUN echo this stage is never built > /never && exit 1

FROM ${{BASE}}
ARG VERSION=0.1
ARG FLAVOR
ENV APP_HOME=/srv/app \
    GREETING="hello world"
LABEL org.example.version=$VERSION maintainer="kiln"
WORKDIR $APP_HOME
ADD bundle.tar.gz /opt/bundle/
COPY --chmod=0755 --chown=1000:1000 app.sh ./bin/
COPY --from=tools /tools/t.txt /opt/
COPY --exclude=**/*.md docs /docs
COPY --parents docs/api/schema.json app.sh /p/
COPY <<EOF /etc/motd
welcome to ${{VERSION}} ($FLAVOR)
EOF
RUN <<EOF
echo "version $VERSION flavor $FLAVOR" > /build-info
echo "$GREETING" >> /build-info
EOF
RUN --mount=type=cache,target=/cache echo x >> /cache/count && wc -l < /cache/count > /cache-count
RUN --mount=type=bind,from=tools,source=/tools,target=/mnt cat /mnt/t.txt > /via-bind
RUN --mount=type=secret,id=token cat /run/secrets/token > /leaked-length-only && wc -c < /leaked-length-only > /secret-len && rm /leaked-length-only
RUN --mount=type=tmpfs,target=/scratch touch /scratch/x && ls /scratch > /tmpfs-seen
USER 1000:1000
EXPOSE 8080 9090/udp
VOLUME /data
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --retries=2 CMD ["true"]
ENTRYPOINT ["sh", "-c"]
CMD ["cat /build-info"]
"#
        ),
    );
    let secret = env.path("ctx").join("secret.txt");
    let out = env.run(&[
        "build",
        "-q",
        "--build-arg",
        "FLAVOR=blue",
        "--label",
        "extra=yes",
        "--secret",
        &format!("id=token,src={}", secret.display()),
        "-t",
        "features:1",
        "-t",
        "features:latest",
        &ctx(&env),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // -q prints the image ID and nothing else.
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(id, inspect(&env, "features:1", "{{.Id}}"));
    assert_eq!(id, inspect(&env, "features:latest", "{{.Id}}"));

    assert_eq!(
        run(&env, "features:1", &[]),
        "version 0.1 flavor blue\nhello world\n"
    );
    let check = |cmd: &str| run(&env, "features:1", &[cmd]);
    assert_eq!(check("pwd"), "/srv/app\n");
    assert_eq!(check("id -u"), "1000\n");
    assert_eq!(
        check("cat /opt/bundle/lib/one.txt /opt/bundle/two.txt"),
        "1\n2\n"
    );
    assert_eq!(check("cat /opt/t.txt /via-bind"), "tool\ntool\n");
    assert_eq!(
        check("cd /docs && ls -R"),
        ".:\napi\n\n./api:\nschema.json\n"
    );
    assert_eq!(
        check("cat /p/docs/api/schema.json /p/app.sh"),
        "{}\necho app\n"
    );
    assert_eq!(check("cat /etc/motd"), "welcome to 0.1 (blue)\n");
    assert_eq!(check("cat /secret-len"), "7\n");
    assert_eq!(check("ls /run/secrets 2>/dev/null | wc -l"), "0\n");
    assert_eq!(
        check("cat /tmpfs-seen; ls /scratch 2>/dev/null | wc -l"),
        "x\n0\n"
    );
    assert_eq!(
        check("cat /cache-count; ls /cache 2>/dev/null | wc -l"),
        "1\n0\n"
    );
    assert_eq!(
        check("stat -c '%a %u:%g' /srv/app/bin/app.sh"),
        "755 1000:1000\n"
    );
    let labels = inspect(&env, "features:1", "{{json .Config.Labels}}");
    assert!(
        labels.contains("\"org.example.version\":\"0.1\""),
        "{labels}"
    );
    assert!(labels.contains("\"maintainer\":\"kiln\""), "{labels}");
    assert!(labels.contains("\"extra\":\"yes\""), "{labels}");
    let ports = inspect(&env, "features:1", "{{json .Config.ExposedPorts}}");
    assert_eq!(ports, r#"{"8080/tcp":{},"9090/udp":{}}"#);
    assert_eq!(
        inspect(&env, "features:1", "{{json .Config.Volumes}}"),
        r#"{"/data":{}}"#
    );
    assert_eq!(
        inspect(&env, "features:1", "{{.Config.StopSignal}}"),
        "SIGTERM"
    );

    // A cache mount outlives the build: with --no-cache the step runs again and counts 2.
    let out = env.run(&[
        "build",
        "-q",
        "--no-cache",
        "--build-arg",
        "FLAVOR=blue",
        "--secret",
        &format!("id=token,src={}", secret.display()),
        "-t",
        "features:2",
        &ctx(&env),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(run(&env, "features:2", &["cat /cache-count"]), "2\n");

    // --target builds only what that stage needs.
    let out = build(&env, &["--target", "tools", "-t", "tools:1"]);
    assert!(!out.contains("never built"), "{out}");
    assert_eq!(run(&env, "tools:1", &["cat", "/tools/t.txt"]), "tool\n");
    let c = ctx(&env);
    let err = env.fails(&["build", "--target", "nosuch", &c]);
    assert!(
        err.contains("target stage \"nosuch\" could not be found"),
        "{err}"
    );
}

#[test]
fn a_platform_without_emulation_is_refused_clearly() {
    if !require_root() {
        return;
    }
    let env = setup();
    write(&env, "Dockerfile", &format!("FROM {BASE}\nRUN true\n"));
    if Path::new("/proc/sys/fs/binfmt_misc/qemu-s390x").exists() {
        eprintln!("s390x emulation is registered here: nothing to refuse");
        return;
    }
    let c = ctx(&env);
    let err = env.fails(&["build", "--platform", "linux/s390x", &c]);
    assert!(err.contains("cannot build for linux/s390x"), "{err}");
    assert!(err.contains("qemu-user-static"), "{err}");
}

#[test]
fn the_cache_survives_image_prune_until_builder_prune() {
    if !require_root() {
        return;
    }
    let env = setup();
    write(&env, "f", "x\n");
    write(
        &env,
        "Dockerfile",
        &format!("FROM {BASE}\nCOPY f /f\nRUN cp /f /g\n"),
    );
    build(&env, &["-t", "cached:1"]);
    env.ok(&["rmi", "cached:1"]);
    env.ok(&["image", "prune"]);
    let again = build(&env, &["-t", "cached:1"]);
    assert_eq!(steps(&again).0.len(), 2, "{again}");
    let out = env.ok(&["builder", "prune"]);
    assert!(out.contains("Deleted build cache objects: 2"), "{out}");
    let fresh = build(&env, &["-t", "cached:2"]);
    assert!(steps(&fresh).0.is_empty(), "{fresh}");
    assert_eq!(run(&env, "cached:2", &["cat", "/g"]), "x\n");
}

#[test]
fn onbuild_triggers_run_in_the_child_build() {
    if !require_root() {
        return;
    }
    let env = setup();
    write(&env, "child.txt", "from the child context\n");
    write(
        &env,
        "Dockerfile.parent",
        &format!("FROM {BASE}\nONBUILD COPY child.txt /child.txt\nONBUILD RUN echo triggered > /onbuild\n"),
    );
    write(
        &env,
        "Dockerfile",
        "FROM parent:1\nRUN cat /onbuild /child.txt > /both\n",
    );
    let df = env
        .path("ctx")
        .join("Dockerfile.parent")
        .display()
        .to_string();
    build(&env, &["-f", &df, "-t", "parent:1"]);
    assert_eq!(
        inspect(&env, "parent:1", "{{json .Config.OnBuild}}"),
        r#"["COPY child.txt /child.txt","RUN echo triggered > /onbuild"]"#
    );
    build(&env, &["-t", "child:1"]);
    assert_eq!(
        run(&env, "child:1", &["cat", "/both"]),
        "triggered\nfrom the child context\n"
    );
    // Triggers are not inherited further.
    assert_eq!(inspect(&env, "child:1", "{{json .Config.OnBuild}}"), "null");
}

#[test]
fn a_build_killed_mid_step_leaves_nothing_behind_after_the_next() {
    if !require_root() {
        return;
    }
    let env = setup();
    write(&env, "Dockerfile", &format!("FROM {BASE}\nRUN sleep 60\n"));
    let mut child = env
        .cmd(&["build", "--progress", "plain", "-t", "killed:1", &ctx(&env)])
        .stderr(Stdio::piped())
        .spawn()
        .expect("build");
    // Wait until the step runs.
    let mut reader = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    while reader.read_line(&mut line).expect("read") > 0 {
        if line.contains("RUN sleep 60") {
            break;
        }
        line.clear();
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    let tmp = env.root().join("build/tmp");
    let mounted = || {
        fs::read_to_string("/proc/self/mountinfo")
            .expect("mountinfo")
            .lines()
            .filter(|l| l.contains(&tmp.display().to_string()))
            .count()
    };
    assert!(mounted() > 0, "the killed build had its step mounted");
    write(
        &env,
        "Dockerfile",
        &format!("FROM {BASE}\nRUN echo ok > /ok\n"),
    );
    build(&env, &["-t", "after:1"]);
    assert_eq!(mounted(), 0);
    assert_eq!(
        fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0),
        0,
        "stale work directories remain"
    );
    assert!(!env.run(&["inspect", "killed:1"]).status.success());
    let left = env.ok(&["ps", "-a"]);
    assert_eq!(left.lines().count(), 1, "{left}");
}
