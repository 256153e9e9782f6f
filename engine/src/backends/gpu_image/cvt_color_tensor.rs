use crate::backend::{Backend, InitContext, Key, Settings};
use crate::config::Params;
use crate::error::ConfigError;

// A build without the GPU module checks them and refuses the backend.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub struct CvtColorTensorSettings {
    /// The channel order produced: RGB, else BGR.
    rgb: bool,
}

impl Settings for CvtColorTensorSettings {
    const KEYS: &'static [Key] = &[crate::backends::image::REQUIRED_COLOR];

    fn parse(p: &Params) -> Result<Self, ConfigError> {
        Ok(CvtColorTensorSettings {
            rgb: super::required_color(p, "the channel order cvtColorTensor produces")?,
        })
    }
}

/// `cvtColorTensor`: `color = "rgb"` or `"bgr"` on a GPU image or a GPU `[3, h, w]` tensor,
/// following the item's `color` extra (a no-op when it already matches). After ResizeTensor in
/// a `Sequential` it folds into the resize kernel.
#[cfg(feature = "cuda")]
pub struct CvtColorTensor {
    rgb: bool,
    stream: std::sync::Arc<cudarc::driver::CudaStream>,
    kernels: &'static crate::gpu::image_kernels::ImageKernels,
    pool: std::sync::Arc<crate::gpu::pool::Pool>,
    /// Set inside `SyncTensor`: the stream is its, and it waits.
    scope: Option<std::sync::Arc<crate::gpu::scope::StreamScope>>,
}

#[cfg(not(feature = "cuda"))]
pub fn new(
    ctx: &InitContext<'_>,
    _: CvtColorTensorSettings,
) -> Result<Box<dyn Backend>, ConfigError> {
    Err(super::no_cuda(ctx))
}

#[cfg(feature = "cuda")]
pub fn new(
    ctx: &InitContext<'_>,
    s: CvtColorTensorSettings,
) -> Result<Box<dyn Backend>, ConfigError> {
    ctx.no_args()?;
    let rgb = s.rgb;
    let super::KernelStream {
        gpu,
        kernels,
        stream,
        scope,
    } = super::kernel_stream(ctx)?;
    Ok(Box::new(CvtColorTensor {
        rgb,
        stream,
        kernels,
        pool: crate::gpu::pool::shared(&gpu),
        scope,
    }))
}

#[cfg(feature = "cuda")]
impl Backend for CvtColorTensor {
    fn forward(
        &mut self,
        batch: &mut [crate::item::Item],
    ) -> Result<(), crate::error::BackendError> {
        use crate::gpu::cuda::Call;
        use crate::item::{DeviceLayout, DeviceMemory, DeviceValue, Value};
        use std::sync::Arc;
        self.stream
            .context()
            .bind_to_thread()
            .call("cuCtxSetCurrent")
            .map_err(super::backend_error)?;
        crate::gpu::peer::items_here(batch, &self.stream).map_err(super::backend_error)?;
        let (mut made, mut sources) = (Vec::new(), Vec::new());
        for (i, item) in batch.iter_mut().enumerate() {
            let value = match &item.data {
                Value::Device(v) => v.clone(),
                other => {
                    let kind = other.kind();
                    item.fail(format!(
                        "cvtColorTensor expects an image or a tensor on the GPU, got {kind}"
                    ));
                    continue;
                }
            };
            if item.is_rgb() == self.rgb {
                item.result = Some(Value::Device(value));
                continue;
            }
            let out = self
                .pool
                .take(value.mem.bytes())
                .map_err(super::backend_error)?;
            let (src, dst) = (value.mem.ptr(), out.ptr());
            let launched = match &value.layout {
                DeviceLayout::Image {
                    height,
                    width,
                    channels: 3,
                } => self
                    .kernels
                    .swap_pixels(&self.stream, src, dst, height * width),
                DeviceLayout::Tensor { shape } if shape.len() == 3 && shape[0] == 3 => self
                    .kernels
                    .swap_planes(&self.stream, src, dst, shape[1] * shape[2]),
                other => {
                    item.fail(format!(
                        "cvtColorTensor needs 3 channels (an HWC image or a [3, h, w] tensor), \
                         got {other:?}"
                    ));
                    continue;
                }
            };
            launched.map_err(super::backend_error)?;
            made.push((i, value.layout.clone(), out));
            sources.push(value.mem);
        }
        if made.is_empty() {
            return Ok(());
        }
        super::keep_or_wait(self.scope.as_deref(), &self.stream, sources)
            .map_err(super::backend_error)?;
        for (i, layout, out) in made {
            let item = &mut batch[i];
            item.result = Some(Value::Device(DeviceValue {
                layout,
                mem: Arc::new(out),
            }));
            item.set_color(self.rgb);
        }
        Ok(())
    }

    fn fusable(&self) -> Option<crate::backend::Fusable> {
        Some(crate::backend::Fusable::TensorColor { rgb: self.rgb })
    }
}
