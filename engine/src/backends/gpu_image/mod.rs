//! GPU image backends: DecodeTensor (nvJPEG), UploadMat, ResizeTensor, LetterBoxTensor,
//! ResizePadTensor, cvtColorTensor, CropTensor, WarpAffineTensor. Their values stay
//! on the GPU (`Value::Device`) until the model copies them into its input; each backend
//! synchronises its stream before returning, so the next node may read them from any stream;
//! inside `SyncTensor[...]` they share its stream and the `SyncTensor` waits once per batch
//! (`gpu::scope`).
//! A build without the `cuda` feature registers the names so a TOML that uses them gets a
//! clear error rather than "unknown backend".

mod canvas_tensor;
mod crop_tensor;
mod cvt_color_tensor;
mod decode_tensor;
mod resize_tensor;
mod upload_mat;
mod warp_affine_tensor;

use crate::backend::{InitContext, Registry};
use crate::error::ConfigError;

pub fn register(r: &mut Registry) {
    r.register_typed("DecodeTensor", decode_tensor::new);
    r.register_typed("ResizeTensor", resize_tensor::new);
    r.register_typed("LetterBoxTensor", canvas_tensor::letterbox);
    r.register_typed("ResizePadTensor", canvas_tensor::resize_pad);
    r.register("CropTensor", crop_tensor::new, &[]);
    r.register("UploadMat", upload_mat::new, &[]);
    r.register_typed("WarpAffineTensor", warp_affine_tensor::new);
    // TorchPipe spells it both ways.
    r.register_typed("cvtColorTensor", cvt_color_tensor::new);
    r.register_typed("CvtColorTensor", cvt_color_tensor::new);
}

use crate::backends::image::{color_key, required_color};

/// Opens the instance's GPU for a backend (the driver, and NVRTC when it compiles kernels; not
/// cuDNN, which only the model needs), or says which node and key need one. Every GPU of the
/// node's `device_id` must exist, whichever this instance runs on.
#[cfg(feature = "cuda")]
fn open_gpu(
    ctx: &InitContext<'_>,
    nvrtc: bool,
) -> Result<std::sync::Arc<cudarc::driver::CudaContext>, ConfigError> {
    let needs = crate::gpu::Needs {
        cudnn: false,
        nvrtc,
    };
    crate::gpu::check_gpus(needs, &ctx.node.device_ids).map_err(|e| gpu_error(ctx, e))?;
    crate::gpu::open_device_for(needs, ctx.device).map_err(|e| gpu_error(ctx, e))
}

/// What the image kernels' backends hold: the device, its compiled image kernels and a stream:
/// the enclosing `SyncTensor`'s (then `scope` is set and the backend does not wait), else one
/// of their own.
#[cfg(feature = "cuda")]
#[derive(Clone)]
struct KernelStream {
    gpu: std::sync::Arc<cudarc::driver::CudaContext>,
    kernels: &'static crate::gpu::image_kernels::ImageKernels,
    stream: std::sync::Arc<cudarc::driver::CudaStream>,
    scope: Option<std::sync::Arc<crate::gpu::scope::StreamScope>>,
}

/// A `SyncTensor`'s stream and the scope that waits for it.
#[cfg(feature = "cuda")]
type Scoped = (
    std::sync::Arc<cudarc::driver::CudaStream>,
    std::sync::Arc<crate::gpu::scope::StreamScope>,
);

/// The enclosing `SyncTensor`'s stream on `gpu`, if there is one and it is on this GPU.
#[cfg(feature = "cuda")]
fn scope_stream(
    ctx: &InitContext<'_>,
    gpu: &std::sync::Arc<cudarc::driver::CudaContext>,
) -> Result<Option<Scoped>, ConfigError> {
    let Some(scope) = ctx.stream_scope else {
        return Ok(None);
    };
    let stream = scope.stream(gpu).map_err(|e| gpu_error(ctx, e))?;
    Ok(stream.map(|s| (s, scope.clone())))
}

/// After a backend enqueued its work on `stream`: inside a `SyncTensor` (`scope` set), keep
/// what the work reads alive until the `SyncTensor` waits; else wait for the stream now, while
/// the caller still holds it.
#[cfg(feature = "cuda")]
fn keep_or_wait(
    scope: Option<&crate::gpu::scope::StreamScope>,
    stream: &cudarc::driver::CudaStream,
    reads: impl std::any::Any + Send,
) -> crate::gpu::cuda::Result<()> {
    use crate::gpu::cuda::Call;
    match scope {
        Some(scope) => {
            scope.keep(reads);
            Ok(())
        }
        None => stream.synchronize().call("cuStreamSynchronize"),
    }
}

