//! `server --toml resnet50.toml --port 8888`: InferenceService (thrift/serve.thrift) over
//! tokio, answering from a TorchPipe TOML pipeline, or from the naive locked baseline.

mod baseline;
mod detections;
mod failure;
mod http;
mod metrics;
mod oip;
mod service;
mod shutdown;
mod transport;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use engine::{Config, Pipeline, PipelineOptions, Registry};
use tokio::net::TcpListener;
use tracing::{error, info, warn};

use crate::service::{Mode, Service};
use crate::transport::{Connection, Framing, Limits};

#[derive(Parser, Debug)]
#[command(
    name = "server",
    version,
    about = "Serves InferenceService (thrift/serve.thrift) from a TorchPipe TOML pipeline",
    long_about = "Serves InferenceService (thrift/serve.thrift: ping, infer_batch) over TCP with Thrift's \
binary protocol. Each infer_batch call's image runs through the TOML's nodes (multi-instance, \
dynamically batched); the reply is the arg-max class of the softmax of the model's output and its \
probability. With --baseline it serves the same TOML the naive way instead: preprocessing in the \
request's thread and one locked, batch-1 model instance."
)]
struct Args {
    /// The pipeline: a TorchPipe TOML (relative model paths resolve against its folder, then the
    /// working directory)
    #[arg(long, required_unless_present = "check_config")]
    toml: Option<PathBuf>,
    /// Check this TOML as --toml would be checked before anything starts (syntax, keys' types,
    /// the graph, backend names) and exit: 0 and one line when it is good, else the errors;
    /// no model is loaded and no port opened
    #[arg(long, value_name = "FILE", conflicts_with = "toml")]
    check_config: Option<PathBuf>,
    /// Address to listen on
    #[arg(long, default_value = "0.0.0.0")]
    host: String,
    /// Port to listen on
    #[arg(long, default_value_t = 8888)]
    port: u16,
    /// Serve the naive locked baseline (one model instance, batch 1, a global lock) instead of
    /// the pipeline
    #[arg(long)]
    baseline: bool,
    /// Thrift transport: buffered (the docs' client) or framed
    #[arg(long, value_enum, default_value = "buffered")]
    transport: Framing,
    /// Largest call accepted, in bytes; larger ones close their connection before anything is
    /// allocated for them
    #[arg(long, default_value_t = 64 << 20)]
    max_message_bytes: usize,
    /// Seconds a request may take before it is answered with a timeout error
    #[arg(long, default_value_t = 10.0)]
    request_timeout: f64,
    /// Seconds a connection may sit idle between calls before it is closed
    #[arg(long, default_value_t = 300.0)]
    idle_timeout: f64,
    /// Seconds a call may take to arrive once its first byte has (slow senders are dropped)
    #[arg(long, default_value_t = 30.0)]
    read_timeout: f64,
    /// Class names, one per line: `label` is the name instead of the class index
    #[arg(long)]
    labels: Option<PathBuf>,
    /// infer_batch and infer_detect calls served at once, server-wide; more are answered with an overload error
    #[arg(long, default_value_t = 4096)]
    max_in_flight: u64,
    /// Serve Prometheus metrics on /metrics (the text format, or OpenMetrics for a scraper that
    /// asks for it) and /health/live, /health/ready on this port
    #[arg(long)]
    metrics_port: Option<u16>,
    /// Serve the Open Inference Protocol (KServe v2) over HTTP on this port: what Triton's
    /// tritonclient[http] and perf_analyzer call. Each entry node is a model; its input INPUT is
    /// a BYTES tensor of encoded images, its output OUTPUT the pipeline's result per image
    /// (see docs/operations.md)
    #[arg(long, value_name = "PORT")]
    http_port: Option<u16>,
    /// Serve the Open Inference Protocol over gRPC on this port (inference.GRPCInferenceService,
    /// as tritonclient[grpc] and perf_analyzer -i grpc call it); the same models as --http-port
    #[arg(long, value_name = "PORT")]
    grpc_port: Option<u16>,
    /// Seconds to keep serving after SIGTERM while /health/ready answers 503, so that the
    /// balancer's health check takes this replica out before it stops accepting: at least the
    /// check's interval times the failures it needs, plus one interval (HAProxy's `inter 500ms
    /// fall 2`: 1.5 s; Kubernetes: the readinessProbe's periodSeconds × failureThreshold, and the
    /// time the endpoint change takes to reach every node). Then new connections are refused,
    /// idle ones are closed, and every call in flight is answered before the connection closes
    /// (within --request-timeout + 5 s). 0: stop accepting at once. A second SIGTERM, or a
    /// SIGINT, ends the drain early; SIGINT alone stops at once
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    drain_seconds: f64,
    /// Threads that read calls, write answers and wait for the pipeline (the async runtime's
    /// workers). Each call costs them a few tens of microseconds; idle workers look for work
    /// before they sleep. Default: one per core
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    io_threads: Option<u16>,
    /// How threads wait for the GPU while it runs their batch: block (sleep until the GPU's
    /// interrupt wakes them: no core held while waiting), yield, or spin (CUDA's busy-wait, its
    /// default on a machine with more cores than GPUs: one core per waiting thread)
    #[cfg(feature = "cuda")]
    #[arg(long, value_name = "HOW", default_value = "block", value_parser = parse_wait)]
    gpu_wait: engine::gpu::GpuWait,
    /// Which GPU work runs first when several instances have kernels waiting: equal (every
    /// stream at CUDA's default priority) or downstream (a node's CUDA streams at a priority
    /// that rises with its place in the pipeline, so that requests already in their last nodes
    /// finish before newer requests' first nodes; see docs/operations.md)
    #[cfg(feature = "cuda")]
    #[arg(long, value_name = "ORDER", default_value = "equal", value_parser = parse_priority)]
    gpu_priority: engine::gpu::priority::GpuPriority,
}

