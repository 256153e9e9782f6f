//! CPU image backends: DecodeMat, ResizeMat, LetterBoxMat, TopLeftResizeMat, ResizePadMat,
//! CropMat, PerspectiveTransformMat, WarpAffineMat, cvtColorMat, Mat2Tensor.

mod crop_mat;
mod cvt_color_mat;
mod decode_mat;
mod letterbox_mat;
mod mat2tensor;
mod perspective_mat;
mod resize_mat;
mod resize_pad_mat;
mod warp_affine_mat;

// The settings are public for `server --baseline`, which runs these steps by hand.
// For CropTensor, LetterBoxTensor and ResizePadTensor, in a build with the GPU module.
#[cfg_attr(not(feature = "cuda"), allow(unused_imports))]
pub(crate) use crop_mat::{crop_rect, item_box};
pub use cvt_color_mat::CvtColorMatSettings;
pub use decode_mat::DecodeMatSettings;
pub(crate) use letterbox_mat::LetterBoxSettings;
#[cfg_attr(not(feature = "cuda"), allow(unused_imports))]
pub(crate) use letterbox_mat::{fit, remember};
pub use resize_mat::ResizeMatSettings;
pub(crate) use resize_mat::{resize_side, RESIZE_KEYS};
#[cfg_attr(not(feature = "cuda"), allow(unused_imports))]
pub(crate) use resize_pad_mat::resized_size;
pub(crate) use resize_pad_mat::ResizePadSettings;
#[cfg_attr(not(feature = "cuda"), allow(unused_imports))]
pub(crate) use warp_affine_mat::item_affine;
pub(crate) use warp_affine_mat::WarpAffineSettings;

use crate::backend::Registry;
use crate::config::Params;
use crate::error::ConfigError;
use crate::item::{Item, Mat, Value};

/// A colour backend's `color` key: `rgb` → true, `bgr` → false, `None` when absent. `what`
/// ends the error's "expected" text (what the key means to this backend).
pub(crate) fn color_key(p: &Params, what: &str) -> Result<Option<bool>, ConfigError> {
    p.one_of(
        "color",
        &[("rgb", true), ("bgr", false)],
        format!("`rgb` or `bgr`, {what}"),
    )
}

/// The `color` key's declaration where it is required (cvtColorMat, cvtColorTensor).
pub(crate) const REQUIRED_COLOR: crate::backend::Key = crate::backend::key(
    "color",
    "`rgb` or `bgr`",
    "required",
    "the channel order written",
);

/// The same key where the backend cannot do without it (cvtColorMat, cvtColorTensor).
pub(crate) fn required_color(p: &Params, what: &str) -> Result<bool, ConfigError> {
    color_key(p, what)?.ok_or_else(|| p.error("color", "", format!("`rgb` or `bgr`, {what}")))
}

pub fn register(r: &mut Registry) {
    r.register_typed("DecodeMat", decode_mat::new);
    r.register_typed("ResizeMat", resize_mat::new);
    r.register_typed("LetterBoxMat", letterbox_mat::letterbox);
    r.register_typed("TopLeftResizeMat", letterbox_mat::top_left);
    r.register_typed("ResizePadMat", resize_pad_mat::new);
    r.register("CropMat", crop_mat::new, &[]);
    r.register("PerspectiveTransformMat", perspective_mat::new, &[]);
    r.register_typed("WarpAffineMat", warp_affine_mat::new);
    // TorchPipe spells it both ways.
    r.register_typed("cvtColorMat", cvt_color_mat::new);
    r.register_typed("CvtColorMat", cvt_color_mat::new);
    r.register("Mat2Tensor", mat2tensor::new, &[]);
}

/// Applies `f` to each item's image and box (`_box`), failing with `backend`'s name the items
/// that lack either or that `f` refuses (CropMat, PerspectiveTransformMat).
fn for_each_boxed_mat(
    batch: &mut [Item],
    backend: &str,
    mut f: impl FnMut(&Mat, &[f32]) -> Result<Value, String>,
) {
    for item in batch {
        let out = match (&item.data, item_box(item)) {
            (Value::Mat(m), Ok(b)) => f(m, b),
            (_, Err(e)) => Err(e),
            (other, _) => Err(format!(
                "expects an image (Mat) as data, got {}",
                other.kind()
            )),
        };
        match out {
            Ok(v) => item.result = Some(v),
            Err(e) => item.fail(format!("{backend}: {e}")),
        }
    }
}

/// Applies `f` to each item's image, failing the items whose data is not one. The image is
/// moved into `f`: the next node reads `result`, so keeping `data` would only cost a copy.
fn for_each_mat(
    batch: &mut [Item],
    backend: &str,
    mut f: impl FnMut(Mat, &mut Item) -> Result<Value, crate::image::ImageError>,
) {
    for item in batch {
        match std::mem::take(&mut item.data) {
            Value::Mat(mat) => match f(mat, item) {
                Ok(out) => item.result = Some(out),
                Err(e) => item.fail(format!("{backend}: {e}")),
            },
            other => {
                let kind = other.kind();
                item.data = other;
                item.fail(format!(
                    "{backend} expects an image (Mat) as data, got {kind}"
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::item::{Item, Mat, Value};
    use crate::Registry;

    fn build(backend: &str) -> Box<dyn crate::Backend> {
        let toml = format!(
            "[n]\nbackend = \"{backend}\"\nresize_h = 61\nresize_w = 45\ncolor = \"rgb\"\n"
        );
        let config = Config::parse(&toml, std::path::Path::new("t.toml")).unwrap();
        Registry::with_defaults()
            .build_detached(&config.nodes[0])
            .unwrap()
    }

    fn item(seed: u32) -> Item {
        let mut x = seed;
        let data = (0..97 * 131 * 3)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (x >> 16) as u8
            })
            .collect();
        Item::new(Value::Mat(Mat::new(97, 131, 3, data)))
    }

    /// The seed's `Sequential[ResizeMat,cvtColorMat,Mat2Tensor]` runs as one fused pass; it must
    /// give what the three backends give one after the other, colour extra included.
    #[test]
    fn the_fused_preprocessing_equals_the_three_steps() {
        let mut fused = build("Sequential[ResizeMat,cvtColorMat,Mat2Tensor]");
        let mut steps = ["ResizeMat", "cvtColorMat", "Mat2Tensor"].map(build);
        for bgr_in in [true, false] {
            let mut a = vec![item(1), item(2)];
            let mut b = a.clone();
            if !bgr_in {
                for it in a.iter_mut().chain(b.iter_mut()) {
                    it.extras.insert("color".into(), Value::Text("rgb".into()));
                }
            }
            fused.forward(&mut a).unwrap();
            for s in &mut steps {
                s.forward(&mut b).unwrap();
                for it in b.iter_mut() {
                    it.data = it.result.take().unwrap();
                }
            }
            for (x, y) in a.iter().zip(&b) {
                match (&x.result, &y.data) {
                    (Some(Value::Tensor(t)), Value::Tensor(u)) => assert_eq!(t, u),
                    other => panic!("{other:?}"),
                }
                assert!(
                    matches!(x.extras.get("color"), Some(Value::Text(c)) if c == "rgb"),
                    "{:?}",
                    x.extras
                );
            }
        }
    }
}
