use std::path::PathBuf;
use std::sync::Arc;

use super::{CpuModel, Input, InstanceSpec, ModelEngine, ModelInstance, ModelOutput};
use crate::backend::{key, Backend, InitContext, Key, Settings, Takes};
use crate::config::Params;
use crate::error::{BackendError, ConfigError};
use crate::item::{DeviceLayout, DeviceValue, Item, Tensor, Value};

pub struct TensorrtTensorSettings {
    model: PathBuf,
    /// `None`: the build's default (the GPU in a `cuda` build).
    device: Option<Device>,
    /// `None`: fp16 on the GPU; the CPU engine computes in fp32 whatever is asked.
    precision: Option<Precision>,
    /// `model::cache` as written; where it lives is decided when the GPU engine loads.
    cache: Option<String>,
    /// Per input channel; their count is checked against the model once it is loaded.
    mean: Option<Vec<f32>>,
    std: Option<Vec<f32>>,
    /// Which engine runs the model on the CPU.
    cpu_engine: CpuEngine,
    /// The ONNX Runtime library named by the node (`onnxruntime`).
    onnxruntime: Option<PathBuf>,
    /// Where each item's output goes (`output`).
    output: ModelOutput,
}

/// `cpu_engine`: ONNX Runtime where its library loads, else tract (`auto`); or one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CpuEngine {
    Auto,
    Onnxruntime,
    Tract,
}

impl Settings for TensorrtTensorSettings {
    const KEYS: &'static [Key] = &[
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
        key(
            "cpu_engine",
            "`auto`, `onnxruntime` or `tract`",
            "auto",
            "the CPU engine: ONNX Runtime (its library loaded at start-up), tract (pure Rust), \
             or ONNX Runtime where it loads and tract otherwise",
        ),
        key(
            "onnxruntime",
            "a libonnxruntime.so file",
            "ORT_DYLIB_PATH, the system's, the Python wheel's",
            "the ONNX Runtime library the CPU engine loads",
        ),
        key(
            "output",
            "`host` or `gpu`",
            "host",
            "where each item's output goes: to the host as a tensor, or left on the GPU (the \
             GPU engine only) for a backend that reads it there, as PostProcYoloV8 does",
        ),
    ];

    fn parse(p: &Params) -> Result<Self, ConfigError> {
        let model = p.path("model")?;
        let device = match p.raw("device") {
            // A number is a GPU index: what `device_id` takes, not this key.
            Some(v) if v.trim().parse::<usize>().is_ok() => {
                return Err(p.error("device", v, "\"gpu\" or \"cpu\" (which GPU is `device_id`)"))
            }
            _ => p.one_of(
                "device",
                &[
                    ("cpu", Device::Cpu),
                    ("gpu", Device::Gpu),
                    ("cuda", Device::Gpu),
                ],
                "\"gpu\" or \"cpu\"",
            )?,
        };
        let precision = p.one_of(
            "precision",
            &[("fp16", Precision::Fp16), ("fp32", Precision::Fp32)],
            "\"fp16\" or \"fp32\"",
        )?;
        let std = p.numbers("std")?;
        if let Some(bad) = std.iter().flatten().find(|&&s| s == 0.0) {
            return Err(p.error(
                "std",
                p.raw("std").unwrap_or_default(),
                format!("non-zero values (found {bad})"),
            ));
        }
        let cpu_engine = p
            .one_of(
                "cpu_engine",
                &[
                    ("auto", CpuEngine::Auto),
                    ("onnxruntime", CpuEngine::Onnxruntime),
                    ("tract", CpuEngine::Tract),
                ],
                "\"auto\", \"onnxruntime\" or \"tract\"",
            )?
            // ONNX Runtime where it loads: ResNet50 end to end at 2.8× tract's rate on the
            // 2-core VM, the same as onnxruntime's own in Python (benches/cpu_engines.py).
            .unwrap_or(CpuEngine::Auto);
        let onnxruntime = match p.raw("onnxruntime") {
            Some(_) => Some(p.path("onnxruntime")?),
            None => None,
        };
        let output = p
            .one_of(
                "output",
                &[("host", ModelOutput::Host), ("gpu", ModelOutput::Gpu)],
                "\"host\" or \"gpu\"",
            )?
            .unwrap_or(ModelOutput::Host);
        Ok(TensorrtTensorSettings {
            output,
            model,
            device,
            precision,
            cache: p.raw("model::cache").map(|raw| raw.trim().to_string()),
            mean: p.numbers("mean")?,
            std,
            cpu_engine,
            onnxruntime,
        })
    }
}

