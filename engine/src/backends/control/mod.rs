//! Composites and small utilities: Sequential, SyncTensor, Torch, Jump, MapReduce, Identity,
//! Sleep, SoftmaxArgMax.

mod identity;
mod jump;
mod map_reduce;
mod sequential;
mod sleep;
mod softmax_argmax;
mod sync_tensor;
mod torch;

use crate::backend::Registry;

pub use softmax_argmax::{softmax_argmax, softmax_top};

pub fn register(r: &mut Registry) {
    r.register("Sequential", sequential::new, &[]);
    r.register("SyncTensor", sync_tensor::new, &[]);
    r.register("Torch", torch::new, &[]);
    r.register_with_node_args("Jump", jump::new, &[]);
    r.register("MapReduce", map_reduce::new, map_reduce::KEYS);
    r.register("Identity", identity::new, &[]);
    r.register_typed("Sleep", sleep::new);
    r.register("SoftmaxArgMax", softmax_argmax::new, &[]);
}
