//! The load generator: `clients` concurrent clients, each with `batch` connections; a request
//! is `batch` concurrent `infer_batch` calls, and its latency runs until the last answer.
//!
//! Closed loop (the default): a client sends its next request when its last one is answered.
//! Open loop (`Spec::open_loop`): requests are due at times fixed before the run (evenly spaced
//! or Poisson), each client takes the next due request when it is free, and a request's
//! latency runs from its due time: a server that stalls cannot hide the stall by slowing the
//! clients down (coordinated omission). A request sent more than `LATE` after its due time
//! (every client busy) is counted as late.
//!
//! A call whose connection the server closed before a single byte of the answer came back is
//! sent again on a new connection (at most twice), and counted as resent rather than as an
//! error: a server that drains (ours on SIGTERM) answers every call it has read before it closes
//! a connection, so that call was never begun. This is what an HTTP client does with an
//! idempotent request on a keep-alive connection that the server closed; `infer_batch` is one.
//! A call that got part of an answer, or none within the timeout, is an error.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Barrier};

use parking_lot::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serve_thrift::InferenceParams;

use crate::connect::{connect, Connection, Framing};
use crate::phases::Phases;

/// Where and how to connect.
#[derive(Clone)]
pub struct Target {
    pub addr: String,
    pub framing: Framing,
    pub timeout: Duration,
    pub method: Method,
}

/// The service method each call makes.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// The docs' classification call: a label and a score
    #[value(name = "infer_batch")]
    InferBatch,
    /// detect.thrift's call: a list of detections
    #[value(name = "infer_detect")]
    InferDetect,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::InferBatch => "infer_batch",
            Method::InferDetect => "infer_detect",
        }
    }
}

/// Open-loop arrivals.
#[derive(Clone, Copy, Debug)]
pub struct OpenLoop {
    /// Requests per second.
    pub rate: f64,
    /// Exponential gaps (a Poisson process) instead of even ones.
    pub poisson: bool,
    pub seed: u64,
}

impl OpenLoop {
    /// When each of `n` requests is due, from the start of the measured run.
    pub fn schedule(&self, n: u64) -> Vec<Duration> {
        use rand::SeedableRng;
        use rand_distr::Distribution;
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
        let gaps = rand_distr::Exp::new(self.rate).ok();
        let mut at = 0.0f64;
        (0..n)
            .map(|k| {
                let due = if self.poisson {
                    let d = at;
                    at += gaps
                        .as_ref()
                        .map_or(1.0 / self.rate, |e| e.sample(&mut rng));
                    d
                } else {
                    k as f64 / self.rate
                };
                Duration::from_secs_f64(due)
            })
            .collect()
    }
}

/// Sent this much after its due time, an open-loop request counts as late.
pub const LATE: Duration = Duration::from_millis(1);

pub struct Spec {
    pub target: Target,
    pub clients: usize,
    pub batch: usize,
    /// Measured requests, or `None` to run for `duration`.
    pub total: Option<u64>,
    pub duration: Option<Duration>,
    pub warmup: u64,
    pub images: Arc<Vec<Vec<u8>>>,
    pub open_loop: Option<OpenLoop>,
    /// Phases marked during the run, reported one by one.
    pub phases: Option<Arc<Phases>>,
}

/// What the measured requests of one phase gave.
pub struct PhaseOutcome {
    pub name: String,
    pub wall: Duration,
    pub requests: u64,
    pub errors: u64,
    pub latency: Histogram<u64>,
}

pub struct Outcome {
    /// Latency of each successful request, in microseconds.
    pub latency: Histogram<u64>,
    pub requests: u64,
    pub errors: u64,
    pub first_errors: Vec<String>,
    pub wall: Duration,
    /// Open loop: requests sent more than LATE after their due time, and the largest lag.
    pub late: u64,
    pub max_lag: Duration,
    /// Calls sent again because the server closed their connection before answering.
    pub resent: u64,
    /// One per phase that had a share of the measured run (none without `Spec::phases`).
    pub phases: Vec<PhaseOutcome>,
}

/// Shared progress, for the progress line.
#[derive(Default)]
pub struct Progress {
    pub done: AtomicU64,
    pub measuring: AtomicBool,
}

