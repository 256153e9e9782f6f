//! /metrics as Prometheus' own tools read it: a live scrape passes `promtool check
//! metrics`, and a real Prometheus server scraping the running server counts exactly the
//! requests sent. Both binaries come from Debian's `prometheus` package (scripts/setup).

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serve_thrift::serve::TInferenceServiceSyncClient;
use serve_thrift::InferenceParams;

/// Sends `n` good images through the server; each must be classified.
fn send(port: u16, n: usize) {
    let good = std::fs::read(common::repo_root().join("benches/imgs/rocket.jpg")).unwrap();
    let mut c = common::client(port);
    for i in 0..n {
        c.infer_batch(InferenceParams::new(format!("prom-{i}"), good.clone()))
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
    }
}

fn start_server() -> (common::Server, u16) {
    let config = common::config_copy("tiny_cpu.toml", &[]);
    common::Server::start_with_metrics(&["--toml", config.to_str().unwrap()])
}

/// `tool` from Debian's `prometheus` package, or a failure that says where it comes from: CI
/// runs scripts/setup first, so a missing tool is a broken setup, never a reason to skip.
fn prometheus_tool(tool: &str) -> Command {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match found {
        Ok(s) if s.success() => Command::new(tool),
        other => panic!(
            "`{tool} --version` failed ({other:?}): install Debian's `prometheus` package \
             (scripts/setup does: apt-get install --no-install-recommends prometheus)"
        ),
    }
}

/// The value of a sample line `name value` in the classic text format.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn a_live_scrape_passes_promtool_check_metrics() {
    let (server, metrics_port) = start_server();
    send(server.port, 7);
    let reply = common::http_get(metrics_port, "/metrics", &[]);
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.content_type,
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = reply.body;
    assert_eq!(
        sample(&text, "torchpipe_requests_total"),
        Some(7.0),
        "{text}"
    );

    let mut promtool = prometheus_tool("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}\n{}{}\n--- the scrape:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );

    // The same families in OpenMetrics, for a scraper that asks for it.
    let om = common::http_get(
        metrics_port,
        "/metrics",
        &[("Accept", "application/openmetrics-text;version=1.0.0")],
    );
    assert_eq!(
        om.content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert_eq!(sample(&om.body, "torchpipe_requests_total"), Some(7.0));
    assert!(om.body.ends_with("# EOF\n"), "{}", om.body);
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}

/// A Prometheus server in its own folder, stopped (and its log kept) whatever the test does.
struct Prometheus {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Prometheus {
    fn start(dir: &Path, target_port: u16) -> Prometheus {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: torchpipe\n    static_configs:\n      \
                 - targets: ['127.0.0.1:{target_port}']\n"
            ),
        )
        .unwrap();
        let port = common::free_port();
        let log = dir.join("prometheus.log");
        let child = prometheus_tool("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut p = Prometheus { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("prometheus exited with {status}:\n{}", p.log());
            }
            let ready = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && common::http_get(port, "/-/ready", &[]).status == 200;
            if ready {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within 30 s:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An instant query's single value, or None while it has no result.
    fn query(&self, promql: &str) -> Option<f64> {
        let path = format!("/api/v1/query?query={}", encode_query(promql));
        let reply = common::http_get(self.port, &path, &[]);
        assert_eq!(reply.status, 200, "{promql}: {}", reply.body);
        let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(json["status"], "success", "{}", reply.body);
        let result = json["data"]["result"].as_array().unwrap();
        assert!(
            result.len() <= 1,
            "{promql}: several series: {}",
            reply.body
        );
        result.first().map(|r| {
            r["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("bad value in {}", reply.body))
        })
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a PromQL expression for a query string.
fn encode_query(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn a_prometheus_server_scraping_the_server_counts_every_request_sent() {
    const SENT: usize = 9;
    let (server, metrics_port) = start_server();
    let dir = common::temp_dir("prometheus");
    let prometheus = Prometheus::start(&dir, metrics_port);
    send(server.port, SENT);

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = None;
    while last != Some(SENT as f64) {
        assert!(
            Instant::now() < deadline,
            "torchpipe_requests_total in Prometheus is {last:?} after 20 s, not {SENT}; its \
             targets: {}\nits log:\n{}",
            common::http_get(prometheus.port, "/api/v1/targets", &[]).body,
            prometheus.log()
        );
        std::thread::sleep(Duration::from_millis(250));
        last = prometheus.query("torchpipe_requests_total");
        assert!(
            last.is_none_or(|v| v <= SENT as f64),
            "more requests counted than sent: {last:?}"
        );
    }
    assert_eq!(prometheus.query("up{job=\"torchpipe\"}"), Some(1.0));
    // The per-node histograms came through too, as histograms PromQL can take quantiles of.
    let p99 = prometheus.query(
        "histogram_quantile(0.99, torchpipe_node_run_duration_seconds_bucket{node=\"classifier\"})",
    );
    assert!(p99.is_some_and(|v| v > 0.0 && v <= 10.0), "{p99:?}");
    drop(prometheus);
    let _ = std::fs::remove_dir_all(&dir);
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}
