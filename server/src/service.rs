//! The Thrift handler: a decoded call in, reply bytes out. `infer_batch` and `infer_detect` go
//! to the engine (`infer_batch` also to the baseline) and the connection's task awaits the
//! answer.

use std::sync::Arc;
use std::time::Duration;

use engine::backends::control::softmax_argmax;
use engine::{Class, Item, Pipeline, Takes, Value};
use serve_thrift::call::encode_detect_reply;
use serve_thrift::call::{self, Call};
use serve_thrift::InferenceResult;
use thrift::ApplicationErrorKind;

use crate::baseline::Baseline;
use crate::failure::Failure;
use crate::metrics::Metrics;

pub enum Mode {
    Pipeline(Pipeline),
    Baseline(Arc<Baseline>),
}

pub struct Service {
    pub mode: Mode,
    pub metrics: Arc<Metrics>,
    /// `infer_batch` calls served at once, server-wide; more are refused at once.
    pub max_in_flight: u64,
    pub labels: Option<Vec<String>>,
    /// Longest a caller waits for the engine; the engine's own deadline is the same, so this
    /// only fires if a backend hangs.
    pub request_timeout: Duration,
}

impl Service {
    /// The engine's per-node figures (none for the baseline, which has no nodes).
    pub fn node_stats(&self) -> Vec<engine::NodeStats> {
        match &self.mode {
            Mode::Pipeline(p) => p.stats(),
            Mode::Baseline(_) => Vec::new(),
        }
    }

    pub async fn handle(&self, msg: &[u8]) -> Vec<u8> {
        match call::decode_call(msg) {
            Ok(Call::Ping { seq }) => call::encode_ping_reply(seq),
            Ok(Call::InferBatch { seq, params }) => {
                self.infer_call("infer_batch", seq, params).await
            }
            Ok(Call::InferDetect { seq, params }) => {
                self.infer_call("infer_detect", seq, params).await
            }
            Ok(Call::Unknown { name, seq }) => {
                let failure = Failure::UnknownMethod(name.clone());
                self.metrics.error(&failure);
                call::encode_exception(
                    &name,
                    seq,
                    ApplicationErrorKind::UnknownMethod,
                    &failure.to_string(),
                )
            }
            Err(e) => {
                let failure = Failure::BadCall(e.to_string());
                self.metrics.error(&failure);
                call::encode_exception(
                    "",
                    0,
                    ApplicationErrorKind::ProtocolError,
                    &failure.to_string(),
                )
            }
        }
    }

    /// `infer_batch` or `infer_detect` (`name`): admitted under `--max-in-flight`, counted in
    /// the metrics, answered with the reply or a TApplicationException.
    async fn infer_call(
        &self,
        name: &'static str,
        seq: i32,
        params: serve_thrift::InferenceParams,
    ) -> Vec<u8> {
        let outcome = self
            .admitted(async {
                if name == "infer_detect" {
                    self.detect(params.data)
                        .await
                        .map(|r| encode_detect_reply(seq, &r))
                } else {
                    self.infer(params.data)
                        .await
                        .map(|r| call::encode_infer_reply(seq, &r))
                }
            })
            .await;
        outcome.unwrap_or_else(|e| {
            // An overload is counted, not logged: under load it would be a line a call.
            if !matches!(e, Failure::ServerOverloaded(_)) {
                let kind = e.label();
                tracing::warn!(uuid = %params.uuid, kind, "{name} failed: {e}");
            }
            call::encode_exception(
                name,
                seq,
                ApplicationErrorKind::InternalError,
                &e.to_string(),
            )
        })
    }

