use crate::backend::{key, Key};

pub(super) const KEYS: &[Key] = &[
    key("model", "an ONNX file", "required", "the model"),
    key(
        "mean",
        "3 numbers",
        "none",
        "subtracted per channel from the input",
    ),
    key(
        "std",
        "3 numbers",
        "none",
        "divides each channel of the input",
    ),
    key(
        "precision",
        "`fp16` or `fp32`",
        "fp16",
        "the GPU engine's precision",
    ),
    key(
        "model::cache",
        "a file",
        "none",
        "the GPU engine's tuning, read or written",
    ),
    key(
        "device",
        "`gpu` or `cpu`",
        "gpu in a `cuda` build",
        "which engine runs the model",
    ),
];

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::{CpuModel, Input, InstanceSpec, ModelEngine, ModelInstance};
use crate::backend::{Backend, InitContext};
use crate::config::Params;
use crate::error::{BackendError, ConfigError};
use crate::item::{DeviceLayout, DeviceValue, Item, Tensor, Value};

/// `TensorrtTensor`: runs the node's ONNX `model` on a batch of CHW tensors, applying
/// `mean`/`std` per channel first. TensorRT itself is not available on our machines: in a
/// build with the `cuda` feature our GPU engine serves this name (cuDNN, CUDA graphs,
/// `model::cache`); `device = "cpu"` (the only choice in the default build) runs the CPU
/// engine, which computes in fp32 and has nothing to cache.
pub struct TensorrtTensor {
    model: Arc<dyn ModelEngine>,
    // Each node instance drives its own runner from its own thread; the lock is uncontended
    // and only there because `Backend::forward` takes `&self`.
    runner: Mutex<Box<dyn ModelInstance>>,
}

struct Loaded(Arc<dyn ModelEngine>);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Device {
    Cpu,
    Gpu,
}

fn device(p: &Params) -> Result<Device, ConfigError> {
    let default = if crate::gpu::BUILT_WITH_CUDA {
        Device::Gpu
    } else {
        Device::Cpu
    };
    match p.raw("device").map(str::trim) {
        None => Ok(default),
        Some("cpu") => Ok(Device::Cpu),
        Some("gpu" | "cuda") if crate::gpu::BUILT_WITH_CUDA => Ok(Device::Gpu),
        Some(v @ ("gpu" | "cuda")) => Err(p.error(
            "device",
            v,
            "\"cpu\": this build has no GPU engine (build with `--features cuda`)",
        )),
        Some(v) if v.parse::<usize>().is_ok() => {
            Err(p.error("device", v, "\"gpu\" or \"cpu\" (which GPU is `device_id`)"))
        }
        Some(v) => Err(p.error("device", v, "\"gpu\" or \"cpu\"")),
    }
}

fn load_cpu(p: &Params, path: &Path) -> Result<Loaded, ConfigError> {
    let started = std::time::Instant::now();
    let model = CpuModel::load(path).map_err(|e| {
        p.error(
            "model",
            p.raw("model").unwrap_or_default(),
            format!("a loadable ONNX model: {e}"),
        )
    })?;
    tracing::info!(
        node = p.node(),
        "TensorrtTensor: TensorRT is not available here; {} ready in {:.1} s",
        model.describe(),
        started.elapsed().as_secs_f64()
    );
    match p.raw("precision").map(str::trim) {
        Some("fp32") | None => {}
        Some(other) => tracing::warn!(
            node = p.node(),
            "precision = {other:?} requested; the CPU engine computes in fp32"
        ),
    }
    if p.raw("model::cache").is_some() {
        tracing::info!(
            node = p.node(),
            "model::cache is not used by the CPU engine (nothing is tuned at start-up)"
        );
    }
    Ok(Loaded(Arc::new(model)))
}

/// What a GPU error at start-up means for the node's settings.
#[cfg(feature = "cuda")]
fn gpu_config_error(p: &Params, e: crate::gpu::GpuError) -> ConfigError {
    use crate::gpu::GpuError;
    match e {
        GpuError::NoSuchGpu(missing) => missing.config_error(p),
        GpuError::Missing(why) => p.error(
            "device",
            p.raw("device")
                .unwrap_or("gpu (the default of a cuda build)"),
            format!("a usable GPU, or device = \"cpu\": {why}"),
        ),
        other => p.error(
            "model",
            p.raw("model").unwrap_or_default(),
            format!("a model the GPU engine can run: {other}"),
        ),
    }
}