struct Shared {
    /// The measured run's start, set before the clients are let go.
    started: Mutex<Option<Instant>>,
    /// Open loop: when each measured request is due, from `started`.
    schedule: Option<Vec<Duration>>,
    next: AtomicU64,
    stop: AtomicBool,
    errors: AtomicU64,
    first_errors: Mutex<Vec<String>>,
    resent: Arc<AtomicU64>,
}

const KEEP_ERRORS: usize = 5;

impl Shared {
    fn error(&self, e: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_errors.lock();
        if first.len() < KEEP_ERRORS {
            first.push(e);
        }
    }
}

/// Sends of one call at most: the first, and two more after connections that the server
/// closed before answering. A replica that drains closes each connection once, so a second
/// resend of the same call means that the balancer keeps routing to replicas that are leaving.
const MAX_SENDS: u32 = 3;

/// A connection, made again after a transport error.
struct Conn {
    link: Option<Connection>,
}

impl Conn {
    fn call(
        &mut self,
        target: &Target,
        uuid: &str,
        data: &[u8],
        resent: &AtomicU64,
    ) -> Result<(), String> {
        let mut sends = 0;
        loop {
            sends += 1;
            if self.link.is_none() {
                self.link = Some(
                    connect(&target.addr, target.framing, target.timeout)
                        .map_err(|e| format!("{e:#}"))?,
                );
            }
            let Some(link) = self.link.as_mut() else {
                return Err("not connected".into());
            };
            let before = link.wire.received();
            let params = InferenceParams::new(uuid.to_string(), data.to_vec());
            let answer = match target.method {
                Method::InferBatch => link.client.infer_batch(params).map(drop),
                Method::InferDetect => link.client.infer_detect(params).map(drop),
            };
            match answer {
                Ok(_) => return Ok(()),
                Err(thrift::Error::Application(e)) => {
                    return Err(format!("server error: {}", e.message))
                }
                Err(e) => {
                    let unanswered = link.wire.closed_by_peer() && link.wire.received() == before;
                    // A transport or protocol error leaves the connection unusable.
                    self.link = None;
                    if !unanswered {
                        return Err(format!("connection error: {e}"));
                    }
                    if sends >= MAX_SENDS {
                        return Err(format!(
                            "connection error: {e} (the connection closed before an answer, \
                             {sends} times)"
                        ));
                    }
                    resent.fetch_add(1, Ordering::Relaxed);
                }
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
            c.client
                .ping()
                .map_err(|e| anyhow::anyhow!("ping to {} failed: {e}", t.addr))?;
            conns.push(Conn { link: Some(c) });
        }
        per_client.push(conns);
    }
    let schedule = spec.open_loop.map(|o| {
        let n = match (spec.total, spec.duration) {
            (Some(t), _) => t,
            (None, Some(d)) => (o.rate * d.as_secs_f64()).ceil() as u64,
            (None, None) => 0,
        };
        o.schedule(n)
    });
    let shared = Arc::new(Shared {
        started: Mutex::new(None),
        schedule,
        next: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        errors: AtomicU64::new(0),
        first_errors: Mutex::new(Vec::new()),
        resent: Arc::new(AtomicU64::new(0)),
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
    shared.resent.store(0, Ordering::SeqCst);
    shared.first_errors.lock().clear();
    progress.done.store(0, Ordering::SeqCst);
    progress.measuring.store(true, Ordering::SeqCst);
    let started = Instant::now();
    *shared.started.lock() = Some(started);
    barrier.wait(); // go

    // An open-loop run ends with its schedule, which already spans the duration.
    if let (Some(d), None) = (spec.duration, &shared.schedule) {
        while started.elapsed() < d && handles.iter().any(|h| !h.is_finished()) {
            thread::sleep(Duration::from_millis(5).min(d.saturating_sub(started.elapsed())));
        }
        shared.stop.store(true, Ordering::SeqCst);
    }
    let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let (mut requests, mut late, mut max_lag) = (0, 0, Duration::ZERO);
    let mut tallies: Vec<Tally> = Vec::new();
    for h in handles {
        let c = h
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
        latency.add(&c.hist)?;
        requests += c.requests;
        late += c.late;
        max_lag = max_lag.max(c.max_lag);
        for (i, t) in c.phases.into_iter().enumerate() {
            if tallies.len() <= i {
                tallies.push(Tally::new());
            }
            tallies[i].hist.add(&t.hist)?;
            tallies[i].requests += t.requests;
            tallies[i].errors += t.errors;
        }
    }
    let wall = started.elapsed();
    let phases = match &spec.phases {
        Some(p) => p
            .spans(started, started + wall)
            .into_iter()
            .map(|span| {
                let t = tallies.get_mut(span.index).map(std::mem::take);
                let t = t.unwrap_or_else(Tally::new);
                PhaseOutcome {
                    name: span.name,
                    wall: span.wall,
                    requests: t.requests,
                    errors: t.errors,
                    latency: t.hist,
                }
            })
            .collect(),
        None => Vec::new(),
    };
    let errors = shared.errors.load(Ordering::SeqCst);
    let first_errors = std::mem::take(&mut *shared.first_errors.lock());
    Ok(Outcome {
        latency,
        requests,
        errors,
        first_errors,
        wall,
        late,
        max_lag,
        resent: shared.resent.load(Ordering::SeqCst),
        phases,
    })
}

/// One client's measured requests in one phase.
struct Tally {
    hist: Histogram<u64>,
    requests: u64,
    errors: u64,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            hist: Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
                .expect("static bounds are valid"),
            requests: 0,
            errors: 0,
        }
    }
}

impl Default for Tally {
    fn default() -> Tally {
        Tally::new()
    }
}

/// What one client measured.
struct ClientResult {
    hist: Histogram<u64>,
    requests: u64,
    late: u64,
    max_lag: Duration,
    /// By phase index, when the run has phases.
    phases: Vec<Tally>,
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
) -> ClientResult {
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
            let resent = shared.resent.clone();
            let h = thread::spawn(move || {
                while let Ok((uuid, img)) = rx.recv() {
                    let r = conn.call(&target, &uuid, &images[img], &resent);
                    if done.send(r).is_err() {
                        break;
                    }
                }
            });
            (tx, h)
        })
        .collect();

    let n_images = spec.images.len();
    let (mut late, mut max_lag) = (0u64, Duration::ZERO);
    let mut phases: Vec<Tally> = Vec::new();
    let mut run_phase = |limit: Option<u64>, record: bool, hist: &mut Histogram<u64>| -> u64 {
        let mut count = 0;
        // The measured phase of an open-loop run follows the schedule.
        let schedule = shared.schedule.as_deref().filter(|_| record);
        let origin = *shared.started.lock();
        loop {
            if shared.stop.load(Ordering::Relaxed) {
                break;
            }
            let t = shared.next.fetch_add(1, Ordering::SeqCst);
            if limit.is_some_and(|l| t >= l) {
                break;
            }
            let started = match (schedule, origin) {
                (Some(s), Some(origin)) => {
                    let Some(due) = s.get(t as usize).map(|d| origin + *d) else {
                        break;
                    };
                    let now = Instant::now();
                    if due > now {
                        thread::sleep(due - now);
                    }
                    let lag = Instant::now().saturating_duration_since(due);
                    late += (lag > LATE) as u64;
                    max_lag = max_lag.max(lag);
                    due
                }
                _ => Instant::now(),
            };
            let base = (t as usize).wrapping_mul(spec.batch);
            for (j, (tx, _)) in helpers.iter().enumerate() {
                let _ = tx.send((format!("{c}-{t}-{}", j + 1), (base + j + 1) % n_images));
            }
            let mut failure = own
                .call(
                    &spec.target,
                    &format!("{c}-{t}-0"),
                    &spec.images[base % n_images],
                    &shared.resent,
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
                let phase = spec.phases.as_ref().map(|p| {
                    let i = p.current();
                    while phases.len() <= i {
                        phases.push(Tally::new());
                    }
                    &mut phases[i]
                });
                match failure {
                    None => {
                        let _ = hist.record(us.min(600_000_000));
                        if let Some(p) = phase {
                            let _ = p.hist.record(us.min(600_000_000));
                            p.requests += 1;
                        }
                    }
                    Some(e) => {
                        shared.error(e);
                        if let Some(p) = phase {
                            p.requests += 1;
                            p.errors += 1;
                        }
                    }
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
    ClientResult {
        hist,
        requests: n,
        late,
        max_lag,
        phases,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serve_thrift::call::{decode_call, encode_infer_reply, Call};
    use serve_thrift::skim::{skim, Skim};
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    /// What the fake server does with the call after the ones it answers.
    #[derive(Clone, Copy)]
    enum Then {
        /// Closes the connection without a byte of the answer.
        Close,
        /// Sends half of the answer, then closes.
        HalfAnswer,
    }

    /// The next whole `infer_batch` call's sequence number, or `None` at end of stream.
    fn next_call(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<i32> {
        loop {
            match skim(buf, 1 << 20).ok()? {
                Skim::Complete(n) => {
                    let msg: Vec<u8> = buf.drain(..n).collect();
                    return match decode_call(&msg).ok()? {
                        Call::InferBatch { seq, .. } => Some(seq),
                        _ => None,
                    };
                }
                Skim::Need(_) => {
                    let mut chunk = [0u8; 4096];
                    let n = s.read(&mut chunk).ok()?;
                    if n == 0 {
                        return None;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
    }

    /// A server that answers the first `answered` calls on each connection and then does
    /// `then` with the next one; its address.
    fn fake_server(answered: usize, then: Then) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { break };
                thread::spawn(move || {
                    let mut buf = Vec::new();
                    let reply = |seq| {
                        encode_infer_reply(
                            seq,
                            &serve_thrift::InferenceResult::new(
                                "7".into(),
                                thrift::OrderedFloat(0.5),
                            ),
                        )
                    };
                    for _ in 0..answered {
                        let Some(seq) = next_call(&mut s, &mut buf) else {
                            return;
                        };
                        s.write_all(&reply(seq)).unwrap();
                    }
                    let Some(seq) = next_call(&mut s, &mut buf) else {
                        return;
                    };
                    if let Then::HalfAnswer = then {
                        let r = reply(seq);
                        s.write_all(&r[..r.len() / 2]).unwrap();
                    }
                });
            }
        });
        addr
    }

    fn calls(addr: String, n: usize) -> (Vec<Result<(), String>>, u64) {
        let target = Target {
            addr,
            framing: Framing::Buffered,
            timeout: Duration::from_secs(10),
            method: Method::InferBatch,
        };
        let mut conn = Conn { link: None };
        let resent = AtomicU64::new(0);
        let results = (0..n)
            .map(|i| conn.call(&target, &format!("c-{i}"), b"jpeg", &resent))
            .collect();
        (results, resent.load(Ordering::Relaxed))
    }

    #[test]
    fn a_call_whose_connection_closed_before_its_answer_is_sent_again() {
        // Each connection answers one call and closes on the next: every call after the first
        // is sent twice.
        let (results, resent) = calls(fake_server(1, Then::Close), 4);
        assert_eq!(results, vec![Ok(()); 4]);
        assert_eq!(resent, 3);
    }

    #[test]
    fn a_call_is_sent_three_times_at_most() {
        let (results, resent) = calls(fake_server(0, Then::Close), 1);
        let e = results[0].as_ref().unwrap_err();
        assert!(e.contains("closed before an answer, 3 times"), "{e}");
        assert_eq!(resent, 2);
    }

    #[test]
    fn a_call_that_got_part_of_an_answer_is_an_error_and_not_sent_again() {
        let (results, resent) = calls(fake_server(0, Then::HalfAnswer), 2);
        for r in &results {
            let e = r.as_ref().unwrap_err();
            assert!(e.starts_with("connection error: "), "{e}");
            assert!(!e.contains("times"), "{e}");
        }
        assert_eq!(resent, 0);
    }

    #[test]
    fn constant_arrivals_are_evenly_spaced_and_poisson_ones_average_the_rate() {
        let even = OpenLoop {
            rate: 200.0,
            poisson: false,
            seed: 1,
        }
        .schedule(5);
        let ms: Vec<f64> = even.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        assert_eq!(ms, vec![0.0, 5.0, 10.0, 15.0, 20.0]);
        let p = OpenLoop {
            rate: 200.0,
            poisson: true,
            seed: 7,
        };
        let s = p.schedule(20_000);
        assert!(s.windows(2).all(|w| w[0] <= w[1]), "not in order");
        let mean_gap = s[s.len() - 1].as_secs_f64() / (s.len() - 1) as f64;
        assert!((mean_gap - 0.005).abs() < 0.0002, "mean gap {mean_gap}");
        // Exponential gaps vary: about as many gaps are below half the mean as a 39% share.
        let short = s
            .windows(2)
            .filter(|w| (w[1] - w[0]).as_secs_f64() < 0.0025)
            .count() as f64
            / (s.len() - 1) as f64;
        assert!((short - 0.393).abs() < 0.02, "share of short gaps {short}");
        assert_eq!(
            s,
            p.schedule(20_000),
            "the same seed gives the same schedule"
        );
    }
}
