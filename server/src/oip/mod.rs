//! The Open Inference Protocol (KServe v2) over HTTP (`--http-port`): what Triton's
//! `tritonclient[http]` and `perf_analyzer` call, with Triton's binary tensor data,
//! classification, model configuration and statistics extensions.
//!
//! Each entry node of the pipeline is a model, named after the node, version "1". It takes one
//! input, `INPUT`: a BYTES tensor of encoded images, shape `[N]` or `[N, 1]`; the N images are
//! N items of one request, batched by the scheduler with everyone else's. Its output `OUTPUT`
//! is the pipeline's result per image, FP32 `[N, classes]`; asked with `classification = k`,
//! it is instead each image's k best classes as Triton writes them (`"0.912345:281"`, or
//! `"0.912345:281:tabby"` with `--labels`), the value being the softmax probability that
//! `infer_batch` answers.

mod wire;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use engine::Value;
use serde_json::json;

use crate::failure::Failure;
use crate::service::Service;
use wire::{BadRequest, Output, OutputData, OutputWanted};

/// The most images one request may carry: Triton's `max_batch_size` in the model's config.
pub const MAX_BATCH: usize = 256;
const INPUT: &str = "INPUT";
const OUTPUT: &str = "OUTPUT";
const VERSION: &str = "1";
/// What this endpoint implements beyond the core, as `GET /v2` lists it.
const EXTENSIONS: [&str; 4] = [
    "binary_tensor_data",
    "classification",
    "model_configuration",
    "statistics",
];

/// Per model: requests answered and failed, with their total time, for `/stats`.
#[derive(Default)]
struct Counts {
    success: AtomicU64,
    success_ns: AtomicU64,
    fail: AtomicU64,
    fail_ns: AtomicU64,
    /// Images inferred (a request of N counts N).
    inferences: AtomicU64,
    last_ms: AtomicU64,
}

#[derive(Clone)]
struct Endpoint {
    service: Arc<Service>,
    models: Arc<Vec<(String, Counts)>>,
    max_body: usize,
}

impl Endpoint {
    fn model(&self, name: &str, version: Option<&str>) -> Result<&Counts, Problem> {
        if let Some(v) = version.filter(|&v| v != VERSION) {
            return Err(Problem::not_found(format!(
                "model `{name}` has version {VERSION} only, not `{v}`"
            )));
        }
        self.models
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c)
            .ok_or_else(|| {
                let names: Vec<&str> = self.models.iter().map(|(n, _)| n.as_str()).collect();
                Problem::not_found(format!(
                    "no model `{name}`; this server has {}",
                    names.join(", ")
                ))
            })
    }
}

/// An error answer: its status and `{"error": message}`, the protocol's shape.
#[derive(Debug)]
struct Problem {
    status: StatusCode,
    message: String,
}

