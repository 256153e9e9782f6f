//! SIGTERM under load: the server stops accepting, answers every call it had read, exits 0.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wire::serve::TInferenceServiceSyncClient;
use wire::InferenceParams;

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
    let line = log
        .lines()
        .find(|l| l.contains("answered ") && l.contains(" calls"))
        .expect("the summary line");
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "answered").unwrap();
    let (done, read): (u64, u64) = (
        words[at + 1].parse().unwrap(),
        words[at + 3].parse().unwrap(),
    );
    assert_eq!(done, read, "{line}");
    assert!(done >= answered.load(Ordering::SeqCst), "{line}");
    assert!(log.contains("SIGTERM: no new connections"), "{log}");
}
