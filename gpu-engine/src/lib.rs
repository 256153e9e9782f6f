//! The GPU model engine: an ONNX model compiled into a plan of fused fp16 NHWC (or fp32) steps,
//! run on cuDNN, cuBLAS and our own kernels, one CUDA graph per batch size, weights shared across
//! instances, plans cached on disk; and the GPU image kernels (nvJPEG decode, resize and
//! colour conversion).
//!
//! - `plan`: the importer and planner, plain Rust and always built, so its folding, fusions and
//!   layouts are tested on machines without a GPU (against tract and a reference executor);
//!   `devices`, the check of a node's `device_id` against the GPUs found, likewise.
//! - everything else is the CUDA runtime, built with the `cuda` feature. It loads the driver,
//!   cuDNN, cuBLAS, NVRTC and nvJPEG at run time, so a `cuda` build still starts on a machine
//!   without a GPU and says so when a node asks for one.

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
pub mod cuda;
#[cfg(feature = "cuda")]
pub mod detect_kernels;
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
mod pooling;
#[cfg(feature = "cuda")]
mod precision;

#[cfg(feature = "cuda")]
pub use cuda::{
    check_gpus, check_libraries, gpus, open_device, open_device_for, set_wait, GpuError, GpuWait,
    Needs,
};
pub use devices::MissingGpu;
#[cfg(feature = "cuda")]
pub use engine::{
    AsInput, DeviceBytes, GpuInstance, GpuModel, Input, LoadReport, OutputTo, Replay,
};
#[cfg(feature = "cuda")]
pub use precision::Precision;
