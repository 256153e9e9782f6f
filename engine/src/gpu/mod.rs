//! The GPU model engine (DESIGN §5): ONNX → fused fp16 NHWC (or fp32) cuDNN plan, one CUDA
//! graph per batch size, weights shared across instances, `model::cache`; and the GPU image
//! path: nvJPEG decode, the resize/colour kernels, the pool their values live in.
//!
//! `plan` is plain Rust and always built (its folding and fusion are tested everywhere); the
//! CUDA side needs the `cuda` feature and loads the driver, cuDNN and NVRTC at run time, so a
//! `cuda` build still starts on a machine without a GPU and says so when a node asks for one.

pub mod devices;
pub mod plan;

#[cfg(feature = "cuda")]
mod blas;
#[cfg(feature = "cuda")]
mod blas_lt;
#[cfg(feature = "cuda")]
mod cache;
#[cfg(feature = "cuda")]
mod capture;
#[cfg(feature = "cuda")]
mod conv;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
#[cfg(feature = "cuda")]
mod engine;
#[cfg(feature = "cuda")]
mod graph_api;
#[cfg(feature = "cuda")]
pub mod image_kernels;
#[cfg(feature = "cuda")]
mod kernels;
#[cfg(feature = "cuda")]
pub mod nvjpeg;
#[cfg(feature = "cuda")]
pub mod peer;
#[cfg(feature = "cuda")]
pub mod pool;
#[cfg(feature = "cuda")]
mod pooling;
#[cfg(feature = "cuda")]
mod precision;

#[cfg(feature = "cuda")]
pub use cuda::{check_gpus, check_libraries, gpus, open_device, open_device_for, GpuError, Needs};
#[cfg(feature = "cuda")]
pub use engine::{GpuInstance, GpuModel, LoadReport, Replay};
#[cfg(feature = "cuda")]
pub use precision::Precision;

/// Whether this build can run models on a GPU at all.
pub const BUILT_WITH_CUDA: bool = cfg!(feature = "cuda");