/// Checks that every GPU of the node's `device_id` exists, before any instance loads the model.
#[cfg(feature = "cuda")]
fn check_gpus(p: &Params, ids: &[usize]) -> Result<(), ConfigError> {
    crate::gpu::check_gpus(crate::gpu::Needs::MODEL, ids).map_err(|e| gpu_config_error(p, e))
}

#[cfg(not(feature = "cuda"))]
fn check_gpus(_: &Params, _: &[usize]) -> Result<(), ConfigError> {
    unreachable!("device() refuses gpu in a build without the cuda feature")
}

#[cfg(feature = "cuda")]
fn load_gpu(p: &Params, path: &Path, gpu: usize) -> Result<Loaded, ConfigError> {
    use crate::gpu::Precision;
    let precision = match p.raw("precision").map(str::trim) {
        None | Some("fp16") => Precision::Fp16,
        Some("fp32") => Precision::Fp32,
        Some(v) => return Err(p.error("precision", v, "\"fp16\" or \"fp32\"")),
    };
    let cache = p.raw("model::cache").map(|raw| cache_path(p, raw.trim()));
    let started = std::time::Instant::now();
    let engine = super::GpuEngine::load(path, precision, cache.as_deref(), gpu)
        .map_err(|e| gpu_config_error(p, e))?;
    tracing::info!(
        node = p.node(),
        gpu,
        "TensorrtTensor: TensorRT is not available here; {} loaded in {:.1} s, model::cache: {}",
        engine.describe(),
        started.elapsed().as_secs_f64(),
        engine.model().report().cache
    );
    Ok(Loaded(Arc::new(engine)))
}

/// Where `model::cache` lives. Unlike `model` it need not exist yet: an existing file wins
/// (beside the TOML, then from the working directory, as for every path), else the first of
/// those whose folder exists, else beside the TOML.
#[cfg(feature = "cuda")]
fn cache_path(p: &Params, raw: &str) -> std::path::PathBuf {
    if let Some(found) = crate::config::resolve_path(p.file(), raw) {
        return found;
    }
    let rel = Path::new(raw);
    if rel.is_absolute() {
        return rel.to_path_buf();
    }
    let dir = p.file().parent().unwrap_or(Path::new("."));
    [dir.join(rel), rel.to_path_buf()]
        .into_iter()
        .find(|c| {
            c.parent()
                .is_some_and(|d| d.as_os_str().is_empty() || d.is_dir())
        })
        .unwrap_or_else(|| dir.join(rel))
}

#[cfg(not(feature = "cuda"))]
fn load_gpu(_: &Params, _: &Path, _: usize) -> Result<Loaded, ConfigError> {
    unreachable!("device() refuses gpu in a build without the cuda feature")
}

pub fn new(ctx: &InitContext<'_>) -> Result<Box<dyn Backend>, ConfigError> {
    ctx.no_args()?;
    let p = ctx.params();
    let path = p.path("model")?;
    let device = device(p)?;
    // The weights are loaded once per engine and, on the GPU, once per GPU: the node's
    // instances on one GPU share that GPU's copy.
    let on = match device {
        Device::Cpu => "cpu".to_string(),
        Device::Gpu => {
            check_gpus(p, &ctx.node.device_ids)?;
            format!("gpu{}", ctx.device)
        }
    };
    let key = format!(
        "model:{}:{on}:{}",
        path.display(),
        p.raw("precision").unwrap_or_default()
    );
    let loaded = ctx.shared.get_or_try_init(&key, || match device {
        Device::Cpu => load_cpu(p, &path),
        Device::Gpu => load_gpu(p, &path, ctx.device),
    })?;
    let model = loaded.0.clone();
    let channels = model.item_shape()[0];
    let mean = p
        .floats("mean", channels)?
        .unwrap_or_else(|| vec![0.0; channels]);
    let std = p
        .floats("std", channels)?
        .unwrap_or_else(|| vec![1.0; channels]);
    if let Some(bad) = std.iter().find(|&&s| s == 0.0) {
        return Err(p.error(
            "std",
            p.raw("std").unwrap_or_default(),
            format!("non-zero values (found {bad})"),
        ));
    }
    if let Some(shape) = &ctx.profile.item_shape {
        if shape.as_slice() != model.item_shape() {
            return Err(p.error(
                "max",
                p.raw("max").unwrap_or_default(),
                format!(
                    "a shape matching the model's input {:?}",
                    model.item_shape()
                ),
            ));
        }
    }
    let spec = InstanceSpec {
        min: ctx.profile.min,
        max: ctx.profile.max,
        mean,
        std,
    };
    let runner = model.clone().instance(&spec).map_err(|e| {
        p.error(
            "instance_num",
            p.raw("instance_num").unwrap_or("1"),
            format!("instance {} could not start: {e}", ctx.instance),
        )
    })?;
    Ok(Box::new(TensorrtTensor {
        model,
        runner: Mutex::new(runner),
    }))
}

