//! Operability on `--metrics-port`: `/metrics` for Prometheus, `/health/live` and
//! `/health/ready`.
//!
//! The metrics are kept and encoded by `prometheus-client`, the Prometheus project's own Rust
//! client, rather than TiKV's `prometheus` crate: it is the official, maintained one; its
//! families are typed by a label-set struct, so a label cannot be misspelt at one call site; a
//! `Collector` is asked for its values at each scrape, so the per-node counters are read where
//! the engine keeps them instead of being mirrored into a second set; and it encodes both
//! exposition formats, which are negotiated: OpenMetrics 1.0 for a scraper that
//! asks for it in `Accept` (the Prometheus server does), the classic text format 0.0.4
//! otherwise. The classic format is also what `promtool check metrics` lints (the Prometheus
//! 2.42 of Debian 12 reads OpenMetrics' counter families, declared without `_total`, as
//! undocumented families of their own), and what a person's `curl` shows.
//!
//! HTTP is axum's router on hyper's HTTP/1.1 connection, on the server's tokio runtime. The
//! connections are driven here rather than by `axum::serve` because that sets no header-read
//! timeout: a peer that sends half a request, or leaves a keep-alive connection idle, would hold
//! its socket and task for ever.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use engine::{NodeStats, TimeHistogramSnapshot, TIME_BOUNDS};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::failure::Failure;

/// Upper bounds of the request latency buckets, in seconds.
const LATENCY_BOUNDS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// Longest a peer may take to send a request's head, idle keep-alive time included.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A request's line and headers are at most this long (hyper's smallest read buffer); no
/// endpoint here takes more than a path.
const MAX_REQUEST_HEAD: usize = 8192;

const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT_CONTENT_TYPE: &str =
    prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: &'static str,
}

/// The request-level metrics, updated by the Thrift handler; the per-node ones live in the
/// engine and are read at scrape time.
pub struct Metrics {
    pub ready: AtomicBool,
    requests: Counter,
    in_flight: Gauge,
    errors: Family<ErrorLabels, Counter>,
    duration: Histogram,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics {
            ready: AtomicBool::new(false),
            requests: Counter::default(),
            in_flight: Gauge::default(),
            errors: Family::default(),
            duration: Histogram::new(LATENCY_BOUNDS.iter().copied()),
        })
    }

    /// Counts an `infer_batch` call in; returns false (and counts nothing) above `limit`.
    pub fn admit(&self, limit: u64) -> bool {
        let before = self.in_flight.inc();
        if before >= i64::try_from(limit).unwrap_or(i64::MAX) {
            self.in_flight.dec();
            return false;
        }
        true
    }

    pub fn finish(&self, took: Duration, error: Option<&Failure>) {
        self.in_flight.dec();
        self.requests.inc();
        self.duration.observe(took.as_secs_f64());
        if let Some(failure) = error {
            self.error(failure);
        }
    }

    /// An error outside a counted call (refused admission, undecodable call).
    pub fn error(&self, failure: &Failure) {
        let kind = failure.label();
        self.errors.get_or_create(&ErrorLabels { kind }).inc();
    }

    /// A registry of these metrics, then the per-node families that `nodes` gives at each
    /// scrape. The handles are shared, so what the handler counts is what the registry encodes.
    fn registry(&self, nodes: impl NodeSource) -> Registry {
        let mut r = Registry::default();
        r.register(
            "torchpipe_requests",
            "infer_batch calls answered (success or error)",
            self.requests.clone(),
        );
        r.register(
            "torchpipe_request_errors",
            "Errors by kind",
            self.errors.clone(),
        );
        r.register(
            "torchpipe_in_flight_requests",
            "infer_batch calls being served",
            self.in_flight.clone(),
        );
        r.register(
            "torchpipe_request_duration_seconds",
            "infer_batch latency in the server",
            self.duration.clone(),
        );
        r.register_collector(Box::new(NodeCollector(nodes)));
        r
    }
}

