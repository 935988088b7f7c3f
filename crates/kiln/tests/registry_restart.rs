//! A registry killed with SIGKILL mid-upload resumes the session after a restart, and a
//! chunk that was never acknowledged is not part of the blob.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use kiln_image::Digest;

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(root: &Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["registry", "serve", "--addr", "127.0.0.1:0", "--root"])
            .arg(root)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kiln registry");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read listening line");
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Server { child, base }
    }

    fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

#[test]
fn upload_session_survives_sigkill_and_resumes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("registry");
    let first = Server::start(&root);
    let http = client();
    let part1 = vec![7u8; 300_000];
    let part2 = vec![9u8; 200_000];
    let whole: Vec<u8> = part1.iter().chain(&part2).copied().collect();
    let digest = Digest::sha256_of(&whole);

    let started = http
        .post(format!("{}/v2/app/blobs/uploads/", first.base))
        .send()
        .expect("POST");
    assert_eq!(started.status(), 202);
    let location = started.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    let patched = http
        .patch(format!("{}{location}", first.base))
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("0-{}", part1.len() - 1))
        .body(part1.clone())
        .send()
        .expect("PATCH");
    assert_eq!(patched.status(), 202);
    assert_eq!(
        patched.headers()["range"],
        format!("0-{}", part1.len() - 1).as_str()
    );
    first.kill_9();

    let second = Server::start(&root);
    let status = http
        .get(format!("{}{location}", second.base))
        .send()
        .expect("GET status");
    assert_eq!(status.status(), 204, "the session outlives the process");
    assert_eq!(
        status.headers()["range"],
        format!("0-{}", part1.len() - 1).as_str()
    );
    // A chunk that does not continue the upload is refused.
    let wrong = http
        .patch(format!("{}{location}", second.base))
        .header("content-range", "0-9")
        .body(vec![0u8; 10])
        .send()
        .expect("PATCH");
    assert_eq!(wrong.status(), 416);
    let finished = http
        .put(format!("{}{location}?digest={digest}", second.base))
        .header(
            "content-range",
            format!("{}-{}", part1.len(), whole.len() - 1),
        )
        .body(part2)
        .send()
        .expect("PUT");
    assert_eq!(finished.status(), 201, "{:?}", finished.text());
    let got = http
        .get(format!("{}/v2/app/blobs/{digest}", second.base))
        .send()
        .expect("GET blob")
        .bytes()
        .expect("body");
    assert_eq!(Digest::sha256_of(&got), digest);
    assert_eq!(got.len(), whole.len());
}