/// `TensorrtTensor`: runs the node's ONNX `model` on a batch of CHW tensors, applying
/// `mean`/`std` per channel first. TensorRT itself is not available on our machines: in a
/// build with the `cuda` feature our GPU engine serves this name (cuDNN, CUDA graphs,
/// `model::cache`); `device = "cpu"` (the only choice in the default build) runs the CPU
/// engine, which computes in fp32 and has nothing to cache.
pub struct TensorrtTensor {
    model: Arc<dyn ModelEngine>,
    /// This instance's own runner (its stream, buffers and graphs), driven from its thread.
    runner: Box<dyn ModelInstance>,
    output: ModelOutput,
}

struct Loaded(Arc<dyn ModelEngine>);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Device {
    Cpu,
    Gpu,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Precision {
    Fp16,
    Fp32,
}

impl Precision {
    fn name(self) -> &'static str {
        match self {
            Precision::Fp16 => "fp16",
            Precision::Fp32 => "fp32",
        }
    }
}

/// The engine that runs the model: what was asked, or the build's default. A GPU asked of a
/// build without one is a start-up error, not a load error, so that a GPU TOML still passes
/// `--check-config` on a CPU-only build.
fn device(p: &Params, asked: Option<Device>) -> Result<Device, ConfigError> {
    match asked {
        None if crate::gpu::BUILT_WITH_CUDA => Ok(Device::Gpu),
        None => Ok(Device::Cpu),
        Some(Device::Gpu) if !crate::gpu::BUILT_WITH_CUDA => Err(p.error(
            "device",
            p.raw("device").unwrap_or_default(),
            "\"cpu\": this build has no GPU engine (build with `--features cuda`)",
        )),
        Some(d) => Ok(d),
    }
}

/// ONNX Runtime for a node whose `cpu_engine` allows it: `Some` where it loads; `None` for
/// tract (`tract`, or `auto` without the library: logged); an error where `onnxruntime` was
/// asked for and cannot load.
fn onnxruntime(
    p: &Params,
    s: &TensorrtTensorSettings,
) -> Result<Option<&'static super::onnxruntime::Runtime>, ConfigError> {
    if s.cpu_engine == CpuEngine::Tract {
        return Ok(None);
    }
    match super::onnxruntime::runtime(s.onnxruntime.as_deref()) {
        Ok(rt) => Ok(Some(rt)),
        Err(why) if s.cpu_engine == CpuEngine::Auto => {
            tracing::warn!(
                node = p.node(),
                "cpu_engine = \"auto\": ONNX Runtime did not load ({why}); tract runs the model"
            );
            Ok(None)
        }
        Err(why) => Err(p.error(
            "cpu_engine",
            p.raw("cpu_engine").unwrap_or_default(),
            format!(
                "an ONNX Runtime library that loads (looked for: {why}); set `onnxruntime` to \
                 its libonnxruntime.so, `pip install onnxruntime`, or cpu_engine = \"tract\""
            ),
        )),
    }
}

fn load_cpu(p: &Params, s: &TensorrtTensorSettings) -> Result<Loaded, ConfigError> {
    let started = std::time::Instant::now();
    let model_error = |e: super::ModelError| {
        p.error(
            "model",
            p.raw("model").unwrap_or_default(),
            format!("a loadable ONNX model: {e}"),
        )
    };
    let model: Arc<dyn ModelEngine> = match onnxruntime(p, s)? {
        Some(rt) => {
            // The machine's cores shared between the node's instances.
            let instances = p.usize_or("instance_num", 1)?.max(1);
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let threads = (cores / instances).max(1);
            Arc::new(
                super::onnxruntime::OrtModel::load(&s.model, rt, threads).map_err(model_error)?,
            )
        }
        None => Arc::new(CpuModel::load(&s.model).map_err(model_error)?),
    };
    tracing::info!(
        node = p.node(),
        "TensorrtTensor: TensorRT is not available here; {} ready in {:.1} s",
        model.describe(),
        started.elapsed().as_secs_f64()
    );
    if let Some(Precision::Fp16) = s.precision {
        tracing::warn!(
            node = p.node(),
            "precision = \"fp16\" requested; the CPU engine computes in fp32"
        );
    }
    if s.cache.is_some() {
        tracing::info!(
            node = p.node(),
            "model::cache is not used by the CPU engine (nothing is tuned at start-up)"
        );
    }
    Ok(Loaded(model))
}

