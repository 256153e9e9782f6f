//! Linear layers on cuBLASLt with its fused epilogue: `y = act(x · wᵀ + bias [+ z])` in one
//! kernel (`conv::Mode::Lt`). cuDNN's products with a GELU epilogue ran ViT's fc1 at twice
//! cuBLAS's time on the H200 (0.097 ms against 0.049 at batch 32), and cuBLAS + our separate
//! bias/GELU pass cost as much again; cuBLASLt applies bias, residual and activation while the
//! tile is still in registers.
//!
//! Its GELU is the tanh form, `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, not ONNX's erf:
//! the two differ by at most 4.7e-4 (at x ≈ 2.7, a quarter of fp16's spacing there), so it is
//! offered to fp16 plans only, and the tuner's check against the exact reference still has to
//! pass, as for every candidate. fp32 plans, the reference mode, never get the tanh GELU (they
//! may run their bias and ReLU epilogues here).

use std::ffi::c_void;

use cudarc::cublaslt::sys as lt;
use cudarc::driver::CudaStream;

use super::cuda::{GpuError, Result};
use super::plan::Unary;
use super::precision::Precision;

fn check(status: lt::cublasStatus_t, call: &'static str) -> Result<()> {
    if status == lt::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
        Ok(())
    } else {
        Err(GpuError::Cublas {
            call,
            status: format!("{status:?}"),
        })
    }
}

/// The most workspace one product may ask for (the tuner records what the chosen one needs).
pub(super) const LT_WORKSPACE: usize = 32 << 20;

/// The epilogue cuBLASLt applies for a convolution's activation in `precision`, or None where
/// it has none that computes it.
pub(super) fn epilogue(act: Unary, precision: Precision) -> Option<lt::cublasLtEpilogue_t> {
    use lt::cublasLtEpilogue_t::*;
    match (act, precision) {
        (Unary::Identity, _) => Some(CUBLASLT_EPILOGUE_BIAS),
        (Unary::Relu, _) => Some(CUBLASLT_EPILOGUE_RELU_BIAS),
        (Unary::Gelu, Precision::Fp16) => Some(CUBLASLT_EPILOGUE_GELU_BIAS),
        _ => None,
    }
}

/// cublasLtGetVersion(), or 0 where the library is absent (a build that never loads it).
pub(super) fn version() -> usize {
    // SAFETY: only loads the library, then asks its version (no arguments).
    unsafe {
        if lt::is_culib_present() {
            lt::cublasLtGetVersion()
        } else {
            0
        }
    }
}

/// A cuBLASLt handle (not bound to a stream: each call names its own).
pub struct Lt {
    h: lt::cublasLtHandle_t,
}

// SAFETY: a handle is used by one thread at a time (its instance's, or the tuner's).
unsafe impl Send for Lt {}

impl Lt {
    pub fn new() -> Result<Lt> {
        // SAFETY: only loads and drops the library.
        if !unsafe { lt::is_culib_present() } {
            return Err(GpuError::Missing(
                "this model's linear layers run on libcublasLt (cuBLAS 13); it is not on \
                 LD_LIBRARY_PATH"
                    .into(),
            ));
        }
        let mut h = std::ptr::null_mut();
        // SAFETY: out-pointer to a handle.
        check(unsafe { lt::cublasLtCreate(&mut h) }, "cublasLtCreate")?;
        Ok(Lt { h })
    }

