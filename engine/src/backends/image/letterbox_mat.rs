//! `LetterBoxMat` and `TopLeftResizeMat`: resize keeping the aspect ratio onto a
//! `resize_h`×`resize_w` canvas filled with `pad_val`, the image centred (letterbox, as YOLO's
//! preprocessing) or at the top-left corner (as YOLOX's). The item keeps what maps a point of
//! the canvas back to the original image, under TorchPipe's keys: `scale` (canvas pixels per
//! original pixel) and `offset` (x, y of the image's corner on the canvas), both as tensors;
//! and `orig_shape` (the original's height and width, as ultralytics names it) to clip to.

use crate::backend::{key, Backend, InitContext, Key, Settings, Takes};
use crate::config::Params;
use crate::error::{BackendError, ConfigError};
use crate::image;
use crate::item::{Item, Mat, Tensor, Value};

use super::{resize_side, RESIZE_KEYS};

pub struct LetterBoxSettings {
    pub h: usize,
    pub w: usize,
    /// The padding's value per channel (B, G, R as the image is ordered).
    pub pad: [u8; 3],
}

const KEYS: &[Key] = &[
    RESIZE_KEYS[0],
    RESIZE_KEYS[1],
    key(
        "pad_val",
        "one value or three (`114` or `114,114,114`), 0 to 255",
        "0",
        "the canvas's colour where the image does not cover it (YOLO trains with 114)",
    ),
];

impl Settings for LetterBoxSettings {
    const KEYS: &'static [Key] = KEYS;

    fn parse(p: &Params) -> Result<Self, ConfigError> {
        Ok(LetterBoxSettings {
            h: resize_side(p, "resize_h", "LetterBoxMat and TopLeftResizeMat")?,
            w: resize_side(p, "resize_w", "LetterBoxMat and TopLeftResizeMat")?,
            pad: pad_val(p)?,
        })
    }
}

/// `pad_val`: TorchPipe's syntax, one value for every channel or one per channel; 0 when absent,
/// as there.
fn pad_val(p: &Params) -> Result<[u8; 3], ConfigError> {
    Ok(pad_key(p, "pad_val")?.unwrap_or([0; 3]))
}

