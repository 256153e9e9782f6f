//! Image kernels shared by the CPU backends and the baseline server: decode, resize, channel
//! order, HWC u8 → CHW f32, perspective warp. Pure functions; the backends add configuration around them.

#[cfg(feature = "opencv")]
pub mod cv;
mod decode;
mod error;
pub mod jpeg_end;
mod resize;
mod turbo;
pub mod warp;

/// What the backends call: the pure-Rust kernels by default, OpenCV's with the `opencv` feature.
/// Fallible throughout, since OpenCV's calls can fail where ours cannot.
pub mod active {
    #[cfg(feature = "opencv")]
    pub use super::cv::{decode_bgr, resize, swap_red_blue};
    #[cfg(not(feature = "opencv"))]
    pub use super::decode_bgr;

    #[cfg(not(feature = "opencv"))]
    pub fn resize(
        src: &crate::item::Mat,
        dst_h: usize,
        dst_w: usize,
    ) -> Result<crate::item::Mat, super::ImageError> {
        Ok(super::resize_bilinear(src, dst_h, dst_w))
    }

    #[cfg(not(feature = "opencv"))]
    pub fn swap_red_blue(mut mat: crate::item::Mat) -> Result<crate::item::Mat, super::ImageError> {
        super::swap_red_blue(&mut mat);
        Ok(mat)
    }
}

pub use decode::{decode_bgr, DEFAULT_MAX_PIXELS};
pub use error::ImageError;
pub use resize::{resize_bilinear, resize_to_chw};

use crate::item::{Mat, Tensor};

/// BGR ↔ RGB (the same swap both ways) on a 3-channel image, in place.
pub fn swap_red_blue(mat: &mut Mat) {
    if mat.channels == 3 {
        for px in mat.data_mut().chunks_exact_mut(3) {
            px.swap(0, 2);
        }
    }
}

/// HWC u8 → CHW f32 with values 0..=255, as TorchPipe's Mat2Tensor (normalisation belongs to
/// the model backend, which folds `mean`/`std` in).
pub fn to_chw_f32(mat: &Mat) -> Tensor {
    let (h, w, c) = (mat.height, mat.width, mat.channels);
    let plane = h * w;
    let mut out = vec![0f32; plane * c];
    for (i, px) in mat.data.chunks_exact(c).enumerate() {
        for (ch, &v) in px.iter().enumerate() {
            out[ch * plane + i] = f32::from(v);
        }
    }
    Tensor::new(vec![c, h, w], out)
}

/// `(x - mean[c]) * inv_std[c]` in place on planes of `plane` values, channel `c` = plane index
/// modulo the channel count (so a whole `[N, C, H, W]` batch works as well as one item).
pub fn normalise_planes(data: &mut [f32], plane: usize, mean: &[f32], inv_std: &[f32]) {
    let channels = mean.len().min(inv_std.len()).max(1);
    for (i, chunk) in data.chunks_mut(plane.max(1)).enumerate() {
        let c = i % channels;
        let (m, s) = (mean[c], inv_std[c]);
        chunk.iter_mut().for_each(|v| *v = (*v - m) * s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chw_layout_and_swap() {
        let mut m = Mat::new(1, 2, 3, vec![1, 2, 3, 4, 5, 6]);
        let t = to_chw_f32(&m);
        assert_eq!(t.shape, [3, 1, 2]);
        assert_eq!(t.data, [1., 4., 2., 5., 3., 6.]);
        swap_red_blue(&mut m);
        assert_eq!(*m.data, [3, 2, 1, 6, 5, 4]);
    }
}