impl TensorrtTensor {
    /// Checks an item's tensor (on the host or the GPU) against the model's input.
    fn input<'a>(&self, data: &'a Value) -> Result<Input<'a>, InputError> {
        let want = self.model.item_shape();
        let (shape, input) = match data {
            Value::Tensor(t) => (&t.shape, Input::Host(&t.data)),
            Value::Device(
                v @ DeviceValue {
                    layout: DeviceLayout::Tensor { shape },
                    ..
                },
            ) => (shape, Input::Device(v)),
            Value::Device(_) => return Err(InputError::GpuImage),
            other => return Err(InputError::NotATensor(other.kind())),
        };
        let item_shape = match shape.as_slice() {
            [1, rest @ ..] if rest == want => rest,
            s => s,
        };
        if item_shape != want {
            return Err(InputError::Shape {
                got: shape.clone(),
                want: want.to_vec(),
            });
        }
        Ok(input)
    }
}

/// Why one item cannot go into the model (that item fails; the others run).
#[derive(Debug, thiserror::Error)]
enum InputError {
    #[error(
        "TensorrtTensor expects a tensor, got an image on the GPU: add ResizeTensor, which \
         makes the model's [3, h, w] tensor"
    )]
    GpuImage,
    #[error("TensorrtTensor expects a tensor as data, got {0}")]
    NotATensor(&'static str),
    #[error("input of shape {got:?} does not match the model's {want:?}")]
    Shape { got: Vec<usize>, want: Vec<usize> },
}

impl Backend for TensorrtTensor {
    fn forward(&self, batch: &mut [Item]) -> Result<(), BackendError> {
        let mut errors = Vec::new();
        let mut ok = Vec::with_capacity(batch.len());
        let mut inputs = Vec::with_capacity(batch.len());
        for (i, item) in batch.iter().enumerate() {
            match self.input(&item.data) {
                Ok(x) => {
                    ok.push(i);
                    inputs.push(x);
                }
                Err(e) => errors.push((i, e)),
            }
        }
        let out = if inputs.is_empty() {
            Ok(None)
        } else {
            match self.runner.lock() {
                Ok(mut runner) => runner
                    .run_inputs(&inputs, self.model.item_shape())
                    .map(Some)
                    .map_err(|e| BackendError::new(e.to_string())),
                Err(_) => Err(BackendError::new("the model runner panicked earlier")),
            }
        };
        drop(inputs);
        // Items that could not go in fail with their own reason, whatever the batch did.
        for (i, e) in errors {
            batch[i].fail(e.to_string());
        }
        if let Some(out) = out? {
            let per_item = out.shape[1];
            for (row, &i) in out.data.chunks_exact(per_item).zip(&ok) {
                batch[i].result = Some(Value::Tensor(Tensor::new(vec![per_item], row.to_vec())));
            }
        }
        Ok(())
    }
}

#[cfg(all(test, feature = "cuda"))]
mod tests {
    use super::*;
    use crate::gpu::devices::MissingGpu;
    use crate::gpu::GpuError;

    #[test]
    fn a_missing_gpu_is_an_error_of_device_id_naming_the_gpus_found() {
        let p = Params::from_pairs("resnet", &[("device_id", "0,1")]);
        let e = gpu_config_error(
            &p,
            GpuError::NoSuchGpu(MissingGpu {
                missing: 1,
                found: vec!["NVIDIA H200".into()],
            }),
        );
        assert_eq!(
            e.to_string(),
            "<inline>: node [resnet], key `device_id` = \"0,1\": GPU indices this machine \
             has: there is no GPU 1; found 1 GPU: 0 = NVIDIA H200"
        );
        let e = gpu_config_error(&p, GpuError::Missing("no usable GPU".into()));
        assert_eq!(e.key.as_deref(), Some("device"));
    }
}
