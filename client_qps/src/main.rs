//! `client_qps --img_dir imgs --port 8888 --request_client 20 --request_batch 1`: drives
//! InferenceService with concurrent clients and reports QPS and latency percentiles.

mod connect;
mod load;
mod phases;
mod report;
mod resources;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;

use crate::connect::Framing;
use crate::load::{OpenLoop, Progress, Spec, Target};
use crate::phases::Phases;
use crate::report::Report;

#[derive(Parser, Debug)]
#[command(
    name = "client_qps",
    version,
    about = "Load client for InferenceService: QPS, TP50/TP90/TP99, mean and max latency",
    long_about = "Load client for InferenceService (thrift/serve.thrift). Preloads up to 999 images \
from --img_dir and sends each as the file's bytes. --request_client clients run concurrently, each \
with --request_batch connections; one request is --request_batch concurrent infer_batch calls and \
its latency lasts until the last answer. After --warmup requests (not counted), it measures \
--total_number requests (or runs for --duration) and prints QPS (requests per second), avg \
(request_client / QPS), TP50/TP90/TP99, mean and max latency from an hdrhistogram with microsecond \
resolution, the errors and the first few of them.

By default the load is a closed loop: each client sends its next request when the last one is \
answered, so a slow server also slows the clients. With --request-rate R it is an open loop: the \
measured requests are due at R per second (evenly spaced, or Poisson with --arrivals poisson), each \
client (one connection per batch image) sends the next due request as soon as it is free, and \
latency counts from the request's due time, so a stalled server shows its stall in full. The report \
says how many requests were sent more than 1 ms late (every client busy): give enough clients for \
the rate.

A call whose connection the server closed before any byte of its answer came back (a replica \
draining behind a balancer) is sent again on a new connection, at most twice, and reported as \
resent, not as an error: the server answers every call it reads before it closes. A call that got \
part of an answer, or none within --timeout, is an error."
)]
struct Args {
    /// Folder of .jpg/.jpeg/.png/.bmp images (the first 999 by name are used)
    #[arg(long = "img_dir", alias = "img-dir")]
    img_dir: PathBuf,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8888)]
    port: u16,
    /// Concurrent clients, each with its own connection(s)
    #[arg(
        long = "request_client",
        alias = "request-client",
        default_value_t = 10
    )]
    request_client: usize,
    /// Images per request, sent as that many concurrent calls on the client's connections
    #[arg(long = "request_batch", alias = "request-batch", default_value_t = 1)]
    request_batch: usize,
    /// Measured requests
    #[arg(long = "total_number", alias = "total-number", default_value_t = 10000)]
    total_number: u64,
    /// Requests sent before measuring, not counted
    #[arg(long, default_value_t = 100)]
    warmup: u64,
    /// Run for this many seconds instead of --total_number requests
    #[arg(long)]
    duration: Option<f64>,
    /// Also write the report(s) as JSON to this file
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run once per client count, e.g. 1,5,10,20,40 (replaces --request_client)
    #[arg(long, value_delimiter = ',')]
    concurrency_sweep: Option<Vec<usize>>,
    /// The server's process id: its CPU % and peak RSS are sampled during the run
    #[arg(long)]
    server_pid: Option<u32>,
    /// The call to make: the docs' `infer_batch` (a class per image), or `infer_detect` (a list
    /// of detections, for a detection pipeline such as configs/detect_classify.toml)
    #[arg(long, value_enum, default_value = "infer_batch")]
    method: load::Method,
    /// Thrift transport, as the server's --transport
    #[arg(long, value_enum, default_value = "buffered")]
    transport: Framing,
    /// Seconds to wait for one answer (or a connection) before counting an error
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Open loop: measured requests due at this many per second, latency counted from each
    /// request's due time (see above); without it, a closed loop
    #[arg(long = "request-rate", alias = "request_rate")]
    request_rate: Option<f64>,
    /// How --request-rate's requests are spaced: evenly, or as a Poisson process
    #[arg(
        long,
        value_enum,
        default_value = "constant",
        requires = "request_rate"
    )]
    arrivals: Arrivals,
    /// Seed of the Poisson arrivals (the same seed, the same schedule)
    #[arg(long, default_value_t = 1, requires = "request_rate")]
    arrival_seed: u64,
    /// Read phase names from stdin during the run: each line ends the current phase and starts
    /// one of that name, and the report adds QPS, latency and errors per phase (for a script
    /// that changes the servers while the same clients run: benches/scaleout.sh)
    #[arg(long, conflicts_with = "concurrency_sweep")]
    phases_from_stdin: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Arrivals {
    Constant,
    Poisson,
}

const MAX_IMAGES: usize = 999;