/// Where the per-node statistics come from at each scrape: the pipeline in the server, a fixed
/// list in tests.
pub trait NodeSource: Fn() -> Vec<NodeStats> + Send + Sync + 'static {}
impl<F: Fn() -> Vec<NodeStats> + Send + Sync + 'static> NodeSource for F {}

struct NodeCollector<F>(F);

impl<F> fmt::Debug for NodeCollector<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeCollector")
    }
}

impl<F: NodeSource> Collector for NodeCollector<F> {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let stats = (self.0)();
        if stats.is_empty() {
            // The baseline has no nodes: no per-node families at all rather than empty ones.
            return Ok(());
        }
        let e = &mut encoder;
        family(
            e,
            &stats,
            "torchpipe_node_queue_length",
            "Items waiting in the node's queue.",
            |s| ConstGauge::new(s.queue_len as u64),
        )?;
        family(
            e,
            &stats,
            "torchpipe_node_instances",
            "Instances built and serving.",
            |s| ConstGauge::new(s.instances),
        )?;
        family(
            e,
            &stats,
            "torchpipe_node_items",
            "Items handed to the node's instances.",
            |s| ConstCounter::new(s.items),
        )?;
        family(
            e,
            &stats,
            "torchpipe_node_batches",
            "Batches handed to the node's instances.",
            |s| ConstCounter::new(s.batches),
        )?;
        family(
            e,
            &stats,
            "torchpipe_node_queue_wait_seconds",
            "Time items waited in the queue.",
            |s| ConstCounter::new(s.queue_wait_us as f64 / 1e6),
        )?;
        family(
            e,
            &stats,
            "torchpipe_node_busy_seconds",
            "Time the node's instances spent in forward.",
            |s| ConstCounter::new(s.busy_us as f64 / 1e6),
        )?;
        family(
            e,
            &stats,
            "torchpipe_node_batch_size",
            "Batch sizes handed to instances.",
            BucketCounts::batch_sizes,
        )?;
        family(
            e,
            &stats,
            "torchpipe_node_queue_wait_duration_seconds",
            "Each item's wait in the node's queue, until an instance takes it.",
            |s| BucketCounts::durations(&s.queue_wait),
        )?;
        family(
            e,
            &stats,
            "torchpipe_node_run_duration_seconds",
            "Each batch's time in the node's forward.",
            |s| BucketCounts::durations(&s.run),
        )
    }
}

