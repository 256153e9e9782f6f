//! The GPU image kernels of ResizeTensor, LetterBoxTensor, ResizePadTensor and cvtColorTensor,
//! compiled once per GPU by NVRTC. The resize reproduces `image::resize_bilinear` (OpenCV's INTER_LINEAR on u8) bit for
//! bit: the taps are computed from the same IEEE operations, written with explicit `_rn`
//! intrinsics so the compiler cannot contract them into FMAs that round differently.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;

use cudarc::driver::{CudaContext, CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;

use super::cuda::{copy_htod_async, Call, PinnedBuf, Result};

const SOURCE: &str = include_str!("image_kernels.cu");

/// One item of a batched resize: the layout `Job` has in the kernel.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Job {
    pub src: u64,
    pub dst: u64,
    pub sh: i32,
    pub sw: i32,
    pub swap: i32,
    pub pad: i32,
}

/// One item of a batched letterbox or resize-and-pad: the layout `CanvasJob` has in the kernel.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct CanvasJob {
    pub src: u64,
    pub dst: u64,
    pub sh: i32,
    pub sw: i32,
    /// The resized image's size and its corner on the canvas.
    pub nh: i32,
    pub nw: i32,
    pub top: i32,
    pub left: i32,
    pub swap: i32,
    /// The canvas elsewhere, per source channel.
    pub pad: [i32; 3],
}

/// One item of a batched affine warp: the layout `WarpJob` has in the kernel.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct WarpJob {
    pub src: u64,
    pub dst: u64,
    pub sh: i32,
    pub sw: i32,
    /// Output pixel (x, y) → source point (m0 x + m1 y + m2, m3 x + m4 y + m5).
    pub m: [f64; 6],
}

pub struct ImageKernels {
    resize_to_chw: CudaFunction,
    canvas_to_chw: CudaFunction,
    warp_affine_hwc: CudaFunction,
    swap_planes: CudaFunction,
    swap_pixels: CudaFunction,
}

/// The kernels for `ctx`'s GPU, compiled on its first use (a kernel launches only on the GPU
/// whose context loaded it) and kept, with a failure, for the life of the process.
pub fn get(ctx: &Arc<CudaContext>) -> Result<&'static ImageKernels> {
    static KERNELS: super::kernels::PerGpu<ImageKernels> = Mutex::new(BTreeMap::new());
    super::kernels::once_per_gpu(&KERNELS, ctx, compile)
}

fn compile(ctx: &Arc<CudaContext>) -> Result<ImageKernels> {
    let ptx = super::kernels::compile_source(ctx, SOURCE, "torchpipe_image.cu")?;
    let module = ctx
        .load_module(Ptx::from_src(ptx))
        .call("cuModuleLoadData")?;
    let f = |name: &'static str| module.load_function(name).call("cuModuleGetFunction");
    Ok(ImageKernels {
        resize_to_chw: f("resize_to_chw")?,
        canvas_to_chw: f("canvas_to_chw")?,
        warp_affine_hwc: f("warp_affine_hwc")?,
        swap_planes: f("swap_planes")?,
        swap_pixels: f("swap_pixels")?,
    })
}

impl ImageKernels {
    /// Resizes each job's image to `dh × dw` into its CHW f32 destination. `staging` carries
    /// the job table to the device and must not be touched until the stream has passed.
    pub fn resize(
        &self,
        stream: &CudaStream,
        staging: &mut PinnedBuf<Job>,
        table: u64,
        jobs: &[Job],
        dh: usize,
        dw: usize,
    ) -> Result<()> {
        // SAFETY (of `launch_jobs`): each job's image holds sh × sw × 3 bytes and its
        // destination 3 × dh × dw f32, kept alive by the caller.
        Self::launch_jobs(&self.resize_to_chw, stream, staging, table, jobs, dh, dw)
    }

