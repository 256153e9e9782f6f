//! A step of the plan as an instance launches it at one batch size: the library call or kernel
//! with everything it needs (descriptors, views, the addresses of its operands, which are fixed
//! for the instance's life since its buffers are allocated once). `GpuInstance::launches` makes
//! them once per batch size; every enqueue (eager, under graph capture, traced) runs them as they
//! are, so a step cannot meet the wrong descriptors.

use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::{chunked, GpuInstance};
use crate::conv::{Algo, Exec};
use crate::cuda::{Call, GpuError, Result, TensorDesc};
use crate::kernels::{self, KView};
use crate::plan::view::{
    self, ConcatLaunch, MapLaunch, MatMulLaunch, PoolLaunch, ReduceLaunch, RowLaunch,
};
use crate::plan::ConvStep;
use crate::pooling::CudnnPool;

pub(super) enum Launch {
    /// Convolution `conv` of the plan (`step`, its weights already on the device) with its
    /// tuned algorithm; `exec` is the plan of a graph-API or cuBLASLt algorithm.
    Conv {
        conv: usize,
        step: ConvStep,
        algo: Algo,
        x: TensorDesc,
        y: TensorDesc,
        exec: Option<Exec>,
    },
    /// A pool (or global average) cuDNN runs exactly as ONNX defines it.
    CudnnPool { pool: CudnnPool, x: u64, y: u64 },
    /// An elementwise step of up to three operands.
    Map {
        l: MapLaunch,
        a: u64,
        b: u64,
        c: u64,
        y: u64,
    },
    /// A copy run as the tiled transpose (view::transpose).
    Transpose {
        t: view::TransposeLaunch,
        a: u64,
        y: u64,
    },
    Reduce {
        l: ReduceLaunch,
        kind: i32,
        x: u64,
        y: u64,
    },
    /// Softmax, LogSoftmax or LayerNorm along rows; `scale` and `bias` are LayerNorm's.
    Row {
        l: RowLaunch,
        kind: i32,
        scale: u64,
        bias: Option<u64>,
        eps: f32,
        x: u64,
        y: u64,
    },
    /// A pool of our own kernel: kind, kernel, stride, padding, channels-last.
    Pool {
        l: PoolLaunch,
        args: [i32; 10],
        x: u64,
        y: u64,
    },
    MatMul {
        l: MatMulLaunch,
        a: u64,
        b: u64,
        y: u64,
    },
    Concat {
        l: ConcatLaunch,
        parts: Vec<u64>,
        y: u64,
    },
    /// The fused attention kernel for heads of `plan::HEAD_DIMS[kernel]`.
    Attention {
        kernel: usize,
        views: [kernels::KHeads; 4],
        ptrs: [u64; 4],
        lq: i32,
        lk: i32,
        scale: f32,
        grid: (u32, u32, u32),
    },
}