impl Problem {
    fn bad(message: impl Into<String>) -> Problem {
        Problem {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    fn not_found(message: impl Into<String>) -> Problem {
        Problem {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }
}

impl From<BadRequest> for Problem {
    fn from(e: BadRequest) -> Problem {
        Problem::bad(e.0)
    }
}

impl From<Failure> for Problem {
    fn from(f: Failure) -> Problem {
        let status = match f.label() {
            "overloaded" | "server_overloaded" | "shutting_down" => StatusCode::SERVICE_UNAVAILABLE,
            "timeout" => StatusCode::GATEWAY_TIMEOUT,
            "backend" | "no_result" | "filtered" | "unknown_node" | "bad_output" => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Problem {
            status,
            message: f.to_string(),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.message }).to_string();
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}

fn json_response(v: serde_json::Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

async fn server_metadata() -> Response {
    json_response(json!({
        "name": "torchpipe-rs",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": EXTENSIONS,
    }))
}

async fn live() -> StatusCode {
    StatusCode::OK
}

async fn ready(State(at): State<Endpoint>) -> StatusCode {
    if at.service.metrics.ready.load(Ordering::Relaxed) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// `{model}` or `{model}/versions/{version}` from the path.
fn names(p: &[String]) -> (&str, Option<&str>) {
    (p[0].as_str(), p.get(1).map(String::as_str))
}

async fn model_metadata(
    State(at): State<Endpoint>,
    Path(p): Path<Vec<String>>,
) -> Result<Response, Problem> {
    let (name, version) = names(&p);
    at.model(name, version)?;
    Ok(json_response(json!({
        "name": name,
        "versions": [VERSION],
        "platform": "torchpipe-rs",
        "inputs": [{"name": INPUT, "datatype": "BYTES", "shape": [-1, 1]}],
        "outputs": [{"name": OUTPUT, "datatype": "FP32", "shape": [-1, -1]}],
    })))
}

async fn model_ready(
    State(at): State<Endpoint>,
    Path(p): Path<Vec<String>>,
) -> Result<StatusCode, Problem> {
    let (name, version) = names(&p);
    at.model(name, version)?;
    Ok(ready(State(at)).await)
}

/// Triton's model configuration, as much of it as the protocol's clients read.
async fn model_config(
    State(at): State<Endpoint>,
    Path(p): Path<Vec<String>>,
) -> Result<Response, Problem> {
    let (name, version) = names(&p);
    at.model(name, version)?;
    Ok(json_response(json!({
        "name": name,
        "platform": "torchpipe-rs",
        "backend": "torchpipe-rs",
        "max_batch_size": MAX_BATCH,
        "input": [{"name": INPUT, "data_type": "TYPE_STRING", "dims": [1]}],
        "output": [{"name": OUTPUT, "data_type": "TYPE_FP32", "dims": [-1]}],
        "dynamic_batching": {},
    })))
}

fn duration(count: u64, ns: u64) -> serde_json::Value {
    json!({ "count": count, "ns": ns })
}

/// Triton's statistics. `success` and `fail` are this model's requests with their whole time;
/// `queue` and `compute_infer` are the pipeline's nodes together (all models of a TOML share
/// them): each item's waits in node queues, and the time of the batches it ran in.
async fn model_stats(
    State(at): State<Endpoint>,
    path: Option<Path<Vec<String>>>,
) -> Result<Response, Problem> {
    let wanted: Vec<&str> = match &path {
        Some(Path(p)) => {
            let (name, version) = names(p);
            at.model(name, version)?;
            vec![name]
        }
        None => at.models.iter().map(|(n, _)| n.as_str()).collect(),
    };
    let nodes = at.service.node_stats();
    let entry_items: u64 = nodes
        .iter()
        .filter(|n| at.models.iter().any(|(m, _)| *m == n.name))
        .map(|n| n.items)
        .sum();
    let queue_ns: u64 = nodes.iter().map(|n| n.queue_wait_us * 1000).sum();
    let compute_ns: u64 = nodes
        .iter()
        .map(|n| {
            let per_batch = n.busy_us.checked_div(n.batches).unwrap_or(0);
            per_batch * n.items * 1000
        })
        .sum();
    let stats: Vec<serde_json::Value> = at
        .models
        .iter()
        .filter(|(n, _)| wanted.contains(&n.as_str()))
        .map(|(name, c)| {
            let ok = c.success.load(Ordering::Relaxed);
            json!({
                "name": name,
                "version": VERSION,
                "last_inference": c.last_ms.load(Ordering::Relaxed),
                "inference_count": c.inferences.load(Ordering::Relaxed),
                "execution_count": ok,
                "inference_stats": {
                    "success": duration(ok, c.success_ns.load(Ordering::Relaxed)),
                    "fail": duration(c.fail.load(Ordering::Relaxed), c.fail_ns.load(Ordering::Relaxed)),
                    "queue": duration(entry_items, queue_ns),
                    "compute_input": duration(entry_items, 0),
                    "compute_infer": duration(entry_items, compute_ns),
                    "compute_output": duration(entry_items, 0),
                    "cache_hit": duration(0, 0),
                    "cache_miss": duration(0, 0),
                },
                "batch_stats": [],
                "memory_usage": [],
            })
        })
        .collect();
    Ok(json_response(json!({ "model_stats": stats })))
}

async fn infer(
    State(at): State<Endpoint>,
    Path(p): Path<Vec<String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let (name, version) = names(&p);
    let counts = at.model(name, version)?;
    let started = Instant::now();
    let answered = infer_model(&at, name, &headers, &body).await;
    let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let (n, total) = match &answered {
        Ok(_) => (&counts.success, &counts.success_ns),
        Err(_) => (&counts.fail, &counts.fail_ns),
    };
    n.fetch_add(1, Ordering::Relaxed);
    total.fetch_add(ns, Ordering::Relaxed);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    counts.last_ms.store(now_ms, Ordering::Relaxed);
    let (images, response) = answered?;
    counts.inferences.fetch_add(images, Ordering::Relaxed);
    Ok(response)
}

/// The request through the pipeline: the images it carried and the answer.
async fn infer_model(
    at: &Endpoint,
    model: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(u64, Response), Problem> {
    let header_len = match headers.get("inference-header-content-length") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    Problem::bad(format!(
                        "Inference-Header-Content-Length {v:?} is not a byte count"
                    ))
                })?,
        ),
    };
    let request = wire::parse_request(body, header_len)?;
    let [input] = request.inputs.as_slice() else {
        return Err(Problem::bad(format!(
            "one input, `{INPUT}`; the request has {}",
            request.inputs.len()
        )));
    };
    if input.name != INPUT || input.datatype != "BYTES" {
        return Err(Problem::bad(format!(
            "input `{INPUT}` of datatype BYTES (encoded images); got `{}` of {}",
            input.name, input.datatype
        )));
    }
    let n = match input.shape.as_slice() {
        [n] | [n, 1] => *n,
        other => {
            return Err(Problem::bad(format!(
                "input `{INPUT}` of shape [N] or [N, 1]; got {other:?}"
            )))
        }
    };
    if n == 0 || n > MAX_BATCH {
        return Err(Problem::bad(format!(
            "1 to {MAX_BATCH} images a request (max_batch_size); got {n}"
        )));
    }
    let wanted = if request.outputs.is_empty() {
        vec![OutputWanted {
            name: OUTPUT.into(),
            binary: request.binary_default,
            classification: None,
        }]
    } else {
        request.outputs.clone()
    };
    if let Some(o) = wanted.iter().find(|o| o.name != OUTPUT) {
        return Err(Problem::bad(format!(
            "unknown output `{}`; the model has `{OUTPUT}`",
            o.name
        )));
    }
    if !at.service.metrics.admit(at.service.max_in_flight) {
        let failure = Failure::ServerOverloaded(at.service.max_in_flight);
        at.service.metrics.error(&failure);
        return Err(failure.into());
    }
    let started = Instant::now();
    let images = input.elements.clone();
    let ran = at.service.run_images(model, images).await;
    at.service
        .metrics
        .finish(started.elapsed(), ran.as_ref().err());
    let values = ran?;
    let outputs = wanted
        .iter()
        .map(|w| output(w, &values, at.service.labels.as_deref()))
        .collect::<Result<Vec<_>, Problem>>()?;
    let (body, header_len) = wire::encode_response(model, request.id.as_deref(), &outputs);
    let response = match header_len {
        Some(len) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (
                    header::HeaderName::from_static("inference-header-content-length"),
                    len.to_string(),
                ),
            ],
            body,
        )
            .into_response(),
        None => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
    };
    Ok((n as u64, response))
}

/// One requested output from each image's result.
fn output(
    w: &OutputWanted,
    values: &[Value],
    labels: Option<&[String]>,
) -> Result<Output, Problem> {
    let n = values.len();
    let data = match w.classification {
        Some(k) => {
            let mut rows = Vec::with_capacity(n * k);
            let mut width = 0;
            for v in values {
                let best = classes(v, k)?;
                width = best.len();
                rows.extend(best.into_iter().map(|(p, i)| {
                    let label = crate::detections::label(labels, i);
                    if label == i.to_string() {
                        format!("{p:.6}:{i}")
                    } else {
                        format!("{p:.6}:{i}:{label}")
                    }
                }));
            }
            return Ok(Output {
                name: w.name.clone(),
                shape: vec![n, width],
                data: OutputData::Bytes(rows),
                binary: w.binary,
            });
        }
        None => {
            let mut flat = Vec::new();
            let mut width = None;
            for v in values {
                let Value::Tensor(t) = v else {
                    return Err(Problem::bad(format!(
                        "the pipeline ends in {}, not a tensor: ask `{OUTPUT}` with \
                         parameters.classification = 1",
                        v.kind()
                    )));
                };
                if *width.get_or_insert(t.data.len()) != t.data.len() {
                    return Err(Problem::from(Failure::NotLogits(
                        "tensors of unequal sizes",
                    )));
                }
                flat.extend_from_slice(&t.data);
            }
            (OutputData::Fp32(flat), vec![n, width.unwrap_or(0)])
        }
    };
    Ok(Output {
        name: w.name.clone(),
        shape: data.1,
        data: data.0,
        binary: w.binary,
    })
}

/// An image's `k` best classes by softmax probability, best first (ties: the lower index).
fn classes(v: &Value, k: usize) -> Result<Vec<(f32, usize)>, Problem> {
    match v {
        Value::Tensor(t) => {
            let max = t.data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            if t.data.is_empty() || !max.is_finite() || t.data.iter().any(|x| !x.is_finite()) {
                return Err(Failure::OutputNotFinite.into());
            }
            let exp: Vec<f32> = t.data.iter().map(|&x| (x - max).exp()).collect();
            let sum: f32 = exp.iter().sum();
            let mut order: Vec<usize> = (0..exp.len()).collect();
            order.sort_by(|&a, &b| exp[b].total_cmp(&exp[a]).then(a.cmp(&b)));
            Ok(order
                .into_iter()
                .take(k)
                .map(|i| (exp[i] / sum, i))
                .collect())
        }
        Value::Class(c) => Ok(vec![(c.score as f32, c.index)]),
        other => Err(Failure::NotLogits(other.kind()).into()),
    }
}

async fn method_not_allowed(method: Method) -> Problem {
    Problem {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: format!("{method} is not served here"),
    }
}

async fn not_found() -> Problem {
    Problem::not_found(
        "not an endpoint of the Open Inference Protocol: /v2, /v2/health/{live,ready}, \
         /v2/models/{model}[/versions/1][/ready|/config|/stats|/infer]",
    )
}

fn router(at: Endpoint) -> Router {
    let limit = at.max_body;
    let mut r = Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/stats", get(model_stats));
    for base in [
        "/v2/models/{model}",
        "/v2/models/{model}/versions/{version}",
    ] {
        r = r
            .route(base, get(model_metadata))
            .route(&format!("{base}/ready"), get(model_ready))
            .route(&format!("{base}/config"), get(model_config))
            .route(&format!("{base}/stats"), get(model_stats))
            .route(&format!("{base}/infer"), post(infer));
    }
    r.method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(at)
}

/// Serves the protocol on `listener` until `stop` turns true (then open connections finish
/// the call they are in).
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: Arc<Service>,
    max_body: usize,
    limits: crate::http::HttpLimits,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let models = service
        .models()
        .into_iter()
        .map(|m| (m, Counts::default()))
        .collect();
    let app = router(Endpoint {
        service,
        models: Arc::new(models),
        max_body,
    });
    crate::http::serve(listener, app, "Open Inference Protocol", limits, Some(stop)).await;
}

/// The connection's read buffer, which a request's head must fit in: tritonclient's and
/// perf_analyzer's heads are a few hundred bytes.
pub const READ_BUFFER: usize = 64 << 10;
