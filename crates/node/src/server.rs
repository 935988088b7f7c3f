//! The node's HTTPS endpoint, which the API server calls for `kubectl logs` and `kubectl
//! exec`: `/containerLogs/NS/POD/CONTAINER` and a WebSocket `/exec/NS/POD/CONTAINER`
//! speaking the `v5.channel.k8s.io` (or v4) stream protocol. Clients must present a
//! certificate from the cluster's CA.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Shared;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("the node's serving certificate: {0}")]
    Tls(String),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The TLS setup: the node's certificate, and client certificates required from the CA.
pub fn tls_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<rustls::ServerConfig, ServerError> {
    use rustls_pki_types::pem::PemObject;
    let tls = |e: &dyn std::fmt::Display| ServerError::Tls(e.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.map_err(|e| tls(&e))?).map_err(|e| tls(&e))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| tls(&e))?;
    let chain = rustls_pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls(&e))?;
    let key =
        rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| tls(&e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| tls(&e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

pub fn router(node: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/containerLogs/{namespace}/{pod}/{container}", get(logs))
        .route("/exec/{namespace}/{pod}/{container}", get(exec).post(exec))
        .with_state(node)
}

/// Serves on `listener` until the process ends.
pub async fn serve(
    node: Arc<Shared>,
    listener: std::net::TcpListener,
    tls: rustls::ServerConfig,
) -> std::io::Result<()> {
    let config = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(tls));
    axum_server::from_tcp_rustls(listener, config)
        .serve(router(node).into_make_service())
        .await
}

fn error(code: StatusCode, message: String) -> Response {
    (code, message).into_response()
}

fn query_pairs(raw: &Option<String>) -> Vec<(String, String)> {
    raw.as_deref()
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn flag(pairs: &[(String, String)], name: &str) -> bool {
    pairs
        .iter()
        .any(|(k, v)| k == name && matches!(v.as_str(), "1" | "true" | ""))
}

fn value<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The container instance a request is about: (current id, previous id).
fn instance(
    node: &Shared,
    namespace: &str,
    pod: &str,
    container: &str,
) -> Result<(Option<String>, Option<String>), Box<Response>> {
    let Some(view) = node.view(namespace, pod) else {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            format!("pod {namespace}/{pod} is not on this node"),
        )));
    };
    match view.containers.get(container) {
        Some(ids) => Ok(ids.clone()),
        None => Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            format!(
                "container {container:?} in pod {pod:?} is waiting to start: ContainerCreating"
            ),
        ))),
    }
}

/// The options of a log request.
struct LogOptions {
    follow: bool,
    timestamps: bool,
    tail: Option<usize>,
    since: Option<time::OffsetDateTime>,
    limit: Option<u64>,
}

impl LogOptions {
    fn parse(pairs: &[(String, String)]) -> Result<LogOptions, String> {
        let number = |name: &str| -> Result<Option<i64>, String> {
            value(pairs, name)
                .map(|v| {
                    v.parse::<i64>()
                        .map_err(|_| format!("{name}: {v:?} is not a number"))
                })
                .transpose()
        };
        let since = match (number("sinceSeconds")?, value(pairs, "sinceTime")) {
            (Some(s), _) => {
                Some(time::OffsetDateTime::now_utc() - time::Duration::seconds(s.max(0)))
            }
            (None, Some(t)) => Some(
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| format!("sinceTime {t:?}: {e}"))?,
            ),
            _ => None,
        };
        Ok(LogOptions {
            follow: flag(pairs, "follow"),
            timestamps: flag(pairs, "timestamps"),
            tail: number("tailLines")?.map(|n| n.max(0) as usize),
            since,
            limit: number("limitBytes")?.map(|n| n.max(1) as u64),
        })
    }
}

