//! Bilinear resize that reproduces `cv::resize(..., INTER_LINEAR)` on u8 images: the same
//! pixel-centre mapping, the same 11-bit fixed-point weights, the same rounding, and OpenCV's
//! switch to area averaging for an exact 2× reduction. Matching OpenCV's arithmetic instead of
//! computing "true" bilinear values is what keeps our classifier's inputs identical to what the
//! users' Python services feed their models.

use crate::item::{Mat, Tensor};

const COEF_BITS: u32 = 11;
const COEF_SCALE: f32 = (1 << COEF_BITS) as f32;

struct Taps {
    /// The two source pixels (columns or rows) blended.
    first: usize,
    second: usize,
    w0: i32,
    w1: i32,
}

/// OpenCV's `saturate_cast<short>(float)`: round half to even, then clamp.
fn round_coef(v: f32) -> i32 {
    (v.round_ties_even() as i32).clamp(i16::MIN as i32, i16::MAX as i32)
}

/// Horizontal taps move out-of-range positions onto the edge pixel with full weight; vertical
/// ones keep their weights and only clamp the row index — OpenCV treats the axes differently.
fn taps(dst_len: usize, src_len: usize, vertical: bool) -> Vec<Taps> {
    let scale = 1.0 / (dst_len as f64 / src_len as f64);
    (0..dst_len)
        .map(|d| {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let mut s = f.floor() as i64;
            let mut frac = f - s as f32;
            let last = src_len as i64 - 1;
            if vertical {
                // Each row index clamps to the edge on its own; the weights stay.
                return Taps {
                    first: s.clamp(0, last) as usize,
                    second: (s + 1).clamp(0, last) as usize,
                    w0: round_coef((1.0 - frac) * COEF_SCALE),
                    w1: round_coef(frac * COEF_SCALE),
                };
            }
            if s < 0 {
                s = 0;
                frac = 0.0;
            } else if s >= last {
                s = last;
                frac = 0.0;
            }
            Taps {
                first: s as usize,
                second: (s + 1).min(last) as usize,
                w0: round_coef((1.0 - frac) * COEF_SCALE),
                w1: round_coef(frac * COEF_SCALE),
            }
        })
        .collect()
}

/// Resizes to `dst_h`×`dst_w`. Both sizes must be positive.
pub fn resize_bilinear(src: &Mat, dst_h: usize, dst_w: usize) -> Mat {
    if src.height == dst_h && src.width == dst_w {
        return src.clone();
    }
    let row_len = dst_w * src.channels;
    let mut out = vec![0u8; dst_h * row_len];
    resize_rows(src, dst_h, dst_w, |dy, row| {
        out[dy * row_len..(dy + 1) * row_len].copy_from_slice(row)
    });
    Mat::new(dst_h, dst_w, src.channels, out)
}

/// ResizeMat, then cvtColorMat when `swap` (3 channels), then Mat2Tensor, in one pass: each
/// output row goes straight into the CHW f32 planes. The same values as the three steps.
pub fn resize_to_chw(src: &Mat, dst_h: usize, dst_w: usize, swap: bool) -> Tensor {
    let cn = src.channels;
    let plane = dst_h * dst_w;
    let mut out = vec![0f32; plane * cn];
    let swap = swap && cn == 3;
    resize_rows(src, dst_h, dst_w, |dy, row| {
        for c in 0..cn {
            let from = if swap { 2 - c } else { c };
            let dst = &mut out[c * plane + dy * dst_w..c * plane + (dy + 1) * dst_w];
            for (d, px) in dst.iter_mut().zip(row.chunks_exact(cn)) {
                *d = f32::from(px[from]);
            }
        }
    });
    Tensor::new(vec![cn, dst_h, dst_w], out)
}

