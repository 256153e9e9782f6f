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
        let at = dy * dst_w;
        if cn == 3 {
            // One walk over the row filling the three planes (the common case: photos).
            let (first, rest) = out.split_at_mut(plane);
            let (second, third) = rest.split_at_mut(plane);
            let (p0, p1, p2) = (
                &mut first[at..at + dst_w],
                &mut second[at..at + dst_w],
                &mut third[at..at + dst_w],
            );
            let (i0, i2) = if swap { (2, 0) } else { (0, 2) };
            for (x, px) in row.chunks_exact(3).enumerate().take(dst_w) {
                p0[x] = f32::from(px[i0]);
                p1[x] = f32::from(px[1]);
                p2[x] = f32::from(px[i2]);
            }
            return;
        }
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
    // source rows. Three channels (every photo) get a loop the compiler can unroll. A value
    // (at most 255 × 2048) is kept shifted right by 4, as OpenCV's vertical pass first does:
    // that fits 16 bits, so the vertical pass below runs as 16-bit multiplies.
    let hresize = |sy: usize, out: &mut [i16]| {
        let row = &src.data[sy * sw * cn..(sy + 1) * sw * cn];
        let h = |a: u8, b: u8, t: &Taps| ((i32::from(a) * t.w0 + i32::from(b) * t.w1) >> 4) as i16;
        if cn == 3 {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: SSE2 is part of x86_64; `hresize3_sse2` checks every access's bounds.
            let done = unsafe { hresize3_sse2(row, &xt, out) };
            #[cfg(not(target_arch = "x86_64"))]
            let done = 0;
            for (o, t) in out[done * 3..].chunks_exact_mut(3).zip(&xt[done..]) {
                let a = &row[t.first * 3..t.first * 3 + 3];
                let b = &row[t.second * 3..t.second * 3 + 3];
                o[0] = h(a[0], b[0], t);
                o[1] = h(a[1], b[1], t);
                o[2] = h(a[2], b[2], t);
            }
            return;
        }
        for (o, t) in out.chunks_exact_mut(cn).zip(&xt) {
            let (a, b) = (t.first * cn, t.second * cn);
            for c in 0..cn {
                o[c] = h(row[a + c], row[b + c], t);
            }
        }
    };
    let mut rows = [vec![0i16; row_len], vec![0i16; row_len]];
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
        vertical(&rows[0], &rows[1], t.w0 as i16, t.w1 as i16, &mut dst);
        emit(dy, &dst);
    }
}

/// The horizontal pass for 3 channels, one output pixel per step: the two source pixels' bytes
/// interleaved and multiplied by the weight pair in one `pmaddwd`, then shifted as the scalar
/// loop does. It reads 4 bytes per source pixel and writes 4 values per output pixel (the 4th
/// is the next pixel's, written over on the next step), so it stops before either would run
/// past the end; the scalar loop finishes the row. Returns the pixels done.
///
/// # Safety
/// None beyond x86_64's SSE2, which every x86_64 CPU has; the bounds are checked inside.
#[cfg(target_arch = "x86_64")]
unsafe fn hresize3_sse2(row: &[u8], xt: &[Taps], out: &mut [i16]) -> usize {
    use std::arch::x86_64::*;
    // SAFETY: SSE2 is part of x86_64; each step reads 4 bytes at p0 and p1 and writes 4 values
    // at x·3 only after checking all three lie inside their slices.
    unsafe {
        let zero = _mm_setzero_si128();
        let mut x = 0;
        while x < xt.len() {
            let t = &xt[x];
            let (p0, p1) = (t.first * 3, t.second * 3);
            if p0 + 4 > row.len() || p1 + 4 > row.len() || x * 3 + 4 > out.len() {
                break;
            }
            let a = _mm_cvtsi32_si128(std::ptr::read_unaligned(row.as_ptr().add(p0) as *const i32));
            let b = _mm_cvtsi32_si128(std::ptr::read_unaligned(row.as_ptr().add(p1) as *const i32));
            // a0 b0 a1 b1 a2 b2 a3 b3 as 16-bit lanes, times (w0, w1) pairs.
            let ab = _mm_unpacklo_epi8(_mm_unpacklo_epi8(a, b), zero);
            let w = _mm_set1_epi32((t.w1 << 16) | (t.w0 & 0xffff));
            let sum = _mm_srai_epi32(_mm_madd_epi16(ab, w), 4);
            _mm_storel_epi64(
                out.as_mut_ptr().add(x * 3) as *mut __m128i,
                _mm_packs_epi32(sum, sum),
            );
            x += 1;
        }
        x
    }
}

/// OpenCV's vertical pass: 16-bit high multiplies of the two rows by their weights, then a
/// rounding shift by 2. Weights are 0..=2048 and row values at most 32,640, so each high
/// product is at most 1,020 and the sum stays in 16 bits.
fn vertical(r0: &[i16], r1: &[i16], b0: i16, b1: i16, dst: &mut [u8]) {
    let n = dst.len().min(r0.len()).min(r1.len());
    #[cfg(target_arch = "x86_64")]
    let done = {
        let simd = n - n % 16;
        // SAFETY: SSE2 is part of x86_64; every access is below `simd` ≤ each slice's length.
        unsafe { vertical_sse2(&r0[..simd], &r1[..simd], b0, b1, &mut dst[..simd]) };
        simd
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    let (b0, b1) = (i32::from(b0), i32::from(b1));
    for i in done..n {
        let v0 = ((i32::from(r0[i]) * b0) >> 16) as i16;
        let v1 = ((i32::from(r1[i]) * b1) >> 16) as i16;
        dst[i] = ((v0 + v1 + 2) >> 2).clamp(0, 255) as u8;
    }
}

/// `vertical` 16 values at a time.
///
/// # Safety
/// `dst.len()` is a multiple of 16 and `r0`, `r1` hold at least `dst.len()` values.
#[cfg(target_arch = "x86_64")]
unsafe fn vertical_sse2(r0: &[i16], r1: &[i16], b0: i16, b1: i16, dst: &mut [u8]) {
    use std::arch::x86_64::*;
    // SAFETY: SSE2 is part of x86_64; the loads and stores stay below `dst.len()`, within every
    // slice as the caller promises.
    unsafe {
        let (w0, w1, two) = (_mm_set1_epi16(b0), _mm_set1_epi16(b1), _mm_set1_epi16(2));
        let eight = |r: &[i16], i: usize| _mm_loadu_si128(r.as_ptr().add(i) as *const __m128i);
        let mut i = 0;
        while i < dst.len() {
            let lo = _mm_add_epi16(
                _mm_mulhi_epi16(eight(r0, i), w0),
                _mm_mulhi_epi16(eight(r1, i), w1),
            );
            let hi = _mm_add_epi16(
                _mm_mulhi_epi16(eight(r0, i + 8), w0),
                _mm_mulhi_epi16(eight(r1, i + 8), w1),
            );
            let lo = _mm_srai_epi16(_mm_add_epi16(lo, two), 2);
            let hi = _mm_srai_epi16(_mm_add_epi16(hi, two), 2);
            _mm_storeu_si128(
                dst.as_mut_ptr().add(i) as *mut __m128i,
                _mm_packus_epi16(lo, hi),
            );
            i += 16;
        }
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
        assert_eq!(*out.data, [0, 50, 150, 200]);
    }

    #[test]
    fn exact_half_is_area_average() {
        let src = Mat::new(2, 2, 1, vec![1, 2, 3, 5]);
        assert_eq!(*resize_bilinear(&src, 1, 1).data, [3]);
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