fn load_images(dir: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read --img_dir {}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                matches!(
                    e.to_ascii_lowercase().as_str(),
                    "jpg" | "jpeg" | "png" | "bmp"
                )
            })
        })
        .collect();
    paths.sort();
    paths.truncate(MAX_IMAGES);
    if paths.is_empty() {
        bail!(
            "--img_dir {} holds no .jpg, .jpeg, .png or .bmp file",
            dir.display()
        );
    }
    paths
        .iter()
        .map(|p| std::fs::read(p).with_context(|| format!("cannot read {}", p.display())))
        .collect()
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("client_qps: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    if args.request_batch == 0 || args.request_client == 0 {
        bail!("--request_client and --request_batch must be at least 1");
    }
    let duration = match args.duration {
        Some(d) if d.is_finite() && d > 0.0 => Some(Duration::from_secs_f64(d)),
        Some(d) => bail!("--duration must be a positive number of seconds, got {d}"),
        None => None,
    };
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        bail!("--timeout must be a positive number of seconds");
    }
    let open_loop = match args.request_rate {
        Some(r) if r.is_finite() && r > 0.0 => Some(OpenLoop {
            rate: r,
            poisson: args.arrivals == Arrivals::Poisson,
            seed: args.arrival_seed,
        }),
        Some(r) => {
            bail!("--request-rate must be a positive number of requests per second, got {r}")
        }
        None => None,
    };
    let images = Arc::new(load_images(&args.img_dir)?);
    eprintln!(
        "loaded {} images from {}; each call is {}",
        images.len(),
        args.img_dir.display(),
        args.method.name()
    );
    let sweep = args
        .concurrency_sweep
        .clone()
        .unwrap_or_else(|| vec![args.request_client]);
    if sweep.contains(&0) {
        bail!("--concurrency-sweep values must be at least 1");
    }
    let phases = args.phases_from_stdin.then(|| {
        let p = Phases::new("start");
        p.follow(std::io::BufReader::new(std::io::stdin()));
        p
    });
    let mut reports = Vec::new();
    for clients in sweep {
        let spec = Arc::new(Spec {
            target: Target {
                addr: format!("{}:{}", args.host, args.port),
                framing: args.transport,
                timeout: Duration::from_secs_f64(args.timeout),
                method: args.method,
            },
            clients,
            batch: args.request_batch,
            total: (duration.is_none()).then_some(args.total_number),
            duration,
            warmup: args.warmup,
            images: images.clone(),
            open_loop,
            phases: phases.clone(),
        });
        let progress = Arc::new(Progress::default());
        let ticker = start_progress(
            progress.clone(),
            duration.is_none().then_some(args.total_number),
        );
        let sampler = resources::Sampler::start(args.server_pid);
        let outcome = load::run(spec, progress.clone());
        let usage = sampler.finish();
        progress.measuring.store(false, Ordering::SeqCst);
        ticker.stop();
        let outcome = outcome?;
        let report = Report::new(clients, args.request_batch, &outcome, usage, open_loop);
        report.print();
        reports.push(report);
    }
    if reports.len() > 1 {
        report::print_sweep(&reports);
    }
    if let Some(path) = &args.json {
        let value = if reports.len() == 1 {
            serde_json::to_value(&reports[0])?
        } else {
            serde_json::to_value(&reports)?
        };
        std::fs::write(path, serde_json::to_string_pretty(&value)? + "\n")
            .with_context(|| format!("cannot write --json {}", path.display()))?;
    }
    Ok(())
}

struct Ticker {
    stop: std::sync::mpsc::Sender<()>,
    handle: std::thread::JoinHandle<()>,
}

impl Ticker {
    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.handle.join();
    }
}

/// A progress bar on a terminal; a plain line every few seconds otherwise.
fn start_progress(progress: Arc<Progress>, total: Option<u64>) -> Ticker {
    let (stop, flag) = std::sync::mpsc::channel::<()>();
    let tty = std::io::stderr().is_terminal();
    let handle = std::thread::spawn(move || {
        let every = if tty {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(5)
        };
        let mut waited = Duration::ZERO;
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            flag.recv_timeout(Duration::from_millis(100))
        {
            waited += Duration::from_millis(100);
            if waited < every {
                continue;
            }
            waited = Duration::ZERO;
            let done = progress.done.load(Ordering::Relaxed);
            let phase = if progress.measuring.load(Ordering::Relaxed) {
                "measuring"
            } else {
                "warm-up"
            };
            let line = match total {
                Some(t) if progress.measuring.load(Ordering::Relaxed) => {
                    let filled = ((done.min(t) * 30) / t.max(1)) as usize;
                    format!(
                        "{phase} [{}{}] {done}/{t}",
                        "#".repeat(filled),
                        ".".repeat(30 - filled)
                    )
                }
                _ => format!("{phase}: {done} requests"),
            };
            if tty {
                eprint!("\r{line}   ");
            } else {
                eprintln!("{line}");
            }
        }
        if tty {
            eprint!("\r{}\r", " ".repeat(60));
        }
    });
    Ticker { stop, handle }
}
