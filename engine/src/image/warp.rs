//! A quadrilateral of an image straightened into a rectangle, as OpenCV's
//! `getPerspectiveTransform` then `warpPerspective(..., INTER_LINEAR)` with a constant border of
//! 0 do (TorchPipe's PerspectiveTransformMat, OCR's text-line crops).

use crate::item::Mat;

/// The projective map taking the corners of a `w`×`h` rectangle ((0, 0), (w, 0), (w, h),
/// (0, h)) to `quad`'s four points, in that order: the map a destination pixel is sampled
/// through. `None` when the linear system has no single solution (the points on one line).
pub fn rectangle_to_quad(w: f64, h: f64, quad: &[[f64; 2]; 4]) -> Option<[f64; 9]> {
    let from = [[0.0, 0.0], [w, 0.0], [w, h], [0.0, h]];
    // The eight unknowns h0..h7 of H (h8 = 1): for each pair, u = (h0 x + h1 y + h2) /
    // (h6 x + h7 y + 1) and v = (h3 x + h4 y + h5) / (h6 x + h7 y + 1), linear once multiplied
    // out.
    let mut a = [[0.0f64; 9]; 8];
    for (i, ([x, y], [u, v])) in from.iter().zip(quad).enumerate() {
        a[2 * i] = [*x, *y, 1.0, 0.0, 0.0, 0.0, -x * u, -y * u, *u];
        a[2 * i + 1] = [0.0, 0.0, 0.0, *x, *y, 1.0, -x * v, -y * v, *v];
    }
    // Gaussian elimination with partial pivoting on the augmented 8×9 matrix.
    for col in 0..8 {
        let pivot = (col..8).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        let lead = a[col];
        for (r, row) in a.iter_mut().enumerate() {
            if r != col {
                let f = row[col] / lead[col];
                for (x, l) in row[col..].iter_mut().zip(&lead[col..]) {
                    *x -= f * l;
                }
            }
        }
    }
    let mut m = [1.0; 9];
    for (i, row) in a.iter().enumerate() {
        m[i] = row[8] / row[i];
    }
    m.iter().all(|v| v.is_finite()).then_some(m)
}

/// The map a destination pixel is sampled through for OpenCV's `warpAffine(src, M, ...)`
/// without `WARP_INVERSE_MAP`: `m` (row-major 2×3) takes source points to destination points,
/// so its inverse, as a 3×3 projective map, takes each destination pixel back into the source.
/// `None` when `m` has no inverse or is not finite.
pub fn affine_inverse(m: &[f64; 6]) -> Option<[f64; 9]> {
    let det = m[0] * m[4] - m[1] * m[3];
    if !m.iter().all(|v| v.is_finite()) || det == 0.0 || !det.is_finite() {
        return None;
    }
    let d = 1.0 / det;
    let (a, b, c, e) = (m[4] * d, -m[1] * d, -m[3] * d, m[0] * d);
    let inv = [
        a,
        b,
        -a * m[2] - b * m[5],
        c,
        e,
        -c * m[2] - e * m[5],
        0.0,
        0.0,
        1.0,
    ];
    inv.iter().all(|v| v.is_finite()).then_some(inv)
}

/// `src` sampled through `m` into a `h`×`w` image: each destination pixel (x, y) reads the source
/// at ((m0 x + m1 y + m2) / (m6 x + m7 y + m8), (m3 x + m4 y + m5) / (…)), bilinearly from its
/// four neighbours, a neighbour outside the image counting as 0, rounded to the nearest value.
pub fn warp(src: &Mat, m: &[f64; 9], h: usize, w: usize) -> Mat {
    let c = src.channels;
    let (sw, sh) = (src.width as i64, src.height as i64);
    let mut out = vec![0u8; h * w * c];
    let pixel = |x: i64, y: i64, k: usize| -> f32 {
        if x < 0 || y < 0 || x >= sw || y >= sh {
            0.0
        } else {
            f32::from(src.data[((y * sw + x) as usize) * c + k])
        }
    };
    for y in 0..h {
        for x in 0..w {
            let (xf, yf) = (x as f64, y as f64);
            let d = m[6] * xf + m[7] * yf + m[8];
            let d = if d == 0.0 { 0.0 } else { 1.0 / d };
            let sx = (m[0] * xf + m[1] * yf + m[2]) * d;
            let sy = (m[3] * xf + m[4] * yf + m[5]) * d;
            // Far outside (or not finite): every neighbour is border.
            if !(sx.abs() < 1e9 && sy.abs() < 1e9) {
                continue;
            }
            let (x0, y0) = (sx.floor(), sy.floor());
            let (ax, ay) = ((sx - x0) as f32, (sy - y0) as f32);
            let (x0, y0) = (x0 as i64, y0 as i64);
            for k in 0..c {
                let top = pixel(x0, y0, k) * (1.0 - ax) + pixel(x0 + 1, y0, k) * ax;
                let bottom = pixel(x0, y0 + 1, k) * (1.0 - ax) + pixel(x0 + 1, y0 + 1, k) * ax;
                let v = top * (1.0 - ay) + bottom * ay;
                out[(y * w + x) * c + k] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    Mat::new(h, w, c, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_axis_aligned_quad_is_a_crop() {
        let src = Mat::new(4, 5, 1, (0..20).collect());
        let quad = [[1.0, 1.0], [4.0, 1.0], [4.0, 3.0], [1.0, 3.0]];
        let m = rectangle_to_quad(3.0, 2.0, &quad).unwrap();
        let out = warp(&src, &m, 2, 3);
        assert_eq!(*out.data, [6, 7, 8, 11, 12, 13]);
    }

    #[test]
    fn the_affine_inverse_undoes_the_map() {
        let m = [0.8, -0.3, 12.5, 0.25, 1.1, -4.0];
        let inv = affine_inverse(&m).unwrap();
        for (x, y) in [(0.0, 0.0), (10.0, 3.0), (-7.5, 40.0)] {
            let (u, v) = (m[0] * x + m[1] * y + m[2], m[3] * x + m[4] * y + m[5]);
            assert!((inv[0] * u + inv[1] * v + inv[2] - x).abs() < 1e-9);
            assert!((inv[3] * u + inv[4] * v + inv[5] - y).abs() < 1e-9);
        }
        assert!(affine_inverse(&[1.0, 2.0, 0.0, 2.0, 4.0, 0.0]).is_none());
        assert!(affine_inverse(&[f64::NAN, 0.0, 0.0, 0.0, 1.0, 0.0]).is_none());
    }

    #[test]
    fn the_map_takes_each_corner_to_its_point() {
        let quad = [[10.0, 5.0], [40.0, 8.0], [38.0, 30.0], [12.0, 25.0]];
        let m = rectangle_to_quad(30.0, 20.0, &quad).unwrap();
        for ([x, y], [u, v]) in [[0.0, 0.0], [30.0, 0.0], [30.0, 20.0], [0.0, 20.0]]
            .iter()
            .zip(&quad)
        {
            let d = m[6] * x + m[7] * y + m[8];
            assert!(((m[0] * x + m[1] * y + m[2]) / d - u).abs() < 1e-9);
            assert!(((m[3] * x + m[4] * y + m[5]) / d - v).abs() < 1e-9);
        }
        let line = [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]];
        assert!(rectangle_to_quad(3.0, 2.0, &line).is_none());
    }
}
