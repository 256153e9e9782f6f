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
    gpu: super::KernelGpu<crate::gpu::image_kernels::WarpJob>,
}

#[cfg(feature = "cuda")]
pub fn new(ctx: &InitContext<'_>, s: WarpAffineSettings) -> Result<Box<dyn Backend>, ConfigError> {
    Ok(Box::new(WarpAffineTensor {
        h: s.h,
        w: s.w,
        gpu: super::KernelGpu::new(ctx)?,
    }))
}

#[cfg(feature = "cuda")]
impl Backend for WarpAffineTensor {
    fn forward(
        &mut self,
        batch: &mut [crate::item::Item],
    ) -> Result<(), crate::error::BackendError> {
        use crate::backends::image::item_affine;
        use crate::gpu::image_kernels::{ImageKernels, WarpJob};
        use crate::item::{DeviceLayout, DeviceMemory};
        let (h, w) = (self.h, self.w);
        self.gpu.items_here(batch)?;
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
            let out = self.gpu.take(h * w * 3)?;
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
        self.gpu
            .launch(ImageKernels::warp_affine, &[((h, w), jobs)], sources)?;
        for (i, out) in outputs {
            let layout = DeviceLayout::Image {
                height: h,
                width: w,
                channels: 3,
            };
            super::device_result(&mut batch[i], layout, out);
        }
        Ok(())
    }
}
