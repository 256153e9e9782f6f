//! The CPU engine: tract, a pure-Rust ONNX runtime, so the default build runs everywhere.

use std::path::Path;
use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

use super::{InstanceSpec, ModelEngine, ModelError, ModelInstance};
use crate::item::Tensor as ItemTensor;

type Plan = Arc<TypedRunnableModel>;

pub struct CpuModel {
    plan: Plan,
    item_shape: Vec<usize>,
    description: String,
}

impl CpuModel {
    /// Loads an ONNX whose single input is `[batch, …]` with a fixed item shape; the batch
    /// dimension is made symbolic so one optimised plan serves every batch size.
    pub fn load(path: &Path) -> Result<CpuModel, ModelError> {
        let mut proto = onnx_front::read(path, &mut |_| {})?;
        onnx_front::fold_float_constants(&mut proto);
        let model = tract_onnx::onnx()
            .model_for_proto_model(&proto)
            .map_err(ModelError::ReadOnnx)?;
        drop(proto);
        let inputs = model.input_outlets().map_err(ModelError::Inputs)?;
        if inputs.len() != 1 {
            return Err(ModelError::InputCount(inputs.len()));
        }
        let fact = model.input_fact(0).map_err(ModelError::InputFact)?;
        let dims: Option<Vec<usize>> = fact
            .shape
            .dims()
            .skip(1)
            .map(|d| {
                d.concretize()
                    .and_then(|d| d.as_i64())
                    .and_then(|d| usize::try_from(d).ok())
            })
            .collect();
        let item_shape = match dims {
            Some(d) if !d.is_empty() && d.iter().all(|&x| x > 0) => d,
            _ => return Err(ModelError::InputShape(format!("{fact:?}"))),
        };
        let batch = model.sym("N");
        let mut shape: TVec<TDim> = tvec![batch.into()];
        shape.extend(item_shape.iter().map(|&d| TDim::from(d)));
        let typed = model
            .clone()
            .with_input_fact(0, f32::fact(shape).into())
            .and_then(|m| m.into_typed());
        // A graph that analyses at batch 1 but not at N: its exporter wrote the traced batch
        // into it (the dynamo exporter does, given `dynamic_axes` alone, in ViT's attention
        // reshapes). Said so, rather than tract's shape mismatch alone.
        let refused = |e: TractError| {
            let one: TVec<usize> = std::iter::once(1)
                .chain(item_shape.iter().copied())
                .collect();
            let fixed = model
                .with_input_fact(0, f32::fact(one).into())
                .and_then(|m| m.into_optimized());
            match fixed {
                Ok(_) => ModelError::FixedBatch(e),
                Err(_) => ModelError::Prepare(e),
            }
        };
        let mut unoptimised = false;
        let plan = match typed {
            Ok(t) => match t.clone().into_optimized().and_then(|m| m.into_runnable()) {
                Ok(plan) => plan,
                // tract's optimiser can fail where its typed model runs: tract-core 0.23.9's
                // declutter pass errors on a strided Slice after a Reshape it cannot see
                // through (LeViT's attention subsampling: "Pulling Downsample over Reshape:
                // Invalid axis") instead of leaving the pair as it is. The typed model is then
                // served as it is, slower, and said so.
                Err(e) => match t.into_runnable() {
                    Ok(plan) => {
                        tracing::warn!(
                            "{}: tract cannot optimise this model ({e:#}); the CPU engine runs \
                             it unoptimised, slower",
                            path.display()
                        );
                        unoptimised = true;
                        plan
                    }
                    Err(_) => return Err(refused(e)),
                },
            },
            Err(e) => return Err(refused(e)),
        };
        let description = format!(
            "CPU engine (tract{}), fp32, input [N, {}]",
            if unoptimised { ", unoptimised" } else { "" },
            super::shape_text(&item_shape)
        );
        Ok(CpuModel {
            plan,
            item_shape,
            description,
        })
    }
}

impl CpuModel {
    /// Runs a batch of already normalised inputs `[N, …item_shape]`; returns `[N, outputs]`.
    pub fn run(&self, batch: ItemTensor) -> Result<ItemTensor, ModelError> {
        let n = batch.shape[0];
        let input = tract_ndarray::ArrayD::from_shape_vec(batch.shape.clone(), batch.data)
            .map_err(ModelError::BatchShape)?;
        let outputs = self
            .plan
            .run(tvec!(Tensor::from(input).into()))
            .map_err(ModelError::Inference)?;
        let data: Vec<f32> = outputs[0]
            .to_plain_array_view::<f32>()
            .map_err(ModelError::OutputType)?
            .iter()
            .copied()
            .collect();
        if n == 0 || !data.len().is_multiple_of(n) {
            return Err(ModelError::OutputSize {
                values: data.len(),
                batch: n,
            });
        }
        let per_item = data.len() / n;
        Ok(ItemTensor::new(vec![n, per_item], data))
    }
}

impl ModelEngine for CpuModel {
    fn item_shape(&self) -> &[usize] {
        &self.item_shape
    }

    fn describe(&self) -> String {
        self.description.clone()
    }

    fn instance(
        self: Arc<Self>,
        spec: &InstanceSpec,
    ) -> Result<Box<dyn ModelInstance>, ModelError> {
        Ok(Box::new(CpuInstance {
            norm: super::Normalisation::new(&self.item_shape, spec),
            model: self,
        }))
    }
}

/// The CPU engine needs nothing per instance but the normalisation.
struct CpuInstance {
    model: Arc<CpuModel>,
    norm: super::Normalisation,
}

impl ModelInstance for CpuInstance {
    fn run(&mut self, mut batch: ItemTensor) -> Result<ItemTensor, ModelError> {
        self.norm.apply(&mut batch.data);
        self.model.run(batch)
    }
}