/// What a GPU error at start-up means for the node's settings.
#[cfg(feature = "cuda")]
fn gpu_config_error(p: &Params, e: crate::gpu::GpuError) -> ConfigError {
    use crate::gpu::GpuError;
    match e {
        GpuError::NoSuchGpu(missing) => crate::gpu::missing_gpu_error(&missing, p),
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
fn load_gpu(p: &Params, s: &TensorrtTensorSettings, gpu: usize) -> Result<Loaded, ConfigError> {
    let precision = match s.precision.unwrap_or(Precision::Fp16) {
        Precision::Fp16 => crate::gpu::Precision::Fp16,
        Precision::Fp32 => crate::gpu::Precision::Fp32,
    };
    let cache = s.cache.as_deref().map(|raw| cache_path(p, raw));
    let started = std::time::Instant::now();
    let engine = super::GpuEngine::load(&s.model, precision, cache.as_deref(), gpu)
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
    let rel = std::path::Path::new(raw);
    if rel.is_absolute() {
        return rel.to_path_buf();
    }
    let dir = p.file().parent().unwrap_or(std::path::Path::new("."));
    [dir.join(rel), rel.to_path_buf()]
        .into_iter()
        .find(|c| {
            c.parent()
                .is_some_and(|d| d.as_os_str().is_empty() || d.is_dir())
        })
        .unwrap_or_else(|| dir.join(rel))
}

#[cfg(not(feature = "cuda"))]
fn load_gpu(_: &Params, _: &TensorrtTensorSettings, _: usize) -> Result<Loaded, ConfigError> {
    unreachable!("device() refuses gpu in a build without the cuda feature")
}

pub fn new(
    ctx: &InitContext<'_>,
    s: TensorrtTensorSettings,
) -> Result<Box<dyn Backend>, ConfigError> {
    ctx.no_args()?;
    let p = ctx.params();
    let device = device(p, s.device)?;
    if s.output == ModelOutput::Gpu && device == Device::Cpu {
        return Err(p.error(
            "output",
            p.raw("output").unwrap_or_default(),
            "\"host\": the model runs on the CPU (`device`), so its output is on the host",
        ));
    }
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
        s.model.display(),
        s.precision.map(Precision::name).unwrap_or_default()
    );
    let loaded = ctx.shared.get_or_try_init(&key, || match device {
        Device::Cpu => load_cpu(p, &s),
        Device::Gpu => load_gpu(p, &s, ctx.device),
    })?;
    let model = loaded.0.clone();
    let channels = model.item_shape()[0];
    let per_channel = |key: &str, values: Option<Vec<f32>>, default: f32| match values {
        None => Ok(vec![default; channels]),
        Some(v) if v.len() == channels => Ok(v),
        Some(_) => Err(p.error(
            key,
            p.raw(key).unwrap_or_default(),
            format!("{channels} numbers separated by commas"),
        )),
    };
    let mean = per_channel("mean", s.mean, 0.0)?;
    let std = per_channel("std", s.std, 1.0)?;
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
        stage: ctx.stage,
        output: s.output,
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
        runner,
        output: s.output,
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
    fn takes(&self) -> Takes {
        Takes::Tensor(self.model.item_shape().to_vec())
    }

    fn forward(&mut self, batch: &mut [Item]) -> Result<(), BackendError> {
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
        let model_error = |e: super::ModelError| BackendError::new(e.to_string());
        // One value per item that went in: a tensor on the host, or on the GPU.
        let out: Result<Vec<Value>, BackendError> = if inputs.is_empty() {
            Ok(Vec::new())
        } else if self.output == ModelOutput::Gpu {
            self.runner
                .run_inputs_on_gpu(&inputs)
                .map(|v| v.into_iter().map(Value::Device).collect())
                .map_err(model_error)
        } else {
            self.runner
                .run_inputs(&inputs, self.model.item_shape())
                .map(|out| {
                    let per_item = out.shape[1];
                    out.data
                        .chunks_exact(per_item)
                        .map(|row| Value::Tensor(Tensor::new(vec![per_item], row.to_vec())))
                        .collect()
                })
                .map_err(model_error)
        };
        drop(inputs);
        // Items that could not go in fail with their own reason, whatever the batch did.
        for (i, e) in errors {
            batch[i].fail(e.to_string());
        }
        for (value, &i) in out?.into_iter().zip(&ok) {
            batch[i].result = Some(value);
        }
        Ok(())
    }
}

#[cfg(all(test, feature = "cuda"))]
mod tests {
    use super::*;
    use crate::gpu::{GpuError, MissingGpu};

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

    #[test]
    fn the_default_gpu_on_a_machine_without_one_says_so() {
        let p = Params::from_pairs("model", &[]);
        let missing = gpu_engine::devices::check(&[0], &[]).unwrap_err();
        let e = crate::gpu::missing_gpu_error(&missing, &p);
        assert_eq!(e.value, None);
        assert_eq!(
            e.to_string(),
            "<inline>: node [model], key `device_id`: GPU indices this machine has \
             (`device_id` is 0 unless set): there is no GPU 0; found no GPU"
        );
    }
}