/// Turns CRI log lines into what `kubectl logs` prints, applying the options; returns the
/// output and how many bytes of input were complete lines.
fn render(bytes: &[u8], options: &LogOptions, apply_tail: bool) -> (Vec<u8>, usize) {
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    let mut lines: Vec<&[u8]> = bytes[..complete]
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    if let Some(since) = options.since {
        lines.retain(|l| {
            let ts = l.split(|&b| b == b' ').next().unwrap_or_default();
            std::str::from_utf8(ts)
                .ok()
                .and_then(|t| {
                    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .is_none_or(|t| t >= since)
        });
    }
    if apply_tail && let Some(n) = options.tail {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    let mut out = Vec::new();
    for line in lines {
        let Some((_, full, content)) = kiln_runtime::container::parse_cri_line(line) else {
            continue;
        };
        if options.timestamps {
            out.extend_from_slice(line.split(|&b| b == b' ').next().unwrap_or_default());
            out.push(b' ');
        }
        out.extend_from_slice(content);
        if full {
            out.push(b'\n');
        }
    }
    (out, complete)
}

async fn logs(
    State(node): State<Arc<Shared>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let pairs = query_pairs(&query);
    let options = match LogOptions::parse(&pairs) {
        Ok(o) => o,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let (current, previous) = match instance(&node, &namespace, &pod, &container) {
        Ok(ids) => ids,
        Err(r) => return *r,
    };
    let id = if flag(&pairs, "previous") {
        match previous {
            Some(p) => p,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("previous terminated container {container:?} in pod {pod:?} not found"),
                );
            }
        }
    } else {
        match current {
            Some(c) => c,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "container {container:?} in pod {pod:?} is waiting to start: ContainerCreating"
                    ),
                );
            }
        }
    };
    let path = node.runtime.log_path(&id);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(16);
    let runtime = node.runtime.clone();
    tokio::spawn(async move {
        let mut offset = 0usize;
        let mut sent = 0u64;
        let mut first = true;
        loop {
            let bytes = tokio::fs::read(&path).await.unwrap_or_default();
            let (mut out, used) = if bytes.len() > offset {
                render(&bytes[offset..], &options, first)
            } else {
                (Vec::new(), 0)
            };
            first = false;
            offset += used;
            if let Some(limit) = options.limit {
                let room = limit.saturating_sub(sent) as usize;
                out.truncate(room);
            }
            sent += out.len() as u64;
            if !out.is_empty() && tx.send(Ok(out)).await.is_err() {
                return;
            }
            let limited = options.limit.is_some_and(|l| sent >= l);
            if !options.follow || limited {
                return;
            }
            if runtime.ended(&id).is_some() {
                // One more read catches the last lines written before the end.
                let bytes = tokio::fs::read(&path).await.unwrap_or_default();
                if bytes.len() > offset {
                    let (out, _) = render(&bytes[offset..], &options, false);
                    let _ = tx.send(Ok(out)).await;
                }
                return;
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let stream = tokio_stream_from(rx);
    Response::builder()
        .header("content-type", "text/plain")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "response".into()))
}

fn tokio_stream_from(
    rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

async fn exec(
    State(node): State<Arc<Shared>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let pairs = query_pairs(&query);
    let command: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    if command.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "you must specify at least one command for the container".into(),
        );
    }
    let Ok(upgrade) = upgrade else {
        return error(
            StatusCode::BAD_REQUEST,
            "exec needs a WebSocket upgrade (v5.channel.k8s.io or v4.channel.k8s.io)".into(),
        );
    };
    let id = match instance(&node, &namespace, &pod, &container) {
        Ok((Some(id), _)) if node.runtime.ended(&id).is_none() => id,
        Ok(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("container {container:?} in pod {pod:?} is not running"),
            );
        }
        Err(r) => return *r,
    };
    let stdin = flag(&pairs, "stdin");
    let tty = flag(&pairs, "tty");
    upgrade
        .protocols(["v5.channel.k8s.io", "v4.channel.k8s.io"])
        .on_upgrade(move |socket| run_exec(node, socket, id, command, stdin, tty))
}

