//! The Open Inference Protocol (KServe v2), over HTTP (`--http-port`, `http`) and gRPC
//! (`--grpc-port`, `grpc`): what Triton's `tritonclient` and `perf_analyzer` call, with
//! Triton's binary tensor data, classification, model configuration and statistics extensions.
//! Both protocols share what is here: the models, the checks of a request, the run through the
//! pipeline and the statistics.
//!
//! Each entry node of the pipeline is a model, named after the node, version "1". It takes one
//! input, `INPUT`, of what the node's first backend reads (`Takes`): a BYTES tensor of encoded
//! images, shape `[N]` or `[N, 1]` (DecodeMat, DecodeTensor, and a node that reads anything);
//! a UINT8 tensor of decoded images, `[N, height, width, 3]` with BGR pixels as OpenCV decodes
//! them (ResizeMat, cvtColorMat, UploadMat, …); an FP32 tensor `[N, …the model's item]`
//! (TensorrtTensor). The N inputs are N items of one request, batched by the scheduler with
//! everyone else's. Its output `OUTPUT`
//! is the pipeline's result per image, FP32 `[N, classes]`; asked with `classification = k`,
//! it is instead each image's k best classes as Triton writes them (`"0.912345:281"`, or
//! `"0.912345:281:tabby"` with `--labels`), the value being the softmax probability that
//! `infer_batch` answers.

pub mod grpc;
pub mod http;
mod wire;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::http::StatusCode;
use engine::backends::control::softmax_top;
use engine::{Class, Mat, Takes, Tensor, Value};

use crate::failure::Failure;
use crate::service::Service;
use wire::{Elements, Output, OutputData, OutputWanted};

/// The most images one request may carry: Triton's `max_batch_size` in the model's config.
pub const MAX_BATCH: usize = 256;
const INPUT: &str = "INPUT";
const OUTPUT: &str = "OUTPUT";
const VERSION: &str = "1";
const PLATFORM: &str = "torchpipe-rs";
/// What both endpoints implement beyond the core, as the server's metadata lists it.
const EXTENSIONS: [&str; 4] = [
    "binary_tensor_data",
    "classification",
    "model_configuration",
    "statistics",
];

/// Per model: requests answered and failed, with their total time, for the statistics.
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

/// Why a request is not answered: its HTTP status (gRPC maps it to its codes) and message.
#[derive(Debug)]
pub struct Problem {
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

impl From<wire::BadRequest> for Problem {
    fn from(e: wire::BadRequest) -> Problem {
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

/// One model's statistics, in Triton's terms: `success` and `fail` are its requests and their
/// whole time; `queue` and `compute_infer` are the pipeline's nodes together (all models of a
/// TOML share them): each item's waits in node queues, and the time of the batches it ran in.
struct ModelStats<'a> {
    name: &'a str,
    last_ms: u64,
    inferences: u64,
    executions: u64,
    success: (u64, u64),
    fail: (u64, u64),
    queue: (u64, u64),
    compute_infer: (u64, u64),
}

/// A model: its name, the entry node it runs and what that node reads, its counts.
struct Model {
    name: String,
    node: String,
    takes: Takes,
    counts: Counts,
}

/// The input a model takes, as its metadata and configuration describe it.
struct InputSpec {
    /// The protocol's datatype (`BYTES`, `UINT8`, `FP32`).
    datatype: &'static str,
    /// Triton's configuration type of the same.
    config_type: &'static str,
    /// One item's dims (the batch dimension not included); -1 where any size goes.
    dims: Vec<i64>,
    /// What the datatype carries, for errors.
    what: &'static str,
}

impl InputSpec {
    fn of(takes: &Takes) -> InputSpec {
        match takes {
            Takes::Image => InputSpec {
                datatype: "UINT8",
                config_type: "TYPE_UINT8",
                dims: vec![-1, -1, 3],
                what: "decoded images, shape [N, height, width, 3], BGR",
            },
            Takes::Tensor(dims) => InputSpec {
                datatype: "FP32",
                config_type: "TYPE_FP32",
                dims: dims.iter().map(|&d| d as i64).collect(),
                what: "the model's input, shape [N, …item]",
            },
            Takes::Encoded | Takes::Any => InputSpec {
                datatype: "BYTES",
                config_type: "TYPE_STRING",
                dims: vec![1],
                what: "encoded images, shape [N] or [N, 1]",
            },
        }
    }

    /// The metadata's shape: the batch dimension, then the item's.
    fn shape(&self) -> Vec<i64> {
        std::iter::once(-1)
            .chain(self.dims.iter().copied())
            .collect()
    }
}

/// What both protocols serve: the service and its models.
pub struct Oip {
    service: Arc<Service>,
    models: Vec<Model>,
}

impl Oip {
    pub fn new(service: Arc<Service>) -> Arc<Oip> {
        let models = service
            .models()
            .into_iter()
            .map(|(name, node)| Model {
                takes: service.takes(&node),
                name,
                node,
                counts: Counts::default(),
            })
            .collect();
        Arc::new(Oip { service, models })
    }