/// One family with a series per node, labelled `node`.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    stats: &[NodeStats],
    name: &str,
    help: &str,
    value: impl Fn(&NodeStats) -> M,
) -> Result<(), fmt::Error> {
    let Some(first) = stats.first() else {
        return Ok(());
    };
    let mut metric = encoder.encode_descriptor(name, help, None, value(first).metric_type())?;
    for s in stats {
        let labels = [("node", s.name.as_str())];
        value(s).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A histogram the engine already counted: per-bucket counts (the encoders accumulate them),
/// the last bucket's bound `+Inf`.
struct BucketCounts {
    buckets: Vec<(f64, u64)>,
    sum: f64,
}

impl BucketCounts {
    /// `batch_sizes[n]` batches of n items: a bucket per size from 1 to the node's largest.
    fn batch_sizes(s: &NodeStats) -> BucketCounts {
        let mut buckets: Vec<(f64, u64)> = Vec::with_capacity(s.batch_sizes.len());
        let mut sum = 0u64;
        for (size, &n) in s.batch_sizes.iter().enumerate().skip(1) {
            buckets.push((size as f64, n));
            sum += n * size as u64;
        }
        // Sizes and the batch total are separate atomics, read one after the other.
        let counted: u64 = buckets.iter().map(|b| b.1).sum();
        buckets.push((f64::INFINITY, s.batches.saturating_sub(counted)));
        BucketCounts {
            buckets,
            sum: sum as f64,
        }
    }

    /// The engine's cumulative snapshot over TIME_BOUNDS, turned back into per-bucket counts.
    fn durations(h: &TimeHistogramSnapshot) -> BucketCounts {
        let mut buckets = Vec::with_capacity(TIME_BOUNDS.len() + 1);
        let mut below = 0u64;
        for (&bound, &cumulative) in TIME_BOUNDS.iter().zip(&h.cumulative) {
            buckets.push((bound, cumulative.saturating_sub(below)));
            below = below.max(cumulative);
        }
        buckets.push((f64::INFINITY, h.count.saturating_sub(below)));
        BucketCounts {
            buckets,
            sum: h.sum_s,
        }
    }
}

impl EncodeMetric for BucketCounts {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        // `_count` is the `+Inf` bucket, as a scraper expects, even when a racing update made
        // the engine's own total lag its buckets.
        let count = self.buckets.iter().map(|b| b.1).sum();
        encoder.encode_histogram::<NoLabelSet>(self.sum, count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The exposition format a scraper asked for: OpenMetrics if any `Accept` range names it (with
/// a non-zero q), else the classic text format.
fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f64>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        })
}

/// The registry and the cheap-to-clone handles the routes read.
#[derive(Clone)]
struct Endpoints {
    metrics: Arc<Metrics>,
    registry: Arc<Registry>,
}

async fn scrape(State(at): State<Endpoints>, headers: HeaderMap) -> Response {
    let mut body = String::new();
    let (encoded, content_type) = if wants_openmetrics(&headers) {
        (
            prometheus_client::encoding::text::encode(&mut body, &at.registry),
            OPENMETRICS_CONTENT_TYPE,
        )
    } else {
        (
            prometheus_client::encoding::prometheus_text::encode(&mut body, &at.registry),
            PROMETHEUS_TEXT_CONTENT_TYPE,
        )
    };
    match encoded {
        Ok(()) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(fmt::Error) => {
            tracing::error!("cannot encode the metrics");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot encode the metrics\n",
            )
                .into_response()
        }
    }
}

async fn ready(State(at): State<Endpoints>) -> (StatusCode, &'static str) {
    if at.metrics.ready.load(Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn get_only() -> impl IntoResponse {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "GET, HEAD")],
        "GET only\n",
    )
}

async fn not_found(method: Method) -> Response {
    if method == Method::GET || method == Method::HEAD {
        (
            StatusCode::NOT_FOUND,
            "not found: /metrics, /health/live, /health/ready\n",
        )
            .into_response()
    } else {
        get_only().await.into_response()
    }
}

fn router(metrics: Arc<Metrics>, registry: Registry) -> Router {
    Router::new()
        .route("/metrics", get(scrape).fallback(get_only))
        .route(
            "/health/live",
            get(|| async { "live\n" }).fallback(get_only),
        )
        .route("/health/ready", get(ready).fallback(get_only))
        .fallback(not_found)
        .with_state(Endpoints {
            metrics,
            registry: Arc::new(registry),
        })
}

