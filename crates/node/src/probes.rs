//! Container probes (exec, httpGet, tcpSocket) and their schedule: first after the
//! initial delay, then every period; the result flips after `successThreshold`
//! consecutive successes or `failureThreshold` consecutive failures.

use std::time::{Duration, Instant};

use kiln_runtime::container::Runtime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::pod::{Container, Probe};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    Success,
    Failure(String),
}

/// The schedule and counters of one probe of one container instance.
#[derive(Debug, Default, Clone)]
pub struct Tracker {
    first_seen: Option<Instant>,
    last_run: Option<Instant>,
    successes: u32,
    failures: u32,
}

impl Tracker {
    /// Whether the probe is due now, and how long until it is due otherwise.
    pub fn due(
        &mut self,
        probe: &Probe,
        _started_unix: i64,
        now: Instant,
    ) -> (bool, Option<Duration>) {
        let first = *self.first_seen.get_or_insert(now);
        let at = match self.last_run {
            None => first + probe.initial_delay(),
            Some(last) => last + probe.period(),
        };
        if now >= at {
            (true, Some(probe.period()))
        } else {
            (false, Some(at - now))
        }
    }

    /// Counts a result; `Some(ok)` once a threshold is reached.
    pub fn record(&mut self, probe: &Probe, result: ProbeResult, now: Instant) -> Option<bool> {
        self.last_run = Some(now);
        match result {
            ProbeResult::Success => {
                self.failures = 0;
                self.successes += 1;
                (self.successes >= probe.success_threshold()).then_some(true)
            }
            ProbeResult::Failure(_) => {
                self.successes = 0;
                self.failures += 1;
                (self.failures >= probe.failure_threshold()).then_some(false)
            }
        }
    }
}

/// Runs a probe once against a container whose network address is `ip`.
pub async fn run(
    probe: &Probe,
    container: &Container,
    ip: &str,
    runtime: &Runtime,
    id: &str,
) -> ProbeResult {
    let timeout = probe.timeout();
    if let Some(exec) = &probe.exec {
        let mut cmd = runtime.exec_command(id, &exec.command, false);
        cmd.stdin(std::process::Stdio::null());
        let run = tokio::task::spawn_blocking(move || cmd.output());
        return match tokio::time::timeout(timeout, run).await {
            Err(_) => {
                ProbeResult::Failure(format!("command {:?} timed out", exec.command.join(" ")))
            }
            Ok(Ok(Ok(out))) if out.status.success() => ProbeResult::Success,
            Ok(Ok(Ok(out))) => {
                let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&out.stderr));
                ProbeResult::Failure(text.trim_end().to_string())
            }
            Ok(Ok(Err(e))) => ProbeResult::Failure(e.to_string()),
            Ok(Err(e)) => ProbeResult::Failure(e.to_string()),
        };
    }
    if let Some(http) = &probe.http_get {
        let Some(port) = container.resolve_port(&http.port) else {
            return ProbeResult::Failure(format!("invalid port {}", http.port));
        };
        let host = http.host.clone().unwrap_or_else(|| ip.to_string());
        let path = http.path.clone().unwrap_or_else(|| "/".into());
        let url = format!("http://{host}:{port}{path}");
        let request = async {
            let mut stream = tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| {
                    format!(
                        "Get {url:?}: dial tcp {host}:{port}: connect: {}",
                        os_reason(&e)
                    )
                })?;
            let mut head = format!(
                "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.32\r\nAccept: */*\r\nConnection: close\r\n"
            );
            for h in &http.http_headers {
                head.push_str(&format!("{}: {}\r\n", h.name, h.value));
            }
            head.push_str("\r\n");
            stream
                .write_all(head.as_bytes())
                .await
                .map_err(|e| format!("Get {url:?}: {e}"))?;
            let mut buf = vec![0u8; 1024];
            let mut got = 0;
            while got < buf.len() {
                let n = stream
                    .read(&mut buf[got..])
                    .await
                    .map_err(|e| format!("Get {url:?}: {e}"))?;
                if n == 0 {
                    break;
                }
                got += n;
                if buf[..got].windows(2).any(|w| w == b"\r\n") {
                    break;
                }
            }
            let line = String::from_utf8_lossy(&buf[..got]).into_owned();
            let code: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| format!("Get {url:?}: malformed HTTP response"))?;
            Ok::<u16, String>(code)
        };
        return match tokio::time::timeout(timeout, request).await {
            Err(_) => ProbeResult::Failure(format!(
                "Get {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            )),
            Ok(Ok(code)) if (200..400).contains(&code) => ProbeResult::Success,
            Ok(Ok(code)) => {
                ProbeResult::Failure(format!("HTTP probe failed with statuscode: {code}"))
            }
            Ok(Err(e)) => ProbeResult::Failure(e),
        };
    }
    if let Some(tcp) = &probe.tcp_socket {
        let Some(port) = container.resolve_port(&tcp.port) else {
            return ProbeResult::Failure(format!("invalid port {}", tcp.port));
        };
        let host = tcp.host.clone().unwrap_or_else(|| ip.to_string());
        let connect = tokio::net::TcpStream::connect((host.as_str(), port));
        return match tokio::time::timeout(timeout, connect).await {
            Err(_) => ProbeResult::Failure(format!("dial tcp {host}:{port}: i/o timeout")),
            Ok(Ok(_)) => ProbeResult::Success,
            Ok(Err(e)) => ProbeResult::Failure(format!(
                "dial tcp {host}:{port}: connect: {}",
                os_reason(&e)
            )),
        };
    }
    ProbeResult::Failure("the probe names no action".into())
}