impl GpuInstance {
    /// Enqueues one step on the instance's stream.
    pub(super) fn enqueue_launch(&self, launch: &Launch, n: usize) -> Result<()> {
        let k = &self.model.kernels;
        let precision = self.model.precision;
        match launch {
            Launch::Conv {
                conv,
                step,
                algo,
                x,
                y,
                exec,
            } => {
                self.conv_call(*conv, step, x, y, n)?
                    .run(*algo, exec.as_ref())?;
            }
            Launch::CudnnPool { pool, x, y } => pool.run(self.dnn.h, *x, *y)?,
            Launch::Transpose { t, a, y } => {
                let mut b = self.stream.launch_builder(self.kernel(&k.transpose));
                let (outer, outer_y) = (KView(t.outer), KView(t.outer_y));
                b.arg(&outer).arg(&outer_y).arg(a).arg(y);
                b.arg(&t.d0)
                    .arg(&t.d1)
                    .arg(&t.a0)
                    .arg(&t.a1)
                    .arg(&t.y0)
                    .arg(&t.y1);
                b.arg(&t.tiles0).arg(&t.tiles1);
                let cfg = LaunchConfig {
                    grid_dim: (t.blocks() as u32, 1, 1),
                    block_dim: (256, 1, 1),
                    shared_mem_bytes: 0,
                };
                // SAFETY: argument types match `transpose_*`; the views are the map step's own,
                // inside the buffers the plan sized, split into outer dims and the two tile dims.
                unsafe { b.launch(cfg) }.call("cuLaunchKernel")?;
            }
            Launch::Map { l, a, b, c, y } => {
                let (bin, un, len) = (l.binary as i32, l.unary as i32, l.y.len() as u32);
                let (va, vb, vc, vy) = (KView(l.a), KView(l.b), KView(l.c), KView(l.y));
                let has_c = l.has_c as i32;
                let (f, threads) = if chunked(l.vec as usize, len as usize) {
                    (&k.map_chunk, len.div_ceil(l.vec) as usize)
                } else {
                    (&k.map, len as usize)
                };
                let mut lb = self.stream.launch_builder(self.kernel(f));
                lb.arg(&va).arg(&vb).arg(&vc).arg(&vy);
                lb.arg(a).arg(b).arg(c).arg(y);
                lb.arg(&bin)
                    .arg(&un)
                    .arg(&l.p0)
                    .arg(&l.p1)
                    .arg(&len)
                    .arg(&l.linear)
                    .arg(&has_c);
                // SAFETY: argument types match `map_*` and `map_chunk_*`; the views stay inside
                // the buffers the plan sized for `max` items (in whole chunks where `vec` says
                // so).
                unsafe { lb.launch(kernels::launch_1d(threads)) }.call("cuLaunchKernel")?;
            }
            Launch::Reduce { l, kind, x, y } => {
                let outs = l.y.len() as u32;
                let (group, adjacent) = (l.group as u32, l.adjacent as i32);
                let (vo, vi, vy) = (KView(l.outer), KView(l.inner), KView(l.y));
                let mut b = self.stream.launch_builder(self.kernel(&k.reduce));
                b.arg(&vo)
                    .arg(&vi)
                    .arg(&vy)
                    .arg(x)
                    .arg(y)
                    .arg(kind)
                    .arg(&outs);
                b.arg(&group).arg(&adjacent);
                // SAFETY: as for `map_*`.
                unsafe { b.launch(kernels::launch_blocks(l.blocks())) }.call("cuLaunchKernel")?;
            }
            Launch::Row {
                l,
                kind,
                scale,
                bias,
                eps,
                x,
                y,
            } => {
                let has_bias = bias.is_some() as i32;
                let bias = bias.unwrap_or(0);
                let (len, rows) = (l.len as i32, l.x.len() as u32);
                let (vx, vy) = (KView(l.x), KView(l.y));
                // The dense kernel's 16-byte loads need 16-byte aligned rows, scale and bias.
                let dense = view::row_dense_shape(l, precision.bytes())
                    .filter(|_| [*x, *y, *scale, bias].iter().all(|a| a % 16 == 0));
                if let Some((chunks, group)) = dense {
                    let g = group as i32;
                    let mut b = self
                        .stream
                        .launch_builder(self.kernel(&k.row_dense[chunks - 1]));
                    b.arg(&vx).arg(&vy).arg(x).arg(y).arg(&len).arg(&g);
                    b.arg(kind).arg(scale).arg(&bias).arg(&has_bias);
                    b.arg(eps).arg(&rows);
                    // SAFETY: as for `map_*`; row_dense_shape checked that each row is `len`
                    // dense elements in whole 16-byte chunks, the addresses are 16-byte
                    // aligned, and scale and bias hold `len` values.
                    unsafe { b.launch(kernels::launch_1d(rows as usize * group)) }
                        .call("cuLaunchKernel")?;
                    return Ok(());
                }
                let mut b = self.stream.launch_builder(self.kernel(&k.row));
                b.arg(&vx).arg(&vy).arg(x).arg(y).arg(&len);
                b.arg(&l.x_stride)
                    .arg(&l.y_stride)
                    .arg(kind)
                    .arg(scale)
                    .arg(&bias);
                b.arg(&has_bias).arg(eps).arg(&rows);
                // SAFETY: as for `map_*`; scale and bias hold `len` values.
                unsafe { b.launch(kernels::launch_warps(rows as usize)) }.call("cuLaunchKernel")?;
            }
            Launch::Pool { l, args, x, y } => {
                let len = l.y.len() as u32;
                let (vx, vy) = (KView(l.x), KView(l.y));
                let mut b = self.stream.launch_builder(self.kernel(&k.pool));
                b.arg(&vx).arg(&vy).arg(x).arg(y);
                for a in args {
                    b.arg(a);
                }
                b.arg(&len);
                // SAFETY: as for `map_*`.
                unsafe { b.launch(kernels::launch_1d(len as usize)) }.call("cuLaunchKernel")?;
            }
            Launch::MatMul { l, a, b, y } => {
                let blas = self
                    .blas
                    .as_ref()
                    .ok_or_else(|| GpuError::Plan("a matrix product without cuBLAS".into()))?;
                blas.matmul(l, precision, *a, *b, *y)?;
            }
            Launch::Concat { l, parts, y } => {
                // 16-byte units only for large copies, as for `map_chunk` (measured there).
                let unit = if chunked(l.vec, l.len()) { l.vec } else { 1 };
                let (cat, row, base, units) = l.args(parts, unit)?;
                let cat = kernels::KCat(cat);
                let f = if unit > 1 { &k.concat_chunk } else { &k.concat };
                let mut b = self.stream.launch_builder(self.kernel(f));
                b.arg(&cat).arg(y).arg(&row).arg(&base).arg(&units);
                // SAFETY: argument types match `concat_*`; each part holds `outer` runs of its
                // length and the output `outer` rows (view::concat checked the layouts; in
                // 16-byte units every offset is a whole chunk).
                unsafe { b.launch(kernels::launch_1d(units as usize)) }.call("cuLaunchKernel")?;
            }
            Launch::Attention {
                kernel,
                views,
                ptrs,
                lq,
                lk,
                scale,
                grid,
            } => {
                let f = k
                    .attention
                    .get(*kernel)
                    .ok_or_else(|| GpuError::Plan(format!("no attention kernel #{kernel}")))?;
                let mut b = self.stream.launch_builder(f);
                for p in ptrs {
                    b.arg(p);
                }
                for v in views {
                    b.arg(v);
                }
                b.arg(lq).arg(lk).arg(scale);
                let cfg = LaunchConfig {
                    grid_dim: *grid,
                    block_dim: (kernels::ATTENTION_THREADS, 1, 1),
                    shared_mem_bytes: 0,
                };
                // SAFETY: argument types match `attention_d*`; the views address `n` items of
                // `heads × rows × d` inside the buffers the plan sized (build/attention.rs
                // derived them from the copies it replaced), 16-byte aligned as the kernel
                // loads them.
                unsafe { b.launch(cfg) }.call("cuLaunchKernel")?;
            }
        }
        Ok(())
    }
}
