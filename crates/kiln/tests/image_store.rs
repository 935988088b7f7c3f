//! End-to-end: the local image store through the `kiln` binary, checked against skopeo.

mod common;

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{skopeo, write_big_layout, write_layout, Env};
use kiln_image::digest::Digest;

#[test]
fn rootfs_import_inspect_tag_and_remove() {
    let env = Env::new();
    let digest = env.busybox_image("busybox:1.36");

    // Seed 003: RepoDigests through a Go template.
    let repo_digests = env.ok(&["inspect", "busybox:1.36", "--format", "{{.RepoDigests}}"]);
    assert_eq!(repo_digests.trim(), format!("[busybox@{digest}]"));

    let record: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", "docker.io/library/busybox:1.36"]))
            .expect("json");
    let image = &record[0];
    assert_eq!(image["RepoTags"], serde_json::json!(["busybox:1.36"]));
    assert_eq!(image["Os"], "linux");
    assert_eq!(image["Config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(image["RootFS"]["Layers"].as_array().map(Vec::len), Some(1));
    let layer = &image["Manifest"]["Layers"][0];
    assert_eq!(
        layer["MediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert!(
        layer["Size"].as_u64().unwrap_or(0) > 100_000,
        "busybox layer is small: {layer}"
    );

    // tag, then find the image by name, by short ID and by digest.
    env.ok(&["tag", "busybox:1.36", "localhost:5000/tools/busybox:v1"]);
    let id = image["Id"].as_str().expect("id").to_string();
    let short = &id["sha256:".len().."sha256:".len() + 12];
    for name in ["localhost:5000/tools/busybox:v1", short, &id, &digest] {
        let got = env.ok(&["inspect", name, "--format", "{{.Id}}"]);
        assert_eq!(got.trim(), id, "lookup by {name}");
    }
    let listing = env.ok(&["images"]);
    assert!(listing.starts_with("REPOSITORY"), "{listing}");
    assert!(
        listing.contains("localhost:5000/tools/busybox"),
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("busybox ") && l.contains("1.36") && l.contains(short)),
        "{listing}"
    );
    let tags = env.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(tags, "busybox:1.36\nlocalhost:5000/tools/busybox:v1\n");

    // An ID with two repositories needs -f; a name untags only itself.
    let err = env.fails(&["rmi", short]);
    assert!(err.contains("must be forced"), "{err}");
    let out = env.ok(&["rmi", "busybox:1.36"]);
    assert_eq!(out, "Untagged: busybox:1.36\n");
    let blobs_before = env.blob_count();
    assert!(blobs_before >= 3);
    let out = env.ok(&["rmi", "localhost:5000/tools/busybox:v1"]);
    assert!(
        out.contains("Untagged: localhost:5000/tools/busybox:v1")
            && out.contains(&format!("Deleted: {digest}")),
        "{out}"
    );
    assert_eq!(
        env.blob_count(),
        0,
        "rmi of the last name removes the content"
    );
    let err = env.fails(&["inspect", "busybox:1.36"]);
    assert!(
        err.contains("No such image") || err.contains("no such image"),
        "{err}"
    );
}

#[test]
fn bad_references_are_refused_with_the_part_named() {
    let env = Env::new();
    env.busybox_image("app:1");
    let err = env.fails(&["tag", "app:1", "app:-bad"]);
    assert!(err.contains("invalid tag \"-bad\""), "{err}");
    let err = env.fails(&["tag", "app:1", "App:2"]);
    assert!(err.contains("must be lowercase"), "{err}");
    let err = env.fails(&["tag", "app:1", "app@sha256:abc"]);
    assert!(err.contains("sha256 needs 64 hex characters"), "{err}");
    let err = env.fails(&["tag", "nothere", "app:2"]);
    assert!(
        err.contains("No such image") || err.contains("no such image"),
        "{err}"
    );
    assert_eq!(
        env.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]),
        "app:1\n"
    );
}

