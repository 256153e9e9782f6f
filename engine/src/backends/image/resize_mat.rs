use crate::backend::{key, Backend, Fusable, InitContext, Key, Settings, Takes};
use crate::config::Params;
use crate::error::{BackendError, ConfigError};
use crate::image;
use crate::item::{Item, Value};

pub struct ResizeMatSettings {
    pub h: usize,
    pub w: usize,
}

impl Settings for ResizeMatSettings {
    const KEYS: &'static [Key] = RESIZE_KEYS;

    fn parse(p: &Params) -> Result<Self, ConfigError> {
        Ok(ResizeMatSettings {
            h: resize_side(p, "resize_h", "ResizeMat")?,
            w: resize_side(p, "resize_w", "ResizeMat")?,
        })
    }
}

/// Bilinear resize to `resize_h`×`resize_w`, as `cv::resize(..., INTER_LINEAR)`. In a
/// `Sequential`, a cvtColorMat and a Mat2Tensor right after it run in the same pass (each
/// output row goes straight to the tensor's planes), with the same values as the three steps;
/// not in the `opencv` build, whose resize is OpenCV's own.
pub struct ResizeMat {
    h: usize,
    w: usize,
    /// Fused cvtColorMat: the channel order to produce.
    rgb: Option<bool>,
    /// Fused Mat2Tensor.
    to_tensor: bool,
}

const MAX_SIDE: usize = 16384;

/// The keys of a resize backend (ResizeMat, ResizeTensor), read by `resize_side`.
pub(crate) const RESIZE_KEYS: &[Key] = &[
    key("resize_h", "1 to 16384", "required", "output height"),
    key("resize_w", "1 to 16384", "required", "output width"),
];

/// `resize_h` / `resize_w` of a resize backend (ResizeMat, ResizeTensor): required, 1..=16384.
pub(crate) fn resize_side(p: &Params, key: &str, backend: &str) -> Result<usize, ConfigError> {
    p.usize_in(key, 1, MAX_SIDE)?.ok_or_else(|| {
        p.error(
            key,
            "",
            format!("the output size in pixels, required by {backend}"),
        )
    })
}

pub fn new(ctx: &InitContext<'_>, s: ResizeMatSettings) -> Result<Box<dyn Backend>, ConfigError> {
    ctx.no_args()?;
    Ok(Box::new(ResizeMat {
        h: s.h,
        w: s.w,
        rgb: None,
        to_tensor: false,
    }))
}

impl Backend for ResizeMat {
    fn takes(&self) -> Takes {
        Takes::Image
    }

    fn forward(&mut self, batch: &mut [Item]) -> Result<(), BackendError> {
        super::for_each_mat(batch, "ResizeMat", |mat, item| {
            let swap = match self.rgb {
                Some(rgb) => {
                    let current = item.is_rgb();
                    item.set_color(rgb);
                    current != rgb
                }
                None => false,
            };
            if self.to_tensor {
                return Ok(Value::Tensor(image::resize_to_chw(
                    &mat, self.h, self.w, swap,
                )));
            }
            let mut out = image::active::resize(&mat, self.h, self.w)?;
            if swap {
                image::swap_red_blue(&mut out);
            }
            Ok(Value::Mat(out))
        });
        Ok(())
    }

    fn fuse(&self, next: &dyn Backend) -> Option<Box<dyn Backend>> {
        if cfg!(feature = "opencv") || self.to_tensor {
            return None;
        }
        let mut fused = ResizeMat { ..*self };
        match next.fusable()? {
            Fusable::MatColor { rgb } if self.rgb.is_none() => fused.rgb = Some(rgb),
            Fusable::MatToTensor => fused.to_tensor = true,
            _ => return None,
        }
        Some(Box::new(fused))
    }
}
