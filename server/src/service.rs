//! The Thrift handler: a decoded call in, reply bytes out. `infer_batch` goes to the engine
//! (or the baseline) and the connection's task awaits the answer.

use std::sync::Arc;
use std::time::Duration;

use engine::backends::control::softmax_argmax;
use engine::{Class, Item, Pipeline, Value};
use thrift::ApplicationErrorKind;
use wire::call::{self, Call};
use wire::InferenceResult;

use crate::baseline::Baseline;
use crate::metrics::Metrics;

/// A failed call: a short kind for the metrics, and the message for the client.
type Failure = (&'static str, String);

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
                    self.metrics.error("server_overloaded");
                    let msg = format!(
                        "server overloaded: {} calls in flight (--max-in-flight); retry later",
                        self.max_in_flight
                    );
                    return call::encode_exception(
                        "infer_batch",
                        seq,
                        ApplicationErrorKind::InternalError,
                        &msg,
                    );
                }
                let started = std::time::Instant::now();
                let outcome = self.infer(params.data).await;
                let kind = outcome.as_ref().err().map(|(kind, _)| *kind);
                self.metrics.finish(started.elapsed(), kind);
                match outcome {
                    Ok(result) => call::encode_infer_reply(seq, &result),
                    Err((kind, e)) => {
                        tracing::warn!(uuid = %params.uuid, kind, "infer_batch failed: {e}");
                        call::encode_exception(
                            "infer_batch",
                            seq,
                            ApplicationErrorKind::InternalError,
                            &e,
                        )
                    }
                }
            }
            Ok(Call::Unknown { name, seq }) => {
                self.metrics.error("unknown_method");
                call::encode_exception(
                    &name,
                    seq,
                    ApplicationErrorKind::UnknownMethod,
                    &format!("unknown method `{name}`; InferenceService has ping and infer_batch"),
                )
            }
            Err(e) => {
                self.metrics.error("bad_call");
                call::encode_exception(
                    "",
                    0,
                    ApplicationErrorKind::ProtocolError,
                    &format!("cannot decode the call: {e}"),
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
                })
                .map_err(|e| (e.kind(), e.to_string()))?;
                let out = tokio::time::timeout(self.request_timeout + Duration::from_secs(1), rx)
                    .await
                    .map_err(|_| {
                        (
                            "timeout",
                            format!("no answer within {:?}", self.request_timeout),
                        )
                    })?
                    .map_err(|_| ("shutting_down", "the pipeline stopped".to_string()))?;
                let item = out
                    .into_iter()
                    .next()
                    .ok_or(("other", "the pipeline returned nothing".to_string()))?
                    .map_err(|e| (e.kind(), e.to_string()))?;
                item.result
                    .ok_or(("no_result", "the pipeline produced no result".to_string()))?
            }
            Mode::Baseline(b) => {
                let b = b.clone();
                tokio::task::spawn_blocking(move || b.infer(&data))
                    .await
                    .map_err(|e| ("backend", format!("handler failed: {e}")))?
                    .map_err(|e| ("baseline", e))?
            }
        };
        let class = match value {
            Value::Tensor(t) => softmax_argmax(&t.data).ok_or((
                "bad_output",
                "the model's output is empty or not finite".to_string(),
            ))?,
            Value::Class(c) => c,
            other => {
                return Err((
                    "bad_output",
                    format!("the pipeline ended in {}, not logits", other.kind()),
                ))
            }
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
