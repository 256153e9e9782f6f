//! The load generator: `clients` concurrent clients, each with `batch` connections; a request
//! is `batch` concurrent `infer_batch` calls, and its latency runs until the last answer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use wire::InferenceParams;

use crate::connect::{connect, Client, Framing};

/// Where and how to connect.
#[derive(Clone)]
pub struct Target {
    pub addr: String,
    pub framing: Framing,
    pub timeout: Duration,
}

pub struct Spec {
    pub target: Target,
    pub clients: usize,
    pub batch: usize,
    /// Measured requests, or `None` to run for `duration`.
    pub total: Option<u64>,
    pub duration: Option<Duration>,
    pub warmup: u64,
    pub images: Arc<Vec<Vec<u8>>>,
}

pub struct Outcome {
    /// Latency of each successful request, in microseconds.
    pub latency: Histogram<u64>,
    pub requests: u64,
    pub errors: u64,
    pub first_errors: Vec<String>,
    pub wall: Duration,
}

/// Shared progress, for the progress line.
#[derive(Default)]
pub struct Progress {
    pub done: AtomicU64,
    pub measuring: AtomicBool,
}

struct Shared {
    next: AtomicU64,
    stop: AtomicBool,
    errors: AtomicU64,
    first_errors: Mutex<Vec<String>>,
}

const KEEP_ERRORS: usize = 5;

impl Shared {
    fn error(&self, e: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_errors.lock().unwrap_or_else(|p| p.into_inner());
        if first.len() < KEEP_ERRORS {
            first.push(e);
        }
    }
}

/// A connection and what to reconnect it with after a transport error.
struct Conn {
    client: Option<Client>,
}

impl Conn {
    fn call(&mut self, target: &Target, uuid: String, data: &[u8]) -> Result<(), String> {
        if self.client.is_none() {
            self.client = Some(
                connect(&target.addr, target.framing, target.timeout)
                    .map_err(|e| format!("{e:#}"))?,
            );
        }
        let Some(client) = self.client.as_mut() else {
            return Err("not connected".into());
        };
        match client.infer_batch(InferenceParams::new(uuid, data.to_vec())) {
            Ok(_) => Ok(()),
            Err(thrift::Error::Application(e)) => Err(format!("server error: {}", e.message)),
            Err(e) => {
                // A transport or protocol error leaves the connection unusable.
                self.client = None;
                Err(format!("connection error: {e}"))
            }
        }
    }
}

pub fn run(spec: Arc<Spec>, progress: Arc<Progress>) -> anyhow::Result<Outcome> {
    // Connect everything first, so that a wrong port fails at once with a clear message.
    let mut per_client = Vec::with_capacity(spec.clients);
    for _ in 0..spec.clients {
        let mut conns = Vec::with_capacity(spec.batch);
        for _ in 0..spec.batch {
            let t = &spec.target;
            let mut c = connect(&t.addr, t.framing, t.timeout)?;
            c.ping()
                .map_err(|e| anyhow::anyhow!("ping to {} failed: {e}", t.addr))?;
            conns.push(Conn { client: Some(c) });
        }
        per_client.push(conns);
    }
    let shared = Arc::new(Shared {
        next: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        errors: AtomicU64::new(0),
        first_errors: Mutex::new(Vec::new()),
    });
    // Warm-up first, with every client, then all start the measured run together.
    let barrier = Arc::new(Barrier::new(spec.clients + 1));
    let mut handles = Vec::with_capacity(spec.clients);
    for (c, conns) in per_client.into_iter().enumerate() {
        let spec = spec.clone();
        let shared = shared.clone();
        let barrier = barrier.clone();
        let progress = progress.clone();
        handles.push(thread::spawn(move || {
            client_loop(c, conns, &spec, &shared, &barrier, &progress)
        }));
    }
    barrier.wait(); // warm-up done
    shared.next.store(0, Ordering::SeqCst);
    shared.errors.store(0, Ordering::SeqCst);
    shared
        .first_errors
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
    progress.done.store(0, Ordering::SeqCst);
    progress.measuring.store(true, Ordering::SeqCst);
    let started = Instant::now();
    barrier.wait(); // go
    if let Some(d) = spec.duration {
        while started.elapsed() < d && handles.iter().any(|h| !h.is_finished()) {
            thread::sleep(Duration::from_millis(5).min(d.saturating_sub(started.elapsed())));
        }
        shared.stop.store(true, Ordering::SeqCst);
    }
    let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut requests = 0;
    for h in handles {
        let (hist, n) = h
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
        latency.add(&hist)?;
        requests += n;
    }
    let wall = started.elapsed();
    let errors = shared.errors.load(Ordering::SeqCst);
    let first_errors = std::mem::take(
        &mut *shared
            .first_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner()),
    );
    Ok(Outcome {
        latency,
        requests,
        errors,
        first_errors,
        wall,
    })
}

/// One client: its first connection is driven by this thread, the others by helper threads,
/// so a request's calls run concurrently.
fn client_loop(
    c: usize,
    mut conns: Vec<Conn>,
    spec: &Spec,
    shared: &Shared,
    barrier: &Barrier,
    progress: &Progress,
) -> (Histogram<u64>, u64) {
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("static bounds are valid");
    let mut own = conns.remove(0);
    type Job = (String, usize);
    let (done_tx, done_rx): (Sender<Result<(), String>>, Receiver<_>) = channel();
    let helpers: Vec<(Sender<Job>, thread::JoinHandle<()>)> = conns
        .into_iter()
        .map(|mut conn| {
            let (tx, rx) = channel::<Job>();
            let done = done_tx.clone();
            let images = spec.images.clone();
            let target = spec.target.clone();
            let h = thread::spawn(move || {
                while let Ok((uuid, img)) = rx.recv() {
                    let r = conn.call(&target, uuid, &images[img]);
                    if done.send(r).is_err() {
                        break;
                    }
                }
            });
            (tx, h)
        })
        .collect();

    let n_images = spec.images.len();
    let mut run_phase = |limit: Option<u64>, record: bool, hist: &mut Histogram<u64>| -> u64 {
        let mut count = 0;
        loop {
            if shared.stop.load(Ordering::Relaxed) {
                break;
            }
            let t = shared.next.fetch_add(1, Ordering::SeqCst);
            if limit.is_some_and(|l| t >= l) {
                break;
            }
            let started = Instant::now();
            let base = (t as usize).wrapping_mul(spec.batch);
            for (j, (tx, _)) in helpers.iter().enumerate() {
                let _ = tx.send((format!("{c}-{t}-{}", j + 1), (base + j + 1) % n_images));
            }
            let mut failure = own
                .call(
                    &spec.target,
                    format!("{c}-{t}-0"),
                    &spec.images[base % n_images],
                )
                .err();
            for _ in 0..helpers.len() {
                match done_rx.recv() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => failure = failure.or(Some(e)),
                    Err(_) => failure = failure.or(Some("helper thread stopped".into())),
                }
            }
            let us = started.elapsed().as_micros().max(1) as u64;
            if record {
                match failure {
                    None => {
                        let _ = hist.record(us.min(600_000_000));
                    }
                    Some(e) => shared.error(e),
                }
                count += 1;
            }
            progress.done.fetch_add(1, Ordering::Relaxed);
        }
        count
    };
    run_phase(Some(spec.warmup), false, &mut hist);
    barrier.wait();
    barrier.wait();
    let limit = if spec.duration.is_some() {
        None
    } else {
        spec.total
    };
    let n = run_phase(limit, true, &mut hist);
    for (tx, h) in helpers {
        drop(tx);
        let _ = h.join();
    }
    (hist, n)
}
