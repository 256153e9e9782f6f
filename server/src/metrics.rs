//! Operability: Prometheus text on `/metrics`, `/health/live` and `/health/ready`, served by a
//! deliberately tiny HTTP/1.1 responder (GET only, one request per connection) on
//! `--metrics-port`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::service::{Mode, Service};

/// Upper bounds of the latency buckets, in seconds.
const LATENCY_BOUNDS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

#[derive(Default)]
pub struct Metrics {
    pub ready: AtomicBool,
    requests: AtomicU64,
    in_flight: AtomicU64,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    latency_buckets: [AtomicU64; 13],
    latency_sum_us: AtomicU64,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    /// Counts an `infer_batch` call in; returns false (and counts nothing) above `limit`.
    pub fn admit(&self, limit: u64) -> bool {
        let now = self.in_flight.fetch_add(1, Relaxed);
        if now >= limit {
            self.in_flight.fetch_sub(1, Relaxed);
            return false;
        }
        true
    }

    pub fn finish(&self, took: Duration, error: Option<&'static str>) {
        self.in_flight.fetch_sub(1, Relaxed);
        self.requests.fetch_add(1, Relaxed);
        let s = took.as_secs_f64();
        if let Some(i) = LATENCY_BOUNDS.iter().position(|&b| s <= b) {
            self.latency_buckets[i].fetch_add(1, Relaxed);
        }
        self.latency_sum_us
            .fetch_add(took.as_micros() as u64, Relaxed);
        if let Some(kind) = error {
            self.error(kind);
        }
    }

    /// An error outside a counted call (refused admission, undecodable call).
    pub fn error(&self, kind: &'static str) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(kind)
            .or_default() += 1;
    }

    pub fn render(&self, service: &Service) -> String {
        let mut out = String::new();
        let requests = self.requests.load(Relaxed);
        let _ = writeln!(
            out,
            "# HELP torchpipe_requests_total infer_batch calls answered (success or error)."
        );
        let _ = writeln!(out, "# TYPE torchpipe_requests_total counter");
        let _ = writeln!(out, "torchpipe_requests_total {requests}");
        let _ = writeln!(out, "# HELP torchpipe_request_errors_total Errors by kind.");
        let _ = writeln!(out, "# TYPE torchpipe_request_errors_total counter");
        for (kind, n) in self.errors.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "torchpipe_request_errors_total{{kind=\"{kind}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP torchpipe_in_flight_requests infer_batch calls being served."
        );
        let _ = writeln!(out, "# TYPE torchpipe_in_flight_requests gauge");
        let _ = writeln!(
            out,
            "torchpipe_in_flight_requests {}",
            self.in_flight.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP torchpipe_request_duration_seconds infer_batch latency in the server."
        );
        let _ = writeln!(out, "# TYPE torchpipe_request_duration_seconds histogram");
        let mut cumulative = 0;
        for (b, count) in LATENCY_BOUNDS.iter().zip(&self.latency_buckets) {
            cumulative += count.load(Relaxed);
            let _ = writeln!(
                out,
                "torchpipe_request_duration_seconds_bucket{{le=\"{b}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "torchpipe_request_duration_seconds_bucket{{le=\"+Inf\"}} {requests}"
        );
        let sum = self.latency_sum_us.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "torchpipe_request_duration_seconds_sum {sum}");
        let _ = writeln!(out, "torchpipe_request_duration_seconds_count {requests}");
        if let Mode::Pipeline(p) = &service.mode {
            render_nodes(&mut out, &p.stats());
        }
        out
    }
}

fn render_nodes(out: &mut String, stats: &[engine::scheduler::NodeStats]) {
    let families: [(&str, &str, &str); 6] = [
        (
            "torchpipe_node_queue_length",
            "gauge",
            "Items waiting in the node's queue.",
        ),
        (
            "torchpipe_node_instances",
            "gauge",
            "Instances built and serving.",
        ),
        (
            "torchpipe_node_items_total",
            "counter",
            "Items handed to the node's instances.",
        ),
        (
            "torchpipe_node_batches_total",
            "counter",
            "Batches handed to the node's instances.",
        ),
        (
            "torchpipe_node_queue_wait_seconds_total",
            "counter",
            "Time items waited in the queue.",
        ),
        (
            "torchpipe_node_busy_seconds_total",
            "counter",
            "Time the node's instances spent in forward.",
        ),
    ];
    for (i, (name, kind, help)) in families.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for s in stats {
            let v = match i {
                0 => s.queue_len as f64,
                1 => s.instances as f64,
                2 => s.items as f64,
                3 => s.batches as f64,
                4 => s.queue_wait_us as f64 / 1e6,
                _ => s.busy_us as f64 / 1e6,
            };
            let _ = writeln!(out, "{name}{{node=\"{}\"}} {v}", s.name);
        }
    }
    let _ = writeln!(
        out,
        "# HELP torchpipe_node_batch_size Batch sizes handed to instances."
    );
    let _ = writeln!(out, "# TYPE torchpipe_node_batch_size histogram");
    for s in stats {
        let mut cumulative = 0;
        let mut sum = 0;
        for (size, n) in s.batch_sizes.iter().enumerate().skip(1) {
            cumulative += n;
            sum += n * size as u64;
            let _ = writeln!(
                out,
                "torchpipe_node_batch_size_bucket{{node=\"{}\",le=\"{size}\"}} {cumulative}",
                s.name
            );
        }
        let _ = writeln!(
            out,
            "torchpipe_node_batch_size_bucket{{node=\"{}\",le=\"+Inf\"}} {}",
            s.name, s.batches
        );
        let _ = writeln!(
            out,
            "torchpipe_node_batch_size_sum{{node=\"{}\"}} {sum}",
            s.name
        );
        let _ = writeln!(
            out,
            "torchpipe_node_batch_size_count{{node=\"{}\"}} {}",
            s.name, s.batches
        );
    }
    let waits: Vec<_> = stats
        .iter()
        .map(|s| (s.name.as_str(), &s.queue_wait))
        .collect();
    render_time_histograms(
        out,
        "torchpipe_node_queue_wait_duration_seconds",
        "Each item's wait in the node's queue, until an instance takes it.",
        &waits,
    );
    let runs: Vec<_> = stats.iter().map(|s| (s.name.as_str(), &s.run)).collect();
    render_time_histograms(
        out,
        "torchpipe_node_run_duration_seconds",
        "Each batch's time in the node's forward.",
        &runs,
    );
}

