//! Hostile and broken peers (docs/architecture.md#the-wire): garbage bytes, a 2 GiB declared string, truncated
//! calls, stalled connections. Each loses its own connection; memory stays flat; a well-behaved
//! client on another connection is served throughout. Plus the CLI's refusals.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use serve_thrift::serve::{InferenceServiceSyncClient, TInferenceServiceSyncClient};
use serve_thrift::InferenceParams;
use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol};
use thrift::transport::{TIoChannel, TTcpChannel};

/// Sends `bytes` and reports whether the server closed the connection within `within`.
fn closed_after(port: u16, bytes: &[u8], within: Duration) -> bool {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(within)).unwrap();
    s.write_all(bytes).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // an error reply before the close is fine
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn hostile_peers_lose_only_their_own_connection() {
    let config = common::config_copy("tiny_cpu.toml", &[]);
    let server = common::Server::start(&[
        "--toml",
        config.to_str().unwrap(),
        "--idle-timeout",
        "1",
        "--read-timeout",
        "1",
        "--max-message-bytes",
        "8000000",
    ]);
    let port = server.port;
    let jpeg = std::fs::read(common::repo_root().join("benches/imgs/chelsea.jpg")).unwrap();
    let mut warm = common::client(port);
    warm.infer_batch(InferenceParams::new("warm".into(), jpeg.clone()))
        .unwrap();
    // Measured after the first request, so that the model's buffers are already counted.
    let rss_before = server.rss_kb();
    // A well-behaved client calls every 50 ms (well inside the idle timeout) throughout.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let good = std::thread::spawn(move || {
        let mut c = common::client(port);
        let mut served = 0;
        while !flag.load(std::sync::atomic::Ordering::SeqCst) {
            c.ping().expect("ping on the good connection");
            let r = c
                .infer_batch(InferenceParams::new("ok".into(), jpeg.clone()))
                .expect("infer on the good connection");
            assert!(!r.label.is_empty());
            served += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        served
    });

    assert!(closed_after(
        port,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(5)
    ));

    // A versioned call whose name claims 2^31-1 bytes, repeated: refused before allocation.
    let mut huge = vec![0x80, 0x01, 0x00, 0x01];
    huge.extend_from_slice(&i32::MAX.to_be_bytes());
    for _ in 0..50 {
        assert!(closed_after(port, &huge, Duration::from_secs(5)));
    }
    // An infer_batch whose data field claims 7.9 MB but sends 1 KB, then stalls.
    let call = serve_thrift::call::encode_infer_call("infer_batch", 1, "u", &vec![7u8; 7_900_000]);
    let started = Instant::now();
    assert!(
        closed_after(port, &call[..1024], Duration::from_secs(5)),
        "slow sender kept"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    // Truncated, then closed by the client.
    {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(&call[..100]).unwrap();
    }
    // Connects and says nothing: dropped after the idle timeout.
    let started = Instant::now();
    assert!(closed_after(port, &[], Duration::from_secs(5)));
    assert!(started.elapsed() >= Duration::from_millis(900));
    // A call above --max-message-bytes: closed at once.
    let big = serve_thrift::call::encode_infer_call("infer_batch", 1, "u", &vec![0u8; 8_100_000]);
    assert!(closed_after(port, &big[..64], Duration::from_secs(5)));

    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let served = good.join().expect("the good client was disturbed");
    assert!(served >= 10, "good client served {served} times");
    let rss_after = server.rss_kb();
    assert!(
        rss_after < rss_before + 30_000,
        "RSS grew from {rss_before} kB to {rss_after} kB"
    );
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("malformed Thrift binary message") || log.contains("above the limit"),
        "{log}"
    );
}

#[test]
fn unknown_methods_get_an_application_error_and_the_connection_stays() {
    let config = common::config_copy("tiny_cpu.toml", &[]);
    let server = common::Server::start(&["--toml", config.to_str().unwrap()]);
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&serve_thrift::call::encode_infer_call(
        "classify", 9, "u", b"x",
    ))
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.contains("unknown method `classify`"), "{text}");
    // Same connection, a real call next.
    let jpeg = std::fs::read(common::repo_root().join("benches/imgs/rocket.jpg")).unwrap();
    s.write_all(&serve_thrift::call::encode_infer_call(
        "infer_batch",
        10,
        "u",
        &jpeg,
    ))
    .unwrap();
    let n = s.read(&mut buf).unwrap();
    assert!(n > 20);
}

