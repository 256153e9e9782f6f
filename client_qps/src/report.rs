//! The figures, printed like the docs' client and written as JSON.

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::load::{OpenLoop, Outcome, PhaseOutcome};
use crate::resources::Usage;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub request_client: usize,
    pub request_batch: usize,
    /// Measured requests (each `request_batch` images).
    pub total: u64,
    pub errors: u64,
    pub wall_s: f64,
    /// Requests per second: `total / wall_s`.
    pub qps: f64,
    pub images_per_s: f64,
    /// `request_client / qps`: the mean time between a client's requests, in ms.
    pub avg_ms: f64,
    pub tp50_ms: f64,
    pub tp90_ms: f64,
    pub tp99_ms: f64,
    /// Mean latency of the successful requests (hdrhistogram), in ms.
    pub mean_ms: f64,
    pub max_ms: f64,
    #[serde(flatten)]
    pub usage: Usage,
    pub first_errors: Vec<String>,
    /// Calls sent again, on a new connection, because the server had closed theirs before
    /// answering them (not errors: see load.rs).
    pub resent: u64,
    /// Present for an open-loop run (`--request-rate`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_loop: Option<OpenLoopReport>,
    /// Present for a run with `--phases-from-stdin`: the same figures for each phase.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<PhaseReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub name: String,
    pub wall_s: f64,
    /// Measured requests that ended in this phase, errors included.
    pub total: u64,
    pub errors: u64,
    pub qps: f64,
    pub tp50_ms: f64,
    pub tp99_ms: f64,
    pub max_ms: f64,
}

impl PhaseReport {
    fn new(p: &PhaseOutcome) -> PhaseReport {
        let wall = p.wall.as_secs_f64().max(1e-9);
        PhaseReport {
            name: p.name.clone(),
            wall_s: wall,
            total: p.requests,
            errors: p.errors,
            qps: p.requests as f64 / wall,
            tp50_ms: ms(&p.latency, 0.50),
            tp99_ms: ms(&p.latency, 0.99),
            max_ms: if p.latency.is_empty() {
                0.0
            } else {
                p.latency.max() as f64 / 1000.0
            },
        }
    }
}

/// An open-loop run's arrivals and how well the clients kept to them.
#[derive(Debug, Clone, Serialize)]
pub struct OpenLoopReport {
    pub request_rate: f64,
    pub arrivals: &'static str,
    /// Requests sent more than 1 ms after their due time (every client was busy).
    pub late_sends: u64,
    pub max_send_lag_ms: f64,
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    h.value_at_quantile(q) as f64 / 1000.0
}

impl Report {
    pub fn new(
        clients: usize,
        batch: usize,
        o: &Outcome,
        usage: Usage,
        open_loop: Option<OpenLoop>,
    ) -> Report {
        let wall = o.wall.as_secs_f64().max(1e-9);
        let qps = o.requests as f64 / wall;
        Report {
            request_client: clients,
            request_batch: batch,
            total: o.requests,
            errors: o.errors,
            wall_s: wall,
            qps,
            images_per_s: qps * batch as f64,
            avg_ms: if qps > 0.0 {
                clients as f64 / qps * 1000.0
            } else {
                0.0
            },
            tp50_ms: ms(&o.latency, 0.50),
            tp90_ms: ms(&o.latency, 0.90),
            tp99_ms: ms(&o.latency, 0.99),
            mean_ms: if o.latency.is_empty() {
                0.0
            } else {
                o.latency.mean() / 1000.0
            },
            max_ms: if o.latency.is_empty() {
                0.0
            } else {
                o.latency.max() as f64 / 1000.0
            },
            usage,
            first_errors: o.first_errors.clone(),
            resent: o.resent,
            open_loop: open_loop.map(|l| OpenLoopReport {
                request_rate: l.rate,
                arrivals: if l.poisson { "poisson" } else { "constant" },
                late_sends: o.late,
                max_send_lag_ms: o.max_lag.as_secs_f64() * 1e3,
            }),
            phases: o.phases.iter().map(PhaseReport::new).collect(),
        }
    }

    pub fn print(&self) {
        let opt =
            |v: Option<f64>, unit: &str| v.map_or("n/a".to_string(), |v| format!("{v:.1}{unit}"));
        println!("------------------------------------------------------------");
        println!(
            "request_client: {}  request_batch: {}  total: {}  errors: {}  wall: {:.2} s",
            self.request_client, self.request_batch, self.total, self.errors, self.wall_s
        );
        println!("QPS: {:.2}  (images/s: {:.2})", self.qps, self.images_per_s);
        if let Some(l) = &self.open_loop {
            println!(
                "open loop: {:.1} requests/s due ({}), latency from each due time; {} sent late \
                 (> 1 ms), largest lag {:.2} ms",
                l.request_rate, l.arrivals, l.late_sends, l.max_send_lag_ms
            );
        }
        println!(
            "avg: {:.2} ms  TP50: {:.2} ms  TP90: {:.2} ms  TP99: {:.2} ms  mean: {:.2} ms  max: {:.2} ms",
            self.avg_ms, self.tp50_ms, self.tp90_ms, self.tp99_ms, self.mean_ms, self.max_ms
        );
        println!(
            "server: cpu {}  rss {}  gpu {}",
            opt(self.usage.server_cpu_pct, "%"),
            opt(self.usage.server_rss_mb, " MB"),
            opt(self.usage.gpu_util_pct, "%")
        );
        if self.resent > 0 {
            println!(
                "resent: {} calls, on a new connection, that the server had closed before \
                 answering them",
                self.resent
            );
        }
        for e in &self.first_errors {
            println!("error: {e}");
        }
        if !self.phases.is_empty() {
            println!("| phase | wall s | requests | QPS | TP50 ms | TP99 ms | max ms | errors |");
            println!("|---|---:|---:|---:|---:|---:|---:|---:|");
            for p in &self.phases {
                println!(
                    "| {} | {:.2} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
                    p.name, p.wall_s, p.total, p.qps, p.tp50_ms, p.tp99_ms, p.max_ms, p.errors
                );
            }
        }
    }
}

pub fn print_sweep(reports: &[Report]) {
    println!("| request_client | request_batch | QPS | TP50 ms | TP90 ms | TP99 ms | errors |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for r in reports {
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            r.request_client, r.request_batch, r.qps, r.tp50_ms, r.tp90_ms, r.tp99_ms, r.errors
        );
    }
}
