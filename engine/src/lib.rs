//! torchpipe-rs engine: loads a TorchPipe TOML and runs requests through its nodes, each node
//! with several instances and dynamic batching.

//!
//! The public API: a [`Pipeline`] built from a [`Config`] and a [`Registry`] of backends, the
//! [`Item`]s it runs and their [`Outcome`]s, the errors, and the per-node figures
//! ([`NodeStats`]). The modules that stay public are the extension points and the parts the
//! other crates reuse: `config` (the typed TOML), `backend` (the trait a backend implements and
//! the context it is built with), `backends` (the ones this crate provides), `image` (the CPU
//! image kernels) and, with `cuda`, `gpu`. The graph, the scheduler and the pipeline's routing
//! are internal.

pub mod backend;
pub mod backends;
pub mod config;
mod error;
pub mod gpu;
mod graph;
pub mod image;
mod item;
mod pipeline;
mod scheduler;
mod sync;

pub use backend::{Backend, InitContext, Registry, Takes};
pub use config::Config;
pub use error::{BackendError, ConfigError, EngineError, RequestError};
pub use item::{
    canonical_key, Class, DeviceLayout, DeviceMemory, DeviceValue, Item, Mat, Outcome, Tensor,
    Value, BOX,
};
pub use pipeline::{Pipeline, PipelineHandle, PipelineOptions};
pub use scheduler::{NodeStats, TimeHistogramSnapshot, TIME_BOUNDS};