#[test]
fn framed_transport_serves_framed_clients() {
    use thrift::transport::{TFramedReadTransport, TFramedWriteTransport};
    let config = common::config_copy("tiny_cpu.toml", &[]);
    let server =
        common::Server::start(&["--toml", config.to_str().unwrap(), "--transport", "framed"]);
    let mut ch = TTcpChannel::new();
    ch.open(("127.0.0.1", server.port)).unwrap();
    let (r, w) = ch.split().unwrap();
    let mut c = InferenceServiceSyncClient::new(
        TBinaryInputProtocol::new(TFramedReadTransport::new(r), true),
        TBinaryOutputProtocol::new(TFramedWriteTransport::new(w), true),
    );
    c.ping().unwrap();
    let jpeg = std::fs::read(common::repo_root().join("benches/imgs/rocket.jpg")).unwrap();
    let r = c
        .infer_batch(InferenceParams::new("f".into(), jpeg))
        .unwrap();
    assert!(r.score.into_inner() > 0.0);
}

fn server_fails(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_server"))
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.contains(" INFO ") && !l.contains(" WARN "))
        .collect();
    assert_eq!(lines.len(), 1, "one clear line, got: {err}");
    lines[0].to_string()
}

#[test]
fn cli_refusals_are_one_clear_line() {
    let e = server_fails(&["--toml", "/no/such/file.toml"]);
    assert!(
        e.contains("/no/such/file.toml") && e.contains("readable TOML file"),
        "{e}"
    );
    let seed = common::repo_root().join("engine/tests/fixtures/seed_resnet50.toml");
    let e = server_fails(&["--toml", seed.to_str().unwrap()]);
    assert!(e.contains("did you mean `cpu_posdecoder`?"), "{e}");
    let config = common::config_copy("tiny_cpu.toml", &[]);
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let e = server_fails(&[
        "--toml",
        config.to_str().unwrap(),
        "--host",
        "127.0.0.1",
        "--port",
        &port,
    ]);
    assert!(
        e.contains("cannot listen on 127.0.0.1:") && e.contains("in use"),
        "{e}"
    );
}

#[test]
fn check_config_says_ok_or_names_the_error_and_starts_nothing() {
    let config = common::config_copy("tiny_cpu.toml", &[]);
    let out = Command::new(env!("CARGO_BIN_EXE_server"))
        .args(["--check-config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(": ok (") && stdout.contains("nodes: "),
        "{stdout}"
    );
    // The seed's TOML names a node that does not exist: the same error as --toml, at once.
    let seed = common::repo_root().join("engine/tests/fixtures/seed_resnet50.toml");
    let e = server_fails(&["--check-config", seed.to_str().unwrap()]);
    assert!(e.contains("did you mean `cpu_posdecoder`?"), "{e}");
    let e = server_fails(&["--check-config", "/no/such/file.toml"]);
    assert!(e.contains("/no/such/file.toml"), "{e}");
}

#[test]
fn a_misspelt_key_in_the_seed_toml_stops_the_server_at_start_up() {
    // The seed's TOML (configs/resnet50.toml, model on the CPU here) with the global
    // `batching_timeout` misspelt, and with a misspelt backend key on its resize node.
    let global = common::config_copy(
        "resnet50.toml",
        &[("batching_timeout = 5", "batching_timout = 5")],
    );
    let e = server_fails(&["--toml", global.to_str().unwrap()]);
    assert!(
        e.contains("global section, key `batching_timout`")
            && e.contains("did you mean `batching_timeout`?"),
        "{e}"
    );
    let node = common::config_copy("resnet50.toml", &[("resize_h = 224", "resize_hh = 224")]);
    let e = server_fails(&["--toml", node.to_str().unwrap()]);
    assert!(
        e.contains("node [cpu_posdecoder], key `resize_hh` = \"224\"")
            && e.contains("did you mean `resize_h`?"),
        "{e}"
    );
}

/// `--gpu-wait` (GPU builds): a strategy other than spin, yield or block is refused naming the
/// flag and the choices, and `--help` explains the flag.
#[cfg(feature = "cuda")]
#[test]
fn gpu_wait_takes_spin_yield_or_block() {
    let config = common::config_copy("tiny_cpu.toml", &[]);
    let out = Command::new(env!("CARGO_BIN_EXE_server"))
        .args(["--toml", config.to_str().unwrap(), "--gpu-wait", "sleepy"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--gpu-wait") && err.contains("expected spin, yield or block"),
        "{err}"
    );
    let help = Command::new(env!("CARGO_BIN_EXE_server"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--gpu-wait") && help.contains("interrupt"),
        "{help}"
    );
}
