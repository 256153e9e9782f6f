//! `WarpAffineMat`: the item's image warped by its `affine_matrix` into a `target_h`×`target_w`
//! image, as OpenCV's `warpAffine(src, M, (target_w, target_h))` does (bilinear, constant border
//! 0): `M` (six numbers, row-major 2×3) takes the photo's pixels to the output's, as
//! `cv2.getAffineTransform` or `cv2.getRotationMatrix2D` give it (face alignment, rotated text
//! lines). The CPU twin of WarpAffineTensor, with the same arithmetic.

use crate::backend::{key, Backend, InitContext, Key, Settings, Takes};
use crate::config::Params;
use crate::error::{BackendError, ConfigError};
use crate::image::warp::{affine_inverse, warp};
use crate::item::{Item, Value};

/// The item key holding the matrix: TorchPipe's name for it.
pub const AFFINE_KEY: &str = "affine_matrix";

pub struct WarpAffineSettings {
    pub h: usize,
    pub w: usize,
}

impl Settings for WarpAffineSettings {
    const KEYS: &'static [Key] = &[
        key("target_h", "1 to 16384", "required", "output height"),
        key("target_w", "1 to 16384", "required", "output width"),
    ];

    fn parse(p: &Params) -> Result<Self, ConfigError> {
        let side = |k: &str| {
            p.usize_in(k, 1, 16_384)?.ok_or_else(|| {
                p.error(
                    k,
                    "",
                    "the output size in pixels, required by WarpAffineMat and WarpAffineTensor",
                )
            })
        };
        Ok(WarpAffineSettings {
            h: side("target_h")?,
            w: side("target_w")?,
        })
    }
}

/// The map each output pixel is sampled through: the inverse of the item's `affine_matrix`, or
/// why there is none.
pub fn item_affine(item: &Item) -> Result<[f64; 9], String> {
    let m = match item.get(AFFINE_KEY) {
        Some(Value::Tensor(t)) => &t.data,
        Some(other) => {
            return Err(format!(
                "its `{AFFINE_KEY}` is {}, not six numbers",
                other.kind()
            ))
        }
        None => {
            return Err(format!(
                "the item has no `{AFFINE_KEY}` (the 2×3 matrix taking the image's pixels to \
                 the output's, six numbers row by row)"
            ))
        }
    };
    let m: [f64; 6] = match m[..] {
        [a, b, c, d, e, f] => [a, b, c, d, e, f].map(f64::from),
        _ => {
            return Err(format!(
                "its `{AFFINE_KEY}` has {} values; a 2×3 matrix has six",
                m.len()
            ))
        }
    };
    affine_inverse(&m).ok_or_else(|| format!("its `{AFFINE_KEY}` {m:?} has no inverse"))
}

pub struct WarpAffineMat {
    s: WarpAffineSettings,
}

pub fn new(ctx: &InitContext<'_>, s: WarpAffineSettings) -> Result<Box<dyn Backend>, ConfigError> {
    ctx.no_args()?;
    Ok(Box::new(WarpAffineMat { s }))
}

impl Backend for WarpAffineMat {
    fn takes(&self) -> Takes {
        Takes::Image
    }

    fn forward(&mut self, batch: &mut [Item]) -> Result<(), BackendError> {
        for item in batch {
            let out = match (&item.data, item_affine(item)) {
                (Value::Mat(m), Ok(map)) => Ok(Value::Mat(warp(m, &map, self.s.h, self.s.w))),
                (Value::Mat(_), Err(e)) => Err(e),
                (other, _) => Err(format!(
                    "expects an image (Mat) as data, got {}",
                    other.kind()
                )),
            };
            match out {
                Ok(v) => item.result = Some(v),
                Err(e) => item.fail(format!("WarpAffineMat: {e}")),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::{Mat, Tensor};

    fn item(m: Option<Vec<f32>>) -> Item {
        let mut it = Item::new(Value::Mat(Mat::new(2, 3, 1, vec![1, 2, 3, 4, 5, 6])));
        if let Some(m) = m {
            it.set(AFFINE_KEY, Value::Tensor(Tensor::new(vec![m.len()], m)));
        }
        it
    }

    #[test]
    fn a_translation_moves_the_pixels_and_pads_with_zero() {
        let mut b = WarpAffineMat {
            s: WarpAffineSettings { h: 2, w: 3 },
        };
        let mut batch = [item(Some(vec![1.0, 0.0, 1.0, 0.0, 1.0, 0.0]))];
        b.forward(&mut batch).unwrap();
        match &batch[0].result {
            Some(Value::Mat(m)) => assert_eq!(*m.data, [0, 1, 2, 0, 4, 5]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_missing_short_or_singular_matrix_fails_the_item_only() {
        let mut b = WarpAffineMat {
            s: WarpAffineSettings { h: 2, w: 2 },
        };
        let mut batch = [
            item(None),
            item(Some(vec![1.0, 0.0, 0.0])),
            item(Some(vec![1.0, 2.0, 0.0, 2.0, 4.0, 0.0])),
            item(Some(vec![2.0, 0.0, 0.0, 0.0, 2.0, 0.0])),
        ];
        b.forward(&mut batch).unwrap();
        let errors: Vec<_> = batch.iter().map(|i| i.error.clone()).collect();
        assert!(errors[0].as_deref().unwrap().contains("no `affine_matrix`"));
        assert!(errors[1].as_deref().unwrap().contains("has 3 values"));
        assert!(errors[2].as_deref().unwrap().contains("no inverse"));
        assert!(errors[3].is_none() && batch[3].result.is_some());
    }
}