    /// The heuristics' first `count` algorithms for `rows`, each with its workspace (the
    /// list is deterministic for one shape and library, so an index names an algorithm).
    pub(super) fn plans(&self, rows: &LtShape, count: usize) -> Result<Vec<LtPlan>> {
        let desc = Desc::new(rows)?;
        let mut pref = std::ptr::null_mut();
        check(
            // SAFETY: out-pointer to a preference.
            unsafe { lt::cublasLtMatmulPreferenceCreate(&mut pref) },
            "cublasLtMatmulPreferenceCreate",
        )?;
        let ws = LT_WORKSPACE as u64;
        // SAFETY: a live preference; the attribute is a u64.
        let set = check(
            unsafe {
                lt::cublasLtMatmulPreferenceSetAttribute(
                    pref,
                    lt::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                    &ws as *const u64 as *const c_void,
                    std::mem::size_of::<u64>(),
                )
            },
            "cublasLtMatmulPreferenceSetAttribute",
        );
        // SAFETY: a plain C struct; cuBLASLt overwrites the entries it returns.
        let mut results: Vec<lt::cublasLtMatmulHeuristicResult_t> =
            vec![unsafe { std::mem::zeroed() }; count.max(1)];
        let mut found = 0i32;
        let got = set.and_then(|()| {
            // SAFETY: live descriptors and preference; `results` holds `count` entries.
            check(
                unsafe {
                    lt::cublasLtMatmulAlgoGetHeuristic(
                        self.h,
                        desc.op,
                        desc.a,
                        desc.b,
                        desc.c,
                        desc.c,
                        pref,
                        results.len() as i32,
                        results.as_mut_ptr(),
                        &mut found,
                    )
                },
                "cublasLtMatmulAlgoGetHeuristic",
            )
        });
        // SAFETY: created above, destroyed once.
        unsafe { lt::cublasLtMatmulPreferenceDestroy(pref) };
        got?;
        let desc = std::sync::Arc::new(desc);
        Ok(results
            .into_iter()
            .take(found.max(0) as usize)
            .filter(|r| r.state == lt::cublasStatus_t::CUBLAS_STATUS_SUCCESS)
            .map(|r| LtPlan {
                desc: desc.clone(),
                algo: r.algo,
                workspace: r.workspaceSize,
                residual: rows.residual,
            })
            .collect())
    }

    /// `y = act(x · wᵀ + bias [+ z])` as planned, on `stream`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn run(
        &self,
        plan: &LtPlan,
        stream: &CudaStream,
        x: u64,
        w: u64,
        z: Option<u64>,
        y: u64,
        ws: u64,
        ws_bytes: usize,
    ) -> Result<()> {
        if plan.workspace > ws_bytes || plan.residual != z.is_some() {
            return Err(GpuError::Plan(format!(
                "a cuBLASLt product planned for {} bytes of workspace{} run with {ws_bytes}{}",
                plan.workspace,
                if plan.residual { " and a residual" } else { "" },
                if z.is_some() { " and a residual" } else { "" },
            )));
        }
        let (one, beta) = (1.0f32, if z.is_some() { 1.0f32 } else { 0.0 });
        let d = &plan.desc;
        // SAFETY: the descriptors describe x ([m, k] rows), w ([p, k]) and y / z ([m, p]),
        // which the caller's buffers hold (sized by the plan for this batch); the bias pointer
        // set in the descriptor is the convolution's p values; the workspace holds
        // `ws_bytes` ≥ what the algorithm asked for; f32 scalars as CUBLAS_COMPUTE_32F asks.
        check(
            unsafe {
                lt::cublasLtMatmul(
                    self.h,
                    d.op,
                    &one as *const f32 as *const c_void,
                    w as *const c_void,
                    d.a,
                    x as *const c_void,
                    d.b,
                    &beta as *const f32 as *const c_void,
                    z.unwrap_or(y) as *const c_void,
                    d.c,
                    y as *mut c_void,
                    d.c,
                    &plan.algo,
                    ws as *mut c_void,
                    ws_bytes,
                    stream.cu_stream() as lt::cudaStream_t,
                )
            },
            "cublasLtMatmul",
        )
    }
}

impl Drop for Lt {
    fn drop(&mut self) {
        // SAFETY: created by cublasLtCreate, destroyed once.
        unsafe { lt::cublasLtDestroy(self.h) };
    }
}

/// A linear layer over NHWC rows: `[m, k]` rows times the weights `[p, k]` (a 1×1
/// convolution's KRSC), the bias of p values, an optional residual of the output's shape.
pub(super) struct LtShape {
    pub m: usize,
    pub k: usize,
    pub p: usize,
    pub precision: Precision,
    pub epilogue: lt::cublasLtEpilogue_t,
    pub bias: u64,
    pub residual: bool,
}