/// Serves the metrics and health endpoints until the runtime ends; `nodes` gives the engine's
/// per-node figures at each scrape.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, nodes: impl NodeSource) {
    let registry = metrics.registry(nodes);
    let app = router(metrics, registry);
    let limits = crate::http::HttpLimits {
        head_timeout: HEADER_READ_TIMEOUT,
        read_buffer: MAX_REQUEST_HEAD,
    };
    crate::http::serve(listener, app, "metrics", limits, None).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Three requests (one a timeout, one above every latency bucket) and one node with a
    /// largest batch of 2, so every family has a sample and every sum is exact in binary.
    fn fixture() -> (Arc<Metrics>, Registry) {
        let m = Metrics::new();
        let timeout = Failure::NoAnswer(Duration::from_secs(1));
        for (took, error) in [(0.25, None), (0.5, Some(&timeout)), (16.0, None)] {
            assert!(m.admit(10));
            m.finish(Duration::from_secs_f64(took), error);
        }
        assert!(m.admit(10), "one still in flight");
        let mut wait = vec![0; TIME_BOUNDS.len()];
        // Two waits of at most 0.5 ms, one of at most 1 ms (bounds 3 and 4).
        wait[3..].fill(2);
        wait[4..].fill(3);
        let mut run = vec![0; TIME_BOUNDS.len()];
        run[TIME_BOUNDS.len() - 1] = 1; // one batch within 10 s, one above
        let node = NodeStats {
            name: "decoder".into(),
            queue_len: 4,
            instances: 2,
            items: 3,
            batches: 2,
            queue_wait_us: 1500,
            busy_us: 12_500_000,
            batch_sizes: vec![0, 1, 1],
            queue_wait: TimeHistogramSnapshot {
                cumulative: wait,
                count: 3,
                sum_s: 0.0015,
            },
            run: TimeHistogramSnapshot {
                cumulative: run,
                count: 2,
                sum_s: 12.5,
            },
        };
        let registry = m.registry(move || vec![node.clone()]);
        (m, registry)
    }

    fn time_buckets(name: &str, cumulative: &[u64], inf: u64) -> String {
        let bounds = [
            "5e-05", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
            "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10",
        ];
        assert_eq!(bounds.len(), TIME_BOUNDS.len());
        let mut out = String::new();
        for (b, c) in bounds.iter().zip(cumulative) {
            out += &format!("{name}_bucket{{node=\"decoder\",le=\"{b}\"}} {c}\n");
        }
        out + &format!("{name}_bucket{{node=\"decoder\",le=\"+Inf\"}} {inf}\n")
    }

    #[test]
    fn the_classic_text_is_exactly_the_families_of_before() {
        let (_m, registry) = fixture();
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        let mut expected = "\
# HELP torchpipe_requests_total infer_batch calls answered (success or error).
# TYPE torchpipe_requests_total counter
torchpipe_requests_total 3
# HELP torchpipe_request_errors_total Errors by kind.
# TYPE torchpipe_request_errors_total counter
torchpipe_request_errors_total{kind=\"timeout\"} 1
# HELP torchpipe_in_flight_requests infer_batch calls being served.
# TYPE torchpipe_in_flight_requests gauge
torchpipe_in_flight_requests 1
# HELP torchpipe_request_duration_seconds infer_batch latency in the server.
# TYPE torchpipe_request_duration_seconds histogram
torchpipe_request_duration_seconds_bucket{le=\"0.001\"} 0
torchpipe_request_duration_seconds_bucket{le=\"0.002\"} 0
torchpipe_request_duration_seconds_bucket{le=\"0.005\"} 0
torchpipe_request_duration_seconds_bucket{le=\"0.01\"} 0
torchpipe_request_duration_seconds_bucket{le=\"0.02\"} 0
torchpipe_request_duration_seconds_bucket{le=\"0.05\"} 0
torchpipe_request_duration_seconds_bucket{le=\"0.1\"} 0
torchpipe_request_duration_seconds_bucket{le=\"0.2\"} 0
torchpipe_request_duration_seconds_bucket{le=\"0.5\"} 2
torchpipe_request_duration_seconds_bucket{le=\"1\"} 2
torchpipe_request_duration_seconds_bucket{le=\"2\"} 2
torchpipe_request_duration_seconds_bucket{le=\"5\"} 2
torchpipe_request_duration_seconds_bucket{le=\"10\"} 2
torchpipe_request_duration_seconds_bucket{le=\"+Inf\"} 3
torchpipe_request_duration_seconds_sum 16.75
torchpipe_request_duration_seconds_count 3
# HELP torchpipe_node_queue_length Items waiting in the node's queue.
# TYPE torchpipe_node_queue_length gauge
torchpipe_node_queue_length{node=\"decoder\"} 4
# HELP torchpipe_node_instances Instances built and serving.
# TYPE torchpipe_node_instances gauge
torchpipe_node_instances{node=\"decoder\"} 2
# HELP torchpipe_node_items_total Items handed to the node's instances.
# TYPE torchpipe_node_items_total counter
torchpipe_node_items_total{node=\"decoder\"} 3
# HELP torchpipe_node_batches_total Batches handed to the node's instances.
# TYPE torchpipe_node_batches_total counter
torchpipe_node_batches_total{node=\"decoder\"} 2
# HELP torchpipe_node_queue_wait_seconds_total Time items waited in the queue.
# TYPE torchpipe_node_queue_wait_seconds_total counter
torchpipe_node_queue_wait_seconds_total{node=\"decoder\"} 0.0015
# HELP torchpipe_node_busy_seconds_total Time the node's instances spent in forward.
# TYPE torchpipe_node_busy_seconds_total counter
torchpipe_node_busy_seconds_total{node=\"decoder\"} 12.5
# HELP torchpipe_node_batch_size Batch sizes handed to instances.
# TYPE torchpipe_node_batch_size histogram
torchpipe_node_batch_size_bucket{node=\"decoder\",le=\"1\"} 1
torchpipe_node_batch_size_bucket{node=\"decoder\",le=\"2\"} 2
torchpipe_node_batch_size_bucket{node=\"decoder\",le=\"+Inf\"} 2
torchpipe_node_batch_size_sum{node=\"decoder\"} 3.0
torchpipe_node_batch_size_count{node=\"decoder\"} 2
# HELP torchpipe_node_queue_wait_duration_seconds Each item's wait in the node's queue, until an instance takes it.
# TYPE torchpipe_node_queue_wait_duration_seconds histogram
"
        .to_string();
        expected += &time_buckets(
            "torchpipe_node_queue_wait_duration_seconds",
            &[0, 0, 0, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3],
            3,
        );
        expected += "\
torchpipe_node_queue_wait_duration_seconds_sum{node=\"decoder\"} 0.0015
torchpipe_node_queue_wait_duration_seconds_count{node=\"decoder\"} 3
# HELP torchpipe_node_run_duration_seconds Each batch's time in the node's forward.
# TYPE torchpipe_node_run_duration_seconds histogram
";
        expected += &time_buckets(
            "torchpipe_node_run_duration_seconds",
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            2,
        );
        expected += "\
torchpipe_node_run_duration_seconds_sum{node=\"decoder\"} 12.5
torchpipe_node_run_duration_seconds_count{node=\"decoder\"} 2
";
        assert_eq!(text, expected);
    }

    #[test]
    fn openmetrics_declares_counters_without_total_and_ends_in_eof() {
        let (_m, registry) = fixture();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let head = "\
# HELP torchpipe_requests infer_batch calls answered (success or error).
# TYPE torchpipe_requests counter
torchpipe_requests_total 3
# HELP torchpipe_request_errors Errors by kind.
# TYPE torchpipe_request_errors counter
torchpipe_request_errors_total{kind=\"timeout\"} 1
# HELP torchpipe_in_flight_requests infer_batch calls being served.
# TYPE torchpipe_in_flight_requests gauge
torchpipe_in_flight_requests 1
# HELP torchpipe_request_duration_seconds infer_batch latency in the server.
# TYPE torchpipe_request_duration_seconds histogram
torchpipe_request_duration_seconds_sum 16.75
torchpipe_request_duration_seconds_count 3
torchpipe_request_duration_seconds_bucket{le=\"0.001\"} 0
";
        assert!(text.starts_with(head), "{text}");
        for line in [
            "torchpipe_request_duration_seconds_bucket{le=\"+Inf\"} 3\n",
            "# TYPE torchpipe_node_items counter\n",
            "torchpipe_node_items_total{node=\"decoder\"} 3\n",
            "torchpipe_node_busy_seconds_total{node=\"decoder\"} 12.5\n",
            "torchpipe_node_batch_size_bucket{le=\"+Inf\",node=\"decoder\"} 2\n",
            "torchpipe_node_run_duration_seconds_count{node=\"decoder\"} 2\n",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
        assert!(text.ends_with("\n# EOF\n"), "{text}");
    }

    #[test]
    fn admission_stops_at_the_limit_and_counts_nothing_refused() {
        let m = Metrics::new();
        assert!(m.admit(2));
        assert!(m.admit(2));
        assert!(!m.admit(2));
        assert_eq!(m.in_flight.get(), 2);
        m.finish(Duration::from_millis(1), None);
        assert!(m.admit(2));
        assert_eq!(m.requests.get(), 1);
    }

    #[test]
    fn openmetrics_is_chosen_only_when_asked_for() {
        let accept = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, v.parse().unwrap());
            wants_openmetrics(&h)
        };
        // Prometheus 2.42's scrape header.
        assert!(accept(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(accept(
            "text/plain, Application/OpenMetrics-Text; version=1.0.0"
        ));
        assert!(!accept("application/openmetrics-text; q=0"));
        assert!(!accept("text/plain;version=0.0.4"));
        assert!(!accept("*/*"));
        assert!(!wants_openmetrics(&HeaderMap::new()));
    }

    /// One HTTP/1.1 exchange: (status, content type, body).
    async fn exchange(port: u16, request: &str) -> (u16, String, String) {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut raw = String::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut raw))
            .await
            .expect("the server closes a `Connection: close` exchange")
            .unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        let content_type = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-type")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_default();
        (status, content_type, body.to_string())
    }

    fn request(method: &str, path: &str, extra: &str) -> String {
        format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}\r\n")
    }

    #[tokio::test]
    async fn endpoints_answer_by_path_method_readiness_and_accept() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (m, _) = fixture();
        tokio::spawn(serve(listener, m.clone(), Vec::<NodeStats>::new));
        let get = |path: &str| request("GET", path, "");

        assert_eq!(
            exchange(port, &get("/health/ready")).await,
            (
                503,
                "text/plain; charset=utf-8".into(),
                "not ready\n".into()
            )
        );
        m.ready.store(true, Relaxed);
        assert_eq!(exchange(port, &get("/health/ready")).await.0, 200);
        assert_eq!(exchange(port, &get("/health/live")).await.2, "live\n");
        assert_eq!(exchange(port, &get("/metric")).await.0, 404);
        assert_eq!(exchange(port, &get("/metrics/x")).await.0, 404);
        for path in ["/metrics", "/health/live", "/nowhere"] {
            let (status, _, body) = exchange(port, &request("POST", path, "")).await;
            assert_eq!((status, body.as_str()), (405, "GET only\n"), "{path}");
        }

        let (status, content_type, text) = exchange(port, &get("/metrics")).await;
        assert_eq!(
            (status, content_type.as_str()),
            (200, PROMETHEUS_TEXT_CONTENT_TYPE)
        );
        assert!(
            text.starts_with("# HELP torchpipe_requests_total "),
            "{text}"
        );
        // No nodes (the baseline): no per-node families.
        assert!(!text.contains("torchpipe_node_"), "{text}");
        let om = request(
            "GET",
            "/metrics",
            "Accept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n",
        );
        let (status, content_type, text) = exchange(port, &om).await;
        assert_eq!(
            (status, content_type.as_str()),
            (200, OPENMETRICS_CONTENT_TYPE)
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[tokio::test]
    async fn a_peer_that_never_finishes_its_request_is_cut_off() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(serve(listener, Metrics::new(), Vec::<NodeStats>::new));
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n")
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let mut rest = Vec::new();
        tokio::time::timeout(HEADER_READ_TIMEOUT * 3, s.read_to_end(&mut rest))
            .await
            .expect("the connection is closed after the header-read timeout")
            .unwrap();
        assert!(started.elapsed() >= HEADER_READ_TIMEOUT - Duration::from_millis(100));
        assert!(!String::from_utf8_lossy(&rest).contains("torchpipe"));
    }
}