async fn run_exec(
    node: Arc<Shared>,
    mut socket: WebSocket,
    id: String,
    command: Vec<String>,
    stdin: bool,
    tty: bool,
) {
    use std::process::Stdio;
    type Reader = Box<dyn tokio::io::AsyncRead + Send + Unpin>;
    type Writer = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;
    let mut cmd = tokio::process::Command::from(node.runtime.exec_command(&id, &command, tty));
    cmd.kill_on_drop(true);
    // With a terminal, the runtime is given one of ours (a pseudo-terminal whose other side
    // is relayed over the socket); it puts that into raw mode and relays it to the one it
    // makes inside the container, resizing that when ours is resized.
    let terminal = if tty {
        match Terminal::open() {
            Ok(t) => Some(t),
            Err(e) => {
                let status = json!({"metadata": {}, "status": "Failure", "message": format!("allocating a terminal: {e}")});
                finish(&mut socket, &status).await;
                return;
            }
        }
    } else {
        None
    };
    match &terminal {
        Some(t) => {
            let (a, b, c) = match (t.follower(), t.follower(), t.follower()) {
                (Ok(a), Ok(b), Ok(c)) => (a, b, c),
                _ => {
                    let status = json!({"metadata": {}, "status": "Failure", "message": "allocating a terminal"});
                    finish(&mut socket, &status).await;
                    return;
                }
            };
            cmd.stdin(Stdio::from(a))
                .stdout(Stdio::from(b))
                .stderr(Stdio::from(c));
            // SAFETY: setsid and ioctl are async-signal-safe; the terminal becomes the
            // runtime's controlling terminal, so resizes reach it as SIGWINCH.
            unsafe {
                cmd.pre_exec(|| {
                    libc::setsid();
                    libc::ioctl(0, libc::TIOCSCTTY, 0);
                    Ok(())
                });
            }
        }
        None => {
            cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
        }
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let status = json!({"metadata": {}, "status": "Failure", "message": e.to_string()});
            finish(&mut socket, &status).await;
            return;
        }
    };
    let (mut child_in, readers): (Option<Writer>, Vec<(u8, Option<Reader>)>) = match &terminal {
        Some(t) => {
            let (reader, writer) = match (t.leader(), t.leader()) {
                (Ok(r), Ok(w)) => (r, w),
                _ => {
                    let _ = child.start_kill();
                    return;
                }
            };
            (
                stdin.then(|| Box::new(tokio::fs::File::from_std(writer)) as Writer),
                vec![(
                    STDOUT,
                    Some(Box::new(tokio::fs::File::from_std(reader)) as Reader),
                )],
            )
        }
        None => (
            child.stdin.take().map(|w| Box::new(w) as Writer),
            vec![
                (STDOUT, child.stdout.take().map(|r| Box::new(r) as Reader)),
                (STDERR, child.stderr.take().map(|r| Box::new(r) as Reader)),
            ],
        ),
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(u8, Vec<u8>)>(32);
    drop(cmd);
    if let Some(t) = &terminal {
        // Only the runtime holds the terminal's other side now: when it ends, reads of
        // ours end.
        t.close_follower();
    }
    for (channel, reader) in readers {
        let Some(mut reader) = reader else { continue };
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send((channel, buf[..n].to_vec())).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
    drop(tx);
    let mut outputs_open = true;
    loop {
        tokio::select! {
            item = rx.recv(), if outputs_open => match item {
                Some((channel, bytes)) => {
                    if socket.send(frame(channel, &bytes)).await.is_err() {
                        return;
                    }
                }
                None => outputs_open = false,
            },
            message = socket.recv() => match message {
                Some(Ok(Message::Binary(data))) => match data.first() {
                    Some(&STDIN) => {
                        if let Some(w) = child_in.as_mut()
                            && w.write_all(&data[1..]).await.is_err() {
                                child_in = None;
                            }
                    }
                    // v5: the client closed a stream; stdin is the only one it writes.
                    Some(&CLOSE) if data.get(1) == Some(&STDIN) => child_in = None,
                    Some(&RESIZE) => {
                        if let (Some(t), Ok(size)) = (&terminal, serde_json::from_slice::<serde_json::Value>(&data[1..])) {
                            t.resize(
                                size["Width"].as_u64().unwrap_or(80) as u16,
                                size["Height"].as_u64().unwrap_or(24) as u16,
                            );
                        }
                    }
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    let _ = child.start_kill();
                    return;
                }
                _ => {}
            },
            status = child.wait(), if !outputs_open => {
                let code = status.ok().and_then(|s| s.code()).unwrap_or(1);
                let status = if code == 0 {
                    json!({"metadata": {}, "status": "Success"})
                } else {
                    json!({
                        "metadata": {},
                        "status": "Failure",
                        "message": format!(
                            "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
                            command.join(" ")
                        ),
                        "reason": "NonZeroExitCode",
                        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
                    })
                };
                finish(&mut socket, &status).await;
                return;
            }
        }
    }
}

/// A pseudo-terminal: the leader side is relayed over the socket, the follower side is the
/// runtime's terminal.
struct Terminal {
    leader: std::os::fd::OwnedFd,
    follower: std::sync::Mutex<Option<std::os::fd::OwnedFd>>,
}

impl Terminal {
    fn open() -> std::io::Result<Terminal> {
        use std::os::fd::FromRawFd;
        let (mut leader, mut follower) = (0, 0);
        // SAFETY: openpty writes two new descriptors; name, termios and size may be null.
        let rc = unsafe {
            libc::openpty(
                &mut leader,
                &mut follower,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned here alone.
        unsafe {
            for fd in [leader, follower] {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
            Ok(Terminal {
                leader: std::os::fd::OwnedFd::from_raw_fd(leader),
                follower: std::sync::Mutex::new(Some(std::os::fd::OwnedFd::from_raw_fd(follower))),
            })
        }
    }

    fn leader(&self) -> std::io::Result<std::fs::File> {
        Ok(std::fs::File::from(self.leader.try_clone()?))
    }

    fn follower(&self) -> std::io::Result<std::fs::File> {
        let guard = self
            .follower
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?;
        match guard.as_ref() {
            Some(fd) => Ok(std::fs::File::from(fd.try_clone()?)),
            None => Err(std::io::Error::other("the terminal is handed over")),
        }
    }

    fn close_follower(&self) {
        if let Ok(mut f) = self.follower.lock() {
            f.take();
        }
    }

    fn resize(&self, width: u16, height: u16) {
        use std::os::fd::AsRawFd;
        let size = libc::winsize {
            ws_row: height,
            ws_col: width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads the winsize struct passed by pointer.
        unsafe { libc::ioctl(self.leader.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    }
}

/// Ends an exec stream: the outcome on the error channel, then a normal close (kubectl
/// reports a close without a status code as an error).
async fn finish(socket: &mut WebSocket, status: &serde_json::Value) {
    let _ = socket
        .send(frame(ERROR, status.to_string().as_bytes()))
        .await;
    let _ = socket
        .send(Message::Close(Some(axum::extract::ws::CloseFrame {
            code: 1000,
            reason: "".into(),
        })))
        .await;
}

fn frame(channel: u8, bytes: &[u8]) -> Message {
    let mut data = Vec::with_capacity(bytes.len() + 1);
    data.push(channel);
    data.extend_from_slice(bytes);
    Message::Binary(data.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(tail: Option<usize>, timestamps: bool) -> LogOptions {
        LogOptions {
            follow: false,
            timestamps,
            tail,
            since: None,
            limit: None,
        }
    }

    #[test]
    fn cri_lines_render_as_kubectl_logs_prints_them() {
        let log = b"2026-01-01T00:00:00.000000001Z stdout F one\n2026-01-01T00:00:01.000000000Z stderr P tw\n2026-01-01T00:00:01.000000000Z stderr F o\n2026-01-01T00:00:02.000000000Z stdout F three\n2026-01-01T00:00:03Z stdout F part";
        let (out, used) = render(log, &options(None, false), true);
        assert_eq!(out, b"one\ntwo\nthree\n");
        assert_eq!(used, log.len() - "2026-01-01T00:00:03Z stdout F part".len());
        let (out, _) = render(log, &options(Some(1), false), true);
        assert_eq!(out, b"three\n");
        let (out, _) = render(log, &options(Some(1), true), true);
        assert_eq!(out, b"2026-01-01T00:00:02.000000000Z three\n");
        let since = LogOptions {
            since: time::OffsetDateTime::parse(
                "2026-01-01T00:00:01Z",
                &time::format_description::well_known::Rfc3339,
            )
            .ok(),
            ..options(None, false)
        };
        assert_eq!(render(log, &since, true).0, b"two\nthree\n");
    }

    #[test]
    fn bad_log_options_are_named() {
        let pairs = vec![("tailLines".to_string(), "x".to_string())];
        assert!(matches!(LogOptions::parse(&pairs), Err(e) if e.contains("tailLines")));
    }
}