/// The resize itself: hands each output row (`dst_w × channels` bytes) to `emit`, in order.
fn resize_rows(src: &Mat, dst_h: usize, dst_w: usize, mut emit: impl FnMut(usize, &[u8])) {
    let (sh, sw, cn) = (src.height, src.width, src.channels);
    let row_len = dst_w * cn;
    if sh == dst_h && sw == dst_w {
        for (dy, row) in src.data.chunks_exact(row_len).enumerate() {
            emit(dy, row);
        }
        return;
    }
    if sh == dst_h * 2 && sw == dst_w * 2 {
        return halve(src, emit);
    }
    let xt = taps(dst_w, sw, false);
    let yt = taps(dst_h, sh, true);

    // Horizontal pass, one source row at a time, cached since consecutive output rows share
    // source rows. Three channels (every photo) get a loop the compiler can unroll.
    let hresize = |sy: usize, out: &mut [i32]| {
        let row = &src.data[sy * sw * cn..(sy + 1) * sw * cn];
        if cn == 3 {
            for (o, t) in out.chunks_exact_mut(3).zip(&xt) {
                let a = &row[t.first * 3..t.first * 3 + 3];
                let b = &row[t.second * 3..t.second * 3 + 3];
                o[0] = i32::from(a[0]) * t.w0 + i32::from(b[0]) * t.w1;
                o[1] = i32::from(a[1]) * t.w0 + i32::from(b[1]) * t.w1;
                o[2] = i32::from(a[2]) * t.w0 + i32::from(b[2]) * t.w1;
            }
            return;
        }
        for (o, t) in out.chunks_exact_mut(cn).zip(&xt) {
            let (a, b) = (t.first * cn, t.second * cn);
            for c in 0..cn {
                o[c] = i32::from(row[a + c]) * t.w0 + i32::from(row[b + c]) * t.w1;
            }
        }
    };
    let mut rows = [vec![0i32; row_len], vec![0i32; row_len]];
    let mut cached = [usize::MAX, usize::MAX];
    let mut dst = vec![0u8; row_len];
    for (dy, t) in yt.iter().enumerate() {
        let (s0, s1) = (t.first, t.second);
        if cached[0] != s0 {
            if cached[1] == s0 {
                rows.swap(0, 1);
                cached.swap(0, 1);
            } else {
                hresize(s0, &mut rows[0]);
                cached[0] = s0;
            }
        }
        if cached[1] != s1 {
            if s1 == s0 {
                let (first, second) = rows.split_at_mut(1);
                second[0].copy_from_slice(&first[0]);
            } else {
                hresize(s1, &mut rows[1]);
            }
            cached[1] = s1;
        }
        let (b0, b1) = (t.w0, t.w1);
        for ((d, &r0), &r1) in dst.iter_mut().zip(&rows[0]).zip(&rows[1]) {
            // OpenCV's SIMD vertical pass: 16-bit high multiplies, then a rounding shift by 2.
            let v = (((r0 >> 4) * b0) >> 16) + (((r1 >> 4) * b1) >> 16);
            *d = ((v + 2) >> 2).clamp(0, 255) as u8;
        }
        emit(dy, &dst);
    }
}

/// OpenCV turns INTER_LINEAR at exactly half size into area averaging of 2×2 blocks.
fn halve(src: &Mat, mut emit: impl FnMut(usize, &[u8])) {
    let (dh, dw, cn) = (src.height / 2, src.width / 2, src.channels);
    let stride = src.width * cn;
    let mut out = vec![0u8; dw * cn];
    for y in 0..dh {
        let r0 = &src.data[2 * y * stride..];
        let r1 = &src.data[(2 * y + 1) * stride..];
        for x in 0..dw {
            for c in 0..cn {
                let i = 2 * x * cn + c;
                let sum = u32::from(r0[i])
                    + u32::from(r0[i + cn])
                    + u32::from(r1[i])
                    + u32::from(r1[i + cn]);
                out[x * cn + c] = ((sum + 2) >> 2) as u8;
            }
        }
        emit(y, &out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_image_stays_constant() {
        let src = Mat::new(37, 53, 3, vec![77; 37 * 53 * 3]);
        for (h, w) in [(224, 224), (10, 7), (1, 1), (100, 3)] {
            let out = resize_bilinear(&src, h, w);
            assert_eq!((out.height, out.width), (h, w));
            assert!(out.data.iter().all(|&v| v == 77));
        }
    }

    #[test]
    fn upscale_interpolates_between_neighbours() {
        // 1×2 → 1×4: centres at -0.25, 0.25, 0.75, 1.25 → clamp, 3/4·a+1/4·b, 1/4·a+3/4·b, clamp.
        let src = Mat::new(1, 2, 1, vec![0, 200]);
        let out = resize_bilinear(&src, 1, 4);
        assert_eq!(out.data, [0, 50, 150, 200]);
    }

    #[test]
    fn exact_half_is_area_average() {
        let src = Mat::new(2, 2, 1, vec![1, 2, 3, 5]);
        assert_eq!(resize_bilinear(&src, 1, 1).data, [3]);
    }

    #[test]
    fn the_one_pass_tensor_equals_resize_swap_and_to_chw() {
        let mut x = 7u32;
        for (h, w, dh, dw) in [
            (37, 53, 224, 224),
            (448, 448, 224, 224),
            (224, 224, 224, 224),
            (375, 500, 97, 131),
        ] {
            let data = (0..h * w * 3)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    (x >> 16) as u8
                })
                .collect();
            let src = Mat::new(h, w, 3, data);
            for swap in [false, true] {
                let mut m = resize_bilinear(&src, dh, dw);
                if swap {
                    crate::image::swap_red_blue(&mut m);
                }
                let want = crate::image::to_chw_f32(&m);
                assert_eq!(
                    resize_to_chw(&src, dh, dw, swap),
                    want,
                    "{h}x{w} → {dh}x{dw} swap={swap}"
                );
            }
        }
    }
}