/// A padding key (`pad_val`, `pad_value`): one value for every channel or one per channel.
pub(super) fn pad_key(p: &Params, key: &str) -> Result<Option<[u8; 3]>, ConfigError> {
    let Some(text) = p.raw(key) else {
        return Ok(None);
    };
    let bad = || {
        p.error(
            key,
            text,
            "one value or three separated by commas, each an integer from 0 to 255",
        )
    };
    let values: Vec<u8> = text
        .split(',')
        .map(|v| v.trim().parse::<u8>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    match values.as_slice() {
        [v] => Ok(Some([*v; 3])),
        [b, g, r] => Ok(Some([*b, *g, *r])),
        _ => Err(bad()),
    }
}

pub struct LetterBoxMat {
    s: LetterBoxSettings,
    /// Centred (LetterBoxMat) or at the top-left corner (TopLeftResizeMat).
    centre: bool,
}

pub fn letterbox(
    ctx: &InitContext<'_>,
    s: LetterBoxSettings,
) -> Result<Box<dyn Backend>, ConfigError> {
    build(ctx, s, true)
}

pub fn top_left(
    ctx: &InitContext<'_>,
    s: LetterBoxSettings,
) -> Result<Box<dyn Backend>, ConfigError> {
    build(ctx, s, false)
}

fn build(
    ctx: &InitContext<'_>,
    s: LetterBoxSettings,
    centre: bool,
) -> Result<Box<dyn Backend>, ConfigError> {
    ctx.no_args()?;
    Ok(Box::new(LetterBoxMat { s, centre }))
}

/// Where an `h`×`w` image goes on a `to_h`×`to_w` canvas: the scale (the smaller of the two
/// sides' ratios, so the whole image fits), the resized size (rounded half away from zero, as
/// C++'s `std::round`; at least one pixel, so an extreme aspect ratio still gives an image),
/// and the offset of its top-left corner when centred (the left-over split with the odd pixel
/// on the right and bottom).
pub fn fit(h: usize, w: usize, to_h: usize, to_w: usize) -> (f64, usize, usize, usize, usize) {
    let scale = (to_w as f64 / w as f64).min(to_h as f64 / h as f64);
    let nh = ((h as f64 * scale).round() as usize).clamp(1, to_h);
    let nw = ((w as f64 * scale).round() as usize).clamp(1, to_w);
    (scale, nh, nw, (to_h - nh) / 2, (to_w - nw) / 2)
}

impl LetterBoxMat {
    fn run(&self, mat: &Mat, item: &mut Item) -> Result<Value, image::ImageError> {
        let (to_h, to_w) = (self.s.h, self.s.w);
        let (scale, nh, nw, top, left) = fit(mat.height, mat.width, to_h, to_w);
        let (top, left) = if self.centre { (top, left) } else { (0, 0) };
        let resized = image::active::resize(mat, nh, nw)?;
        let canvas = paste(&resized, to_h, to_w, top, left, self.s.pad);
        remember(item, &[scale as f32], [left, top], [mat.height, mat.width]);
        Ok(Value::Mat(canvas))
    }
}

/// `image` on a `h`×`w` canvas of `pad`, its top-left corner at (`left`, `top`).
pub(super) fn paste(image: &Mat, h: usize, w: usize, top: usize, left: usize, pad: [u8; 3]) -> Mat {
    let c = image.channels;
    let pixel: Vec<u8> = (0..c).map(|i| pad.get(i).copied().unwrap_or(0)).collect();
    let mut data = pixel.repeat(h * w);
    let row = image.width * c;
    for (y, src) in image.data.chunks_exact(row).enumerate() {
        let at = ((top + y) * w + left) * c;
        data[at..at + row].copy_from_slice(src);
    }
    Mat::new(h, w, c, data)
}

/// What maps a point of the canvas back to the original image of `h`×`w` (TorchPipe's keys):
/// `scale` (canvas pixels per original pixel: one value, or x and y), `offset` (x, y of the
/// image's corner on the canvas) and `orig_shape` (height, width).
pub(crate) fn remember(
    item: &mut Item,
    scale: &[f32],
    [left, top]: [usize; 2],
    [h, w]: [usize; 2],
) {
    item.extras.insert(
        "scale".into(),
        Value::Tensor(Tensor::new(vec![scale.len()], scale.to_vec())),
    );
    item.extras.insert(
        "offset".into(),
        Value::Tensor(Tensor::new(vec![2], vec![left as f32, top as f32])),
    );
    item.extras.insert(
        "orig_shape".into(),
        Value::Tensor(Tensor::new(vec![2], vec![h as f32, w as f32])),
    );
}

impl Backend for LetterBoxMat {
    fn takes(&self) -> Takes {
        Takes::Image
    }

    fn forward(&mut self, batch: &mut [Item]) -> Result<(), BackendError> {
        let name = if self.centre {
            "LetterBoxMat"
        } else {
            "TopLeftResizeMat"
        };
        super::for_each_mat(batch, name, |mat, item| self.run(&mat, item));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_fits_the_canvas_and_sits_in_its_middle() {
        // 1280×720 onto 640×640: half size, 140 rows of padding above and below.
        assert_eq!(fit(720, 1280, 640, 640), (0.5, 360, 640, 140, 0));
        // Odd left-over: the extra pixel goes to the right.
        let (_, nh, nw, top, left) = fit(100, 33, 64, 64);
        assert_eq!((nh, nw, top, left), (64, 21, 0, 21));
        // A line of one pixel stays one pixel high.
        let (_, nh, nw, _, _) = fit(1, 10_000, 640, 640);
        assert_eq!((nh, nw), (1, 640));
    }

    #[test]
    fn pad_val_takes_one_value_or_three_and_refuses_the_rest() {
        let p = |v: &str| Params::from_pairs("n", &[("pad_val", v)]);
        assert_eq!(pad_val(&p("114")).unwrap(), [114; 3]);
        assert_eq!(pad_val(&p("1, 2,3")).unwrap(), [1, 2, 3]);
        assert_eq!(pad_val(&Params::from_pairs("n", &[])).unwrap(), [0; 3]);
        for bad in ["256", "1,2", "-1", "a", "1,2,3,4", ""] {
            let e = pad_val(&p(bad)).unwrap_err().to_string();
            assert!(
                e.contains("pad_val") && e.contains("0 to 255"),
                "{bad}: {e}"
            );
        }
    }
}