/// The error as Go's syscall errors print it ("connection refused").
fn os_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.split_once(" (os error") {
        Some((reason, _)) => reason.to_lowercase(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_flip_the_result() {
        let probe = Probe {
            success_threshold: Some(2),
            failure_threshold: Some(2),
            period_seconds: Some(5),
            initial_delay_seconds: Some(3),
            ..Probe::default()
        };
        let mut t = Tracker::default();
        let t0 = Instant::now();
        assert_eq!(t.due(&probe, 0, t0), (false, Some(Duration::from_secs(3))));
        let t1 = t0 + Duration::from_secs(3);
        assert!(t.due(&probe, 0, t1).0);
        assert_eq!(t.record(&probe, ProbeResult::Success, t1), None);
        assert!(!t.due(&probe, 0, t1 + Duration::from_secs(1)).0);
        let t2 = t1 + Duration::from_secs(5);
        assert!(t.due(&probe, 0, t2).0);
        assert_eq!(t.record(&probe, ProbeResult::Success, t2), Some(true));
        assert_eq!(t.record(&probe, ProbeResult::Failure("x".into()), t2), None);
        assert_eq!(
            t.record(&probe, ProbeResult::Failure("x".into()), t2),
            Some(false)
        );
    }

    #[tokio::test]
    async fn tcp_and_http_probes_reach_a_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 512];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let status = if String::from_utf8_lossy(&buf[..n]).starts_with("GET /bad") {
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let container = Container::default();
        let runtime = Runtime::new("runc", std::path::Path::new("/nonexistent"));
        let tcp: Probe = serde_json::from_value(serde_json::json!({"tcpSocket": {"port": port}}))
            .expect("probe");
        assert_eq!(
            run(&tcp, &container, "127.0.0.1", &runtime, "x").await,
            ProbeResult::Success
        );
        let ok: Probe = serde_json::from_value(
            serde_json::json!({"httpGet": {"port": port, "path": "/healthz"}}),
        )
        .expect("probe");
        assert_eq!(
            run(&ok, &container, "127.0.0.1", &runtime, "x").await,
            ProbeResult::Success
        );
        let bad: Probe =
            serde_json::from_value(serde_json::json!({"httpGet": {"port": port, "path": "/bad"}}))
                .expect("probe");
        assert_eq!(
            run(&bad, &container, "127.0.0.1", &runtime, "x").await,
            ProbeResult::Failure("HTTP probe failed with statuscode: 500".into())
        );
        // A closed port.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let refused: Probe =
            serde_json::from_value(serde_json::json!({"tcpSocket": {"port": closed}}))
                .expect("probe");
        assert_eq!(
            run(&refused, &container, "127.0.0.1", &runtime, "x").await,
            ProbeResult::Failure(format!(
                "dial tcp 127.0.0.1:{closed}: connect: connection refused"
            ))
        );
    }
}