#[cfg(feature = "cuda")]
fn parse_wait(s: &str) -> Result<engine::gpu::GpuWait, String> {
    s.parse()
}

#[cfg(feature = "cuda")]
fn parse_priority(s: &str) -> Result<engine::gpu::priority::GpuPriority, String> {
    s.parse()
}

fn seconds(name: &str, v: f64) -> anyhow::Result<Duration> {
    anyhow::ensure!(
        v.is_finite() && v > 0.0 && v < 1e6,
        "--{name} must be a positive number of seconds, got {v}"
    );
    Ok(Duration::from_secs_f64(v))
}

fn drain_period(v: f64) -> anyhow::Result<Duration> {
    anyhow::ensure!(
        v.is_finite() && (0.0..1e6).contains(&v),
        "--drain-seconds must be 0 or a positive number of seconds, got {v}"
    );
    Ok(Duration::from_secs_f64(v))
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("server: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    if let Some(path) = &args.check_config {
        let config = Config::load(path)?;
        Pipeline::check(&config, &Registry::with_defaults())?;
        let names: Vec<&str> = config.nodes.iter().map(|n| n.name.as_str()).collect();
        println!(
            "{}: ok ({} nodes: {})",
            path.display(),
            names.len(),
            names.join(", ")
        );
        return Ok(());
    }
    let Some(toml) = args.toml.clone() else {
        anyhow::bail!("--toml FILE is required");
    };
    let request_timeout = seconds("request-timeout", args.request_timeout)?;
    let drain = drain_period(args.drain_seconds)?;
    let limits = Limits {
        max_message: args.max_message_bytes,
        idle: seconds("idle-timeout", args.idle_timeout)?,
        read: seconds("read-timeout", args.read_timeout)?,
    };
    let labels = match &args.labels {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --labels {}", path.display()))?
                .lines()
                .map(|l| l.trim().to_string())
                .collect(),
        ),
        None => None,
    };
    let config = Config::load(&toml)?;
    // Bind before loading models: a port in use is reported at once.
    let addr = format!("{}:{}", args.host, args.port);
    let listener =
        std::net::TcpListener::bind(&addr).with_context(|| format!("cannot listen on {addr}"))?;
    listener.set_nonblocking(true)?;
    // The optional ports: a flag's port, when given, bound now as the main one is.
    let bind = |port: Option<u16>, flag: &str| -> anyhow::Result<Option<std::net::TcpListener>> {
        let Some(port) = port else { return Ok(None) };
        let addr = format!("{}:{port}", args.host);
        let l = std::net::TcpListener::bind(&addr)
            .with_context(|| format!("cannot listen on {addr} ({flag})"))?;
        l.set_nonblocking(true)?;
        Ok(Some(l))
    };
    let metrics_listener = bind(args.metrics_port, "--metrics-port")?;
    let http_listener = bind(args.http_port, "--http-port")?;
    let grpc_listener = bind(args.grpc_port, "--grpc-port")?;
    anyhow::ensure!(args.max_in_flight > 0, "--max-in-flight must be at least 1");
    #[cfg(feature = "cuda")]
    engine::gpu::set_wait(args.gpu_wait);
    #[cfg(feature = "cuda")]
    engine::gpu::priority::set_priority(args.gpu_priority);
    let started = Instant::now();
    let mode = if args.baseline {
        let b = baseline::Baseline::from_config(&config, &Registry::with_defaults())?;
        Mode::Baseline(Arc::new(b))
    } else {
        let p = Pipeline::build(
            config,
            Registry::with_defaults(),
            PipelineOptions { request_timeout },
        )?;
        Mode::Pipeline(p)
    };
    info!(
        "{} from {} ready in {:.1} s",
        if args.baseline {
            "baseline (locked, batch 1)"
        } else {
            "pipeline"
        },
        toml.display(),
        started.elapsed().as_secs_f64()
    );
    let metrics = metrics::Metrics::new();
    let service = Arc::new(Service {
        mode,
        metrics: metrics.clone(),
        max_in_flight: args.max_in_flight,
        labels,
        request_timeout,
    });

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all().thread_name("io");
    if let Some(n) = args.io_threads {
        runtime.worker_threads(usize::from(n));
    }
    let runtime = runtime.build().context("cannot start the async runtime")?;
    runtime.block_on(async {
        if let Some(l) = metrics_listener {
            let l = TcpListener::from_std(l)?;
            info!("metrics on http://{}/metrics", l.local_addr()?);
            let nodes = service.clone();
            tokio::spawn(metrics::serve(l, metrics.clone(), move || {
                nodes.node_stats()
            }));
        }
        // One flag stops both protocols' connections at the same moment of a drain.
        let (stop_tx, stop_rx) = shutdown::channel();
        let oip = oip::Oip::new(service.clone());
        let mut endpoints = Vec::new();
        if let Some(l) = http_listener {
            let l = TcpListener::from_std(l)?;
            info!("Open Inference Protocol on http://{}/v2", l.local_addr()?);
            let http_limits = http::HttpLimits {
                head_timeout: limits.idle,
                read_buffer: oip::http::READ_BUFFER,
            };
            endpoints.push(tokio::spawn(oip::http::serve(
                l,
                oip.clone(),
                limits.max_message,
                http_limits,
                stop_rx.clone(),
            )));
        }
        if let Some(l) = grpc_listener {
            let l = TcpListener::from_std(l)?;
            info!("Open Inference Protocol over gRPC on {}", l.local_addr()?);
            endpoints.push(tokio::spawn(oip::grpc::serve(
                l,
                oip.clone(),
                limits.max_message,
                stop_rx.clone(),
            )));
        }
        drop(oip);
        // Every instance is built (Pipeline::build waited for them): ready.
        metrics.ready.store(true, Ordering::SeqCst);
        let served = serve(
            listener,
            args.transport,
            service.clone(),
            limits,
            drain,
            stop_tx,
            stop_rx,
        )
        .await;
        let bound = service.request_timeout + Duration::from_secs(5);
        for endpoint in endpoints {
            if tokio::time::timeout(bound, endpoint).await.is_err() {
                warn!("some Open Inference Protocol calls did not finish within {bound:?}");
            }
        }
        served
    })?;
    drop(runtime);
    // Last reference: shuts the pipeline down (every admitted request already answered).
    if let Ok(service) = Arc::try_unwrap(service) {
        if let Mode::Pipeline(mut p) = service.mode {
            p.shutdown(Duration::from_secs(1));
        }
    }
    info!("stopped");
    Ok(())
}