    fn ready(&self) -> bool {
        self.service.metrics.ready.load(Ordering::Relaxed)
    }

    /// Model `name`; `version` none or empty means the latest (the only one, "1").
    fn model(&self, name: &str, version: Option<&str>) -> Result<&Model, Problem> {
        if let Some(v) = version.filter(|&v| !v.is_empty() && v != VERSION) {
            return Err(Problem::not_found(format!(
                "model `{name}` has version {VERSION} only, not `{v}`"
            )));
        }
        self.models.iter().find(|m| m.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
            Problem::not_found(format!(
                "no model `{name}`; this server has {}",
                names.join(", ")
            ))
        })
    }

    /// The statistics of model `only`, or of every model.
    fn stats(&self, only: Option<&str>) -> Vec<ModelStats<'_>> {
        let nodes = self.service.node_stats();
        let entry_items: u64 = nodes
            .iter()
            .filter(|n| self.models.iter().any(|m| m.node == n.name))
            .map(|n| n.items)
            .sum();
        let queue_ns: u64 = nodes.iter().map(|n| n.queue_wait_us * 1000).sum();
        let compute_ns: u64 = nodes
            .iter()
            .map(|n| n.busy_us.checked_div(n.batches).unwrap_or(0) * n.items * 1000)
            .sum();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        self.models
            .iter()
            .filter(|m| only.is_none_or(|o| o == m.name))
            .map(
                |Model {
                     name, counts: c, ..
                 }| ModelStats {
                    name,
                    last_ms: load(&c.last_ms),
                    inferences: load(&c.inferences),
                    executions: load(&c.success),
                    success: (load(&c.success), load(&c.success_ns)),
                    fail: (load(&c.fail), load(&c.fail_ns)),
                    queue: (entry_items, queue_ns),
                    compute_infer: (entry_items, compute_ns),
                },
            )
            .collect()
    }

    /// A request of `model` (found by the caller), timed into its statistics: `INPUT`'s
    /// datatype and shape checked, its items through the pipeline, the outputs `wanted` made.
    async fn infer(
        &self,
        model: &Model,
        input: (&str, &str, &[usize]),
        elements: Elements,
        wanted: Vec<OutputWanted>,
    ) -> Result<Vec<Output>, Problem> {
        let counts = &model.counts;
        let started = Instant::now();
        let answered = self.run(model, input, elements, wanted).await;
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
        let (images, outputs) = answered?;
        counts.inferences.fetch_add(images, Ordering::Relaxed);
        Ok(outputs)
    }

    async fn run(
        &self,
        model: &Model,
        (name, datatype, shape): (&str, &str, &[usize]),
        elements: Elements,
        wanted: Vec<OutputWanted>,
    ) -> Result<(u64, Vec<Output>), Problem> {
        if name != INPUT {
            return Err(Problem::bad(format!("one input, `{INPUT}`; got `{name}`")));
        }
        let values = values(model, datatype, shape, elements)?;
        let n = values.len();
        if let Some(o) = wanted.iter().find(|o| o.name != OUTPUT) {
            return Err(Problem::bad(format!(
                "unknown output `{}`; the model has `{OUTPUT}`",
                o.name
            )));
        }
        let service = &self.service;
        let values = service
            .admitted(service.run_values(Some(&model.node), values))
            .await?;
        let outputs = wanted
            .iter()
            .map(|w| output(w, &values, service.labels.as_deref()))
            .collect::<Result<Vec<_>, Problem>>()?;
        Ok((n as u64, outputs))
    }
}

