//! `PerspectiveTransformMat`: the quadrilateral in the item's `_box` (TorchPipe's
//! `TASK_BOX_KEY`: four points x0, y0, … x3, y3, clockwise from the top-left, as a text
//! detector gives them) straightened into a rectangle (OCR's text-line crops). As TorchPipe's:
//! the width is the first edge's length and the height the last edge's, each truncated, and
//! OpenCV's `getPerspectiveTransform` and `warpPerspective` with bilinear sampling and a border
//! of 0.

use crate::backend::{Backend, InitContext, Takes};
use crate::error::{BackendError, ConfigError};
use crate::image::warp::{rectangle_to_quad, warp};
use crate::item::{Item, Value};

pub struct PerspectiveTransformMat;

pub fn new(ctx: &InitContext<'_>) -> Result<Box<dyn Backend>, ConfigError> {
    ctx.no_args()?;
    Ok(Box::new(PerspectiveTransformMat))
}

/// The rectangle's size and the map into the image, or why there is none.
fn plan(points: &[f32]) -> Result<(usize, usize, [f64; 9]), String> {
    let p: Vec<f64> = points.iter().map(|&v| f64::from(v)).collect();
    let [x0, y0, x1, y1, x2, y2, x3, y3] = p[..] else {
        return Err(format!(
            "a quadrilateral is four points (x0, y0, … x3, y3); got {} values",
            points.len()
        ));
    };
    if !p.iter().all(|v| v.is_finite()) {
        return Err(format!("the quadrilateral {p:?} is not finite"));
    }
    let w = (x0 - x1).hypot(y0 - y1) as usize;
    let h = (x0 - x3).hypot(y0 - y3) as usize;
    if w == 0 || h == 0 || w > 16_384 || h > 16_384 {
        return Err(format!(
            "the quadrilateral {p:?} gives a {w}×{h} crop (1 to 16384 pixels each way)"
        ));
    }
    let quad = [[x0, y0], [x1, y1], [x2, y2], [x3, y3]];
    let m = rectangle_to_quad(w as f64, h as f64, &quad)
        .ok_or_else(|| format!("no perspective map takes a rectangle onto {p:?}"))?;
    Ok((w, h, m))
}

impl Backend for PerspectiveTransformMat {
    fn takes(&self) -> Takes {
        Takes::Image
    }

    fn forward(&mut self, batch: &mut [Item]) -> Result<(), BackendError> {
        super::for_each_boxed_mat(batch, "PerspectiveTransformMat", |m, points| {
            plan(points).map(|(w, h, map)| Value::Mat(warp(m, &map, h, w)))
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_size_comes_from_the_first_and_last_edges() {
        let (w, h, _) = plan(&[0.0, 0.0, 30.9, 0.0, 31.0, 10.0, 0.0, 10.5]).unwrap();
        assert_eq!((w, h), (30, 10));
        assert!(plan(&[0.0; 8]).is_err());
        assert!(plan(&[0.0, 0.0, 1.0, 1.0]).is_err());
        // No map takes a rectangle onto a line.
        assert!(plan(&[0.0, 0.0, 5.0, 0.0, 10.0, 0.0, 15.0, 0.0]).is_err());
    }
}
