//! The model backend. `TensorrtTensor` is the name users write; one trait, `ModelEngine`, hides
//! which engine runs the ONNX: on the CPU tract (pure Rust, every build) or ONNX Runtime (its
//! library loaded at run time, `onnxruntime`), the GPU engine (cuDNN, `gpu` module) in builds
//! with the `cuda` feature.

mod cpu;
#[cfg(feature = "cuda")]
mod gpu;
mod onnxruntime;
mod tensorrt_tensor;

use std::sync::Arc;

use crate::backend::Registry;
use crate::item::{DeviceValue, Tensor};

pub use cpu::CpuModel;
#[cfg(feature = "cuda")]
pub use gpu::GpuEngine;
pub use onnxruntime::{runtime as onnxruntime_runtime, OrtModel};

pub fn register(r: &mut Registry) {
    r.register_typed("TensorrtTensor", tensorrt_tensor::new);
}

/// Why a model could not load, start an instance, or run a batch.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    File(#[from] onnx_front::OnnxError),
    #[error("cannot read ONNX: {0:#}")]
    ReadOnnx(tract_onnx::prelude::TractError),
    #[error("cannot read the model's inputs: {0:#}")]
    Inputs(tract_onnx::prelude::TractError),
    #[error("expected a model with one input, found {0}")]
    InputCount(usize),
    #[error("cannot read the input shape: {0}")]
    InputFact(tract_onnx::prelude::TractError),
    /// The input's fact, as tract prints it.
    #[error("expected an input of shape [batch, …] with fixed item dims, found {0}")]
    InputShape(String),
    #[error("cannot prepare the model: {0:#}")]
    Prepare(tract_onnx::prelude::TractError),
    #[error(
        "the model runs only with a batch of 1: its exporter fixed the batch size inside the \
         graph ({0:#}); export it with a dynamic batch (`torch.onnx.export(..., \
         dynamic_shapes=...)`, or `dynamo=False` with `dynamic_axes`)"
    )]
    FixedBatch(tract_onnx::prelude::TractError),
    #[error("a batch that does not fill its shape: {0}")]
    BatchShape(tract_onnx::prelude::tract_ndarray::ShapeError),
    #[error("inference failed: {0:#}")]
    Inference(tract_onnx::prelude::TractError),
    #[error("model output is not f32: {0}")]
    OutputType(tract_onnx::prelude::TractError),
    #[error("model output of {values} values for a batch of {batch}")]
    OutputSize { values: usize, batch: usize },
    #[error(
        "a tensor on the GPU reached the CPU engine (device = \"cpu\"); run the model on the \
         GPU or preprocess on the CPU"
    )]
    DeviceInputOnCpu,
    #[error("only the GPU engine leaves its output on the GPU")]
    OutputOnCpu,
    #[error("ONNX Runtime: {0}")]
    Onnxruntime(String),
    #[error("a batch of {batch} is below this instance's min = {min}")]
    BelowMin { batch: usize, min: usize },
    #[cfg(feature = "cuda")]
    #[error(transparent)]
    Gpu(#[from] crate::gpu::GpuError),
}

/// What one instance of a node asks of a shared model.
#[derive(Clone, Debug)]
pub struct InstanceSpec {
    /// The batch sizes this instance will be given (its `min`..=`max`).
    pub min: usize,
    pub max: usize,
    /// Per input channel; inputs arrive raw and the engine normalises them.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// The node's place in the pipeline: the GPU engine's stream priority (`gpu::priority`).
    pub stage: crate::graph::Stage,
    /// Where the instance leaves its outputs (`output`).
    pub output: ModelOutput,
}

/// Where a model's outputs go (the node's `output` key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelOutput {
    /// To the host, a `Tensor` per item.
    Host,
    /// Left on the GPU, a `DeviceValue` per item (f32, row-major), for a backend that reads
    /// it there (PostProcYoloV8).
    Gpu,
}

/// A loaded model, shared by a node's instances.
pub trait ModelEngine: Send + Sync {
    /// The shape of one input item, without the batch dimension (`[3, 224, 224]`).
    fn item_shape(&self) -> &[usize];
    /// One line for the start-up log.
    fn describe(&self) -> String;
    /// The per-instance state (the GPU engine's stream, buffers and graphs).
    fn instance(self: Arc<Self>, spec: &InstanceSpec)
        -> Result<Box<dyn ModelInstance>, ModelError>;
}

/// One instance's runner; each node instance drives its own from its own thread.
pub trait ModelInstance: Send {
    /// Runs a batch `[N, …item_shape]` of raw inputs (normalised here with the instance's
    /// mean/std); returns `[N, outputs]`.
    fn run(&mut self, batch: Tensor) -> Result<Tensor, ModelError>;

    /// The same for items held apart (`[…item_shape]` each), on the host or on the GPU:
    /// engines with their own staging memory copy them there directly instead of through an
    /// intermediate batch.
    fn run_inputs(
        &mut self,
        items: &[Input<'_>],
        item_shape: &[usize],
    ) -> Result<Tensor, ModelError> {
        let mut host = Vec::with_capacity(items.len());
        for x in items {
            match x {
                Input::Host(values) => host.push(*values),
                Input::Device(_) => return Err(ModelError::DeviceInputOnCpu),
            }
        }
        let mut shape = vec![items.len()];
        shape.extend_from_slice(item_shape);
        self.run(Tensor::new(shape, host.concat()))
    }

    /// The same, leaving each item's output on the GPU: one f32 tensor `[outputs]` per item,
    /// in the items' order. Only the GPU engine's instances made with `ModelOutput::Gpu`.
    fn run_inputs_on_gpu(&mut self, items: &[Input<'_>]) -> Result<Vec<DeviceValue>, ModelError> {
        let _ = items;
        Err(ModelError::OutputOnCpu)
    }
}

/// The per-channel normalisation a CPU instance applies to its raw batch: `(x - mean) / std`
/// over planes of `plane` values.
pub(crate) struct Normalisation {
    plane: usize,
    mean: Vec<f32>,
    inv_std: Vec<f32>,
}

impl Normalisation {
    pub(crate) fn new(item_shape: &[usize], spec: &InstanceSpec) -> Normalisation {
        Normalisation {
            plane: item_shape[1..].iter().product(),
            mean: spec.mean.clone(),
            inv_std: spec.std.iter().map(|s| 1.0 / s).collect(),
        }
    }

    pub(crate) fn apply(&self, data: &mut [f32]) {
        crate::image::normalise_planes(data, self.plane, &self.mean, &self.inv_std);
    }
}

/// An input shape as the engines' descriptions write it: `3, 224, 224`.
pub(crate) fn shape_text(shape: &[usize]) -> String {
    shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One item of a model batch: raw values on the host, or a tensor on the GPU.
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    Host(&'a [f32]),
    Device(&'a DeviceValue),
}
