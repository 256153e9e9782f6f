//! The GPU image kernels of ResizeTensor and cvtColorTensor, compiled once per process by
//! NVRTC. The resize reproduces `image::resize_bilinear` (OpenCV's INTER_LINEAR on u8) bit for
//! bit: the taps are computed from the same IEEE operations, written with explicit `_rn`
//! intrinsics so the compiler cannot contract them into FMAs that round differently.

use std::sync::{Arc, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions, Ptx};

use super::cuda::{copy_htod_async, Call, GpuError, PinnedBuf, Result};

const SOURCE: &str = r#"
struct Job {
    const unsigned char* src;   // HWC u8, 3 channels, rows packed
    float* dst;                 // CHW f32, 3 planes of dh*dw
    int sh, sw;
    int swap;                   // write channel 2-c to plane c
    int pad;
};

__device__ __forceinline__ int round_coef(float v) {
    int r = (int)rintf(v);
    return min(max(r, -32768), 32767);
}

// One output coordinate's two source indices and 11-bit weights, as image/resize.rs `taps`.
__device__ __forceinline__ void taps(int d, int dst_len, int src_len, int vertical,
        int* first, int* second, int* w0, int* w1) {
    double scale = __ddiv_rn(1.0, __ddiv_rn((double)dst_len, (double)src_len));
    float f = __double2float_rn(__dadd_rn(__dmul_rn(__dadd_rn((double)d, 0.5), scale), -0.5));
    float fl = floorf(f);
    int s = (int)fl;
    float frac = __fsub_rn(f, fl);
    int last = src_len - 1;
    if (vertical) {
        *first = min(max(s, 0), last);
        *second = min(max(s + 1, 0), last);
    } else {
        if (s < 0) { s = 0; frac = 0.0f; }
        else if (s >= last) { s = last; frac = 0.0f; }
        *first = s;
        *second = min(s + 1, last);
    }
    *w0 = round_coef(__fmul_rn(__fsub_rn(1.0f, frac), 2048.0f));
    *w1 = round_coef(__fmul_rn(frac, 2048.0f));
}

// grid: (ceil(dh*dw/256), n). One thread per output pixel, three channels.
extern "C" __global__ void resize_to_chw(const Job* jobs, int dh, int dw) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= dh * dw) return;
    const Job j = jobs[blockIdx.y];
    int y = i / dw, x = i - y * dw;
    int plane = dh * dw;
    int out[3];
    if (j.sh == dh && j.sw == dw) {
        const unsigned char* p = j.src + ((long)y * j.sw + x) * 3;
        out[0] = p[0]; out[1] = p[1]; out[2] = p[2];
    } else if (j.sh == 2 * dh && j.sw == 2 * dw) {
        // OpenCV averages 2x2 blocks for an exact halving.
        const unsigned char* r0 = j.src + ((long)(2 * y) * j.sw + 2 * x) * 3;
        const unsigned char* r1 = r0 + (long)j.sw * 3;
        for (int c = 0; c < 3; c++)
            out[c] = ((int)r0[c] + r0[c + 3] + r1[c] + r1[c + 3] + 2) >> 2;
    } else {
        int xf, xs, xw0, xw1, yf, ys, yw0, yw1;
        taps(x, dw, j.sw, 0, &xf, &xs, &xw0, &xw1);
        taps(y, dh, j.sh, 1, &yf, &ys, &yw0, &yw1);
        const unsigned char* a = j.src + (long)yf * j.sw * 3;
        const unsigned char* b = j.src + (long)ys * j.sw * 3;
        for (int c = 0; c < 3; c++) {
            int r0 = a[xf * 3 + c] * xw0 + a[xs * 3 + c] * xw1;
            int r1 = b[xf * 3 + c] * xw0 + b[xs * 3 + c] * xw1;
            int v = (((r0 >> 4) * yw0) >> 16) + (((r1 >> 4) * yw1) >> 16);
            out[c] = min(max((v + 2) >> 2, 0), 255);
        }
    }
    long o = (long)y * dw + x;
    for (int c = 0; c < 3; c++)
        j.dst[(long)c * plane + o] = (float)out[j.swap ? 2 - c : c];
}

