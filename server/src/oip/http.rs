//! The Open Inference Protocol's HTTP/REST endpoints (`--http-port`), as Triton serves them:
//! JSON, with the binary tensor data extension on `infer` (`wire`), and errors as
//! `{"error": message}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;

use super::wire::{self, OutputWanted};
use super::{
    InputSpec, ModelStats, Oip, Problem, EXTENSIONS, INPUT, MAX_BATCH, OUTPUT, PLATFORM, VERSION,
};

/// The connection's read buffer, which a request's head must fit in: tritonclient's and
/// perf_analyzer's heads are a few hundred bytes.
pub const READ_BUFFER: usize = 64 << 10;

#[derive(Clone)]
struct Endpoint {
    oip: Arc<Oip>,
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
        "name": PLATFORM,
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": EXTENSIONS,
    }))
}

async fn live() -> StatusCode {
    StatusCode::OK
}

async fn ready(State(at): State<Endpoint>) -> StatusCode {
    if at.oip.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// `{model}` or `{model}/versions/{version}` from the path.
fn names(p: &[String]) -> (&str, Option<&str>) {
    (p[0].as_str(), p.get(1).map(String::as_str))
}

/// The path's model, checked to be one this server has.
fn checked<'p>(at: &Endpoint, p: &'p [String]) -> Result<&'p str, Problem> {
    let (name, version) = names(p);
    at.oip.model(name, version)?;
    Ok(name)
}

async fn model_metadata(
    State(at): State<Endpoint>,
    Path(p): Path<Vec<String>>,
) -> Result<Response, Problem> {
    let (name, version) = names(&p);
    let input = InputSpec::of(&at.oip.model(name, version)?.takes);
    Ok(json_response(json!({
        "name": name,
        "versions": [VERSION],
        "platform": PLATFORM,
        "inputs": [{"name": INPUT, "datatype": input.datatype, "shape": input.shape()}],
        "outputs": [{"name": OUTPUT, "datatype": "FP32", "shape": [-1, -1]}],
    })))
}

async fn model_ready(
    State(at): State<Endpoint>,
    Path(p): Path<Vec<String>>,
) -> Result<StatusCode, Problem> {
    checked(&at, &p)?;
    Ok(ready(State(at)).await)
}

/// Triton's model configuration, as much of it as the protocol's clients read.
async fn model_config(
    State(at): State<Endpoint>,
    Path(p): Path<Vec<String>>,
) -> Result<Response, Problem> {
    let (name, version) = names(&p);
    let input = InputSpec::of(&at.oip.model(name, version)?.takes);
    Ok(json_response(json!({
        "name": name,
        "platform": PLATFORM,
        "backend": PLATFORM,
        "max_batch_size": MAX_BATCH,
        "input": [{"name": INPUT, "data_type": input.config_type, "dims": input.dims}],
        "output": [{"name": OUTPUT, "data_type": "TYPE_FP32", "dims": [-1]}],
        "dynamic_batching": {},
    })))
}

fn duration((count, ns): (u64, u64)) -> serde_json::Value {
    json!({ "count": count, "ns": ns })
}

fn stats_json(s: &ModelStats<'_>) -> serde_json::Value {
    json!({
        "name": s.name,
        "version": VERSION,
        "last_inference": s.last_ms,
        "inference_count": s.inferences,
        "execution_count": s.executions,
        "inference_stats": {
            "success": duration(s.success),
            "fail": duration(s.fail),
            "queue": duration(s.queue),
            "compute_input": duration((s.queue.0, 0)),
            "compute_infer": duration(s.compute_infer),
            "compute_output": duration((s.queue.0, 0)),
            "cache_hit": duration((0, 0)),
            "cache_miss": duration((0, 0)),
        },
        "batch_stats": [],
        "memory_usage": [],
    })
}

async fn model_stats(
    State(at): State<Endpoint>,
    path: Option<Path<Vec<String>>>,
) -> Result<Response, Problem> {
    let only = match &path {
        Some(Path(p)) => Some(checked(&at, p)?),
        None => None,
    };
    let stats: Vec<_> = at.oip.stats(only).iter().map(stats_json).collect();
    Ok(json_response(json!({ "model_stats": stats })))
}

async fn infer(
    State(at): State<Endpoint>,
    Path(p): Path<Vec<String>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, Problem> {
    let (model, version) = names(&p);
    let found = at.oip.model(model, version)?;
    // A body past --max-message-bytes (or one that breaks off) in the protocol's error shape.
    let body = body.map_err(|e| Problem {
        status: e.status(),
        message: format!("the request's body: {}", e.body_text()),
    })?;
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
    let mut request = wire::parse_request(&body, header_len)?;
    drop(body);
    if request.inputs.len() != 1 {
        return Err(Problem::bad(format!(
            "one input, `{INPUT}`; the request has {}",
            request.inputs.len()
        )));
    }
    let input = request.inputs.remove(0);
    let wanted = if request.outputs.is_empty() {
        vec![OutputWanted {
            name: OUTPUT.into(),
            binary: request.binary_default,
            classification: None,
        }]
    } else {
        request.outputs
    };
    let outputs = at
        .oip
        .infer(
            found,
            (&input.name, &input.datatype, &input.shape),
            input.elements,
            wanted,
        )
        .await?;
    let (body, header_len) = wire::encode_response(model, request.id.as_deref(), &outputs);
    Ok(match header_len {
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
    })
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

fn router(oip: Arc<Oip>, max_body: usize) -> Router {
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
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .with_state(Endpoint { oip })
}

/// Serves the protocol on `listener` until `stop` turns true (then open connections finish
/// the request they are in). Bodies above `max_body` bytes are refused.
pub async fn serve(
    listener: tokio::net::TcpListener,
    oip: Arc<Oip>,
    max_body: usize,
    limits: crate::http::HttpLimits,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let app = router(oip, max_body);
    crate::http::serve(listener, app, "Open Inference Protocol", limits, Some(stop)).await;
}
