//! Starting the real server binary for end-to-end tests.
#![allow(dead_code)]

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "../../../engine/tests/common/mod.rs"]
mod engine_common;
pub use engine_common::*;

/// Writes a copy of a repo config with absolute model paths, so the server needs no cwd.
pub fn config_copy(name: &str, replace: &[(&str, &str)]) -> PathBuf {
    let models = models_dir();
    let mut text = on_cpu(
        std::fs::read_to_string(repo_root().join("configs").join(name))
            .unwrap()
            .replace("\"models/", &format!("\"{}/", models.display())),
    );
    for (a, b) in replace {
        text = text.replace(a, b);
    }
    let path = temp_dir(&format!("cfg-{}", name.replace('.', "-"))).join(name);
    std::fs::write(&path, text).unwrap();
    path
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An HTTP response as the tests look at it.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// One HTTP/1.0 GET to 127.0.0.1: the server closes the connection after the reply and sends
/// no chunked body, so reading to the end is the whole reply (Prometheus' Go server and hyper
/// alike).
pub fn http_get(port: u16, path: &str, headers: &[(&str, &str)]) -> HttpReply {
    use std::io::Write;
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("cannot connect to 127.0.0.1:{port}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n");
    for (k, v) in headers {
        request += &format!("{k}: {v}\r\n");
    }
    s.write_all(format!("{request}\r\n").as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {raw:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    HttpReply {
        status,
        content_type,
        body: body.to_string(),
    }
}

pub struct Server {
    pub child: Child,
    pub port: u16,
    /// Everything the server wrote to stderr, drained continuously so a chatty server never
    /// blocks on a full pipe.
    log: Arc<Mutex<String>>,
    drain: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        Server::start_inner(args, false).0
    }

    /// Also serves `--metrics-port`; returns that port.
    pub fn start_with_metrics(args: &[&str]) -> (Server, u16) {
        let (s, m) = Server::start_inner(args, true);
        (s, m.expect("metrics port"))
    }

    /// Picks free ports and waits until every one accepts and our server says it listens on
    /// them (a port another test's server took between our probe and our server's bind also
    /// accepts, but that server is not ours). A taken port is retried with new ports.
    fn start_inner(args: &[&str], metrics: bool) -> (Server, Option<u16>) {
        for attempt in 0..5 {
            let port = free_port();
            let mport = metrics.then(free_port);
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_server"));
            cmd.args(args)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()]);
            // The drain is for a balancer; a test that does not test it stops at once.
            if !args.contains(&"--drain-seconds") {
                cmd.args(["--drain-seconds", "0"]);
            }
            if let Some(m) = mport {
                cmd.args(["--metrics-port", &m.to_string()]);
            }
            let mut child = cmd
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let log = Arc::new(Mutex::new(String::new()));
            let mut stderr = child.stderr.take().unwrap();
            let sink = log.clone();
            let drain = std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = stderr.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
            let mut s = Server {
                child,
                port,
                log,
                drain: Some(drain),
            };
            let ports: Vec<u16> = std::iter::once(port).chain(mport).collect();
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let ours = {
                    let log = s.log.lock().unwrap();
                    log.contains(&format!("listening on 127.0.0.1:{port} "))
                        && mport.is_none_or(|m| {
                            log.contains(&format!("metrics on http://127.0.0.1:{m}/"))
                        })
                };
                if ours
                    && ports
                        .iter()
                        .all(|&p| TcpStream::connect(("127.0.0.1", p)).is_ok())
                {
                    return (s, mport);
                }
                if let Ok(Some(status)) = s.child.try_wait() {
                    if let Some(d) = s.drain.take() {
                        let _ = d.join();
                    }
                    let err = s.log.lock().unwrap().clone();
                    if err.contains("cannot listen") && attempt < 4 {
                        break;
                    }
                    panic!("server exited with {status}: {err}");
                }
                assert!(
                    Instant::now() < deadline,
                    "server did not listen within 120 s"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("no free ports for the server after 5 tries");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// SIGTERM, then the exit status and everything the server logged.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        self.sigterm();
        let status = self.child.wait().unwrap();
        self.finish(status)
    }

    pub fn sigterm(&self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The exit status once the server exits, and everything it logged; `None` if it is still
    /// running after `limit`.
    pub fn wait_exit(mut self, limit: Duration) -> Option<(std::process::ExitStatus, String)> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(self.finish(status));
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn finish(&mut self, status: std::process::ExitStatus) -> (std::process::ExitStatus, String) {
        if let Some(d) = self.drain.take() {
            let _ = d.join();
        }
        let log = self.log.lock().unwrap().clone();
        (status, log)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn python_script(script: &Path, args: &[&str]) -> String {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} failed (scripts/test installs the Python test dependencies):\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `thrift --gen py` from the repo's IDL, into a fresh folder.
pub fn python_stubs() -> PathBuf {
    let dir = temp_dir("pystubs");
    let status = Command::new("thrift")
        .args(["-out", dir.to_str().unwrap(), "--gen", "py"])
        .arg(repo_root().join("thrift/serve.thrift"))
        .status()
        .expect("thrift compiler (apt-get install thrift-compiler)");
    assert!(status.success());
    dir
}

/// The generated synchronous client on a buffered connection, as the docs' client connects.
pub fn client(port: u16) -> impl serve_thrift::serve::TInferenceServiceSyncClient {
    use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol};
    use thrift::transport::{
        TBufferedReadTransport, TBufferedWriteTransport, TIoChannel, TTcpChannel,
    };
    let mut ch = TTcpChannel::new();
    ch.open(("127.0.0.1", port)).unwrap();
    let (r, w) = ch.split().unwrap();
    serve_thrift::serve::InferenceServiceSyncClient::new(
        TBinaryInputProtocol::new(TBufferedReadTransport::new(r), true),
        TBinaryOutputProtocol::new(TBufferedWriteTransport::new(w), true),
    )
}