    /// Each job's image resized and placed on its `ch × cw` canvas, into its CHW f32
    /// destination. `staging` carries the job table to the device and must not be touched
    /// until the stream has passed.
    pub fn canvas(
        &self,
        stream: &CudaStream,
        staging: &mut PinnedBuf<CanvasJob>,
        table: u64,
        jobs: &[CanvasJob],
        ch: usize,
        cw: usize,
    ) -> Result<()> {
        // SAFETY (of `launch_jobs`): each job's image holds sh × sw × 3 bytes and its canvas
        // 3 × ch × cw f32, kept alive by the caller; nh, nw, top, left lie inside the canvas.
        Self::launch_jobs(&self.canvas_to_chw, stream, staging, table, jobs, ch, cw)
    }

    /// Each job's image warped into its `h × w` HWC u8 destination. `staging` carries the job
    /// table to the device and must not be touched until the stream has passed.
    pub fn warp_affine(
        &self,
        stream: &CudaStream,
        staging: &mut PinnedBuf<WarpJob>,
        table: u64,
        jobs: &[WarpJob],
        h: usize,
        w: usize,
    ) -> Result<()> {
        // SAFETY (of `launch_jobs`): each job's image holds sh × sw × 3 bytes and its
        // destination h × w × 3, kept alive by the caller; the kernel reads only inside the
        // image, whatever the matrix.
        Self::launch_jobs(&self.warp_affine_hwc, stream, staging, table, jobs, h, w)
    }

    /// Copies the job table to the device and launches `f(table, h, w)`: one thread per
    /// output pixel of each job (grid y). The callers size every job's buffers for it.
    fn launch_jobs<J: Copy>(
        f: &CudaFunction,
        stream: &CudaStream,
        staging: &mut PinnedBuf<J>,
        table: u64,
        jobs: &[J],
        h: usize,
        w: usize,
    ) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        staging.as_mut_slice()[..jobs.len()].copy_from_slice(jobs);
        // SAFETY: pinned, sized for jobs.len() ≥ 1 entries; `table` holds as many.
        unsafe {
            copy_htod_async(
                table,
                staging.ptr() as *const u8,
                std::mem::size_of_val(jobs),
                stream,
            )?
        };
        let (h32, w32) = (h as i32, w as i32);
        let mut l = stream.launch_builder(f);
        l.arg(&table).arg(&h32).arg(&w32);
        let cfg = LaunchConfig {
            grid_dim: ((h * w).div_ceil(256) as u32, jobs.len() as u32, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the table holds jobs.len() jobs of the kernel's layout, whose buffers the
        // callers keep alive.
        unsafe { l.launch(cfg) }.call("cuLaunchKernel")?;
        Ok(())
    }

    /// Swaps planes 0 and 2 of a `[3, h, w]` f32 tensor (`src` may equal `dst`).
    pub fn swap_planes(&self, stream: &CudaStream, src: u64, dst: u64, plane: usize) -> Result<()> {
        // SAFETY (of `swap`): both buffers hold 3 × plane f32 values.
        Self::swap(&self.swap_planes, stream, src, dst, plane)
    }

    /// Swaps the first and third channel of `pixels` packed 3-channel u8 pixels.
    pub fn swap_pixels(
        &self,
        stream: &CudaStream,
        src: u64,
        dst: u64,
        pixels: usize,
    ) -> Result<()> {
        // SAFETY (of `swap`): both buffers hold 3 × pixels bytes.
        Self::swap(&self.swap_pixels, stream, src, dst, pixels)
    }

    /// Launches one of the swap kernels `(src, dst, n)` over `n` elements; the callers size
    /// the buffers for it.
    fn swap(f: &CudaFunction, stream: &CudaStream, src: u64, dst: u64, n: usize) -> Result<()> {
        let len = n as i64;
        let mut l = stream.launch_builder(f);
        l.arg(&src).arg(&dst).arg(&len);
        // SAFETY: argument types match the swap kernels; the callers' buffers hold n elements.
        unsafe { l.launch(super::kernels::launch_1d(n)) }.call("cuLaunchKernel")?;
        Ok(())
    }
}
