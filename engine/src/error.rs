use std::fmt;
use std::path::PathBuf;

/// A configuration problem, located precisely enough to fix without reading our code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// `None` for the global section or the file as a whole.
    pub node: Option<String>,
    pub key: Option<String>,
    pub value: Option<String>,
    pub expected: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        match &self.node {
            Some(node) => write!(f, ": node [{node}]")?,
            None if self.key.is_some() => write!(f, ": global section")?,
            None => {}
        }
        if let Some(key) = &self.key {
            write!(f, ", key `{key}`")?;
        }
        if let Some(value) = &self.value {
            write!(f, " = {value:?}")?;
        }
        write!(f, ": {}", self.expected)
    }
}

impl std::error::Error for ConfigError {}

/// A backend's failure for a whole batch (a per-item failure is `Item::fail`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BackendError(pub String);

impl BackendError {
    pub fn new(msg: impl Into<String>) -> Self {
        BackendError(msg.into())
    }
}

/// Why one item of a request did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("node [{node}] produced no result: {reason}")]
    NoResult { node: String, reason: String },
    #[error("node [{node}] failed the batch: {reason}")]
    Backend { node: String, reason: String },
    #[error("node [{node}] is overloaded (queue of {capacity} full); retry later")]
    Overloaded { node: String, capacity: usize },
    #[error("request timed out after {waited_ms} ms (at node [{node}])")]
    Timeout { node: String, waited_ms: u64 },
    #[error("no such entry node `{0}`")]
    UnknownNode(String),
    #[error("filter `Error` of node [{0}] rejected the item")]
    Filtered(String),
    #[error("the pipeline is shutting down")]
    ShuttingDown,
    /// The item's request was answered (or its `MapReduce` parent failed) before it ran.
    #[error("cancelled: its request was already answered")]
    Cancelled,
    #[error("{0}")]
    Other(String),
}

impl RequestError {
    /// A short stable name, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            RequestError::NoResult { .. } => "no_result",
            RequestError::Backend { .. } => "backend",
            RequestError::Overloaded { .. } => "overloaded",
            RequestError::Timeout { .. } => "timeout",
            RequestError::UnknownNode(_) => "unknown_node",
            RequestError::Filtered(_) => "filtered",
            RequestError::ShuttingDown => "shutting_down",
            RequestError::Cancelled => "cancelled",
            RequestError::Other(_) => "other",
        }
    }
}

/// Errors from building a pipeline.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("node [{node}]: instance {instance} failed to start: {reason}")]
    Instance {
        node: String,
        instance: usize,
        reason: String,
    },
    #[error("{0}")]
    Io(String),
}
