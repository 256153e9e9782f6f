//! The pipeline's side of the GPU: the pool GPU values live in between nodes (`pool`) and
//! their copies between GPUs (`peer`). The model engine, the image kernels and the check of
//! `device_id` are the `gpu-engine` crate, re-exported here.

#[cfg(feature = "cuda")]
pub mod peer;
#[cfg(feature = "cuda")]
pub mod pool;
#[cfg(feature = "cuda")]
pub mod priority;
pub mod scope;

#[cfg(feature = "cuda")]
pub use gpu_engine::{
    check_gpus, check_libraries, cuda, detect_kernels, gpus, image_kernels, nvjpeg, open_device,
    open_device_for, set_wait, DeviceBytes, GpuError, GpuInstance, GpuModel, GpuWait, Input,
    LoadReport, MissingGpu, Needs, OutputTo, Precision, Replay,
};

/// Whether this build can run models on a GPU at all.
pub const BUILT_WITH_CUDA: bool = cfg!(feature = "cuda");

#[cfg(feature = "cuda")]
use crate::{config::Params, error::ConfigError};

/// The start-up error: the file, the node, key `device_id` with its value as written (none
/// when the node relies on the default, GPU 0), and the GPUs found.
#[cfg(feature = "cuda")]
pub(crate) fn missing_gpu_error(missing: &MissingGpu, params: &Params) -> ConfigError {
    let written = params.raw("device_id");
    let default = if written.is_none() {
        " (`device_id` is 0 unless set)"
    } else {
        ""
    };
    ConfigError {
        file: params.file().to_path_buf(),
        node: Some(params.node().to_string()),
        key: Some("device_id".into()),
        value: written.map(String::from),
        expected: format!("GPU indices this machine has{default}: {missing}"),
    }
}
