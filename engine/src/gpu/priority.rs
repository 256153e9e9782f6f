//! Which GPU work goes first when several instances' streams have kernels waiting for the GPU.
//!
//! Every GPU instance has its own stream and the GPU runs them side by side. When it is nearly
//! saturated, a request that is already in its last nodes shares the GPU with the first nodes
//! of newer requests, and a request that brings much work there (a photo with 84 boxes, each
//! classified) waits behind all of them. CUDA's stream priorities let the block scheduler
//! prefer the streams of later nodes: what is under way finishes first, the newer requests'
//! first stages fill what is left. The GPU still runs everything: no kernel is stopped, only
//! the order in which waiting kernels get the multiprocessors changes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaStream};

use crate::gpu::cuda::{Call, Result};
use crate::graph::Stage;

/// How GPU streams are prioritised (`server --gpu-priority`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuPriority {
    /// Every stream at CUDA's default priority.
    Equal,
    /// A node's streams at a priority that rises with its level in the pipeline, from CUDA's
    /// default for an entry node to the GPU's highest for the deepest node.
    Downstream,
}

impl GpuPriority {
    const ALL: [GpuPriority; 2] = [GpuPriority::Equal, GpuPriority::Downstream];

    pub fn name(self) -> &'static str {
        match self {
            GpuPriority::Equal => "equal",
            GpuPriority::Downstream => "downstream",
        }
    }
}

impl std::str::FromStr for GpuPriority {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        GpuPriority::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("{s:?}: expected equal or downstream"))
    }
}

static DOWNSTREAM: AtomicBool = AtomicBool::new(false);

/// Sets the policy for the streams made from now on (those already made keep theirs).
pub fn set_priority(policy: GpuPriority) {
    DOWNSTREAM.store(policy == GpuPriority::Downstream, Ordering::Relaxed);
}

fn policy() -> GpuPriority {
    if DOWNSTREAM.load(Ordering::Relaxed) {
        GpuPriority::Downstream
    } else {
        GpuPriority::Equal
    }
}

/// CUDA's priority for a stream of work at `stage`, within the GPU's range `(least, greatest)`
/// (numerically, greatest ≤ least; CUDA's default is least, 0).
pub fn priority_of(policy: GpuPriority, stage: Stage, (least, greatest): (i32, i32)) -> i32 {
    let span = i64::from(least) - i64::from(greatest);
    if policy == GpuPriority::Equal || stage.deepest == 0 || span <= 0 {
        return least;
    }
    let level = stage.level.min(stage.deepest) as i64;
    let deepest = stage.deepest as i64;
    // Rounded to the nearest of the GPU's levels (six on the H100: 0 to -5).
    let steps = (level * span + deepest / 2) / deepest;
    (i64::from(least) - steps) as i32
}

/// The priority the policy gives a stream on `gpu` for work at `stage`.
pub fn stream_priority(gpu: &Arc<CudaContext>, stage: Stage) -> Result<i32> {
    let policy = policy();
    if policy == GpuPriority::Equal {
        return Ok(0);
    }
    gpu.bind_to_thread().call("cuCtxSetCurrent")?;
    let range =
        cudarc::driver::result::stream::get_priority_range().call("cuCtxGetStreamPriorityRange")?;
    Ok(priority_of(policy, stage, range))
}

/// A new stream on `gpu` for work at `stage`, at the priority the policy gives it.
pub fn new_stream(gpu: &Arc<CudaContext>, stage: Stage) -> Result<Arc<CudaStream>> {
    let priority = stream_priority(gpu, stage)?;
    gpu.bind_to_thread().call("cuCtxSetCurrent")?;
    gpu.new_stream_with_priority(priority)
        .call("cuStreamCreateWithPriority")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(level: usize, deepest: usize) -> Stage {
        Stage { level, deepest }
    }

    #[test]
    fn later_nodes_get_higher_priorities_across_the_range() {
        let h100 = (0, -5);
        let p = |l| priority_of(GpuPriority::Downstream, at(l, 7), h100);
        let all: Vec<i32> = (0..=7).map(p).collect();
        assert_eq!(all, [0, -1, -1, -2, -3, -4, -4, -5]);
        // A level past the deepest (not made by Graph) stays at the top.
        assert_eq!(priority_of(GpuPriority::Downstream, at(9, 7), h100), -5);
    }

    #[test]
    fn equal_a_single_node_or_no_range_leave_the_default() {
        assert_eq!(priority_of(GpuPriority::Equal, at(3, 7), (0, -5)), 0);
        assert_eq!(priority_of(GpuPriority::Downstream, at(0, 0), (0, -5)), 0);
        assert_eq!(priority_of(GpuPriority::Downstream, at(3, 7), (0, 0)), 0);
    }

    #[test]
    fn the_policy_reads_as_the_flag_writes_it() {
        assert_eq!("downstream".parse(), Ok(GpuPriority::Downstream));
        assert_eq!("equal".parse(), Ok(GpuPriority::Equal));
        assert!("high".parse::<GpuPriority>().is_err());
    }
}
