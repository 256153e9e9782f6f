//! Matrix products on cuBLAS: row-major `[m, k] · [k, p]`, batched by strides, fp16 with fp32
//! accumulation or fp32 throughout (no TF32, so fp32 stays the reference mode).

use cudarc::cublas::sys as blas;
use cudarc::driver::CudaStream;

use super::cuda::{DeviceBuf, GpuError, Result};
use super::plan::view::MatMulLaunch;
use super::precision::Precision;

/// cuBLAS's workspace, set once so that a call under graph capture never allocates.
const WORKSPACE: usize = 32 << 20;

fn check(status: blas::cublasStatus_t, call: &'static str) -> Result<()> {
    if status == blas::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
        Ok(())
    } else {
        Err(GpuError::Cublas {
            call,
            status: format!("{status:?}"),
        })
    }
}

/// A cuBLAS handle bound to one stream, with its own workspace.
pub struct Blas {
    h: blas::cublasHandle_t,
    _workspace: DeviceBuf,
}

// SAFETY: a handle is used by one thread at a time (its instance's).
unsafe impl Send for Blas {}

impl Blas {
    pub fn new(stream: &CudaStream) -> Result<Blas> {
        // SAFETY: only loads and drops the library.
        if !unsafe { blas::is_culib_present() } {
            return Err(GpuError::Missing(
                "this model has matrix products, which need libcublas (cuBLAS 13); it is not on \
                 LD_LIBRARY_PATH"
                    .into(),
            ));
        }
        let ctx = stream.context();
        let workspace = DeviceBuf::new(ctx, WORKSPACE)?;
        let mut h = std::ptr::null_mut();
        // SAFETY: out-pointer to a handle; the context is current (DeviceBuf::new bound it).
        check(unsafe { blas::cublasCreate_v2(&mut h) }, "cublasCreate")?;
        let b = Blas {
            h,
            _workspace: workspace,
        };
        check(
            // SAFETY: a live handle and stream of this context.
            unsafe { blas::cublasSetStream_v2(b.h, stream.cu_stream() as blas::cudaStream_t) },
            "cublasSetStream",
        )?;
        check(
            // SAFETY: the workspace is a device allocation of WORKSPACE bytes owned by `b`.
            unsafe {
                blas::cublasSetWorkspace_v2(
                    b.h,
                    b._workspace.ptr as *mut std::ffi::c_void,
                    WORKSPACE,
                )
            },
            "cublasSetWorkspace",
        )?;
        Ok(b)
    }

    /// `y = alpha · a · b` for every product of `l`, row-major: computed as the column-major
    /// `yᵀ = bᵀ · aᵀ`, which has the same memory.
    pub fn matmul(
        &self,
        l: &MatMulLaunch,
        precision: Precision,
        a: u64,
        b: u64,
        y: u64,
    ) -> Result<()> {
        let dtype = match precision {
            Precision::Fp16 => blas::cudaDataType::CUDA_R_16F,
            Precision::Fp32 => blas::cudaDataType::CUDA_R_32F,
        };
        let (alpha, zero) = (l.alpha, 0.0f32);
        // Column-major, b is the first operand: stored [p, k] row-major it is bᵀ already.
        let (op_b, ld_b) = if l.b_trans {
            (blas::cublasOperation_t::CUBLAS_OP_T, l.k)
        } else {
            (blas::cublasOperation_t::CUBLAS_OP_N, l.p)
        };
        let int = |v: usize| {
            i32::try_from(v).map_err(|_| GpuError::Plan(format!("matrix dimension {v} too large")))
        };
        // SAFETY: a, b, y hold count products of the sizes in `l` (the plan sized them); the
        // scalars are f32 as CUBLAS_COMPUTE_32F asks.
        check(
            unsafe {
                blas::cublasGemmStridedBatchedEx(
                    self.h,
                    op_b,
                    blas::cublasOperation_t::CUBLAS_OP_N,
                    int(l.p)?,
                    int(l.m)?,
                    int(l.k)?,
                    &alpha as *const f32 as *const std::ffi::c_void,
                    b as *const std::ffi::c_void,
                    dtype,
                    int(ld_b)?,
                    l.b_stride as i64,
                    a as *const std::ffi::c_void,
                    dtype,
                    int(l.k)?,
                    l.a_stride as i64,
                    &zero as *const f32 as *const std::ffi::c_void,
                    y as *mut std::ffi::c_void,
                    dtype,
                    int(l.p)?,
                    l.y_stride as i64,
                    int(l.count)?,
                    blas::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    blas::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                )
            },
            "cublasGemmStridedBatchedEx",
        )
    }
}

impl Drop for Blas {
    fn drop(&mut self) {
        // SAFETY: created by cublasCreate, destroyed once.
        unsafe { blas::cublasDestroy_v2(self.h) };
    }
}
