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

pub enum Mode {
    Pipeline(Pipeline),
    Baseline(Arc<Baseline>),
}

pub struct Service {
    pub mode: Mode,
    pub labels: Option<Vec<String>>,
    /// Longest a caller waits for the engine; the engine's own deadline is the same, so this
    /// only fires if a backend hangs.
    pub request_timeout: Duration,
}

impl Service {
    pub async fn handle(&self, msg: &[u8]) -> Vec<u8> {
        match call::decode_call(msg) {
            Ok(Call::Ping { seq }) => call::encode_ping_reply(seq),
            Ok(Call::InferBatch { seq, params }) => match self.infer(params.data).await {
                Ok(result) => call::encode_infer_reply(seq, &result),
                Err(e) => {
                    tracing::warn!(uuid = %params.uuid, "infer_batch failed: {e}");
                    call::encode_exception(
                        "infer_batch",
                        seq,
                        ApplicationErrorKind::InternalError,
                        &e,
                    )
                }
            },
            Ok(Call::Unknown { name, seq }) => call::encode_exception(
                &name,
                seq,
                ApplicationErrorKind::UnknownMethod,
                &format!("unknown method `{name}`; InferenceService has ping and infer_batch"),
            ),
            Err(e) => call::encode_exception(
                "",
                0,
                ApplicationErrorKind::ProtocolError,
                &format!("cannot decode the call: {e}"),
            ),
        }
    }

    async fn infer(&self, data: Vec<u8>) -> Result<InferenceResult, String> {
        let value = match &self.mode {
            Mode::Pipeline(p) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                p.submit(vec![Item::new(data)], move |out| {
                    let _ = tx.send(out);
                })
                .map_err(|e| e.to_string())?;
                let out = tokio::time::timeout(self.request_timeout + Duration::from_secs(1), rx)
                    .await
                    .map_err(|_| format!("no answer within {:?}", self.request_timeout))?
                    .map_err(|_| "the pipeline stopped".to_string())?;
                let item = out
                    .into_iter()
                    .next()
                    .ok_or("the pipeline returned nothing")?
                    .map_err(|e| e.to_string())?;
                item.result.ok_or("the pipeline produced no result")?
            }
            Mode::Baseline(b) => {
                let b = b.clone();
                tokio::task::spawn_blocking(move || b.infer(&data))
                    .await
                    .map_err(|e| format!("handler failed: {e}"))??
            }
        };
        let class = match value {
            Value::Tensor(t) => {
                softmax_argmax(&t.data).ok_or("the model's output is empty or not finite")?
            }
            Value::Class(c) => c,
            other => {
                return Err(format!(
                    "the pipeline ended in {}, not logits",
                    other.kind()
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
