use std::sync::Arc;

use super::{CpuModel, ModelEngine};
use crate::backend::{Backend, InitContext};
use crate::error::{BackendError, ConfigError};
use crate::item::{Item, Tensor, Value};

/// `TensorrtTensor`: runs the node's ONNX `model` on a batch of CHW tensors, applying
/// `mean`/`std` per channel first. TensorRT itself is not available on our machines; the CPU
/// engine serves this name in the default build.
///
/// `precision` is accepted for compatibility; the CPU engine computes in fp32 and says so at
/// start-up. `model::cache` names where a GPU engine keeps what it tuned; the CPU engine has
/// nothing to cache (tract optimises the ONNX in memory at start-up) and logs that it ignores it.
pub struct TensorrtTensor {
    model: Arc<dyn ModelEngine>,
    mean: Vec<f32>,
    inv_std: Vec<f32>,
}

struct Loaded(Arc<dyn ModelEngine>);

pub fn new(ctx: &InitContext<'_>) -> Result<Box<dyn Backend>, ConfigError> {
    ctx.no_args()?;
    let p = ctx.params();
    let path = p.path("model")?;
    let loaded = ctx
        .shared
        .get_or_try_init(&format!("model:{}", path.display()), || {
            let started = std::time::Instant::now();
            let model = CpuModel::load(&path).map_err(|e| {
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
    Ok(Box::new(TensorrtTensor {
        model,
        mean,
        inv_std: std.iter().map(|s| 1.0 / s).collect(),
    }))
}

impl TensorrtTensor {
    /// Checks an item's tensor and appends it, normalised, to the batch buffer.
    fn append(&self, data: &Value, buf: &mut Vec<f32>) -> Result<(), String> {
        let want = self.model.item_shape();
        let t = match data {
            Value::Tensor(t) => t,
            other => {
                return Err(format!(
                    "TensorrtTensor expects a tensor as data, got {}",
                    other.kind()
                ))
            }
        };
        let shape = match t.shape.as_slice() {
            [1, rest @ ..] if rest == want => rest,
            s => s,
        };
        if shape != want {
            return Err(format!(
                "input of shape {:?} does not match the model's {:?}",
                t.shape, want
            ));
        }
        let plane = t.data.len() / want[0];
        for (c, chunk) in t.data.chunks_exact(plane).enumerate() {
            let (m, s) = (self.mean[c], self.inv_std[c]);
            buf.extend(chunk.iter().map(|&v| (v - m) * s));
        }
        Ok(())
    }
}

impl Backend for TensorrtTensor {
    fn forward(&self, batch: &mut [Item]) -> Result<(), BackendError> {
        let item_len: usize = self.model.item_shape().iter().product();
        let mut buf = Vec::with_capacity(batch.len() * item_len);
        let mut ok = Vec::with_capacity(batch.len());
        for (i, item) in batch.iter_mut().enumerate() {
            match self.append(&item.data, &mut buf) {
                Ok(()) => ok.push(i),
                Err(e) => item.fail(e),
            }
        }
        if ok.is_empty() {
            return Ok(());
        }
        let mut shape = vec![ok.len()];
        shape.extend_from_slice(self.model.item_shape());
        let out = self
            .model
            .run(Tensor::new(shape, buf))
            .map_err(BackendError::new)?;
        let per_item = out.shape[1];
        for (row, &i) in out.data.chunks_exact(per_item).zip(&ok) {
            batch[i].result = Some(Value::Tensor(Tensor::new(vec![per_item], row.to_vec())));
        }
        Ok(())
    }
}
