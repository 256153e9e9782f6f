//! Starting the real server binary for end-to-end tests.
#![allow(dead_code)]

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../../../engine/tests/common/mod.rs"]
mod engine_common;
pub use engine_common::*;

/// Writes a copy of a repo config with absolute model paths, so the server needs no cwd.
pub fn config_copy(name: &str, replace: &[(&str, &str)]) -> PathBuf {
    let models = models_dir();
    let mut text = std::fs::read_to_string(repo_root().join("configs").join(name))
        .unwrap()
        .replace("\"models/", &format!("\"{}/", models.display()));
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

pub struct Server {
    pub child: Child,
    pub port: u16,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_server"))
            .args(args)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut s = Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(120);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = s.child.try_wait() {
                let mut err = String::new();
                s.child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                panic!("server exited with {status}: {err}");
            }
            assert!(
                Instant::now() < deadline,
                "server did not listen within 120 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
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
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let status = self.child.wait().unwrap();
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            e.read_to_string(&mut err).unwrap();
        }
        (status, err)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a Python script of the server's tests.
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
pub fn client(port: u16) -> impl wire::serve::TInferenceServiceSyncClient {
    use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol};
    use thrift::transport::{
        TBufferedReadTransport, TBufferedWriteTransport, TIoChannel, TTcpChannel,
    };
    let mut ch = TTcpChannel::new();
    ch.open(("127.0.0.1", port)).unwrap();
    let (r, w) = ch.split().unwrap();
    wire::serve::InferenceServiceSyncClient::new(
        TBinaryInputProtocol::new(TBufferedReadTransport::new(r), true),
        TBinaryOutputProtocol::new(TBufferedWriteTransport::new(w), true),
    )
}
