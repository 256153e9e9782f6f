//! Why a call failed: the message the client reads and the label the metrics count it under.

use std::time::Duration;

use engine::RequestError;

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
    #[error(
        "the pipeline ended in {0}, not detections (a `[n, 6]` tensor, or a list with `_box`)"
    )]
    NotDetections(String),
    #[error("infer_detect needs a pipeline; the baseline classifies only (infer_batch)")]
    BaselineDetect,
    #[error("unknown method `{0}`; the service has ping, infer_batch and infer_detect")]
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
            Failure::OutputNotFinite | Failure::NotLogits(_) | Failure::NotDetections(_) => {
                "bad_output"
            }
            Failure::BaselineDetect => "unknown_method",
            Failure::ServerOverloaded(_) => "server_overloaded",
            Failure::UnknownMethod(_) => "unknown_method",
            Failure::BadCall(_) => "bad_call",
        }
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
                Failure::NotDetections("a class".into()),
                "bad_output",
                "the pipeline ended in a class, not detections (a `[n, 6]` tensor, or a list \
                 with `_box`)",
            ),
            (
                Failure::ServerOverloaded(8),
                "server_overloaded",
                "server overloaded: 8 calls in flight (--max-in-flight); retry later",
            ),
            (
                Failure::UnknownMethod("infer".into()),
                "unknown_method",
                "unknown method `infer`; the service has ping, infer_batch and infer_detect",
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