/// One histogram family of durations with a series per node (cumulative buckets, `+Inf` equal
/// to `_count`).
fn render_time_histograms(
    out: &mut String,
    name: &str,
    help: &str,
    series: &[(&str, &engine::scheduler::TimeHistogramSnapshot)],
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (node, h) in series {
        for (b, c) in engine::scheduler::TIME_BOUNDS.iter().zip(&h.cumulative) {
            let _ = writeln!(out, "{name}_bucket{{node=\"{node}\",le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{node=\"{node}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(out, "{name}_sum{{node=\"{node}\"}} {}", h.sum_s);
        let _ = writeln!(out, "{name}_count{{node=\"{node}\"}} {}", h.count);
    }
}

/// Serves the metrics and health endpoints until the process ends.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, service: Arc<Service>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (metrics, service) = (metrics.clone(), service.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut len = 0;
            // The request line and headers, at most 4 KiB, within 5 s.
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while len < buf.len() {
                    let n = stream.read(&mut buf[len..]).await?;
                    if n == 0 {
                        break;
                    }
                    len += n;
                    if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            let head = String::from_utf8_lossy(&buf[..len]);
            let mut parts = head.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let (status, body) = match (method, path) {
                ("GET", "/metrics") => ("200 OK", metrics.render(&service)),
                ("GET", "/health/live") => ("200 OK", "live\n".to_string()),
                ("GET", "/health/ready") if metrics.ready.load(Relaxed) => {
                    ("200 OK", "ready\n".to_string())
                }
                ("GET", "/health/ready") => ("503 Service Unavailable", "not ready\n".to_string()),
                ("GET", _) => (
                    "404 Not Found",
                    "not found: /metrics, /health/live, /health/ready\n".to_string(),
                ),
                _ => ("405 Method Not Allowed", "GET only\n".to_string()),
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes()).await;
        });
    }
}
