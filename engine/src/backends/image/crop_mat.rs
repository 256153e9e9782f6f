//! `CropMat`: the part of the image inside the item's box (TorchPipe's `TASK_BOX_KEY`, `_box`),
//! as a detector's post-processing or `MapReduce` leaves it, one box per item.

use crate::backend::{Backend, InitContext, Takes};
use crate::error::{BackendError, ConfigError};
use crate::item::{Item, Mat, Value, BOX};

pub struct CropMat;

pub fn new(ctx: &InitContext<'_>) -> Result<Box<dyn Backend>, ConfigError> {
    ctx.no_args()?;
    Ok(Box::new(CropMat))
}

/// The pixel rectangle of `box_` (x1, y1, x2, y2, then anything) in an image of `w` × `h`:
/// every pixel the box touches (x1, y1 rounded down, x2, y2 up), clipped to the image, and at
/// least one pixel wide and high: a detector clips its boxes to the photo, which leaves a box
/// on its edge with no width (a detection in a 1-pixel-wide photo), and ultralytics'
/// truncation of both corners would leave one narrower than a pixel empty. Returns (x, y,
/// width, height), or why there is nothing to crop: a box outside the image or inverted.
pub fn crop_rect(box_: &[f32], w: usize, h: usize) -> Result<(usize, usize, usize, usize), String> {
    let [x1, y1, x2, y2, ..] = *box_ else {
        return Err(format!(
            "a box is x1, y1, x2, y2; got {} values",
            box_.len()
        ));
    };
    if ![x1, y1, x2, y2].iter().all(|v| v.is_finite()) {
        return Err(format!("box ({x1}, {y1}, {x2}, {y2}) is not finite"));
    }
    let (wf, hf) = (w as f32, h as f32);
    if w == 0 || h == 0 || x2 < x1 || y2 < y1 || x1 > wf || y1 > hf || x2 < 0.0 || y2 < 0.0 {
        return Err(format!(
            "box ({x1}, {y1}, {x2}, {y2}) is not on the {w}×{h} image"
        ));
    }
    // `as` saturates (negative to 0), then clipped.
    let side = |a: f32, b: f32, n: usize| {
        let start = (a.floor() as usize).min(n - 1);
        let end = (b.ceil() as usize).clamp(start + 1, n);
        (start, end - start)
    };
    let (x, cw) = side(x1, x2, w);
    let (y, ch) = side(y1, y2, h);
    Ok((x, y, cw, ch))
}

/// Copies the rectangle out of `m`.
pub fn crop(m: &Mat, (x, y, w, h): (usize, usize, usize, usize)) -> Mat {
    let c = m.channels;
    let row = m.width * c;
    let mut data = Vec::with_capacity(w * h * c);
    for r in y..y + h {
        data.extend_from_slice(&m.data[r * row + x * c..r * row + (x + w) * c]);
    }
    Mat::new(h, w, c, data)
}

/// The item's box as numbers: a tensor's values (a row of `PostProcYoloV8`'s `[n, 6]`).
pub fn item_box(item: &Item) -> Result<&[f32], String> {
    match item.extras.get(BOX) {
        Some(Value::Tensor(t)) => Ok(&t.data),
        Some(other) => Err(format!("its `{BOX}` is {}, not a box", other.kind())),
        None => Err(format!(
            "the item has no `{BOX}` (TASK_BOX_KEY): split a detector's boxes into it with \
             MapReduce, or map one there"
        )),
    }
}

impl Backend for CropMat {
    fn takes(&self) -> Takes {
        Takes::Image
    }

    fn forward(&mut self, batch: &mut [Item]) -> Result<(), BackendError> {
        super::for_each_boxed_mat(batch, "CropMat", |m, b| {
            crop_rect(b, m.width, m.height).map(|rect| Value::Mat(crop(m, rect)))
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rectangle_covers_every_pixel_the_box_touches_inside_the_image() {
        assert_eq!(crop_rect(&[1.9, 2.2, 5.99, 7.0], 10, 10), Ok((1, 2, 5, 5)));
        let clipped = crop_rect(&[-3.0, -1.0, 50.0, 4.5, 0.9, 2.0], 10, 8);
        assert_eq!(clipped, Ok((0, 0, 10, 5)));
        assert_eq!(crop_rect(&[0.3, 0.17, 0.55, 0.49], 1, 1), Ok((0, 0, 1, 1)));
        // On the image's edge with no width or height: the pixel it lies on.
        assert_eq!(crop_rect(&[0.0, 4.5, 0.0, 8.4], 1, 10), Ok((0, 4, 1, 5)));
        assert_eq!(crop_rect(&[10.0, 0.0, 10.0, 2.0], 10, 10), Ok((9, 0, 1, 2)));
        assert!(crop_rect(&[5.0, 4.0, 4.0, 9.0], 10, 10).is_err());
        assert!(crop_rect(&[12.0, 0.0, 20.0, 5.0], 10, 10).is_err());
        assert!(crop_rect(&[f32::NAN, 0.0, 2.0, 2.0], 10, 10).is_err());
        assert!(crop_rect(&[0.0, 0.0, 2.0], 10, 10).is_err());
    }

    #[test]
    fn a_crop_copies_the_rows_of_the_rectangle() {
        let m = Mat::new(3, 4, 1, (0..12).collect());
        assert_eq!(*crop(&m, (1, 1, 2, 2)).data, [5, 6, 9, 10]);
    }
}
