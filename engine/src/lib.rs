//! torchpipe-rs engine: loads a TorchPipe TOML and runs requests through its nodes, each node
//! with several instances and dynamic batching.

pub mod backend;
pub mod backends;
pub mod config;
pub mod error;
pub mod gpu;
pub mod graph;
pub mod image;
pub mod item;
pub mod pipeline;
pub mod scheduler;
mod sync;

pub use backend::{Backend, InitContext, Registry};
pub use config::Config;
pub use error::{BackendError, ConfigError, EngineError, RequestError};
pub use item::{Class, Item, Mat, Tensor, Value};
pub use pipeline::{Outcome, Pipeline, PipelineHandle, PipelineOptions};