/// Accepts and serves until a signal, then stops in the order a balancer needs. SIGTERM: not
/// ready at once (the health check sees it), still accepting and serving for `drain`, then no
/// new connections. Both signals end in the same way: idle connections close, and the calls in
/// progress are answered before theirs do.
async fn serve(
    listener: std::net::TcpListener,
    framing: Framing,
    service: Arc<Service>,
    limits: Limits,
    drain: Duration,
    stop_tx: tokio::sync::watch::Sender<bool>,
    stop_rx: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    info!(
        "listening on {} ({framing:?} transport, binary protocol)",
        listener.local_addr()?
    );
    let mut signals = shutdown::Signals::new().context("cannot watch for SIGTERM and SIGINT")?;
    let mut connections = tokio::task::JoinSet::new();
    // Calls read off the wire, and calls answered: equal at exit, or an accepted call was lost.
    let calls = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    // When the drain that a SIGTERM began ends.
    let mut draining: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let service = service.clone();
                    let calls = calls.clone();
                    let mut stop = stop_rx.clone();
                    connections.spawn(async move {
                        let mut conn = Connection::new(stream, framing, limits);
                        loop {
                            let msg = match conn.read_call(&mut stop).await {
                                Ok(Some(msg)) => msg,
                                Ok(None) => break,
                                Err(e) => {
                                    warn!(%peer, "closing connection: {e}");
                                    break;
                                }
                            };
                            calls.0.fetch_add(1, Ordering::SeqCst);
                            let reply = service.handle(&msg).await;
                            let written = conn.write_reply(&reply).await;
                            calls.1.fetch_add(1, Ordering::SeqCst);
                            if let Err(e) = written {
                                warn!(%peer, "cannot write reply: {e}");
                                break;
                            }
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    error!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            stop = signals.next() => {
                service.metrics.ready.store(false, Ordering::SeqCst);
                if stop == shutdown::Stop::Term && draining.is_none() && !drain.is_zero() {
                    info!(
                        "SIGTERM: not ready; still serving for {:.1} s (--drain-seconds) while \
                         the balancer's health checks take this replica out",
                        drain.as_secs_f64()
                    );
                    draining = Some(tokio::time::Instant::now() + drain);
                    continue;
                }
                info!("{}: no new connections; answering the calls in progress", stop.name());
                break;
            }
            _ = tokio::time::sleep_until(draining.unwrap_or_else(tokio::time::Instant::now)),
                if draining.is_some() => {
                info!("drain over: no new connections; answering the calls in progress");
                break;
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let bound = service.request_timeout + Duration::from_secs(5);
    if tokio::time::timeout(bound, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        warn!("some connections did not finish within {bound:?}; closing them");
        connections.abort_all();
    }
    let (read, answered) = (
        calls.0.load(Ordering::SeqCst),
        calls.1.load(Ordering::SeqCst),
    );
    info!("answered {answered} of {read} calls");
    Ok(())
}
