//! `ResizePadMat`: TorchPipe's ResizePad on a Mat (YOLOX's and OCR's preprocessing): resize
//! keeping the aspect ratio to fill `max_h`×`max_w` (enlarging too), then, with `pad_value`,
//! pad on the right and bottom to exactly that size; without it the resized image alone. The
//! item keeps `scale` (x and y: the resized size over the original's), `offset` (0, 0) and
//! `orig_shape`, which `PostProcYoloV8` maps boxes back through.

use crate::backend::{key, Backend, InitContext, Key, Settings, Takes};
use crate::config::Params;
use crate::error::{BackendError, ConfigError};
use crate::image;
use crate::item::{Item, Mat, Value};

use super::letterbox_mat::{pad_key, paste, remember};
use super::resize_side;

pub struct ResizePadSettings {
    pub max_h: usize,
    pub max_w: usize,
    /// None: no padding, the resized image alone.
    pub pad: Option<[u8; 3]>,
}

const KEYS: &[Key] = &[
    key(
        "max_h",
        "pixels, 1 to 16384",
        "required",
        "the height to fill",
    ),
    key(
        "max_w",
        "pixels, 1 to 16384",
        "required",
        "the width to fill",
    ),
    key(
        "pad_value",
        "one value or three (`114` or `114,114,114`), 0 to 255",
        "none: no padding",
        "pads the resized image on the right and bottom to `max_h`×`max_w`",
    ),
];

impl Settings for ResizePadSettings {
    const KEYS: &'static [Key] = KEYS;

    fn parse(p: &Params) -> Result<Self, ConfigError> {
        Ok(ResizePadSettings {
            max_h: resize_side(p, "max_h", "ResizePadMat and ResizePadTensor")?,
            max_w: resize_side(p, "max_w", "ResizePadMat and ResizePadTensor")?,
            pad: pad_key(p, "pad_value")?,
        })
    }
}

pub struct ResizePadMat {
    s: ResizePadSettings,
}

pub fn new(ctx: &InitContext<'_>, s: ResizePadSettings) -> Result<Box<dyn Backend>, ConfigError> {
    ctx.no_args()?;
    Ok(Box::new(ResizePadMat { s }))
}

/// The resized (height, width) of an `h`×`w` image filling `max_h`×`max_w`, as TorchPipe
/// computes it: from the aspect ratio in f32, the other side rounded half away from zero and
/// capped; at least one pixel.
pub fn resized_size(h: usize, w: usize, max_h: usize, max_w: usize) -> (usize, usize) {
    let ratio = w as f32 / h as f32;
    let (rh, rw) = if max_h as f32 * ratio <= max_w as f32 {
        (max_h, ((max_h as f32 * ratio).round() as usize).min(max_w))
    } else {
        (((max_w as f32 / ratio).round() as usize).min(max_h), max_w)
    };
    (rh.max(1), rw.max(1))
}

impl ResizePadMat {
    fn run(&self, mat: &Mat, item: &mut Item) -> Result<Value, image::ImageError> {
        let (rh, rw) = resized_size(mat.height, mat.width, self.s.max_h, self.s.max_w);
        let resized = if (rh, rw) == (mat.height, mat.width) {
            mat.clone()
        } else {
            image::active::resize(mat, rh, rw)?
        };
        let scale = [rw as f32 / mat.width as f32, rh as f32 / mat.height as f32];
        remember(item, &scale, [0, 0], [mat.height, mat.width]);
        Ok(Value::Mat(match self.s.pad {
            Some(pad) => paste(&resized, self.s.max_h, self.s.max_w, 0, 0, pad),
            None => resized,
        }))
    }
}

impl Backend for ResizePadMat {
    fn takes(&self) -> Takes {
        Takes::Image
    }

    fn forward(&mut self, batch: &mut [Item]) -> Result<(), BackendError> {
        super::for_each_mat(batch, "ResizePadMat", |mat, item| self.run(&mat, item));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_fills_the_box_keeping_its_aspect_ratio() {
        // 451 wide, 300 high into 416×416: the width fills, the height follows (276.7 → 277).
        assert_eq!(resized_size(300, 451, 416, 416), (277, 416));
        // Tall: the height fills.
        assert_eq!(resized_size(200, 50, 416, 416), (416, 104));
        // Small images are enlarged, as TorchPipe does.
        assert_eq!(resized_size(10, 10, 32, 64), (32, 32));
        // A line stays a pixel high.
        assert_eq!(resized_size(1, 10_000, 640, 640), (1, 640));
    }
}