/// The 3-channel image on the GPU an item brings (DecodeTensor's output): its height, width and
/// memory; otherwise the item fails, naming `backend`, and `None`.
#[cfg(feature = "cuda")]
fn gpu_image(
    item: &mut crate::item::Item,
    backend: &str,
) -> Option<(usize, usize, std::sync::Arc<dyn crate::item::DeviceMemory>)> {
    use crate::item::{DeviceLayout, DeviceValue, Value};
    match &item.data {
        Value::Device(DeviceValue {
            layout:
                DeviceLayout::Image {
                    height,
                    width,
                    channels: 3,
                },
            mem,
        }) => Some((*height, *width, mem.clone())),
        other => {
            let kind = other.kind();
            item.fail(format!(
                "{backend} expects a 3-channel image on the GPU (DecodeTensor's output), got \
                 {kind}"
            ));
            None
        }
    }
}

/// The channel order a following cvtColorTensor asks for, where the backend has none yet: what
/// ResizeTensor, LetterBoxTensor and ResizePadTensor fold into their kernel.
#[cfg(feature = "cuda")]
fn fused_color(next: &dyn crate::backend::Backend, current: Option<bool>) -> Option<bool> {
    match next.fusable() {
        Some(crate::backend::Fusable::TensorColor { rgb }) if current.is_none() => Some(rgb),
        _ => None,
    }
}

/// A batched kernel's job table, pinned on the host and on the device, sized for the largest
/// batch seen.
#[cfg(feature = "cuda")]
struct JobTables<J: Copy> {
    host: crate::gpu::cuda::PinnedBuf<J>,
    device: crate::gpu::cuda::DeviceBuf,
    capacity: usize,
}

#[cfg(feature = "cuda")]
impl<J: Copy> JobTables<J> {
    /// The table for `n` jobs, made (or grown) here.
    fn get<'t>(
        ctx: &std::sync::Arc<cudarc::driver::CudaContext>,
        t: &'t mut Option<JobTables<J>>,
        n: usize,
    ) -> crate::gpu::cuda::Result<&'t mut JobTables<J>> {
        use crate::gpu::cuda::{DeviceBuf, PinnedBuf};
        if t.as_ref().is_none_or(|t| t.capacity < n) {
            let capacity = n.next_power_of_two().max(8);
            *t = Some(JobTables {
                host: PinnedBuf::new(ctx, capacity, false)?,
                device: DeviceBuf::new(ctx, capacity * std::mem::size_of::<J>())?,
                capacity,
            });
        }
        t.as_mut()
            .ok_or_else(|| crate::gpu::GpuError::Plan("no job table".into()))
    }
}

#[cfg(feature = "cuda")]
fn kernel_stream(ctx: &InitContext<'_>) -> Result<KernelStream, ConfigError> {
    let gpu = open_gpu(ctx, true)?;
    let kernels = crate::gpu::image_kernels::get(&gpu).map_err(|e| gpu_error(ctx, e))?;
    let (stream, scope) = instance_stream(ctx, &gpu)?;
    Ok(KernelStream {
        gpu,
        kernels,
        stream,
        scope,
    })
}

/// The stream a backend enqueues on: the enclosing `SyncTensor`'s with its scope, else one of
/// its own at its node's priority (`gpu::priority`).
#[cfg(feature = "cuda")]
fn instance_stream(
    ctx: &InitContext<'_>,
    gpu: &std::sync::Arc<cudarc::driver::CudaContext>,
) -> Result<
    (
        std::sync::Arc<cudarc::driver::CudaStream>,
        Option<std::sync::Arc<crate::gpu::scope::StreamScope>>,
    ),
    ConfigError,
> {
    match scope_stream(ctx, gpu)? {
        Some((stream, scope)) => Ok((stream, Some(scope))),
        None => crate::gpu::priority::new_stream(gpu, ctx.stage)
            .map(|s| (s, None))
            .map_err(|e| gpu_error(ctx, e)),
    }
}

/// One of `ImageKernels`' batched launches: the stream, the pinned staging of the job table,
/// the table on the device, the jobs, and the output's height and width.
#[cfg(feature = "cuda")]
type BatchedKernel<J> = fn(
    &crate::gpu::image_kernels::ImageKernels,
    &cudarc::driver::CudaStream,
    &mut crate::gpu::cuda::PinnedBuf<J>,
    u64,
    &[J],
    usize,
    usize,
) -> crate::gpu::cuda::Result<()>;

/// What the backends of one batched image kernel (ResizeTensor, LetterBoxTensor,
/// ResizePadTensor, WarpAffineTensor) hold: the kernels and stream, the pool their outputs come
/// from, and the kernel's job table.
#[cfg(feature = "cuda")]
struct KernelGpu<J: Copy> {
    ks: KernelStream,
    pool: std::sync::Arc<crate::gpu::pool::Pool>,
    tables: Option<JobTables<J>>,
}

#[cfg(feature = "cuda")]
impl<J: Copy> KernelGpu<J> {
    fn new(ctx: &InitContext<'_>) -> Result<KernelGpu<J>, ConfigError> {
        ctx.no_args()?;
        let ks = kernel_stream(ctx)?;
        Ok(KernelGpu {
            pool: crate::gpu::pool::shared(&ks.gpu),
            ks,
            tables: None,
        })
    }

