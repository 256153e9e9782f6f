//! `CropTensor`: `CropMat` for an image on the GPU (DecodeTensor's): the rectangle inside the
//! item's box (`_box`, TorchPipe's `TASK_BOX_KEY`), copied on the GPU into an image of its own,
//! with `CropMat`'s rounding (`crop_rect`).

use crate::backend::{Backend, InitContext};
use crate::error::ConfigError;

#[cfg(not(feature = "cuda"))]
pub fn new(ctx: &InitContext<'_>) -> Result<Box<dyn Backend>, ConfigError> {
    Err(super::no_cuda(ctx))
}

#[cfg(feature = "cuda")]
pub struct CropTensor {
    s: super::CopyStream,
}

#[cfg(feature = "cuda")]
pub fn new(ctx: &InitContext<'_>) -> Result<Box<dyn Backend>, ConfigError> {
    Ok(Box::new(CropTensor {
        s: super::copy_stream(ctx)?,
    }))
}

#[cfg(feature = "cuda")]
impl Backend for CropTensor {
    fn forward(
        &mut self,
        batch: &mut [crate::item::Item],
    ) -> Result<(), crate::error::BackendError> {
        use crate::backends::image::{crop_rect, item_box};
        use crate::gpu::cuda::Call;
        use crate::item::{DeviceLayout, DeviceMemory, DeviceValue, Value};
        use std::sync::Arc;
        crate::gpu::peer::items_here(batch, &self.s.stream).map_err(super::backend_error)?;
        self.s
            .gpu
            .bind_to_thread()
            .call("cuCtxSetCurrent")
            .map_err(super::backend_error)?;
        let mut sources = Vec::with_capacity(batch.len());
        let mut outputs = Vec::with_capacity(batch.len());
        for (i, item) in batch.iter_mut().enumerate() {
            let (h, w, c, src) = match &item.data {
                Value::Device(DeviceValue {
                    layout:
                        DeviceLayout::Image {
                            height,
                            width,
                            channels,
                        },
                    mem,
                }) => (*height, *width, *channels, mem.clone()),
                other => {
                    let kind = other.kind();
                    item.fail(format!(
                        "CropTensor expects an image on the GPU (DecodeTensor's output), got \
                         {kind}"
                    ));
                    continue;
                }
            };
            let rect = item_box(item).and_then(|b| crop_rect(b, w, h));
            let (x, y, cw, ch) = match rect {
                Ok(r) => r,
                Err(e) => {
                    item.fail(format!("CropTensor: {e}"));
                    continue;
                }
            };
            let out = self
                .s
                .pool
                .take(cw * ch * c)
                .map_err(super::backend_error)?;
            let src_at = src.ptr() + ((y * w + x) * c) as u64;
            // SAFETY: the rectangle (rows y..y+ch, bytes x·c..(x+cw)·c of rows w·c long) lies in
            // the h×w×c source image (`crop_rect` clips to it), and `out` holds cw·ch·c bytes;
            // both stay alive until the stream passed the copy (`keep_or_wait` below, the
            // source in `sources`, `out` in the result the caller holds).
            unsafe {
                crate::gpu::cuda::copy_2d_dtod_async(
                    out.ptr(),
                    cw * c,
                    src_at,
                    w * c,
                    cw * c,
                    ch,
                    &self.s.stream,
                )
            }
            .map_err(super::backend_error)?;
            sources.push(src);
            outputs.push((i, out, ch, cw, c));
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
