//! The client's behaviour towards a struggling registry, against a scripted HTTP server:
//! 5xx and 429 are retried with back-off (honouring `Retry-After`), and give up after the
//! configured number of retries with the registry's own error.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_client::{Anonymous, Client, ClientError, TransportOptions};
use kiln_image::{Digest, Reference};

/// One canned answer: status line, extra headers, body.
type Answer = (u16, Vec<(&'static str, String)>, String);

/// Serves `/v2/` with 200 and every other request with the next scripted answer (the last
/// one repeats). Returns the address and the log of request lines.
fn scripted(answers: Vec<Answer>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    std::thread::spawn(move || {
        let mut next = 0usize;
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            if serve(stream, &answers, &mut next, &seen).is_err() {
                continue;
            }
        }
    });
    (addr, log)
}

fn serve(
    stream: TcpStream,
    answers: &[Answer],
    next: &mut usize,
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 || header == "\r\n" {
                break;
            }
        }
        let request_line = request_line.trim().to_string();
        let (status, headers, body) = if request_line.starts_with("GET /v2/ ") {
            (200, Vec::new(), String::new())
        } else {
            log.lock().expect("log").push(request_line.clone());
            let answer = answers[(*next).min(answers.len() - 1)].clone();
            *next += 1;
            answer
        };
        let mut response = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", body.len());
        for (k, v) in headers {
            response.push_str(&format!("{k}: {v}\r\n"));
        }
        response.push_str("\r\n");
        if !request_line.starts_with("HEAD ") {
            response.push_str(&body);
        }
        out.write_all(response.as_bytes())?;
    }
}

fn client(retries: u32) -> Client {
    let options = TransportOptions {
        retries,
        backoff: Duration::from_millis(50),
        ..TransportOptions::default()
    };
    Client::new(options, Arc::new(Anonymous)).expect("client")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn unavailable_then_throttled_then_served() {
    let digest = Digest::sha256_of(b"manifest").to_string();
    let ok: Answer = (
        200,
        vec![
            ("docker-content-digest", digest.clone()),
            (
                "content-type",
                "application/vnd.oci.image.manifest.v1+json".into(),
            ),
        ],
        String::new(),
    );
    let (addr, log) = scripted(vec![
        (503, Vec::new(), String::new()),
        (429, vec![("retry-after", "1".into())], String::new()),
        ok,
    ]);
    let reference = Reference::parse_normalized(&format!("{addr}/app:1")).expect("ref");
    let started = Instant::now();
    let target = runtime()
        .block_on(client(4).resolve(&reference))
        .expect("resolved after retries");
    assert_eq!(target.digest.to_string(), digest);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was not honoured ({:?})",
        started.elapsed()
    );
    let log = log.lock().expect("log");
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(
        log.iter()
            .all(|l| l.starts_with("HEAD /v2/app/manifests/1 ")),
        "{log:?}"
    );
}

#[test]
fn gives_up_with_the_registrys_error() {
    let body = r#"{"errors":[{"code":"UNAVAILABLE","message":"maintenance"}]}"#.to_string();
    let (addr, log) = scripted(vec![(503, Vec::new(), body)]);
    let reference = Reference::parse_normalized(&format!("{addr}/app:1")).expect("ref");
    let err = runtime()
        .block_on(client(2).fetch_manifest(&reference, "1"))
        .err()
        .expect("must fail");
    assert!(
        matches!(err, ClientError::Registry { status: 503, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("UNAVAILABLE: maintenance"),
        "{err}"
    );
    // One try and two retries.
    assert_eq!(log.lock().expect("log").len(), 3);
}

#[test]
fn client_errors_are_not_retried() {
    let (addr, log) = scripted(vec![(404, Vec::new(), String::new())]);
    let reference = Reference::parse_normalized(&format!("{addr}/app:1")).expect("ref");
    let err = runtime()
        .block_on(client(4).fetch_manifest(&reference, "1"))
        .err()
        .expect("must fail");
    assert!(matches!(err, ClientError::ManifestUnknown { .. }), "{err}");
    assert!(err.to_string().contains("MANIFEST_UNKNOWN"), "{err}");
    assert_eq!(log.lock().expect("log").len(), 1);
}
