//! `ModelEngine` over the GPU engine (`crate::gpu`).

use std::path::Path;
use std::sync::Arc;

use super::{Input, InstanceSpec, ModelEngine, ModelError, ModelInstance, ModelOutput};
use crate::gpu::{GpuError, GpuInstance, GpuModel, OutputTo, Precision};
use crate::item::{DeviceLayout, DeviceMemory as _, DeviceValue, Tensor};

pub struct GpuEngine {
    model: Arc<GpuModel>,
}

impl GpuEngine {
    /// Loads the model onto GPU `gpu`.
    pub fn load(
        path: &Path,
        precision: Precision,
        cache: Option<&Path>,
        gpu: usize,
    ) -> Result<Self, GpuError> {
        Ok(GpuEngine {
            model: Arc::new(GpuModel::load(path, precision, cache, gpu)?),
        })
    }

    pub fn model(&self) -> &Arc<GpuModel> {
        &self.model
    }
}

impl ModelEngine for GpuEngine {
    fn item_shape(&self) -> &[usize] {
        self.model.item_shape()
    }

    fn describe(&self) -> String {
        self.model.describe()
    }

    fn instance(
        self: Arc<Self>,
        spec: &InstanceSpec,
    ) -> Result<Box<dyn ModelInstance>, ModelError> {
        let priority = crate::gpu::priority::stream_priority(self.model.context(), spec.stage)?;
        let output_to = match spec.output {
            ModelOutput::Host => OutputTo::Host,
            ModelOutput::Gpu => OutputTo::Gpu,
        };
        let inst = GpuInstance::new(
            self.model.clone(),
            spec.min,
            spec.max,
            &spec.mean,
            &spec.std,
            priority,
            output_to,
        )?;
        Ok(Box::new(GpuRunner {
            pool: crate::gpu::pool::shared(self.model.context()),
            inst,
            outputs: self.model.outputs(),
        }))
    }
}

struct GpuRunner {
    inst: GpuInstance,
    /// Where outputs left on the GPU live.
    pool: Arc<crate::gpu::pool::Pool>,
    outputs: usize,
}

impl GpuRunner {
    /// Runs `f` on the batch with every GPU value on this instance's GPU: a value from another
    /// GPU (an earlier node's instance on another `device_id`) is copied here first; when every
    /// value is here already (one GPU), the items are used as they are, with nothing collected
    /// per batch.
    fn with_items_here<R>(
        &mut self,
        items: &[Input<'_>],
        f: impl FnOnce(&mut GpuInstance, &[Input<'_>]) -> Result<R, ModelError>,
    ) -> Result<R, ModelError> {
        let here = self.inst.stream().context().ordinal();
        let foreign = items
            .iter()
            .any(|x| matches!(x, Input::Device(v) if v.mem.device() != here));
        if !foreign {
            return f(&mut self.inst, items);
        }
        let devices: Vec<&DeviceValue> = items
            .iter()
            .filter_map(|x| match x {
                Input::Device(v) => Some(*v),
                Input::Host(_) => None,
            })
            .collect();
        let copies = crate::gpu::peer::copy_here(&devices, self.inst.stream())?;
        let mut copied = copies.iter();
        let moved = items
            .iter()
            .map(|x| match x {
                Input::Device(v) => match copied.next() {
                    Some(Some(copy)) => Input::Device(copy),
                    _ => Input::Device(v),
                },
                Input::Host(h) => Input::Host(h),
            })
            .collect::<Vec<_>>();
        f(&mut self.inst, &moved)
    }
}

/// The parts of a batch of `items` that the instance's graphs take: the whole batch where one
/// graph does, else runs of `max` (the last may be shorter, and not below `min`).
fn parts<'a, 'b>(
    inst: &GpuInstance,
    items: &'a [Input<'b>],
) -> Result<Vec<&'a [Input<'b>]>, ModelError> {
    let (min, max) = inst.batch_range();
    if (min.max(1)..=max).contains(&items.len()) {
        return Ok(vec![items]);
    }
    items
        .chunks(max.max(1))
        .map(|part| {
            if part.len() < min {
                Err(ModelError::BelowMin {
                    batch: part.len(),
                    min,
                })
            } else {
                Ok(part)
            }
        })
        .collect()
}

impl ModelInstance for GpuRunner {
    fn run(&mut self, batch: Tensor) -> Result<Tensor, ModelError> {
        let n = batch.shape[0];
        let item = batch.data.len() / n.max(1);
        let items: Vec<Input<'_>> = batch
            .data
            .chunks_exact(item.max(1))
            .map(Input::Host)
            .collect();
        self.run_inputs(&items, &batch.shape[1..])
    }

    fn run_inputs(
        &mut self,
        items: &[Input<'_>],
        _item_shape: &[usize],
    ) -> Result<Tensor, ModelError> {
        let (n, outputs) = (items.len(), self.outputs);
        self.with_items_here(items, |inst, items| {
            let parts = parts(inst, items)?;
            if let [whole] = parts.as_slice() {
                // One graph takes the whole batch: its output is the batch's, not copied again
                // (a detector's is megabytes an item).
                return Ok(Tensor::new(vec![n, outputs], inst.run_inputs(whole)?));
            }
            let mut out = Vec::with_capacity(n * outputs);
            for part in parts {
                out.extend(inst.run_inputs(part)?);
            }
            Ok(Tensor::new(vec![n, outputs], out))
        })
    }

    fn run_inputs_on_gpu(&mut self, items: &[Input<'_>]) -> Result<Vec<DeviceValue>, ModelError> {
        let bytes = self.outputs * 4;
        let bufs = items
            .iter()
            .map(|_| self.pool.take(bytes))
            .collect::<Result<Vec<_>, _>>()?;
        let ptrs: Vec<u64> = bufs.iter().map(|b| b.ptr()).collect();
        self.with_items_here(items, |inst, items| {
            let mut at = 0;
            for part in parts(inst, items)? {
                // SAFETY: each pointer is a pooled buffer of `outputs` f32 on this instance's
                // GPU (the pool is its context's), owned by `bufs` until the results hold it.
                unsafe { inst.run_inputs_to(part, &ptrs[at..at + part.len()])? };
                at += part.len();
            }
            Ok(())
        })?;
        let shape = vec![self.outputs];
        Ok(bufs
            .into_iter()
            .map(|b| DeviceValue {
                layout: DeviceLayout::Tensor {
                    shape: shape.clone(),
                },
                mem: Arc::new(b),
            })
            .collect())
    }
}

/// A GPU value is an input item the model engine copies from.
impl gpu_engine::DeviceBytes for DeviceValue {
    fn ptr(&self) -> u64 {
        self.mem.ptr()
    }

    fn bytes(&self) -> usize {
        self.mem.bytes()
    }
}

/// The model trait's batch items are what the GPU model engine reads, as they are.
impl gpu_engine::AsInput for Input<'_> {
    fn as_input(&self) -> gpu_engine::Input<'_> {
        match *self {
            Input::Host(h) => gpu_engine::Input::Host(h),
            Input::Device(v) => gpu_engine::Input::Device(v),
        }
    }
}