#[test]
fn export_is_read_by_skopeo_and_skopeo_output_imports_with_same_digests() {
    let env = Env::new();
    let (digest, a) = env.exported_busybox();

    // skopeo reads kiln's layout and finds the same manifest.
    let info: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect",
        &format!("oci:{}:latest", a.display()),
    ]))
    .expect("json");
    assert_eq!(info["Digest"], digest.as_str());
    let raw = skopeo(&["inspect", "--raw", &format!("oci:{}:latest", a.display())]);
    assert_eq!(Digest::sha256_of(raw.as_bytes()).to_string(), digest);

    // skopeo copies it unchanged, then re-compresses it into a new image of its own making.
    let b = env.path("b");
    skopeo(&[
        "copy",
        "--quiet",
        &format!("oci:{}:latest", a.display()),
        &format!("oci:{}:copy", b.display()),
    ]);
    let c = env.path("c");
    skopeo(&[
        "copy",
        "--quiet",
        "--dest-compress-format",
        "zstd",
        &format!("oci:{}:latest", a.display()),
        &format!("oci:{}:zstd", c.display()),
    ]);
    let copied = skopeo(&["inspect", "--raw", &format!("oci:{}:copy", b.display())]);
    assert_eq!(Digest::sha256_of(copied.as_bytes()).to_string(), digest);
    let zstd_raw = skopeo(&["inspect", "--raw", &format!("oci:{}:zstd", c.display())]);
    let zstd_digest = Digest::sha256_of(zstd_raw.as_bytes()).to_string();
    assert_ne!(zstd_digest, digest);
    assert!(zstd_raw.contains("tar+zstd"), "{zstd_raw}");

    // A bare tag names no repository, so the import asks for a name.
    let err = env.fails(&["image", "import", &format!("oci:{}:zstd", c.display())]);
    assert!(err.contains("--name"), "{err}");
    let out = env.ok(&[
        "image",
        "import",
        &format!("oci:{}:zstd", c.display()),
        "--name",
        "localhost:5000/busybox:zstd",
    ]);
    assert_eq!(out, "Loaded image: localhost:5000/busybox:zstd\n");
    let got = env.ok(&[
        "inspect",
        "localhost:5000/busybox:zstd",
        "--format",
        "{{.Descriptor.digest}}",
    ]);
    assert_eq!(got.trim(), zstd_digest);
    let got = env.ok(&[
        "inspect",
        "localhost:5000/busybox:zstd",
        "--format",
        "{{(index .Manifest.Layers 0).MediaType}}",
    ]);
    assert_eq!(got.trim(), "application/vnd.oci.image.layer.v1.tar+zstd");

    // Round trip through kiln again: export of the import equals skopeo's manifest.
    let d = env.path("d");
    env.ok(&[
        "image",
        "export",
        "localhost:5000/busybox:zstd",
        &format!("oci:{}", d.display()),
    ]);
    let again = skopeo(&["inspect", "--raw", &format!("oci:{}:zstd", d.display())]);
    assert_eq!(again, zstd_raw);
}

#[test]
fn docker_archive_from_skopeo_loads() {
    let env = Env::new();
    let (_, a) = env.exported_busybox();
    let archive = env.path("saved.tar");
    skopeo(&[
        "copy",
        "--quiet",
        &format!("oci:{}:latest", a.display()),
        &format!(
            "docker-archive:{}:example.com/team/busybox:saved",
            archive.display()
        ),
    ]);
    let other = Env::new();
    let out = other.ok(&["image", "load", "-i", archive.to_str().expect("utf-8")]);
    assert_eq!(out, "Loaded image: example.com/team/busybox:saved\n");
    let cmd = other.ok(&[
        "inspect",
        "example.com/team/busybox:saved",
        "--format",
        "{{json .Config.Cmd}}",
    ]);
    assert_eq!(cmd.trim(), "[\"sh\"]");
    // The same image ID (config digest) as the original.
    assert_eq!(
        other.ok(&[
            "inspect",
            "example.com/team/busybox:saved",
            "--format",
            "{{.Id}}"
        ]),
        env.ok(&["inspect", "busybox", "--format", "{{.Id}}"])
    );
    // Loading from standard input works too, and garbage changes nothing.
    let err = other.fails(&["image", "load", "-i", "/etc/hostname"]);
    assert!(err.contains("tar") || err.contains("archive"), "{err}");
    assert_eq!(other.ok(&["images", "-q"]).lines().count(), 1);
}

#[test]
fn blob_not_matching_its_digest_is_refused_and_nothing_stored() {
    let env = Env::new();
    let layout = env.path("layout");
    let good = b"layer bytes".as_slice();
    write_layout(&layout, "v1", &[good]);
    let claimed = Digest::sha256_of(good);
    // Corrupt the layer in place: same name, other bytes.
    fs::write(
        layout.join("blobs/sha256").join(claimed.hex()),
        b"evil bytes!",
    )
    .expect("write");
    let actual = Digest::sha256_of(b"evil bytes!");
    let err = env.fails(&[
        "image",
        "import",
        &format!("oci:{}:v1", layout.display()),
        "--name",
        "x:v1",
    ]);
    assert!(
        err.contains(&claimed.to_string()) && err.contains(&actual.to_string()),
        "{err}"
    );
    assert_eq!(env.blob_count(), 0, "nothing stored");
    assert_eq!(env.ok(&["images", "-q"]), "");
    assert_eq!(
        fs::read_dir(env.root().join("ingest"))
            .expect("ingest")
            .count(),
        0,
        "no temp files left"
    );
}

