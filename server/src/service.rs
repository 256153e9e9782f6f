//! The Thrift handler: a decoded call in, reply bytes out. `infer_batch` goes to the engine
//! (or the baseline) and the connection's task awaits the answer.

use std::sync::Arc;
use std::time::Duration;

use engine::backends::control::softmax_argmax;
use engine::{Class, Item, Pipeline, RequestError, Value};
use thrift::ApplicationErrorKind;
use wire::call::{self, Call};
use wire::InferenceResult;

use crate::baseline::Baseline;
use crate::metrics::Metrics;

/// Why a call failed: its message goes to the client, its `label` to the metrics.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The engine's reason; its label is the engine's kind (`timeout`, `overloaded`, …).
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("no answer within {0:?}")]
    NoAnswer(Duration),
    #[error("the pipeline stopped")]
    PipelineStopped,
    #[error("the pipeline returned nothing")]
    NothingReturned,
    #[error("the pipeline produced no result")]
    NoResult,
    #[error("handler failed: {0}")]
    Handler(tokio::task::JoinError),
    #[error("{0}")]
    Baseline(String),
    #[error("the model's output is empty or not finite")]
    OutputNotFinite,
    #[error("the pipeline ended in {0}, not logits")]
    NotLogits(&'static str),
    #[error("server overloaded: {0} calls in flight (--max-in-flight); retry later")]
    ServerOverloaded(u64),
    #[error("unknown method `{0}`; InferenceService has ping and infer_batch")]
    UnknownMethod(String),
    #[error("cannot decode the call: {0}")]
    BadCall(String),
}

impl Failure {
    /// The `kind` label of `torchpipe_request_errors_total`. Dashboards and alerts match
    /// these strings: keep them when variants change.
    pub fn label(&self) -> &'static str {
        match self {
            Failure::Request(e) => e.kind(),
            Failure::NoAnswer(_) => "timeout",
            Failure::PipelineStopped => "shutting_down",
            Failure::NothingReturned => "other",
            Failure::NoResult => "no_result",
            Failure::Handler(_) => "backend",
            Failure::Baseline(_) => "baseline",
            Failure::OutputNotFinite | Failure::NotLogits(_) => "bad_output",
            Failure::ServerOverloaded(_) => "server_overloaded",
            Failure::UnknownMethod(_) => "unknown_method",
            Failure::BadCall(_) => "bad_call",
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// The labels dashboards already match, and the messages clients already see.
    #[test]
    fn each_failure_keeps_its_label_and_message() {
        let handler = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async {
                let task = tokio::spawn(std::future::pending::<()>());
                task.abort();
                task.await
            })
            .unwrap_err();
        let table = [
            (
                Failure::Request(RequestError::Overloaded {
                    node: "m".into(),
                    capacity: 4,
                }),
                "overloaded",
                "node [m] is overloaded (queue of 4 full); retry later",
            ),
            (
                Failure::Request(RequestError::ShuttingDown),
                "shutting_down",
                "the pipeline is shutting down",
            ),
            (
                Failure::NoAnswer(Duration::from_secs(5)),
                "timeout",
                "no answer within 5s",
            ),
            (
                Failure::PipelineStopped,
                "shutting_down",
                "the pipeline stopped",
            ),
            (
                Failure::NothingReturned,
                "other",
                "the pipeline returned nothing",
            ),
            (
                Failure::NoResult,
                "no_result",
                "the pipeline produced no result",
            ),
            (
                Failure::Handler(handler),
                "backend",
                "handler failed: task ",
            ),
            (Failure::Baseline("bad jpeg".into()), "baseline", "bad jpeg"),
            (
                Failure::OutputNotFinite,
                "bad_output",
                "the model's output is empty or not finite",
            ),
            (
                Failure::NotLogits("an image"),
                "bad_output",
                "the pipeline ended in an image, not logits",
            ),
            (
                Failure::ServerOverloaded(8),
                "server_overloaded",
                "server overloaded: 8 calls in flight (--max-in-flight); retry later",
            ),
            (
                Failure::UnknownMethod("infer".into()),
                "unknown_method",
                "unknown method `infer`; InferenceService has ping and infer_batch",
            ),
            (
                Failure::BadCall("truncated".into()),
                "bad_call",
                "cannot decode the call: truncated",
            ),
        ];
        for (failure, label, message) in table {
            assert_eq!(failure.label(), label, "{failure:?}");
            assert!(failure.to_string().starts_with(message), "{failure}");
        }
    }
}
