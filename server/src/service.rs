//! The Thrift handler: a decoded call in, reply bytes out. `infer_batch` goes to the engine
//! (or the baseline) and the connection's task awaits the answer.

use std::sync::Arc;
use std::time::Duration;

use engine::backends::control::softmax_argmax;
use engine::{Class, Item, Pipeline, Value};
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
                if !self.metrics.admit(self.max_in_flight) {
                    let failure = Failure::ServerOverloaded(self.max_in_flight);
                    self.metrics.error(&failure);
                    return call::encode_exception(
                        "infer_batch",
                        seq,
                        ApplicationErrorKind::InternalError,
                        &failure.to_string(),
                    );
                }
                let started = std::time::Instant::now();
                let outcome = self.infer(params.data).await;
                self.metrics
                    .finish(started.elapsed(), outcome.as_ref().err());
                match outcome {
                    Ok(result) => call::encode_infer_reply(seq, &result),
                    Err(e) => {
                        let kind = e.label();
                        tracing::warn!(uuid = %params.uuid, kind, "infer_batch failed: {e}");
                        call::encode_exception(
                            "infer_batch",
                            seq,
                            ApplicationErrorKind::InternalError,
                            &e.to_string(),
                        )
                    }
                }
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

    async fn infer(&self, data: Vec<u8>) -> Result<InferenceResult, Failure> {
        let value = match &self.mode {
            Mode::Pipeline(p) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                p.submit(vec![Item::new(data)], move |out| {
                    let _ = tx.send(out);
                })?;
                let out = tokio::time::timeout(self.request_timeout + Duration::from_secs(1), rx)
                    .await
                    .map_err(|_| Failure::NoAnswer(self.request_timeout))?
                    .map_err(|_| Failure::PipelineStopped)?;
                let item = out.into_iter().next().ok_or(Failure::NothingReturned)??;
                item.result.ok_or(Failure::NoResult)?
            }
            Mode::Baseline(b) => {
                let b = b.clone();
                tokio::task::spawn_blocking(move || b.infer(&data))
                    .await
                    .map_err(Failure::Handler)?
                    .map_err(Failure::Baseline)?
            }
        };
        let class = match value {
            Value::Tensor(t) => softmax_argmax(&t.data).ok_or(Failure::OutputNotFinite)?,
            Value::Class(c) => c,
            other => return Err(Failure::NotLogits(other.kind())),
        };
        Ok(self.answer(class))
    }

    fn answer(&self, class: Class) -> InferenceResult {
        let label = match &self.labels {
            Some(names) => names
                .get(class.index)
                .cloned()
                .unwrap_or_else(|| class.index.to_string()),
            None => class.index.to_string(),
        };
        InferenceResult::new(label, thrift::OrderedFloat::from(class.score))
    }
}
