//! The detection kernels (detect_kernels.cu), compiled once per GPU by NVRTC: a model output
//! kept on the GPU widened from fp16 to f32, and the YOLO head's first pass, which leaves only
//! the anchors above the confidence threshold to bring back to the host.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;

use cudarc::driver::{CudaContext, CudaFunction, CudaStream, PushKernelArg};
use cudarc::nvrtc::Ptx;

use super::cuda::{Call, Result};
use super::kernels::launch_1d;

const SOURCE: &str = include_str!("detect_kernels.cu");

/// 32-bit words before the first record of `yolo_candidates`' output: the candidate count,
/// then 1 where the head held a value that is not finite.
pub const HEADER_WORDS: usize = 8;
/// 32-bit words of one candidate: anchor, class, then score, cx, cy, w, h as f32 bits.
pub const RECORD_WORDS: usize = 7;

pub struct DetectKernels {
    half_to_float: CudaFunction,
    yolo_candidates: CudaFunction,
}

/// The kernels for `ctx`'s GPU, compiled on its first use.
pub fn get(ctx: &Arc<CudaContext>) -> Result<&'static DetectKernels> {
    static KERNELS: super::kernels::PerGpu<DetectKernels> = Mutex::new(BTreeMap::new());
    super::kernels::once_per_gpu(&KERNELS, ctx, compile)
}

fn compile(ctx: &Arc<CudaContext>) -> Result<DetectKernels> {
    let ptx = super::kernels::compile_source(ctx, SOURCE, "torchpipe_detect.cu")?;
    let module = ctx
        .load_module(Ptx::from_src(ptx))
        .call("cuModuleLoadData")?;
    let f = |name: &'static str| module.load_function(name).call("cuModuleGetFunction");
    Ok(DetectKernels {
        half_to_float: f("half_to_float")?,
        yolo_candidates: f("yolo_candidates")?,
    })
}

/// Bytes `yolo_candidates` may write for a head of `anchors` anchors.
pub fn candidates_bytes(anchors: usize) -> usize {
    (HEADER_WORDS + anchors * RECORD_WORDS) * 4
}

impl DetectKernels {
    /// Widens `n` fp16 values at `src` to f32 at `dst`.
    ///
    /// # Safety
    /// `src` must hold `n` fp16 values and `dst` `n` f32, both allocated until the stream has
    /// passed the kernel.
    pub unsafe fn half_to_float(
        &self,
        stream: &CudaStream,
        src: u64,
        dst: u64,
        n: usize,
    ) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let n64 = n as i64;
        let mut l = stream.launch_builder(&self.half_to_float);
        l.arg(&src).arg(&dst).arg(&n64);
        // SAFETY: argument types match the kernel's; the sizes are as the caller promises.
        unsafe { l.launch(launch_1d(n)) }.call("cuLaunchKernel")?;
        Ok(())
    }

    /// Writes to `out` the anchors of a YOLOv8 head (row-major f32 `[channels, anchors]` at
    /// `head`) whose best class scores above `conf`: HEADER_WORDS, then RECORD_WORDS a
    /// candidate, in no particular order.
    ///
    /// # Safety
    /// `head` must hold `channels × anchors` f32 and `out` `candidates_bytes(anchors)`, its
    /// header zeroed on the stream before the kernel, both allocated until the stream has
    /// passed it.
    pub unsafe fn yolo_candidates(
        &self,
        stream: &CudaStream,
        head: u64,
        channels: usize,
        anchors: usize,
        conf: f32,
        out: u64,
    ) -> Result<()> {
        if anchors == 0 {
            return Ok(());
        }
        let (c, a) = (channels as i32, anchors as i32);
        let mut l = stream.launch_builder(&self.yolo_candidates);
        l.arg(&head).arg(&c).arg(&a).arg(&conf).arg(&out);
        // SAFETY: argument types match the kernel's; the sizes are as the caller promises.
        unsafe { l.launch(launch_1d(anchors)) }.call("cuLaunchKernel")?;
        Ok(())
    }
}