    /// The same device, kernels and stream for a fused backend, with a job table of its own.
    fn twin(&self) -> KernelGpu<J> {
        KernelGpu {
            ks: self.ks.clone(),
            pool: self.pool.clone(),
            tables: None,
        }
    }

    /// Brings the batch's GPU values to this backend's GPU.
    fn items_here(
        &self,
        batch: &mut [crate::item::Item],
    ) -> Result<(), crate::error::BackendError> {
        crate::gpu::peer::items_here(batch, &self.ks.stream).map_err(backend_error)
    }

    /// An output buffer of `bytes` from the pool.
    fn take(
        &self,
        bytes: usize,
    ) -> Result<crate::gpu::pool::PooledBuf, crate::error::BackendError> {
        self.pool.take(bytes).map_err(backend_error)
    }

    /// Launches `kernel` once for each group of jobs with one output size (height, width), then
    /// inside a `SyncTensor` keeps `reads` (the images the jobs read) alive until it waits, else
    /// waits for the stream.
    fn launch(
        &mut self,
        kernel: BatchedKernel<J>,
        groups: &[((usize, usize), Vec<J>)],
        reads: impl std::any::Any + Send,
    ) -> Result<(), crate::error::BackendError> {
        use crate::gpu::cuda::Call;
        let KernelStream {
            gpu,
            kernels,
            stream,
            scope,
        } = &self.ks;
        let launched = (|| {
            gpu.bind_to_thread().call("cuCtxSetCurrent")?;
            for ((h, w), jobs) in groups {
                let t = JobTables::get(gpu, &mut self.tables, jobs.len())?;
                kernel(kernels, stream, &mut t.host, t.device.ptr, jobs, *h, *w)?;
                // The staging table is reused by the next group's launch: wait for this one's
                // copy first.
                if groups.len() > 1 {
                    stream.synchronize().call("cuStreamSynchronize")?;
                }
            }
            keep_or_wait(scope.as_deref(), stream, reads)
        })();
        launched.map_err(backend_error)
    }
}

/// Sets an item's result to `out`, a value on the GPU of `layout`.
#[cfg(feature = "cuda")]
fn device_result(
    item: &mut crate::item::Item,
    layout: crate::item::DeviceLayout,
    out: crate::gpu::pool::PooledBuf,
) {
    use crate::item::{DeviceValue, Value};
    item.result = Some(Value::Device(DeviceValue {
        layout,
        mem: std::sync::Arc::new(out),
    }));
}

/// What the copying backends (CropTensor, UploadMat) hold: the device, a stream (the enclosing
/// `SyncTensor`'s, then `scope` is set and the backend does not wait; else one of their own) and
/// the pool their outputs come from.
#[cfg(feature = "cuda")]
struct CopyStream {
    gpu: std::sync::Arc<cudarc::driver::CudaContext>,
    stream: std::sync::Arc<cudarc::driver::CudaStream>,
    pool: std::sync::Arc<crate::gpu::pool::Pool>,
    scope: Option<std::sync::Arc<crate::gpu::scope::StreamScope>>,
}

#[cfg(feature = "cuda")]
fn copy_stream(ctx: &InitContext<'_>) -> Result<CopyStream, ConfigError> {
    ctx.no_args()?;
    let gpu = open_gpu(ctx, false)?;
    let (stream, scope) = instance_stream(ctx, &gpu)?;
    Ok(CopyStream {
        pool: crate::gpu::pool::shared(&gpu),
        gpu,
        stream,
        scope,
    })
}

#[cfg(feature = "cuda")]
fn gpu_error(ctx: &InitContext<'_>, e: crate::gpu::GpuError) -> ConfigError {
    let p = ctx.params();
    if let crate::gpu::GpuError::NoSuchGpu(missing) = &e {
        return crate::gpu::missing_gpu_error(missing, p);
    }
    p.error(
        "backend",
        p.raw("backend").unwrap_or_default(),
        format!("a usable GPU for `{}`: {e}", ctx.expr.name),
    )
}

/// What a build without the GPU module says about these backends.
#[cfg(not(feature = "cuda"))]
fn no_cuda(ctx: &InitContext<'_>) -> ConfigError {
    let p = ctx.params();
    p.error(
        "backend",
        p.raw("backend").unwrap_or_default(),
        format!(
            "a backend this build provides: `{}` runs on the GPU, and this build has no GPU \
             support (build with `--features cuda`, or decode on the CPU with DecodeMat, \
             ResizeMat, cvtColorMat, Mat2Tensor)",
            ctx.expr.name
        ),
    )
}

#[cfg(feature = "cuda")]
fn backend_error(e: crate::gpu::GpuError) -> crate::error::BackendError {
    crate::error::BackendError::new(e.to_string())
}