    /// `work` as one admitted call: refused at once past `--max-in-flight` (counted as an
    /// error), else timed into the metrics with its outcome. Every protocol's calls go through
    /// here, so the limit and the figures are the server's.
    pub async fn admitted<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, Failure>>,
    ) -> Result<T, Failure> {
        if !self.metrics.admit(self.max_in_flight) {
            let failure = Failure::ServerOverloaded(self.max_in_flight);
            self.metrics.error(&failure);
            return Err(failure);
        }
        let started = std::time::Instant::now();
        let outcome = work.await;
        self.metrics
            .finish(started.elapsed(), outcome.as_ref().err());
        outcome
    }

    /// One request of `items` through the pipeline: each item's outcome, in order.
    async fn submit(
        &self,
        p: &Pipeline,
        items: Vec<Item>,
    ) -> Result<Vec<engine::Outcome>, Failure> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        p.submit(items, move |out| {
            let _ = tx.send(out);
        })?;
        tokio::time::timeout(self.request_timeout + Duration::from_secs(1), rx)
            .await
            .map_err(|_| Failure::NoAnswer(self.request_timeout))?
            .map_err(|_| Failure::PipelineStopped)
    }

    /// One image through the pipeline: the item it ends as.
    async fn run(&self, p: &Pipeline, data: Vec<u8>) -> Result<Item, Failure> {
        let out = self.submit(p, vec![Item::new(data)]).await?;
        Ok(out.into_iter().next().ok_or(Failure::NothingReturned)??)
    }

    async fn detect(&self, data: Vec<u8>) -> Result<serve_thrift::DetectionResult, Failure> {
        match &self.mode {
            Mode::Pipeline(p) => {
                let item = self.run(p, data).await?;
                crate::detections::detections(item, self.labels.as_deref())
            }
            Mode::Baseline(_) => Err(Failure::BaselineDetect),
        }
    }

    async fn infer(&self, data: Vec<u8>) -> Result<InferenceResult, Failure> {
        let value = self
            .run_values(None, vec![data.into()])
            .await?
            .pop()
            .ok_or(Failure::NothingReturned)?;
        let class = match value {
            Value::Tensor(t) => softmax_argmax(&t.data).ok_or(Failure::OutputNotFinite)?,
            Value::Class(c) => c,
            other => return Err(Failure::NotLogits(other.kind())),
        };
        Ok(self.answer(class))
    }

    /// The models the Open Inference Protocol serves, each with its entry node: the pipeline's
    /// entry nodes under their `model_name` or their own name (one for the baseline, its
    /// first node).
    pub fn models(&self) -> Vec<(String, String)> {
        let named = |node: &engine::config::NodeConfig| {
            let model = node.model_name.clone().unwrap_or_else(|| node.name.clone());
            (model, node.name.clone())
        };
        match &self.mode {
            Mode::Pipeline(p) => p
                .entry_nodes()
                .into_iter()
                .filter_map(|n| p.config().node(n))
                .map(named)
                .collect(),
            Mode::Baseline(b) => vec![named(b.entry())],
        }
    }

    /// What entry node `node` reads from an item (the baseline: encoded images).
    pub fn takes(&self, node: &str) -> Takes {
        match &self.mode {
            Mode::Pipeline(p) => p.takes(node),
            Mode::Baseline(_) => Takes::Encoded,
        }
    }

    /// Values (encoded images, or what the entry node takes: `takes`) through entry node
    /// `node` (none: the pipeline's only one), one item each, in one request: each item's
    /// result, or the first failure.
    pub async fn run_values(
        &self,
        node: Option<&str>,
        values: Vec<Value>,
    ) -> Result<Vec<Value>, Failure> {
        match &self.mode {
            Mode::Pipeline(p) => {
                let items = values
                    .into_iter()
                    .map(|data| {
                        let mut item = Item::new(data);
                        item.node_name = node.map(String::from);
                        item
                    })
                    .collect();
                let out = self.submit(p, items).await?;
                out.into_iter()
                    .map(|o| o?.result.ok_or(Failure::NoResult))
                    .collect()
            }
            Mode::Baseline(b) => {
                let b = b.clone();
                tokio::task::spawn_blocking(move || {
                    values
                        .iter()
                        .map(|v| match v {
                            Value::Bytes(data) => b.infer(data),
                            other => Err(format!(
                                "the baseline classifies encoded images, not {}",
                                other.kind()
                            )),
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
                .await
                .map_err(Failure::Handler)?
                .map_err(Failure::Baseline)
            }
        }
    }

    fn answer(&self, class: Class) -> InferenceResult {
        let label = crate::detections::label(self.labels.as_deref(), class.index);
        InferenceResult::new(label, thrift::OrderedFloat::from(class.score))
    }
}
