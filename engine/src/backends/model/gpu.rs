//! `ModelEngine` over the GPU engine (`crate::gpu`).

use std::path::Path;
use std::sync::Arc;

use super::{Input, InstanceSpec, ModelEngine, ModelError, ModelInstance};
use crate::gpu::{GpuError, GpuInstance, GpuModel, Precision};
use crate::item::{DeviceValue, Tensor};

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
        let inst = GpuInstance::new(
            self.model.clone(),
            spec.min,
            spec.max,
            &spec.mean,
            &spec.std,
            priority,
        )?;
        Ok(Box::new(GpuRunner {
            inst,
            outputs: self.model.outputs(),
        }))
    }
}

struct GpuRunner {
    inst: GpuInstance,
    outputs: usize,
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
        let n = items.len();
        // A GPU value from another GPU (an earlier node's instance on another `device_id`)
        // is copied to this instance's first; when every value is here already (one GPU),
        // the items are used as they are, with nothing collected per batch.
        let here = self.inst.stream().context().ordinal();
        let foreign = items
            .iter()
            .any(|x| matches!(x, Input::Device(v) if v.mem.device() != here));
        let (copies, moved);
        let items: &[Input<'_>] = if foreign {
            let devices: Vec<&DeviceValue> = items
                .iter()
                .filter_map(|x| match x {
                    Input::Device(v) => Some(*v),
                    Input::Host(_) => None,
                })
                .collect();
            copies = crate::gpu::peer::copy_here(&devices, self.inst.stream())?;
            let mut copied = copies.iter();
            moved = items
                .iter()
                .map(|x| match x {
                    Input::Device(v) => match copied.next() {
                        Some(Some(copy)) => Input::Device(copy),
                        _ => Input::Device(v),
                    },
                    Input::Host(h) => Input::Host(h),
                })
                .collect::<Vec<_>>();
            &moved
        } else {
            items
        };
        let inst = &mut self.inst;
        let (min, max) = inst.batch_range();
        if (min.max(1)..=max).contains(&n) {
            // One graph takes the whole batch: its output is the batch's, not copied again (a
            // detector's is megabytes an item).
            return Ok(Tensor::new(vec![n, self.outputs], inst.run_inputs(items)?));
        }
        // Batches larger than the captured graphs are split; smaller ones use their own graph.
        let mut out = Vec::with_capacity(n * self.outputs);
        for part in items.chunks(max.max(1)) {
            if part.len() < min {
                return Err(ModelError::BelowMin {
                    batch: part.len(),
                    min,
                });
            }
            out.extend(inst.run_inputs(part)?);
        }
        Ok(Tensor::new(vec![n, self.outputs], out))
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
