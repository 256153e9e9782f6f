//! `WarpAffineTensor`: WarpAffineMat for an image on the GPU (DecodeTensor's or UploadMat's): the
//! item's `affine_matrix` (OpenCV's `warpAffine` M, taking the photo's pixels to the output's)
//! applied into a `target_h`×`target_w` image on the GPU, one kernel launch a batch, bit for bit
//! WarpAffineMat's output (engine/tests/resize_kernel_host.rs compiles the kernel for the host).
//! The output is an image, as CropTensor's: ResizeTensor or LetterBoxTensor make the tensor.

use crate::backend::{Backend, InitContext};
use crate::backends::image::WarpAffineSettings;
use crate::error::ConfigError;

#[cfg(not(feature = "cuda"))]
pub fn new(ctx: &InitContext<'_>, _: WarpAffineSettings) -> Result<Box<dyn Backend>, ConfigError> {
    Err(super::no_cuda(ctx))
}

#[cfg(feature = "cuda")]
pub struct WarpAffineTensor {
    h: usize,
    w: usize,
    ctx: std::sync::Arc<cudarc::driver::CudaContext>,
    stream: std::sync::Arc<cudarc::driver::CudaStream>,
    kernels: &'static crate::gpu::image_kernels::ImageKernels,
    pool: std::sync::Arc<crate::gpu::pool::Pool>,
    tables: Option<super::JobTables<crate::gpu::image_kernels::WarpJob>>,
    /// Set inside `SyncTensor`: the stream is its, and it waits.
    scope: Option<std::sync::Arc<crate::gpu::scope::StreamScope>>,
}

#[cfg(feature = "cuda")]
pub fn new(ctx: &InitContext<'_>, s: WarpAffineSettings) -> Result<Box<dyn Backend>, ConfigError> {
    ctx.no_args()?;
    let super::KernelStream {
        gpu,
        kernels,
        stream,
        scope,
    } = super::kernel_stream(ctx)?;
    Ok(Box::new(WarpAffineTensor {
        h: s.h,
        w: s.w,
        pool: crate::gpu::pool::shared(&gpu),
        ctx: gpu,
        stream,
        kernels,
        tables: None,
        scope,
    }))
}

#[cfg(feature = "cuda")]
impl Backend for WarpAffineTensor {
    fn forward(
        &mut self,
        batch: &mut [crate::item::Item],
    ) -> Result<(), crate::error::BackendError> {
        use crate::backends::image::item_affine;
        use crate::gpu::image_kernels::WarpJob;
        use crate::item::{DeviceLayout, DeviceMemory, DeviceValue, Value};
        use std::sync::Arc;
        let (h, w) = (self.h, self.w);
        crate::gpu::peer::items_here(batch, &self.stream).map_err(super::backend_error)?;
        let mut jobs = Vec::with_capacity(batch.len());
        let mut outputs = Vec::with_capacity(batch.len());
        let mut sources = Vec::with_capacity(batch.len());
        for (i, item) in batch.iter_mut().enumerate() {
            let map = match item_affine(item) {
                Ok(m) => m,
                Err(e) => {
                    item.fail(format!("WarpAffineTensor: {e}"));
                    continue;
                }
            };
            let Some((sh, sw, src)) = super::gpu_image(item, "WarpAffineTensor") else {
                continue;
            };
            let out = self.pool.take(h * w * 3).map_err(super::backend_error)?;
            jobs.push(WarpJob {
                src: src.ptr(),
                dst: out.ptr(),
                sh: sh as i32,
                sw: sw as i32,
                m: [map[0], map[1], map[2], map[3], map[4], map[5]],
            });
            outputs.push((i, out));
            sources.push(src);
        }
        if jobs.is_empty() {
            return Ok(());
        }
        let launched = (|| {
            use crate::gpu::cuda::Call;
            self.ctx.bind_to_thread().call("cuCtxSetCurrent")?;
            let t = super::JobTables::get(&self.ctx, &mut self.tables, jobs.len())?;
            self.kernels
                .warp_affine(&self.stream, &mut t.host, t.device.ptr, &jobs, h, w)?;
            super::keep_or_wait(self.scope.as_deref(), &self.stream, sources)
        })();
        launched.map_err(super::backend_error)?;
        for (i, out) in outputs {
            batch[i].result = Some(Value::Device(DeviceValue {
                layout: DeviceLayout::Image {
                    height: h,
                    width: w,
                    channels: 3,
                },
                mem: Arc::new(out),
            }));
        }
        Ok(())
    }
}