#[test]
fn malformed_layouts_get_clear_errors() {
    let env = Env::new();
    type MakeLayout = Box<dyn Fn(&std::path::Path)>;
    let cases: Vec<(&str, MakeLayout, &str)> = vec![
        (
            "no oci-layout",
            Box::new(|d| fs::create_dir_all(d).expect("mkdir")),
            "oci-layout is missing",
        ),
        (
            "bad version",
            Box::new(|d| {
                write_layout(d, "v1", &[b"x"]);
                fs::write(d.join("oci-layout"), br#"{"imageLayoutVersion":"9.0"}"#).expect("write");
            }),
            "unsupported imageLayoutVersion",
        ),
        (
            "index not json",
            Box::new(|d| {
                write_layout(d, "v1", &[b"x"]);
                fs::write(d.join("index.json"), b"{nope").expect("write");
            }),
            "not valid JSON",
        ),
        (
            "missing blob",
            Box::new(|d| {
                write_layout(d, "v1", &[b"x"]);
                fs::remove_file(d.join("blobs/sha256").join(Digest::sha256_of(b"x").hex()))
                    .expect("rm");
            }),
            "is missing",
        ),
        (
            "wrong ref",
            Box::new(|d| {
                write_layout(d, "v1", &[b"x"]);
            }),
            "no entry named \"v2\"",
        ),
    ];
    for (what, make, want) in cases {
        let dir = env.path(what);
        make(&dir);
        let target = if what == "wrong ref" {
            format!("oci:{}:v2", dir.display())
        } else {
            format!("oci:{}:v1", dir.display())
        };
        let err = env.fails(&["image", "import", &target, "--name", "x:v1"]);
        assert!(err.contains(want), "{what}: {err}");
    }
    assert_eq!(env.blob_count(), 0);
}

#[test]
fn concurrent_imports_sharing_layers_leave_a_consistent_store() {
    let env = Env::new();
    let shared: Vec<u8> = (0..4 << 20).map(|i: u32| (i * 7 % 251) as u8).collect();
    let mut children = Vec::new();
    for i in 0..4 {
        let dir = env.path(&format!("layout{i}"));
        let own = format!("own layer {i}").into_bytes();
        write_layout(&dir, "v1", &[&shared, &own]);
        children.push(
            env.cmd(&[
                "image",
                "import",
                &format!("oci:{}:v1", dir.display()),
                "--name",
                &format!("app{i}:v1"),
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn"),
        );
    }
    // A concurrent tagger and a concurrent prune must not disturb the imports.
    let pruner = env
        .cmd(&["image", "prune"])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    for mut c in children {
        assert!(c.wait().expect("wait").success());
    }
    pruner.wait_with_output().expect("prune");
    let names = env.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(names, "app0:v1\napp1:v1\napp2:v1\napp3:v1\n");
    // 1 shared layer + 4 own layers + 1 config (identical diff lists differ, so 4 configs) + 4 manifests.
    assert_eq!(env.blob_count(), 1 + 4 + 4 + 4);
    verify_every_blob(&env);
    let out = env.ok(&["image", "prune"]);
    assert!(out.contains("Total reclaimed space: 0B"), "{out}");
}

#[test]
fn concurrent_taggers_lose_no_update() {
    let env = Env::new();
    env.busybox_image("base:1");
    let children: Vec<_> = (0..12)
        .map(|i| {
            env.cmd(&["tag", "base:1", &format!("copy{i}:x")])
                .spawn()
                .expect("spawn")
        })
        .collect();
    for mut c in children {
        assert!(c.wait().expect("wait").success());
    }
    assert_eq!(env.ok(&["images", "-q"]).lines().count(), 1);
    assert_eq!(
        env.ok(&["images", "--format", "{{.Tag}}"]).lines().count(),
        13
    );
}

#[test]
fn kill_during_import_leaves_no_partial_blob() {
    let env = Env::new();
    let layout = env.path("big");
    write_big_layout(&layout, "v1", 512 << 20, 42);
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).expect("read")).expect("json");
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    let target = format!("oci:{}:v1", layout.display());

    let mut child = env
        .cmd(&["image", "import", &target, "--name", "big:v1"])
        .spawn()
        .expect("spawn");
    // Wait until the writer has an ingest file growing, then kill it mid-blob.
    let ingest = env.root().join("ingest");
    let mut saw_ingest = false;
    for _ in 0..500 {
        std::thread::sleep(Duration::from_millis(10));
        let partial = fs::read_dir(&ingest)
            .map(|d| {
                d.filter_map(Result::ok)
                    .any(|e| e.metadata().map(|m| m.len() > 0).unwrap_or(false))
            })
            .unwrap_or(false);
        if partial {
            saw_ingest = true;
            break;
        }
    }
    assert!(saw_ingest, "the import never started writing");
    child.kill().expect("kill -9");
    child.wait().expect("reap");

    assert_eq!(env.blob_count(), 0, "no partial blob is visible");
    assert_eq!(env.ok(&["images", "-q"]), "");
    // The next import succeeds; prune then clears the dead writer's leftovers.
    env.ok(&["image", "import", &target, "--name", "big:v1"]);
    assert_eq!(
        env.ok(&["inspect", "big:v1", "--format", "{{.Descriptor.digest}}"])
            .trim(),
        manifest_digest
    );
    env.ok(&["image", "prune"]);
    assert_eq!(fs::read_dir(&ingest).expect("ingest").count(), 0);
    verify_every_blob(&env);
}

/// Re-hashes every blob in the store: each file's content must match its name.
fn verify_every_blob(env: &Env) {
    let dir = env.root().join("blobs/sha256");
    for entry in fs::read_dir(&dir).expect("blobs") {
        let entry = entry.expect("entry");
        let out = Command::new("sha256sum")
            .arg(entry.path())
            .output()
            .expect("sha256sum");
        let text = String::from_utf8_lossy(&out.stdout);
        let hex = text.split_whitespace().next().unwrap_or_default();
        assert_eq!(
            hex,
            entry.file_name().to_string_lossy(),
            "blob content does not match its name"
        );
    }
}

#[test]
fn oci_archive_from_skopeo_loads_with_its_digests() {
    let env = Env::new();
    let (digest, a) = env.exported_busybox();
    let archive = env.path("oci.tar");
    skopeo(&[
        "copy",
        "--quiet",
        &format!("oci:{}:latest", a.display()),
        &format!(
            "oci-archive:{}:localhost:5000/team/busybox:v2",
            archive.display()
        ),
    ]);
    let other = Env::new();
    let out = other.ok(&["image", "load", "-i", archive.to_str().expect("utf-8")]);
    assert_eq!(out, "Loaded image: localhost:5000/team/busybox:v2\n");
    let got = other.ok(&[
        "inspect",
        "localhost:5000/team/busybox:v2",
        "--format",
        "{{.Descriptor.digest}}",
    ]);
    assert_eq!(
        got.trim(),
        digest,
        "an OCI archive keeps its manifest digest"
    );
}

#[test]
fn hostile_and_garbage_archives_change_nothing() {
    let env = Env::new();
    // A member that climbs out of the archive.
    let mut header = tar::Header::new_old();
    header.as_old_mut().name[..16].copy_from_slice(b"../../etc/passwd");
    header.set_size(4);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, &b"evil"[..]).expect("append");
    let bytes = builder.into_inner().expect("tar");
    let evil = env.path("evil.tar");
    fs::write(&evil, bytes).expect("write");
    let err = env.fails(&["image", "load", "-i", evil.to_str().expect("utf-8")]);
    assert!(err.contains("escapes the archive"), "{err}");

    // Not a tarball at all, for load and for import-rootfs.
    let junk = env.path("junk.tar");
    fs::write(&junk, vec![0x42u8; 4096]).expect("write");
    let err = env.fails(&["image", "load", "-i", junk.to_str().expect("utf-8")]);
    assert!(err.contains("tar"), "{err}");
    let err = env.fails(&[
        "image",
        "import-rootfs",
        junk.to_str().expect("utf-8"),
        "junk:1",
    ]);
    assert!(err.contains("not a valid tar archive"), "{err}");
    // An archive with files but no manifest.
    let mut builder = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(5);
    h.set_mode(0o644);
    h.set_cksum();
    builder
        .append_data(&mut h, "hello.txt", &b"hello"[..])
        .expect("append");
    let plain = env.path("plain.tar");
    fs::write(&plain, builder.into_inner().expect("tar")).expect("write");
    let err = env.fails(&["image", "load", "-i", plain.to_str().expect("utf-8")]);
    assert!(err.contains("no manifest.json"), "{err}");

    assert_eq!(env.blob_count(), 0);
    assert_eq!(env.ok(&["images", "-q"]), "");
    assert_eq!(
        fs::read_dir(env.root().join("ingest"))
            .expect("ingest")
            .count(),
        0
    );
}

#[test]
fn rootfs_import_is_reproducible_with_source_date_epoch() {
    let a = Env::new();
    let b = Env::new();
    let tarball = a.busybox_rootfs();
    let tarball = tarball.to_str().expect("utf-8");
    let mut digests = Vec::new();
    for env in [&a, &b] {
        let out = env
            .cmd(&[
                "image",
                "import-rootfs",
                tarball,
                "base:1",
                "--platform",
                "linux/arm64/v8",
            ])
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        digests.push(env.ok(&[
            "inspect",
            "base:1",
            "--format",
            "{{.Descriptor.digest}} {{.Created}} {{.Architecture}} {{.Variant}}",
        ]));
    }
    assert_eq!(digests[0], digests[1]);
    assert!(
        digests[0].contains("2023-11-14T22:13:20Z arm64 v8"),
        "{}",
        digests[0]
    );
}
