//! The engine's own kernels (kernels.cu), compiled at start-up by NVRTC (or taken from
//! `model::cache`): the input conversion, the convolution epilogue, and the strided
//! elementwise, reduction, row (softmax, layer norm) and pooling kernels, and the fused
//! attention (attention.cu, appended: it uses kernels.cu's conversions).

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, LaunchConfig};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions, Ptx};

use super::cuda::{Call, GpuError, Result};

pub(crate) const SOURCE: &str = concat!(include_str!("kernels.cu"), include_str!("attention.cu"));

/// A kernel in its fp16 and fp32 forms.
pub struct Pair {
    pub half: CudaFunction,
    pub float: CudaFunction,
}

pub struct Kernels {
    pub to_input: Pair,
    pub bias_act: Pair,
    /// `bias_act` 16 bytes per thread (`conv::chunked_epilogue` says when).
    pub bias_act_chunk: Pair,
    pub map: Pair,
    /// `map` moving 16 bytes per operand per thread (MapLaunch::vec).
    pub map_chunk: Pair,
    pub reduce: Pair,
    pub row: Pair,
    /// `row` over dense rows held in registers, 1 to 4 chunks per lane (view::row_dense_shape).
    pub row_dense: Vec<Pair>,
    pub pool: Pair,
    pub depthwise: Pair,
    /// The depthwise convolution over dense NHWC, 16 bytes of channels per thread.
    pub depthwise_nhwc: Pair,
    pub concat: Pair,
    /// `concat` in 16-byte units.
    pub concat_chunk: Pair,
    /// A copy in 32 × 32 tiles through shared memory (view::transpose).
    pub transpose: Pair,
    /// fp16 only, one per head size of `plan::HEAD_DIMS`, in that order.
    pub attention: Vec<CudaFunction>,
}

/// The fused attention's arguments per operand (attention.cu's `struct Heads`), by value.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct KHeads {
    pub offset: i64,
    pub batch: i64,
    pub head: i64,
    pub row: i64,
}

// SAFETY: #[repr(C)] of four i64, laid out exactly as attention.cu's `struct Heads`.
unsafe impl cudarc::driver::DeviceRepr for KHeads {}

/// attention.cu's block: four warps of 16 query rows each.
pub(crate) const ATTENTION_ROWS: usize = 64;
pub(crate) const ATTENTION_THREADS: u32 = 128;

/// A strided view as the kernels take it, by value.
#[repr(transparent)]
#[derive(Clone, Copy)]
pub struct KView(pub crate::plan::view::View);

// SAFETY: `View` is #[repr(C)] plain data (i32 and i64 arrays, an i64) laid out exactly as the
// kernels' `struct View` (24 + 48 + 8 bytes, 8-byte aligned).
unsafe impl cudarc::driver::DeviceRepr for KView {}

/// The Concat kernels' arguments, passed by value.
#[repr(transparent)]
#[derive(Clone, Copy)]
pub struct KCat(pub crate::plan::view::ConcatArgs);

// SAFETY: `ConcatArgs` is #[repr(C)] plain integers laid out exactly as kernels.cu's
// `struct Cat` (256 + 132 + 4 bytes, 8-byte aligned).
unsafe impl cudarc::driver::DeviceRepr for KCat {}

/// One warp per output element, 8 warps per block: the rows' launch shape.
pub(crate) fn launch_warps(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(8) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
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

/// `blocks` blocks of 256 threads (the reductions': view::REDUCE_BLOCK).
pub(crate) fn launch_blocks(blocks: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (crate::plan::view::REDUCE_BLOCK as u32, 1, 1),
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

/// Kernels compiled once per GPU, by CUDA device index; a failure is kept too.
pub(crate) type PerGpu<T> = parking_lot::Mutex<
    std::collections::BTreeMap<usize, &'static std::result::Result<T, Arc<GpuError>>>,
>;

/// `table`'s kernels for `ctx`'s GPU, compiled by `compile` on its first use (a kernel launches
/// only on the GPU whose context loaded it) and kept, with a failure, for the life of the
/// process.
pub(crate) fn once_per_gpu<T: Send + Sync + 'static>(
    table: &'static PerGpu<T>,
    ctx: &Arc<CudaContext>,
    compile: fn(&Arc<CudaContext>) -> Result<T>,
) -> Result<&'static T> {
    let mut all = table.lock();
    let compiled: &'static std::result::Result<T, Arc<GpuError>> = all
        .entry(ctx.ordinal())
        .or_insert_with(|| Box::leak(Box::new(compile(ctx).map_err(Arc::new))));
    compiled.as_ref().map_err(|e| GpuError::Shared(e.clone()))
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
    let pair = |name: &str| -> Result<Pair> {
        let f = |suffix: &str| {
            module
                .load_function(&format!("{name}_{suffix}"))
                .call("cuModuleGetFunction")
        };
        Ok(Pair {
            half: f("half")?,
            float: f("float")?,
        })
    };
    Ok(Kernels {
        to_input: pair("to_input")?,
        bias_act: pair("bias_act")?,
        bias_act_chunk: pair("bias_act_chunk")?,
        map: pair("map")?,
        map_chunk: pair("map_chunk")?,
        reduce: pair("reduce")?,
        row: pair("row")?,
        row_dense: (1..=4)
            .map(|ch| pair(&format!("row_dense{ch}")))
            .collect::<Result<_>>()?,
        pool: pair("pool")?,
        depthwise: pair("depthwise")?,
        depthwise_nhwc: pair("depthwise_nhwc")?,
        concat: pair("concat")?,
        concat_chunk: pair("concat_chunk")?,
        transpose: pair("transpose")?,
        attention: crate::plan::HEAD_DIMS
            .iter()
            .map(|d| {
                module
                    .load_function(&format!("attention_d{d}"))
                    .call("cuModuleGetFunction")
            })
            .collect::<Result<_>>()?,
    })
}
