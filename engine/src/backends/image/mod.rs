//! CPU image backends: DecodeMat, ResizeMat, cvtColorMat, Mat2Tensor.

mod cvt_color_mat;
mod decode_mat;
mod mat2tensor;
mod resize_mat;

use crate::backend::Registry;
use crate::item::{Item, Mat, Value};

pub fn register(r: &mut Registry) {
    r.register("DecodeMat", decode_mat::new);
    r.register("ResizeMat", resize_mat::new);
    // TorchPipe spells it both ways.
    r.register("cvtColorMat", cvt_color_mat::new);
    r.register("CvtColorMat", cvt_color_mat::new);
    r.register("Mat2Tensor", mat2tensor::new);
}

/// Applies `f` to each item's image, failing the items whose data is not one. The image is
/// moved into `f`: the next node reads `result`, so keeping `data` would only cost a copy.
fn for_each_mat(
    batch: &mut [Item],
    backend: &str,
    mut f: impl FnMut(Mat, &mut Item) -> Result<Value, String>,
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
