//! The model backend. `TensorrtTensor` is the name users write; one trait, `ModelEngine`, hides
//! which engine runs the ONNX (the CPU engine here; the GPU engine slots in behind the same
//! trait).

mod cpu;
mod tensorrt_tensor;

use crate::backend::Registry;
use crate::item::Tensor;

pub use cpu::CpuModel;

pub fn register(r: &mut Registry) {
    r.register("TensorrtTensor", tensorrt_tensor::new);
}

/// A loaded model, shared by a node's instances.
pub trait ModelEngine: Send + Sync {
    /// The shape of one input item, without the batch dimension (`[3, 224, 224]`).
    fn item_shape(&self) -> &[usize];
    /// Runs a batch `[N, …item_shape]` of already normalised inputs; returns `[N, outputs]`.
    fn run(&self, batch: Tensor) -> Result<Tensor, String>;
    /// One line for the start-up log.
    fn describe(&self) -> String;
}
