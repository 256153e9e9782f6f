//! The engine's own small kernels, compiled at start-up by NVRTC (or taken from
//! `model::cache`): the input conversion and the elementwise ops cuDNN's fusion cannot absorb.
//! fp16 is handled as raw 16-bit values with the PTX conversion instructions, so the source
//! needs no CUDA headers on the machine that runs it.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, LaunchConfig};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions, Ptx};

use super::cuda::{Call, GpuError, Result};

const SOURCE: &str = r#"
__device__ __forceinline__ unsigned short f2h(float f) {
    unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h;
}
__device__ __forceinline__ float h2f(unsigned short h) {
    float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f;
}

// NCHW f32 (raw pixels) -> NHWC f16 normalised, channels padded with zeros to cpad.
extern "C" __global__ void to_input_half(const float* __restrict__ x, unsigned short* __restrict__ y,
        const float* __restrict__ mean, const float* __restrict__ inv_std,
        int n, int c, int hw, int cpad) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)n * hw) return;
    long b = i / hw, p = i - b * hw;
    const float* src = x + b * c * (long)hw + p;
    unsigned short* dst = y + i * cpad;
    for (int k = 0; k < cpad; k++) {
        float v = k < c ? (src[(long)k * hw] - mean[k]) * inv_std[k] : 0.0f;
        dst[k] = f2h(v);
    }
}

// NCHW f32 (raw pixels) -> NCHW f32 normalised, channels padded with zeros to cpad.
extern "C" __global__ void to_input_float(const float* __restrict__ x, float* __restrict__ y,
        const float* __restrict__ mean, const float* __restrict__ inv_std,
        int n, int c, int hw, int cpad) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)n * hw) return;
    long b = i / hw, p = i - b * hw;
    for (int k = 0; k < cpad; k++) {
        float v = k < c ? (x[(b * c + k) * (long)hw + p] - mean[k]) * inv_std[k] : 0.0f;
        y[(b * cpad + k) * (long)hw + p] = v;
    }
}

extern "C" __global__ void add_half(const unsigned short* a, const unsigned short* b,
        unsigned short* y, long n, int relu) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = h2f(a[i]) + h2f(b[i]);
    y[i] = f2h(relu ? fmaxf(v, 0.0f) : v);
}

extern "C" __global__ void add_float(const float* a, const float* b, float* y, long n, int relu) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = a[i] + b[i];
    y[i] = relu ? fmaxf(v, 0.0f) : v;
}

extern "C" __global__ void clamp_half(const unsigned short* x, unsigned short* y, long n,
        float lo, float hi) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    y[i] = f2h(fminf(fmaxf(h2f(x[i]), lo), hi));
}

// The epilogue of a convolution run without cuDNN's fusion: y = act(y + bias[c] + z).
extern "C" __global__ void bias_act_half(unsigned short* y, const unsigned short* z,
        const unsigned short* bias, long n, int cout, int relu, int has_z) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = h2f(y[i]) + h2f(bias[i % cout]);
    if (has_z) v += h2f(z[i]);
    y[i] = f2h(relu ? fmaxf(v, 0.0f) : v);
}

extern "C" __global__ void bias_act_float(float* y, const float* z, const float* bias, long n,
        int cout, int hw, int relu, int has_z) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = y[i] + bias[(i / hw) % cout];
    if (has_z) v += z[i];
    y[i] = relu ? fmaxf(v, 0.0f) : v;
}

extern "C" __global__ void clamp_float(const float* x, float* y, long n, float lo, float hi) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    y[i] = fminf(fmaxf(x[i], lo), hi);
}
"#;

pub struct Kernels {
    pub to_input_half: CudaFunction,
    pub to_input_float: CudaFunction,
    pub add_half: CudaFunction,
    pub add_float: CudaFunction,
    pub clamp_half: CudaFunction,
    pub clamp_float: CudaFunction,
    pub bias_act_half: CudaFunction,
    pub bias_act_float: CudaFunction,
}

/// One thread per element for `n` elements, in blocks of 256: the launch shape of every
/// elementwise kernel (the engine's and the image kernels).
pub(crate) fn launch_1d(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(256) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The virtual architecture to compile for; the driver JITs the PTX for the exact chip.
fn arch(cc: (i32, i32)) -> &'static str {
    match cc {
        (9, _) => "compute_90",
        (8, 9) => "compute_89",
        (8, 6) => "compute_86",
        (8, _) => "compute_80",
        (7, 5) => "compute_75",
        (m, _) if m >= 10 => "compute_90",
        _ => "compute_70",
    }
}

/// Compiles the kernels' PTX for this device.
pub fn compile(ctx: &Arc<CudaContext>) -> Result<String> {
    compile_source(ctx, SOURCE, "torchpipe_kernels.cu")
}

/// Compiles CUDA source to PTX for this device's architecture with NVRTC.
pub(crate) fn compile_source(ctx: &Arc<CudaContext>, source: &str, name: &str) -> Result<String> {
    let cc = ctx.compute_capability().call("cuDeviceGetAttribute")?;
    let ptx = compile_ptx_with_opts(
        source,
        CompileOptions {
            arch: Some(arch(cc)),
            name: Some(name.into()),
            ..Default::default()
        },
    )
    .map_err(|e| GpuError::Nvrtc(e.to_string()))?;
    Ok(ptx.to_src())
}

pub fn load(ctx: &Arc<CudaContext>, ptx: &str) -> Result<Kernels> {
    if ptx.contains('\0') {
        return Err(GpuError::Plan("cached PTX holds a NUL byte".into()));
    }
    let module = ctx
        .load_module(Ptx::from_src(ptx))
        .call("cuModuleLoadData")?;
    let f = |name: &'static str| module.load_function(name).call("cuModuleGetFunction");
    Ok(Kernels {
        to_input_half: f("to_input_half")?,
        to_input_float: f("to_input_float")?,
        add_half: f("add_half")?,
        add_float: f("add_float")?,
        clamp_half: f("clamp_half")?,
        clamp_float: f("clamp_float")?,
        bias_act_half: f("bias_act_half")?,
        bias_act_float: f("bias_act_float")?,
    })
}
