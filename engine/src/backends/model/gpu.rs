//! `ModelEngine` over the GPU engine (`crate::gpu`).

use std::path::Path;
use std::sync::Arc;

use super::{Input, InstanceSpec, ModelEngine, ModelInstance};
use crate::gpu::{GpuError, GpuInstance, GpuModel, Precision};
use crate::item::Tensor;

pub struct GpuEngine {
    model: Arc<GpuModel>,
}

impl GpuEngine {
    pub fn load(path: &Path, precision: Precision, cache: Option<&Path>) -> Result<Self, GpuError> {
        Ok(GpuEngine {
            model: Arc::new(GpuModel::load(path, precision, cache)?),
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

    fn instance(self: Arc<Self>, spec: &InstanceSpec) -> Result<Box<dyn ModelInstance>, String> {
        let inst = GpuInstance::new(
            self.model.clone(),
            spec.min,
            spec.max,
            &spec.mean,
            &spec.std,
        )
        .map_err(|e| e.to_string())?;
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
    fn run(&mut self, batch: Tensor) -> Result<Tensor, String> {
        let n = batch.shape[0];
        let item = batch.data.len() / n.max(1);
        let items: Vec<Input<'_>> = batch
            .data
            .chunks_exact(item.max(1))
            .map(Input::Host)
            .collect();
        self.run_inputs(&items, &batch.shape[1..])
    }

    fn run_inputs(&mut self, items: &[Input<'_>], _item_shape: &[usize]) -> Result<Tensor, String> {
        let n = items.len();
        let inst = &mut self.inst;
        let (min, max) = inst.batch_range();
        // Batches larger than the captured graphs are split; smaller ones use their own graph.
        let mut out = Vec::with_capacity(n * self.outputs);
        for part in items.chunks(max.max(1)) {
            if part.len() < min {
                return Err(format!(
                    "a batch of {} is below this instance's min = {min}",
                    part.len()
                ));
            }
            out.extend(inst.run_inputs(part).map_err(|e| e.to_string())?);
        }
        Ok(Tensor::new(vec![n, self.outputs], out))
    }
}
