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
    s: super::CopyStream,
}

#[cfg(feature = "cuda")]
pub fn new(ctx: &InitContext<'_>) -> Result<Box<dyn Backend>, ConfigError> {
    Ok(Box::new(UploadMat {
        s: super::copy_stream(ctx)?,
    }))
}

#[cfg(feature = "cuda")]
impl Backend for UploadMat {
    fn takes(&self) -> crate::backend::Takes {
        crate::backend::Takes::Image
    }

    fn forward(
        &mut self,
        batch: &mut [crate::item::Item],
    ) -> Result<(), crate::error::BackendError> {
        use crate::gpu::cuda::Call;
        use crate::item::{DeviceLayout, DeviceMemory, DeviceValue, Value};
        use std::sync::Arc;
        self.s
            .gpu
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
            let out = self.s.pool.take(bytes).map_err(super::backend_error)?;
            // SAFETY: `out` holds `bytes` bytes; the pixels are the Mat's, kept alive (the
            // `Arc` in `sources`) until the stream has passed the copy (`keep_or_wait`).
            unsafe {
                crate::gpu::cuda::copy_htod_async(out.ptr(), m.data.as_ptr(), bytes, &self.s.stream)
            }
            .map_err(super::backend_error)?;
            outputs.push((i, out, m.height, m.width, m.channels));
            sources.push(m.data.clone());
        }
        if outputs.is_empty() {
            return Ok(());
        }
        super::keep_or_wait(self.s.scope.as_deref(), &self.s.stream, sources)
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
