//! Reliability and operability: a damaged-JPEG corpus through the real server,
//! /metrics and the health endpoints, and 200 clients against a deliberately slow pipeline.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serve_thrift::serve::TInferenceServiceSyncClient;
use serve_thrift::InferenceParams;

fn http_get(port: u16, path: &str) -> (u16, String) {
    let reply = common::http_get(port, path, &[]);
    (reply.status, reply.body)
}

/// The damaged-JPEG corpus: (name, bytes, must it be classified?).
fn corpus() -> Vec<(&'static str, Vec<u8>, bool)> {
    let root = common::repo_root();
    let photo = std::fs::read(root.join("benches/imgs/chelsea.jpg")).unwrap();
    let sos = photo.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    let mut bad_huffman = photo.clone();
    // Entropy-coded data replaced by codes no Huffman table has.
    for b in bad_huffman.iter_mut().skip(sos + 20).take(2000) {
        *b = 0xFF;
    }
    let mut wrong_marker = photo.clone();
    let sof = wrong_marker
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .unwrap();
    wrong_marker[sof + 1] = 0x01; // SOF0 → TEM, a marker that has no place there
    let mut no_soi = photo.clone();
    no_soi[1] = 0xD9;
    let read = |p: &str| std::fs::read(root.join(p)).unwrap();
    vec![
        ("truncated", photo[..photo.len() / 3].to_vec(), false),
        ("bad huffman", bad_huffman, false),
        ("wrong SOF marker", wrong_marker, false),
        ("EOI instead of SOI", no_soi, false),
        ("zero-length", Vec::new(), false),
        ("header only", photo[..sos].to_vec(), false),
        ("1x1", read("benches/imgs/odd_1x1.jpg"), true),
        ("1x10000", read("benches/imgs/odd_1x10000.jpg"), true),
        ("cmyk", read("engine/tests/fixtures/jpeg/cmyk.jpg"), true),
        (
            "progressive",
            read("engine/tests/fixtures/jpeg/progressive.jpg"),
            true,
        ),
    ]
}

#[test]
fn damaged_jpegs_get_an_answer_or_a_clear_error_and_metrics_count_them() {
    let config = common::config_copy("tiny_cpu.toml", &[]);
    let (server, metrics_port) =
        common::Server::start_with_metrics(&["--toml", config.to_str().unwrap()]);
    assert_eq!(
        http_get(metrics_port, "/health/live"),
        (200, "live\n".into())
    );
    assert_eq!(
        http_get(metrics_port, "/health/ready"),
        (200, "ready\n".into())
    );
    assert_eq!(http_get(metrics_port, "/nowhere").0, 404);

    let good = std::fs::read(common::repo_root().join("benches/imgs/rocket.jpg")).unwrap();
    let mut c = common::client(server.port);
    let (mut sent, mut failed) = (0, 0);
    for (name, bytes, valid) in corpus() {
        let r = c.infer_batch(InferenceParams::new(name.into(), bytes));
        sent += 1;
        match (r, valid) {
            (Ok(r), true) => assert!(r.score.into_inner() > 0.0, "{name}"),
            (Err(thrift::Error::Application(e)), false) => {
                failed += 1;
                assert!(
                    e.message
                        .starts_with("node [cpu_decoder] produced no result: "),
                    "{name}: {}",
                    e.message
                );
            }
            (other, _) => panic!("{name}: {other:?}"),
        }
        // The same connection serves a good image between the bad ones.
        c.infer_batch(InferenceParams::new("good".into(), good.clone()))
            .unwrap_or_else(|e| panic!("after {name}: {e}"));
        sent += 1;
    }

    let (status, text) = http_get(metrics_port, "/metrics");
    assert_eq!(status, 200);
    check_prometheus_text(&text);
    let value = |line_start: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(
        value("torchpipe_requests_total "),
        sent as f64,
        "the client's count"
    );
    assert_eq!(
        value("torchpipe_request_errors_total{kind=\"no_result\"} "),
        failed as f64
    );
    assert_eq!(
        value("torchpipe_request_duration_seconds_count "),
        sent as f64
    );
    assert_eq!(
        value("torchpipe_node_items_total{node=\"cpu_decoder\"} "),
        sent as f64
    );
    assert_eq!(value("torchpipe_node_instances{node=\"classifier\"} "), 2.0);
    assert!(text.contains("torchpipe_node_batch_size_bucket{node=\"classifier\",le=\"8\"}"));
    // Per-node time histograms: one queue wait per item, one run per batch.
    assert_eq!(
        value("torchpipe_node_queue_wait_duration_seconds_count{node=\"cpu_decoder\"} "),
        sent as f64
    );
    assert_eq!(
        value("torchpipe_node_run_duration_seconds_count{node=\"classifier\"} "),
        value("torchpipe_node_batches_total{node=\"classifier\"} ")
    );
    assert!(
        value("torchpipe_node_run_duration_seconds_bucket{node=\"classifier\",le=\"10\"} ") > 0.0
    );
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}

