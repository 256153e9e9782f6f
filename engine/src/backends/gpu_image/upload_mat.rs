//! `UploadMat`: a decoded image on the host (DecodeMat's `Mat`) copied to the GPU as the image
//! DecodeTensor makes (HWC u8, same channel order), so that the GPU image backends that follow
//! (LetterBoxTensor, CropTensor, WarpAffineTensor...) take either. Its use: the CPU fallback of
//! a GPU pipeline, for the photos nvJPEG cannot decode (PNG, BMP, CMYK), where a later node maps
//! the decoded photo back in (configs/detect_classify_gpu.toml).

use crate::backend::{Backend, InitContext};
use crate::error::ConfigError;

#[cfg(not(feature = "cuda"))]
pub fn new(ctx: &InitContext<'_>) -> Result<Box<dyn Backend>, ConfigError> {
    Err(super::no_cuda(ctx))
}

#[cfg(feature = "cuda")]
pub struct UploadMat {
    gpu: std::sync::Arc<cudarc::driver::CudaContext>,
    stream: std::sync::Arc<cudarc::driver::CudaStream>,
    pool: std::sync::Arc<crate::gpu::pool::Pool>,
    /// Set inside `SyncTensor`: the stream is its, and it waits.
    scope: Option<std::sync::Arc<crate::gpu::scope::StreamScope>>,
}

#[cfg(feature = "cuda")]
pub fn new(ctx: &InitContext<'_>) -> Result<Box<dyn Backend>, ConfigError> {
    use crate::gpu::cuda::Call;
    ctx.no_args()?;
    let gpu = super::open_gpu(ctx, false)?;
    let shared = super::scope_stream(ctx, &gpu)?;
    let stream = match &shared {
        Some((s, _)) => s.clone(),
        None => {
            let made = (|| {
                gpu.bind_to_thread().call("cuCtxSetCurrent")?;
                gpu.new_stream().call("cuStreamCreate")
            })();
            made.map_err(|e| super::gpu_error(ctx, e))?
        }
    };
    Ok(Box::new(UploadMat {
        pool: crate::gpu::pool::shared(&gpu),
        gpu,
        stream,
        scope: shared.map(|(_, scope)| scope),
    }))
}

#[cfg(feature = "cuda")]
impl Backend for UploadMat {
    fn forward(
        &mut self,
        batch: &mut [crate::item::Item],
    ) -> Result<(), crate::error::BackendError> {
        use crate::gpu::cuda::Call;
        use crate::item::{DeviceLayout, DeviceMemory, DeviceValue, Value};
        use std::sync::Arc;
        self.gpu
            .bind_to_thread()
            .call("cuCtxSetCurrent")
            .map_err(super::backend_error)?;
        let mut sources = Vec::with_capacity(batch.len());
        let mut outputs = Vec::with_capacity(batch.len());
        for (i, item) in batch.iter_mut().enumerate() {
            let Value::Mat(m) = &item.data else {
                let kind = item.data.kind();
                item.fail(format!(
                    "UploadMat expects an image (Mat, DecodeMat's output) as data, got {kind}"
                ));
                continue;
            };
            let bytes = m.data.len();
            let out = self.pool.take(bytes).map_err(super::backend_error)?;
            // SAFETY: `out` holds `bytes` bytes; the pixels are the Mat's, kept alive (the
            // `Arc` in `sources`) until the stream has passed the copy (`keep_or_wait`).
            unsafe {
                crate::gpu::cuda::copy_htod_async(out.ptr(), m.data.as_ptr(), bytes, &self.stream)
            }
            .map_err(super::backend_error)?;
            outputs.push((i, out, m.height, m.width, m.channels));
            sources.push(m.data.clone());
        }
        if outputs.is_empty() {
            return Ok(());
        }
        super::keep_or_wait(self.scope.as_deref(), &self.stream, sources)
            .map_err(super::backend_error)?;
        for (i, out, height, width, channels) in outputs {
            batch[i].result = Some(Value::Device(DeviceValue {
                layout: DeviceLayout::Image {
                    height,
                    width,
                    channels,
                },
                mem: Arc::new(out),
            }));
        }
        Ok(())
    }
}
