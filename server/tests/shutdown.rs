//! SIGTERM: with no drain, under load, the server stops accepting, answers every call it had
//! read and exits 0; with a drain, it first reports not ready and keeps serving.

mod common;

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serve_thrift::serve::TInferenceServiceSyncClient;
use serve_thrift::InferenceParams;

#[test]
fn sigterm_under_load_answers_every_accepted_call() {
    let config = common::config_copy("tiny_cpu.toml", &[]);
    let server = common::Server::start(&["--toml", config.to_str().unwrap()]);
    let port = server.port;
    let jpeg =
        Arc::new(std::fs::read(common::repo_root().join("benches/imgs/coffee.jpg")).unwrap());
    let answered = Arc::new(AtomicU64::new(0));
    let started = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (jpeg, answered, started) = (jpeg.clone(), answered.clone(), started.clone());
            std::thread::spawn(move || {
                let mut c = common::client(port);
                started.store(true, Ordering::SeqCst);
                // Until the server closes this connection.
                while c
                    .infer_batch(InferenceParams::new("s".into(), jpeg.to_vec()))
                    .is_ok()
                {
                    answered.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    while !started.load(Ordering::SeqCst) || answered.load(Ordering::SeqCst) < 50 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let (status, log) = server.stop();
    for c in clients {
        c.join().unwrap();
    }
    assert!(status.success(), "exit {status}: {log}");
    let (line, done, read) = summary(&log);
    assert_eq!(done, read, "{line}");
    assert!(done >= answered.load(Ordering::SeqCst), "{line}");
    assert!(log.contains("SIGTERM: no new connections"), "{log}");
}

/// The server's `answered N of M calls` line, N and M.
fn summary(log: &str) -> (String, u64, u64) {
    let line = log
        .lines()
        .find(|l| l.contains("answered ") && l.contains(" calls"))
        .expect("the summary line");
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "answered").unwrap();
    let count = |k: usize| -> u64 {
        words[at + k]
            .parse()
            .unwrap_or_else(|_| panic!("a count in {line:?}"))
    };
    (line.to_string(), count(1), count(3))
}

/// The value of an unlabelled sample in the server's /metrics.
fn sample(metrics_port: u16, name: &str) -> Option<f64> {
    let text = common::http_get(metrics_port, "/metrics", &[]).body;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Polls `done` every 20 ms until it holds or `deadline` passes; whether it held.
fn poll_until(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An Open Inference Protocol request of one image over HTTP (binary tensor data), sent on a
/// new connection; its status line's code once answered.
fn oip_infer(port: u16, image: &[u8]) -> u16 {
    use std::io::{Read, Write};
    let mut tensor = (image.len() as u32).to_le_bytes().to_vec();
    tensor.extend_from_slice(image);
    let head = format!(
        r#"{{"inputs":[{{"name":"INPUT","shape":[1,1],"datatype":"BYTES","parameters":{{"binary_data_size":{}}}}}]}}"#,
        tensor.len()
    );
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let request = format!(
        "POST /v2/models/cpu_decoder/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Inference-Header-Content-Length: {}\r\nContent-Length: {}\r\n\r\n{head}",
        head.len(),
        head.len() + tensor.len()
    );
    s.write_all(request.as_bytes()).unwrap();
    s.write_all(&tensor).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The drain a balancer needs, in order: at SIGTERM /health/ready turns 503 while /health/live
/// stays 200 and connections, new and old, are still served; when the drain is over new
/// connections are refused and idle ones closed; the calls that were in flight all along, over
/// Thrift and over the Open Inference Protocol's HTTP, are answered; the server exits 0.
#[test]
fn sigterm_drains_not_ready_first_then_stops_accepting_then_answers_the_call_in_flight() {
    const DRAIN: Duration = Duration::from_secs(3);
    // Longer than the drain and the checks after it: the call is still in flight then.
    const SLOW: Duration = Duration::from_secs(8);
    let config = common::config_copy(
        "tiny_cpu.toml",
        &[(
            "std = \"58.395, 57.120, 57.375\"",
            &format!(
                "std = \"58.395, 57.120, 57.375\"\nnext = \"slow\"\n\n[slow]\nbackend = \
                 \"Sleep\"\nsleep_ms = {}\n",
                SLOW.as_millis()
            ),
        )],
    );
    let http_port = common::free_port();
    let (server, metrics_port) = common::Server::start_with_metrics(&[
        "--toml",
        config.to_str().unwrap(),
        "--drain-seconds",
        &DRAIN.as_secs().to_string(),
        "--request-timeout",
        "60",
        "--http-port",
        &http_port.to_string(),
    ]);
    let port = server.port;
    let health = |path: &str| common::http_get(metrics_port, path, &[]).status;
    let oip_health = |path: &str| common::http_get(http_port, path, &[]).status;
    assert_eq!(health("/health/ready"), 200);
    assert_eq!(oip_health("/v2/health/ready"), 200);

    let mut idle = common::client(port);
    idle.ping().expect("ping before SIGTERM");
    let jpeg = std::fs::read(common::repo_root().join("benches/imgs/coffee.jpg")).unwrap();
    let in_flight = std::thread::spawn(move || {
        let mut c = common::client(port);
        let answer = c.infer_batch(InferenceParams::new("in-flight".into(), jpeg));
        (answer, Instant::now())
    });
    let oip_jpeg = std::fs::read(common::repo_root().join("benches/imgs/coffee.jpg")).unwrap();
    let oip_in_flight = std::thread::spawn(move || oip_infer(http_port, &oip_jpeg));
    assert!(
        poll_until(Instant::now() + Duration::from_secs(30), || {
            sample(metrics_port, "torchpipe_in_flight_requests") == Some(2.0)
        }),
        "the slow calls never showed as in flight"
    );

    let sent = Instant::now();
    server.sigterm();
    assert!(
        poll_until(sent + DRAIN, || health("/health/ready") == 503),
        "/health/ready still 200 {:?} after SIGTERM",
        sent.elapsed()
    );
    assert_eq!(health("/health/live"), 200, "live during the drain");
    assert_eq!(
        oip_health("/v2/health/ready"),
        503,
        "/v2/health/ready during the drain"
    );
    assert_eq!(
        oip_health("/v2/health/live"),
        200,
        "/v2/health/live during the drain"
    );
    let mut fresh = common::client(port);
    fresh
        .ping()
        .expect("a connection made during the drain is served");
    idle.ping()
        .expect("a connection made before SIGTERM is still served during the drain");
    // The log reaches the test through a pipe: poll for the line rather than race it.
    assert!(
        poll_until(sent + DRAIN, || server.log().contains("SIGTERM: not ready")),
        "no `SIGTERM: not ready` in the log during the drain:\n{}",
        server.log()
    );
    let log = server.log();
    assert!(!log.contains("no new connections"), "{log}");
    assert!(
        sent.elapsed() < DRAIN,
        "the checks of the drain took {:?}, longer than the drain itself: inconclusive",
        sent.elapsed()
    );

    let refused = poll_until(sent + DRAIN + Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).is_err()
            && TcpStream::connect(("127.0.0.1", http_port)).is_err()
    });
    let stopped_accepting = sent.elapsed();
    assert!(
        refused,
        "still accepting {stopped_accepting:?} after SIGTERM"
    );
    assert!(
        stopped_accepting >= DRAIN,
        "stopped accepting after {stopped_accepting:?}, before the {DRAIN:?} drain was over"
    );
    assert!(
        !in_flight.is_finished(),
        "the slow call was answered before the drain was over: inconclusive"
    );
    assert!(
        poll_until(Instant::now() + Duration::from_secs(10), || idle
            .ping()
            .is_err()),
        "an idle connection is still served after the drain"
    );
    assert_eq!(health("/health/live"), 200, "live while answering");
    assert_eq!(health("/health/ready"), 503);

    assert_eq!(
        oip_in_flight.join().unwrap(),
        200,
        "the HTTP request in flight at SIGTERM is answered"
    );
    let (answer, answered_at) = in_flight.join().unwrap();
    let answer = answer.expect("the call in flight at SIGTERM is answered");
    assert!(!answer.label.is_empty(), "{answer:?}");
    assert!(answered_at.duration_since(sent) > stopped_accepting);
    let (status, log) = server
        .wait_exit(Duration::from_secs(30))
        .expect("the server exits once the call in flight is answered");
    assert!(status.success(), "exit {status}: {log}");
    let at = |needle: &str| {
        log.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in\n{log}"))
    };
    assert!(at("SIGTERM: not ready") < at("drain over: no new connections"));
    assert!(at("drain over: no new connections") < at(" stopped\n"));
    let (line, done, read) = summary(&log);
    assert_eq!(done, read, "{line}");
}