/// The Prometheus text format's rules that a scraper relies on: every sample belongs to a
/// family declared by `# TYPE` before it, names and labels are well formed, values are numbers,
/// histogram buckets are cumulative and end with `+Inf` equal to `_count`.
fn check_prometheus_text(text: &str) {
    let mut types = std::collections::HashMap::new();
    let mut last_bucket: std::collections::HashMap<String, f64> = Default::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "family declared twice: {line}"
            );
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (
                n,
                Some(
                    l.strip_suffix('}')
                        .unwrap_or_else(|| panic!("bad labels: {line}")),
                ),
            ),
            None => (series, None),
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        assert!(
            types.contains_key(family),
            "sample before its # TYPE: {line}"
        );
        if let Some(labels) = labels {
            for pair in labels.split(',') {
                let (k, v) = pair
                    .split_once('=')
                    .unwrap_or_else(|| panic!("bad label: {line}"));
                assert!(
                    !k.is_empty() && v.starts_with('"') && v.ends_with('"'),
                    "{line}"
                );
            }
        }
        if name.ends_with("_bucket") {
            let key = format!(
                "{family}{}",
                labels.unwrap_or("").split(",le=").next().unwrap_or("")
            );
            let prev = last_bucket.insert(key, v).unwrap_or(0.0);
            assert!(v >= prev, "buckets not cumulative: {line}");
        }
    }
    assert!(types.len() >= 10, "{text}");
}

#[test]
fn two_hundred_clients_against_a_slow_pipeline_get_answers_or_overload_errors() {
    // The tiny pipeline, then a deliberately slow node: ~30 items/s, a 1 s deadline.
    let config = common::config_copy(
        "tiny_cpu.toml",
        &[(
            "std = \"58.395, 57.120, 57.375\"",
            "std = \"58.395, 57.120, 57.375\"\nnext = \"slow\"\n\n[slow]\nbackend = \"Sleep\"\nsleep_ms = 30\ninstance_num = 1\nqueue_size = 16\n",
        )],
    );
    let server = common::Server::start(&[
        "--toml",
        config.to_str().unwrap(),
        "--request-timeout",
        "1",
        "--max-in-flight",
        "64",
    ]);
    let port = server.port;
    let good =
        Arc::new(std::fs::read(common::repo_root().join("benches/imgs/odd_1x1.jpg")).unwrap());
    let mut c = common::client(port);
    let started = Instant::now();
    c.infer_batch(InferenceParams::new("calm".into(), good.to_vec()))
        .unwrap();
    let calm = started.elapsed();
    let rss_before = server.rss_kb();

    let (ok, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let clients: Vec<_> = (0..200)
        .map(|i| {
            let (good, ok, refused) = (good.clone(), ok.clone(), refused.clone());
            std::thread::spawn(move || {
                let mut c = common::client(port);
                let until = Instant::now() + Duration::from_secs(4);
                while Instant::now() < until {
                    match c.infer_batch(InferenceParams::new(format!("load-{i}"), good.to_vec())) {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(thrift::Error::Application(e)) => {
                            let m = &e.message;
                            assert!(
                                m.contains("overloaded")
                                    || m.contains("timed out")
                                    || m.contains("no answer within"),
                                "unexpected error under load: {m}"
                            );
                            refused.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(e) => panic!("connection failed under load: {e}"),
                    };
                }
            })
        })
        .collect();
    let mut rss_peak = 0;
    while clients.iter().any(|c| !c.is_finished()) {
        rss_peak = rss_peak.max(server.rss_kb());
        std::thread::sleep(Duration::from_millis(100));
    }
    for c in clients {
        c.join()
            .expect("a client saw something other than an answer or an overload error");
    }
    let (ok, refused) = (ok.load(Ordering::Relaxed), refused.load(Ordering::Relaxed));
    println!("under load: {ok} answered, {refused} refused; RSS {rss_before} kB → peak {rss_peak} kB; calm latency {calm:?}");
    assert!(ok > 20, "{ok} answered");
    assert!(
        refused > 100,
        "{refused} refused: the load must exceed capacity"
    );
    assert!(
        rss_peak < rss_before + 200_000,
        "RSS grew from {rss_before} kB to {rss_peak} kB"
    );

    // After the load, a lone request is served as fast as before (plus the slow node's 30 ms).
    std::thread::sleep(Duration::from_millis(1200));
    let started = Instant::now();
    c.infer_batch(InferenceParams::new("after".into(), good.to_vec()))
        .unwrap();
    let after = started.elapsed();
    assert!(
        after < calm + Duration::from_millis(300),
        "latency after the load {after:?}, before {calm:?}"
    );
}

#[test]
fn one_io_thread_serves_many_connections_at_once() {
    // `--io-threads 1`: every connection's reads, writes and waits on one async worker; 32
    // clients × 20 calls each are all answered, each with the answer a lone call gets.
    let config = common::config_copy("tiny_cpu.toml", &[]);
    let server = common::Server::start(&["--toml", config.to_str().unwrap(), "--io-threads", "1"]);
    let port = server.port;
    let photo =
        Arc::new(std::fs::read(common::repo_root().join("benches/imgs/chelsea.jpg")).unwrap());
    let lone = common::client(port)
        .infer_batch(InferenceParams::new("lone".into(), photo.to_vec()))
        .unwrap();
    let lone = Arc::new(lone);
    let clients: Vec<_> = (0..32)
        .map(|i| {
            let (photo, lone) = (photo.clone(), lone.clone());
            std::thread::spawn(move || {
                let mut c = common::client(port);
                for k in 0..20 {
                    let got = c
                        .infer_batch(InferenceParams::new(format!("{i}-{k}"), photo.to_vec()))
                        .unwrap();
                    assert_eq!(got, *lone);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("a call failed or differed");
    }
}
