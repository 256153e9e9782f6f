use crate::backend::{Backend, InitContext, Key, Settings};
use crate::backends::image::{resize_side, RESIZE_KEYS};
use crate::config::Params;
use crate::error::ConfigError;

// A build without the GPU module checks them and refuses the backend.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub struct ResizeTensorSettings {
    h: usize,
    w: usize,
}

impl Settings for ResizeTensorSettings {
    const KEYS: &'static [Key] = RESIZE_KEYS;

    fn parse(p: &Params) -> Result<Self, ConfigError> {
        Ok(ResizeTensorSettings {
            h: resize_side(p, "resize_h", "ResizeTensor")?,
            w: resize_side(p, "resize_w", "ResizeTensor")?,
        })
    }
}

/// `ResizeTensor`: an image on the GPU (DecodeTensor's) → a `[3, resize_h, resize_w]` f32
/// tensor on the GPU with values 0..=255, what ResizeMat then Mat2Tensor make on the CPU and
/// with the same arithmetic (OpenCV's INTER_LINEAR on u8, bit for bit). Followed by
/// cvtColorTensor in a `Sequential`, the channel swap happens in the same kernel.
#[cfg(feature = "cuda")]
pub struct ResizeTensor {
    h: usize,
    w: usize,
    /// The channel order to produce when fused with cvtColorTensor; `None` keeps the input's.
    target_rgb: Option<bool>,
    gpu: super::KernelGpu<crate::gpu::image_kernels::Job>,
}

#[cfg(not(feature = "cuda"))]
pub fn new(
    ctx: &InitContext<'_>,
    _: ResizeTensorSettings,
) -> Result<Box<dyn Backend>, ConfigError> {
    Err(super::no_cuda(ctx))
}

#[cfg(feature = "cuda")]
pub fn new(
    ctx: &InitContext<'_>,
    s: ResizeTensorSettings,
) -> Result<Box<dyn Backend>, ConfigError> {
    Ok(Box::new(ResizeTensor {
        h: s.h,
        w: s.w,
        target_rgb: None,
        gpu: super::KernelGpu::new(ctx)?,
    }))
}

#[cfg(feature = "cuda")]
impl Backend for ResizeTensor {
    fn forward(
        &mut self,
        batch: &mut [crate::item::Item],
    ) -> Result<(), crate::error::BackendError> {
        use crate::gpu::image_kernels::{ImageKernels, Job};
        use crate::item::{DeviceLayout, DeviceMemory};
        let (h, w) = (self.h, self.w);
        self.gpu.items_here(batch)?;
        let mut jobs = Vec::with_capacity(batch.len());
        let mut outputs = Vec::with_capacity(batch.len());
        let mut sources = Vec::with_capacity(batch.len());
        for (i, item) in batch.iter_mut().enumerate() {
            let Some((sh, sw, src)) = super::gpu_image(item, "ResizeTensor") else {
                continue;
            };
            let rgb = item.is_rgb();
            let swap = self.target_rgb.is_some_and(|t| t != rgb);
            let out = self.gpu.take(3 * h * w * 4)?;
            jobs.push(Job {
                src: src.ptr(),
                dst: out.ptr(),
                sh: sh as i32,
                sw: sw as i32,
                swap: swap as i32,
                pad: 0,
            });
            outputs.push((i, out, rgb != swap));
            sources.push(src);
        }
        if jobs.is_empty() {
            return Ok(());
        }
        self.gpu
            .launch(ImageKernels::resize, &[((h, w), jobs)], sources)?;
        for (i, out, rgb) in outputs {
            let item = &mut batch[i];
            let shape = vec![3, h, w];
            super::device_result(item, DeviceLayout::Tensor { shape }, out);
            item.set_color(rgb);
        }
        Ok(())
    }

    fn fuse(&self, next: &dyn Backend) -> Option<Box<dyn Backend>> {
        let rgb = super::fused_color(next, self.target_rgb)?;
        Some(Box::new(ResizeTensor {
            h: self.h,
            w: self.w,
            target_rgb: Some(rgb),
            gpu: self.gpu.twin(),
        }))
    }
}