/// One chosen algorithm with the descriptors it was chosen for.
pub(super) struct LtPlan {
    desc: std::sync::Arc<Desc>,
    algo: lt::cublasLtMatmulAlgo_t,
    pub workspace: usize,
    residual: bool,
}

/// The operation and layouts, column-major as cuBLASLt sees them: y, row-major [m, p], is the
/// column-major p × m matrix D = op(A) · B, with A = w (row-major [p, k], so column-major
/// k × p) read transposed and B = x (row-major [m, k], column-major k × m); C (the residual)
/// is laid out as D.
struct Desc {
    op: lt::cublasLtMatmulDesc_t,
    a: lt::cublasLtMatrixLayout_t,
    b: lt::cublasLtMatrixLayout_t,
    c: lt::cublasLtMatrixLayout_t,
}

// SAFETY: immutable after creation, and cublasLtMatmul only reads the descriptors: moving them
// to another thread or reading them from several (the Arc one call's candidate plans share) is
// sound.
unsafe impl Send for Desc {}
// SAFETY: as for Send, above.
unsafe impl Sync for Desc {}

impl Desc {
    fn new(s: &LtShape) -> Result<Desc> {
        let dtype = match s.precision {
            Precision::Fp16 => lt::cudaDataType_t::CUDA_R_16F,
            Precision::Fp32 => lt::cudaDataType_t::CUDA_R_32F,
        };
        let mut d = Desc {
            op: std::ptr::null_mut(),
            a: std::ptr::null_mut(),
            b: std::ptr::null_mut(),
            c: std::ptr::null_mut(),
        };
        // SAFETY: out-pointers to descriptors; each is destroyed by Desc's Drop (null ones
        // are skipped there).
        unsafe {
            check(
                lt::cublasLtMatmulDescCreate(
                    &mut d.op,
                    lt::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    lt::cudaDataType_t::CUDA_R_32F,
                ),
                "cublasLtMatmulDescCreate",
            )?;
            let layout = |out: &mut lt::cublasLtMatrixLayout_t, rows: usize, cols: usize| {
                check(
                    lt::cublasLtMatrixLayoutCreate(
                        out,
                        dtype,
                        rows as u64,
                        cols as u64,
                        rows as i64,
                    ),
                    "cublasLtMatrixLayoutCreate",
                )
            };
            layout(&mut d.a, s.k, s.p)?;
            layout(&mut d.b, s.k, s.m)?;
            layout(&mut d.c, s.p, s.m)?;
        }
        let trans = cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_T as i32;
        d.set(
            lt::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
            &trans,
        )?;
        d.set(
            lt::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_EPILOGUE,
            &s.epilogue,
        )?;
        d.set(
            lt::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
            &s.bias,
        )?;
        Ok(d)
    }

    fn set<T>(&mut self, attr: lt::cublasLtMatmulDescAttributes_t, v: &T) -> Result<()> {
        // SAFETY: a live descriptor; `v` is the attribute's C type (i32 for the operation and
        // the epilogue enum, a device pointer for the bias), read for its size only.
        check(
            unsafe {
                lt::cublasLtMatmulDescSetAttribute(
                    self.op,
                    attr,
                    v as *const T as *const c_void,
                    std::mem::size_of::<T>(),
                )
            },
            "cublasLtMatmulDescSetAttribute",
        )
    }
}

impl Drop for Desc {
    fn drop(&mut self) {
        // SAFETY: each was created by its Create call (or is null and skipped), destroyed once.
        unsafe {
            for l in [self.a, self.b, self.c] {
                if !l.is_null() {
                    lt::cublasLtMatrixLayoutDestroy(l);
                }
            }
            if !self.op.is_null() {
                lt::cublasLtMatmulDescDestroy(self.op);
            }
        }
    }
}