// Swaps planes 0 and 2 of a 3-plane CHW f32 tensor of `plane` values per channel.
extern "C" __global__ void swap_planes(const float* x, float* y, long plane) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= plane) return;
    float r = x[i], g = x[plane + i], b = x[2 * plane + i];
    y[i] = b; y[plane + i] = g; y[2 * plane + i] = r;
}

// Swaps the first and third channel of packed HWC u8 pixels.
extern "C" __global__ void swap_pixels(const unsigned char* x, unsigned char* y, long pixels) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= pixels) return;
    unsigned char a = x[3 * i], g = x[3 * i + 1], b = x[3 * i + 2];
    y[3 * i] = b; y[3 * i + 1] = g; y[3 * i + 2] = a;
}
"#;

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

pub struct ImageKernels {
    resize_to_chw: CudaFunction,
    swap_planes: CudaFunction,
    swap_pixels: CudaFunction,
}

/// The kernels for this process's device, compiled on first use.
pub fn get(ctx: &Arc<CudaContext>) -> Result<&'static ImageKernels> {
    static KERNELS: OnceLock<std::result::Result<ImageKernels, String>> = OnceLock::new();
    KERNELS
        .get_or_init(|| compile(ctx).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| GpuError::Nvrtc(e.clone()))
}

fn compile(ctx: &Arc<CudaContext>) -> Result<ImageKernels> {
    let cc = ctx.compute_capability().call("cuDeviceGetAttribute")?;
    let ptx = compile_ptx_with_opts(
        SOURCE,
        CompileOptions {
            arch: Some(super::kernels::arch(cc)),
            name: Some("torchpipe_image.cu".into()),
            ..Default::default()
        },
    )
    .map_err(|e| GpuError::Nvrtc(e.to_string()))?;
    let module = ctx
        .load_module(Ptx::from_src(ptx.to_src()))
        .call("cuModuleLoadData")?;
    let f = |name: &'static str| module.load_function(name).call("cuModuleGetFunction");
    Ok(ImageKernels {
        resize_to_chw: f("resize_to_chw")?,
        swap_planes: f("swap_planes")?,
        swap_pixels: f("swap_pixels")?,
    })
}

fn grid(n: usize) -> (u32, u32, u32) {
    (n.div_ceil(256) as u32, 1, 1)
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
        let (dh32, dw32) = (dh as i32, dw as i32);
        let mut l = stream.launch_builder(&self.resize_to_chw);
        l.arg(&table).arg(&dh32).arg(&dw32);
        let cfg = LaunchConfig {
            grid_dim: ((dh * dw).div_ceil(256) as u32, jobs.len() as u32, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the table holds jobs.len() jobs whose buffers the caller keeps alive.
        unsafe { l.launch(cfg) }.call("cuLaunchKernel")?;
        Ok(())
    }

    /// Swaps planes 0 and 2 of a `[3, h, w]` f32 tensor (`src` may equal `dst`).
    pub fn swap_planes(&self, stream: &CudaStream, src: u64, dst: u64, plane: usize) -> Result<()> {
        let p = plane as i64;
        let mut l = stream.launch_builder(&self.swap_planes);
        l.arg(&src).arg(&dst).arg(&p);
        let cfg = LaunchConfig {
            grid_dim: grid(plane),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: both buffers hold 3 × plane f32 values.
        unsafe { l.launch(cfg) }.call("cuLaunchKernel")?;
        Ok(())
    }

    /// Swaps the first and third channel of `pixels` packed 3-channel u8 pixels.
    pub fn swap_pixels(
        &self,
        stream: &CudaStream,
        src: u64,
        dst: u64,
        pixels: usize,
    ) -> Result<()> {
        let p = pixels as i64;
        let mut l = stream.launch_builder(&self.swap_pixels);
        l.arg(&src).arg(&dst).arg(&p);
        let cfg = LaunchConfig {
            grid_dim: grid(pixels),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: both buffers hold 3 × pixels bytes.
        unsafe { l.launch(cfg) }.call("cuLaunchKernel")?;
        Ok(())
    }
}