/// The items of a request's input: its elements checked against what `model` takes (any of the
/// three for a node that reads anything), one value per item.
fn values(
    model: &Model,
    datatype: &str,
    shape: &[usize],
    elements: Elements,
) -> Result<Vec<Value>, Problem> {
    let spec = InputSpec::of(&model.takes);
    let refused = || {
        Problem::bad(format!(
            "model `{}` takes input `{INPUT}` of datatype {} ({}); got {datatype} of shape \
             {shape:?}",
            model.name, spec.datatype, spec.what
        ))
    };
    let any = model.takes == Takes::Any;
    let n = shape.first().copied().unwrap_or(0);
    if n == 0 || n > MAX_BATCH {
        return Err(Problem::bad(format!(
            "1 to {MAX_BATCH} items a request (max_batch_size); got shape {shape:?}"
        )));
    }
    let values: Vec<Value> = match elements {
        Elements::Bytes(images) if any || model.takes == Takes::Encoded => {
            if !matches!(shape, [_] | [_, 1]) {
                return Err(refused());
            }
            images.into_iter().map(Value::from).collect()
        }
        Elements::U8(pixels) if any || model.takes == Takes::Image => {
            let &[_, h, w, 3] = shape else {
                return Err(refused());
            };
            if h == 0 || w == 0 {
                return Err(refused());
            }
            pixels
                .chunks_exact(h * w * 3)
                .map(|p| Value::Mat(Mat::new(h, w, 3, p.to_vec())))
                .collect()
        }
        Elements::F32(data) => {
            let item = &shape[1..];
            let fits = match &model.takes {
                Takes::Tensor(dims) => dims.as_slice() == item,
                takes => *takes == Takes::Any && !item.is_empty(),
            };
            let per: usize = item.iter().product();
            if !fits || per == 0 {
                return Err(refused());
            }
            data.chunks_exact(per)
                .map(|x| Value::Tensor(Tensor::new(item.to_vec(), x.to_vec())))
                .collect()
        }
        _ => return Err(refused()),
    };
    // The wire read exactly the shape's element count: one value per item.
    if values.len() != n {
        return Err(Problem::bad(format!(
            "input `{INPUT}`: {} items for shape {shape:?}",
            values.len()
        )));
    }
    Ok(values)
}

/// One requested output from each image's result.
fn output(
    w: &OutputWanted,
    values: &[Value],
    labels: Option<&[String]>,
) -> Result<Output, Problem> {
    let n = values.len();
    let (data, shape) = match w.classification {
        Some(k) => {
            let mut rows = Vec::with_capacity(n * k);
            let mut width = 0;
            for v in values {
                let best = classes(v, k)?;
                width = best.len();
                rows.extend(best.into_iter().map(|Class { index, score }| {
                    let label = crate::detections::label(labels, index);
                    if label == index.to_string() {
                        format!("{score:.6}:{index}")
                    } else {
                        format!("{score:.6}:{index}:{label}")
                    }
                }));
            }
            (OutputData::Bytes(rows), vec![n, width])
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
                    return Err(Failure::NotLogits("tensors of unequal sizes").into());
                }
                flat.extend_from_slice(&t.data);
            }
            (OutputData::Fp32(flat), vec![n, width.unwrap_or(0)])
        }
    };
    Ok(Output {
        name: w.name.clone(),
        shape,
        data,
        binary: w.binary,
    })
}

/// An image's `k` best classes by softmax probability, best first: the softmax `infer_batch`
/// answers with, so the first is its class and probability.
fn classes(v: &Value, k: usize) -> Result<Vec<Class>, Problem> {
    match v {
        Value::Tensor(t) => softmax_top(&t.data, k).ok_or_else(|| Failure::OutputNotFinite.into()),
        Value::Class(c) => Ok(vec![*c]),
        other => Err(Failure::NotLogits(other.kind()).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::Tensor;

    #[test]
    fn the_first_class_is_infer_batchs_answer_ties_included() {
        let logits = vec![1.0, 3.0, 3.0, 0.0];
        let v = Value::Tensor(Tensor::new(vec![4], logits.clone()));
        let best = classes(&v, 3).unwrap();
        assert_eq!(
            best[0],
            engine::backends::control::softmax_argmax(&logits).unwrap()
        );
        assert_eq!(best.iter().map(|b| b.index).collect::<Vec<_>>(), [2, 1, 0]);
        let sum: f64 = logits.iter().map(|&x| (f64::from(x) - 3.0).exp()).sum();
        assert!((best[0].score - 1.0 / sum).abs() < 1e-15);
        let nan = Value::Tensor(Tensor::new(vec![2], vec![f32::NAN, 1.0]));
        assert!(classes(&nan, 1).is_err());
    }

    /// Softmax of [0, 2, 0]: e²/(e² + 2) = 0.786986 and 1/(e² + 2) = 0.106507; of the two equal
    /// logits the later comes first, as in `softmax_argmax`.
    #[test]
    fn the_classification_output_is_tritons_strings() {
        let v = [Value::Tensor(Tensor::new(vec![3], vec![0.0, 2.0, 0.0]))];
        let labels = ["cat".to_string(), "dog".into(), "fox".into()];
        let w = OutputWanted {
            name: OUTPUT.into(),
            binary: false,
            classification: Some(2),
        };
        let o = output(&w, &v, Some(&labels)).unwrap();
        assert_eq!(o.shape, [1, 2]);
        assert_eq!(
            o.data,
            OutputData::Bytes(vec!["0.786986:1:dog".into(), "0.106507:2:fox".into()])
        );
        let plain = output(&w, &v, None).unwrap();
        assert_eq!(
            plain.data,
            OutputData::Bytes(vec!["0.786986:1".into(), "0.106507:2".into()])
        );
    }
}
