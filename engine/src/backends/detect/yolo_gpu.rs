//! PostProcYoloV8's first pass over heads that stayed on the GPU (the detector's `output =
//! "gpu"`): a kernel picks each anchor's best class and keeps those above `conf_thres`, so
//! only those anchors come back to the host (as the kernel's records, which the backend reads
//! into candidates), where NMS runs as for a head on the host. A
//! YOLOv8 head at 640 is 8,400 anchors × 84 values (2.8 MB as f32); on the host, widening,
//! checking, copying and scanning it cost the detector and PostProcYoloV8 about 2.4 ms a photo
//! on the H100 box (detect-tp99-2026-12-06-h100-1f11c40: detector 6.3 ms a batch of 1.9,
//! PostProcYoloV8 0.52 ms an item).

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaStream};

use crate::gpu::cuda::{copy_dtoh_async, copy_htod_async, Call, DeviceBuf, PinnedBuf, Result};
use crate::gpu::detect_kernels::{self, DetectKernels, HEADER_WORDS, RECORD_WORDS};
use crate::graph::Stage;
use crate::item::DeviceMemory;

/// Candidates copied back with each head's header; more take a second copy. A YOLOv8 head on
/// a photo has a few hundred above the default threshold of 0.25.
const FIRST_RECORDS: usize = 1024;

/// One head to read: its memory on the GPU and its `[channels, anchors]`.
pub struct Head<'a> {
    pub mem: &'a dyn DeviceMemory,
    pub channels: usize,
    pub anchors: usize,
}

/// What one GPU needs: its kernels, a stream, and the candidates' buffers on the device and
/// pinned on the host, grown to the largest batch seen.
struct OnGpu {
    ordinal: usize,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    kernels: &'static DetectKernels,
    device: DeviceBuf,
    host: PinnedBuf<u32>,
    /// 32-bit words both buffers hold.
    words: usize,
}

/// An instance's GPU state, made on the first head that arrives from each GPU.
pub struct GpuHeads {
    stage: Stage,
    gpus: Vec<OnGpu>,
}

/// The words one head's output takes, rounded to 256 bytes so each starts aligned.
fn region(anchors: usize) -> usize {
    (detect_kernels::candidates_bytes(anchors) / 4).next_multiple_of(64)
}

impl GpuHeads {
    pub fn new(stage: Stage) -> GpuHeads {
        GpuHeads {
            stage,
            gpus: Vec::new(),
        }
    }

    fn on(&mut self, ordinal: usize, words: usize) -> Result<&mut OnGpu> {
        let at = match self.gpus.iter().position(|g| g.ordinal == ordinal) {
            Some(at) => at,
            None => {
                let needs = crate::gpu::Needs {
                    cudnn: false,
                    nvrtc: true,
                };
                let ctx = crate::gpu::open_device_for(needs, ordinal)?;
                let kernels = detect_kernels::get(&ctx)?;
                let stream = crate::gpu::priority::new_stream(&ctx, self.stage)?;
                self.gpus.push(OnGpu {
                    device: DeviceBuf::new(&ctx, 4)?,
                    host: PinnedBuf::new(&ctx, 1, false)?,
                    words: 1,
                    ordinal,
                    ctx,
                    stream,
                    kernels,
                });
                self.gpus.len() - 1
            }
        };
        let g = &mut self.gpus[at];
        if g.words < words {
            let words = words.next_power_of_two();
            g.device = DeviceBuf::new(&g.ctx, words * 4)?;
            g.host = PinnedBuf::new(&g.ctx, words, false)?;
            g.words = words;
        }
        Ok(g)
    }

    /// Each head's candidates as the kernel's records (RECORD_WORDS each, in no particular
    /// order), or why its item fails. The heads of one call are on one GPU.
    pub fn candidates(
        &mut self,
        heads: &[Head<'_>],
        conf: f32,
    ) -> Result<Vec<std::result::Result<Vec<u32>, String>>> {
        let Some(first) = heads.first() else {
            return Ok(Vec::new());
        };
        let mut words = 0;
        let offsets: Vec<usize> = heads
            .iter()
            .map(|h| {
                let o = words;
                words += region(h.anchors);
                o
            })
            .collect();
        let g = self.on(first.mem.device(), words)?;
        g.ctx.bind_to_thread().call("cuCtxSetCurrent")?;
        let host = g.host.as_mut_slice();
        for &o in &offsets {
            host[o..o + HEADER_WORDS].fill(0);
        }
        let (dev, hp) = (g.device.ptr, g.host.ptr());
        for (h, &o) in heads.iter().zip(&offsets) {
            let out = dev + (o * 4) as u64;
            let first_words = HEADER_WORDS + h.anchors.min(FIRST_RECORDS) * RECORD_WORDS;
            // SAFETY: `o` lies inside both buffers with region(anchors) words after it (sized
            // above); the head's memory holds channels × anchors f32 (the caller checked its
            // size) and is borrowed until the stream is synchronised below, as is the pinned
            // buffer, which the host touches only after that.
            unsafe {
                copy_htod_async(out, hp.add(o) as *const u8, HEADER_WORDS * 4, &g.stream)?;
                g.kernels.yolo_candidates(
                    &g.stream,
                    h.mem.ptr(),
                    h.channels,
                    h.anchors,
                    conf,
                    out,
                )?;
                copy_dtoh_async(hp.add(o) as *mut u8, out, first_words * 4, &g.stream)?;
            }
        }
        g.stream.synchronize().call("cuStreamSynchronize")?;
        // Heads with more candidates than the first copy brought: the rest of their records.
        let mut more = false;
        for (h, &o) in heads.iter().zip(&offsets) {
            let count = (g.host.as_slice()[o] as usize).min(h.anchors);
            if count > FIRST_RECORDS {
                let from = HEADER_WORDS + FIRST_RECORDS * RECORD_WORDS;
                let to = HEADER_WORDS + count * RECORD_WORDS;
                // SAFETY: words o + from .. o + to lie inside the head's region of both
                // buffers; the host reads them after the synchronisation below.
                unsafe {
                    copy_dtoh_async(
                        hp.add(o + from) as *mut u8,
                        dev + ((o + from) * 4) as u64,
                        (to - from) * 4,
                        &g.stream,
                    )?
                };
                more = true;
            }
        }
        if more {
            g.stream.synchronize().call("cuStreamSynchronize")?;
        }
        let host = g.host.as_slice();
        Ok(heads
            .iter()
            .zip(&offsets)
            .map(|(h, &o)| {
                let out = &host[o..o + region(h.anchors)];
                if out[1] != 0 {
                    return Err(
                        "found a value in the model's output that is not finite (an \
                                fp16 overflow)"
                            .to_string(),
                    );
                }
                let count = (out[0] as usize).min(h.anchors);
                Ok(out[HEADER_WORDS..HEADER_WORDS + count * RECORD_WORDS].to_vec())
            })
            .collect())
    }
}
