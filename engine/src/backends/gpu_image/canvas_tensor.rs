//! `LetterBoxTensor` and `ResizePadTensor`: LetterBoxMat and ResizePadMat, then Mat2Tensor, for an
//! image on the GPU (DecodeTensor's), in one kernel: each canvas pixel is the resized image's
//! (the arithmetic of ResizeTensor, OpenCV's INTER_LINEAR on u8) or the padding, written as a
//! `[3, h, w]` f32 tensor with values 0..=255 on the GPU. The item keeps the same `scale`,
//! `offset` and `orig_shape` as the CPU backends. Followed by cvtColorTensor in a `Sequential`,
//! the channel swap happens in the same kernel. Bit for bit the CPU backends' output (the
//! kernel compiled for the host, engine/tests/resize_kernel_host.rs).

use crate::backend::{Backend, InitContext};
use crate::backends::image::{LetterBoxSettings, ResizePadSettings};
use crate::error::ConfigError;

/// Where each image goes on its canvas.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
#[derive(Clone, Copy)]
enum Placement {
    /// Centred on `h`×`w` (LetterBoxTensor).
    Centre { h: usize, w: usize, pad: [u8; 3] },
    /// Filling `h`×`w` from the top-left corner, padded there or not (ResizePadTensor).
    TopLeft {
        h: usize,
        w: usize,
        pad: Option<[u8; 3]>,
    },
}

#[cfg(not(feature = "cuda"))]
pub fn letterbox(
    ctx: &InitContext<'_>,
    _: LetterBoxSettings,
) -> Result<Box<dyn Backend>, ConfigError> {
    Err(super::no_cuda(ctx))
}

#[cfg(not(feature = "cuda"))]
pub fn resize_pad(
    ctx: &InitContext<'_>,
    _: ResizePadSettings,
) -> Result<Box<dyn Backend>, ConfigError> {
    Err(super::no_cuda(ctx))
}

#[cfg(feature = "cuda")]
pub fn letterbox(
    ctx: &InitContext<'_>,
    s: LetterBoxSettings,
) -> Result<Box<dyn Backend>, ConfigError> {
    build(
        ctx,
        Placement::Centre {
            h: s.h,
            w: s.w,
            pad: s.pad,
        },
    )
}

#[cfg(feature = "cuda")]
pub fn resize_pad(
    ctx: &InitContext<'_>,
    s: ResizePadSettings,
) -> Result<Box<dyn Backend>, ConfigError> {
    build(
        ctx,
        Placement::TopLeft {
            h: s.max_h,
            w: s.max_w,
            pad: s.pad,
        },
    )
}

#[cfg(feature = "cuda")]
pub struct CanvasTensor {
    placement: Placement,
    /// The channel order to produce when fused with cvtColorTensor; `None` keeps the input's.
    target_rgb: Option<bool>,
    gpu: super::KernelGpu<crate::gpu::image_kernels::CanvasJob>,
}

#[cfg(feature = "cuda")]
fn build(ctx: &InitContext<'_>, placement: Placement) -> Result<Box<dyn Backend>, ConfigError> {
    Ok(Box::new(CanvasTensor {
        placement,
        target_rgb: None,
        gpu: super::KernelGpu::new(ctx)?,
    }))
}

#[cfg(feature = "cuda")]
impl CanvasTensor {
    fn name(&self) -> &'static str {
        match self.placement {
            Placement::Centre { .. } => "LetterBoxTensor",
            Placement::TopLeft { .. } => "ResizePadTensor",
        }
    }

    /// An `h`×`w` image's canvas size, resized size, corner and padding, and the scale the
    /// item keeps.
    fn place(&self, h: usize, w: usize) -> ([usize; 6], [u8; 3], Vec<f32>) {
        match self.placement {
            Placement::Centre { h: ch, w: cw, pad } => {
                let (scale, nh, nw, top, left) = crate::backends::image::fit(h, w, ch, cw);
                ([ch, cw, nh, nw, top, left], pad, vec![scale as f32])
            }
            Placement::TopLeft { h: mh, w: mw, pad } => {
                let (nh, nw) = crate::backends::image::resized_size(h, w, mh, mw);
                let (ch, cw) = if pad.is_some() { (mh, mw) } else { (nh, nw) };
                let scale = vec![nw as f32 / w as f32, nh as f32 / h as f32];
                ([ch, cw, nh, nw, 0, 0], pad.unwrap_or([0; 3]), scale)
            }
        }
    }
}

#[cfg(feature = "cuda")]
impl Backend for CanvasTensor {
    fn forward(
        &mut self,
        batch: &mut [crate::item::Item],
    ) -> Result<(), crate::error::BackendError> {
        use crate::gpu::image_kernels::{CanvasJob, ImageKernels};
        use crate::item::{DeviceLayout, DeviceMemory};
        use std::collections::BTreeMap;
        self.gpu.items_here(batch)?;
        // Jobs by canvas size (one launch each; all the same but for ResizePadTensor without
        // padding), and per item its output and what the item keeps.
        let mut by_size: BTreeMap<(usize, usize), Vec<CanvasJob>> = BTreeMap::new();
        let mut outputs = Vec::with_capacity(batch.len());
        let mut sources = Vec::with_capacity(batch.len());
        for (i, item) in batch.iter_mut().enumerate() {
            let Some((sh, sw, src)) = super::gpu_image(item, self.name()) else {
                continue;
            };
            let ([ch, cw, nh, nw, top, left], pad, scale) = self.place(sh, sw);
            let rgb = item.is_rgb();
            let swap = self.target_rgb.is_some_and(|t| t != rgb);
            let out = self.gpu.take(3 * ch * cw * 4)?;
            by_size.entry((ch, cw)).or_default().push(CanvasJob {
                src: src.ptr(),
                dst: out.ptr(),
                sh: sh as i32,
                sw: sw as i32,
                nh: nh as i32,
                nw: nw as i32,
                top: top as i32,
                left: left as i32,
                swap: swap as i32,
                pad: pad.map(i32::from),
            });
            outputs.push((i, out, [ch, cw], rgb != swap, scale, [left, top], [sh, sw]));
            sources.push(src);
        }
        if outputs.is_empty() {
            return Ok(());
        }
        let groups: Vec<_> = by_size.into_iter().collect();
        self.gpu.launch(ImageKernels::canvas, &groups, sources)?;
        for (i, out, [ch, cw], rgb, scale, corner, [sh, sw]) in outputs {
            let item = &mut batch[i];
            crate::backends::image::remember(item, &scale, corner, [sh, sw]);
            let shape = vec![3, ch, cw];
            super::device_result(item, DeviceLayout::Tensor { shape }, out);
            item.set_color(rgb);
        }
        Ok(())
    }

    fn fuse(&self, next: &dyn Backend) -> Option<Box<dyn Backend>> {
        let rgb = super::fused_color(next, self.target_rgb)?;
        Some(Box::new(CanvasTensor {
            placement: self.placement,
            target_rgb: Some(rgb),
            gpu: self.gpu.twin(),
        }))
    }
}
