//! Counters for `/metrics`, in Prometheus' text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, &'static str, u16), u64>>,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub gc_runs: AtomicU64,
    pub gc_blobs_deleted: AtomicU64,
}

impl Metrics {
    pub fn record(&self, route: &'static str, method: &'static str, status: u16) {
        if let Ok(mut r) = self.requests.lock() {
            *r.entry((route, method, status)).or_default() += 1;
        }
    }

    pub fn render(&self, uploads_in_flight: usize) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP kiln_registry_requests_total HTTP requests by route, method and status.\n",
        );
        out.push_str("# TYPE kiln_registry_requests_total counter\n");
        if let Ok(r) = self.requests.lock() {
            for ((route, method, status), n) in r.iter() {
                let _ = writeln!(
                    out,
                    "kiln_registry_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
                );
            }
        }
        let counters = [
            (
                "kiln_registry_bytes_received_total",
                "Blob and manifest bytes received.",
                &self.bytes_in,
            ),
            (
                "kiln_registry_bytes_sent_total",
                "Blob and manifest bytes sent.",
                &self.bytes_out,
            ),
            (
                "kiln_registry_gc_runs_total",
                "Garbage collection passes.",
                &self.gc_runs,
            ),
            (
                "kiln_registry_gc_blobs_deleted_total",
                "Blobs deleted by garbage collection.",
                &self.gc_blobs_deleted,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP kiln_registry_uploads_in_flight Upload sessions open in this process.\n# TYPE kiln_registry_uploads_in_flight gauge\nkiln_registry_uploads_in_flight {uploads_in_flight}"
        );
        out
    }
}
