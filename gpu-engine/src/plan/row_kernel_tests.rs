//! kernels.cu's row kernel (LayerNorm, Softmax, LogSoftmax along one axis, one warp per row)
//! run on the host through the warp emulator, against f64: rows shorter and longer than a
//! warp's width many times, contiguous and strided; and the dense kernel (rows held in
//! registers by groups of lanes) in f32 and fp16, at every chunk count and group width.

use super::view::View;
use super::warp_emulator;

const LAUNCHER: &str = r#"
extern "C" void host_rows(View xv, View yv, const float* x, float* y, int len, long long xs,
        long long ys, int kind, const float* scale, const float* bias, int has_bias, float eps,
        unsigned int rows) {
    // The engine's launch: 8 warps per block, one row per warp.
    for (unsigned int b = 0; b < (rows + 7) / 8; b++)
        run_block({b, 0, 0}, 256, [=] {
            row_float(xv, yv, x, y, len, xs, ys, kind, scale, bias, has_bias, eps, rows);
        });
}

// The engine's dense launch: `rows · g` threads in blocks of 256.
#define DENSE(T, suffix) \
extern "C" void host_dense_##suffix(View xv, View yv, const T* x, T* y, int len, int g, \
        int chunks, int kind, const T* scale, const T* bias, float eps, unsigned int rows) { \
    unsigned int threads = rows * g; \
    for (unsigned int b = 0; b < (threads + 255) / 256; b++) \
        run_block({b, 0, 0}, 256, [=] { \
            switch (chunks) { \
            case 1: row_dense1_##suffix(xv, yv, x, y, len, g, kind, scale, bias, 1, eps, rows); break; \
            case 2: row_dense2_##suffix(xv, yv, x, y, len, g, kind, scale, bias, 1, eps, rows); break; \
            case 3: row_dense3_##suffix(xv, yv, x, y, len, g, kind, scale, bias, 1, eps, rows); break; \
            default: row_dense4_##suffix(xv, yv, x, y, len, g, kind, scale, bias, 1, eps, rows); \
            } \
        }); \
}
DENSE(float, float)
DENSE(unsigned short, half)
"#;

type RowsFn = unsafe extern "C" fn(
    View,
    View,
    *const f32,
    *mut f32,
    i32,
    i64,
    i64,
    i32,
    *const f32,
    *const f32,
    i32,
    f32,
    u32,
);

/// `kind` (0 softmax, 1 log-softmax, 2 layer norm) over `rows` rows of `len`, element `k` of
/// row `r` at `r · row + k · step`; returns the largest error against f64.
fn rows(lib: &libloading::Library, kind: i32, rows: usize, len: usize, step: usize) -> f64 {
    let row = len * step;
    let x: Vec<f32> = warp_emulator::values(rows * row, 3)
        .iter()
        .map(|v| v * 4.0)
        .collect();
    let scale: Vec<f32> = warp_emulator::values(len, 5)
        .iter()
        .map(|v| v + 1.5)
        .collect();
    let bias = warp_emulator::values(len, 9);
    let mut y = vec![f32::NAN; rows * row];
    let view = View::new(&[rows], &[row as i64], 0).unwrap();
    // SAFETY: `host_rows` as LAUNCHER defines it; rows · row elements in x and y, len in
    // scale and bias.
    unsafe {
        let f: libloading::Symbol<RowsFn> = lib.get(b"host_rows").unwrap();
        f(
            view,
            view,
            x.as_ptr(),
            y.as_mut_ptr(),
            len as i32,
            step as i64,
            step as i64,
            kind,
            scale.as_ptr(),
            bias.as_ptr(),
            1,
            1e-5,
            rows as u32,
        )
    };
    let mut worst = 0f64;
    for r in 0..rows {
        let v: Vec<f64> = (0..len).map(|k| x[r * row + k * step] as f64).collect();
        let want = want_row(kind, &v, &scale, &bias);
        for (k, w) in want.iter().enumerate() {
            let got = y[r * row + k * step] as f64;
            assert!(
                got.is_finite(),
                "kind {kind} len {len}: row {r} element {k} is {got}"
            );
            worst = worst.max((got - w).abs() / w.abs().max(1.0));
        }
    }
    worst
}

#[test]
fn rows_of_any_length_match_f64() {
    let lib = warp_emulator::build("rows", include_str!("../kernels.cu"), LAUNCHER);
    // 96 (ConvNeXt's first LayerNorm), 197 (ViT's scores), 768 (ViT's LayerNorm), 1500; some
    // strided; 11 rows leave a block's last warps without a row.
    for (len, step) in [(96, 1), (96, 3), (197, 1), (768, 1), (1500, 1), (1500, 2)] {
        for kind in [0, 1, 2] {
            let err = rows(&lib, kind, 11, len, step);
            assert!(err < 1e-5, "kind {kind} len {len} step {step}: error {err}");
        }
    }
}

type DenseFn<T> = unsafe extern "C" fn(
    View,
    View,
    *const T,
    *mut T,
    i32,
    i32,
    i32,
    i32,
    *const T,
    *const T,
    f32,
    u32,
);

/// The f64 answer for row `v` (kind as `rows`).
fn want_row(kind: i32, v: &[f64], scale: &[f32], bias: &[f32]) -> Vec<f64> {
    let len = v.len() as f64;
    match kind {
        2 => {
            let mean = v.iter().sum::<f64>() / len;
            let var = v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / len;
            v.iter()
                .enumerate()
                .map(|(k, a)| (a - mean) / (var + 1e-5).sqrt() * scale[k] as f64 + bias[k] as f64)
                .collect()
        }
        _ => {
            let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = v.iter().map(|a| (a - m).exp()).sum();
            v.iter()
                .map(|a| {
                    if kind == 1 {
                        a - m - s.ln()
                    } else {
                        (a - m).exp() / s
                    }
                })
                .collect()
        }
    }
}

/// The dense kernel over `rows` rows of `len` (rows `pitch` elements apart) in f32 (`half`
/// false) or fp16; returns the launch shape and the largest error against f64 on the values
/// the kernel was given. Elements between rows must stay untouched.
fn dense(
    lib: &libloading::Library,
    half: bool,
    kind: i32,
    rows: usize,
    len: usize,
    pitch: usize,
) -> ((usize, usize), f64) {
    use super::view::{row_dense_shape, RowLaunch};
    let x: Vec<f32> = warp_emulator::values(rows * pitch, 3)
        .iter()
        .map(|v| v * 4.0)
        .collect();
    let scale: Vec<f32> = warp_emulator::values(len, 5)
        .iter()
        .map(|v| v + 1.5)
        .collect();
    let bias = warp_emulator::values(len, 9);
    let view = View::new(&[rows], &[pitch as i64], 0).unwrap();
    let launch = RowLaunch {
        x: view,
        y: view,
        len,
        x_stride: 1,
        y_stride: 1,
    };
    let esize = if half { 2 } else { 4 };
    let (chunks, group) = row_dense_shape(&launch, esize)
        .unwrap_or_else(|| panic!("len {len} pitch {pitch}: not dense"));
    let args = (len as i32, group as i32, chunks as i32, kind);
    // What the kernel sees: fp16 inputs are rounded first, so the reference is taken on them.
    let (xs, ys): (Vec<f32>, Vec<f32>) = if half {
        let h = warp_emulator::Halves::of(lib);
        let hx: Vec<u16> = x.iter().map(|v| h.to(*v)).collect();
        let hs: Vec<u16> = scale.iter().map(|v| h.to(*v)).collect();
        let hb: Vec<u16> = bias.iter().map(|v| h.to(*v)).collect();
        let mut hy = vec![h.to(7.0); rows * pitch];
        // SAFETY: `host_dense_half` as LAUNCHER defines it; rows · pitch elements in x and y,
        // len in scale and bias.
        unsafe {
            let f: libloading::Symbol<DenseFn<u16>> = lib.get(b"host_dense_half").unwrap();
            f(
                view,
                view,
                hx.as_ptr(),
                hy.as_mut_ptr(),
                args.0,
                args.1,
                args.2,
                args.3,
                hs.as_ptr(),
                hb.as_ptr(),
                1e-5,
                rows as u32,
            )
        };
        (
            hx.iter().map(|v| h.from(*v)).collect(),
            hy.iter().map(|v| h.from(*v)).collect(),
        )
    } else {
        let mut y = vec![7.0f32; rows * pitch];
        // SAFETY: as above, for `host_dense_float`.
        unsafe {
            let f: libloading::Symbol<DenseFn<f32>> = lib.get(b"host_dense_float").unwrap();
            f(
                view,
                view,
                x.as_ptr(),
                y.as_mut_ptr(),
                args.0,
                args.1,
                args.2,
                args.3,
                scale.as_ptr(),
                bias.as_ptr(),
                1e-5,
                rows as u32,
            )
        };
        (x.clone(), y)
    };
    let (scale, bias) = if half {
        let h = warp_emulator::Halves::of(lib);
        (
            scale.iter().map(|v| h.from(h.to(*v))).collect::<Vec<_>>(),
            bias.iter().map(|v| h.from(h.to(*v))).collect::<Vec<_>>(),
        )
    } else {
        (scale, bias)
    };
    let mut worst = 0f64;
    for r in 0..rows {
        let v: Vec<f64> = (0..len).map(|k| xs[r * pitch + k] as f64).collect();
        for (k, w) in want_row(kind, &v, &scale, &bias).iter().enumerate() {
            let got = ys[r * pitch + k] as f64;
            assert!(
                got.is_finite(),
                "kind {kind} len {len}: row {r} element {k} is {got}"
            );
            worst = worst.max((got - w).abs() / w.abs().max(1.0));
        }
        for k in len..pitch {
            assert_eq!(ys[r * pitch + k], 7.0, "len {len}: row {r} gap {k} written");
        }
    }
    ((chunks, group), worst)
}

#[test]
fn dense_rows_match_f64_at_every_shape() {
    let lib = warp_emulator::build("rows_dense", include_str!("../kernels.cu"), LAUNCHER);
    // f32 chunks are 4 elements: lengths giving groups of 1, 2, 8 (lanes idle), 32 and 1 to 4
    // chunks per lane; fp16 chunks are 8: ConvNeXt's 96 and 768, ViT's 768.
    let cases = [
        (false, 4, 8, (1, 1)),
        (false, 8, 8, (1, 2)),
        (false, 20, 24, (1, 8)),
        (false, 96, 96, (1, 32)),
        (false, 200, 204, (2, 32)),
        (false, 384, 384, (3, 32)),
        (false, 512, 516, (4, 32)),
        (true, 96, 104, (1, 16)),
        (true, 768, 768, (3, 32)),
        (true, 1024, 1024, (4, 32)),
    ];
    for (half, len, pitch, shape) in cases {
        for kind in [0, 1, 2] {
            let (got, err) = dense(&lib, half, kind, 11, len, pitch);
            assert_eq!(got, shape, "half {half} len {len}: launch shape");
            // fp16 output rounding alone is 2^-11 relative.
            let tol = if half { 1.5e-3 } else { 1e-5 };
            assert!(err < tol, "half {half} kind {kind} len {len}: error {err}");
        }
    }
}

#[test]
fn strided_or_misaligned_rows_take_the_strided_kernel() {
    use super::view::{row_dense_shape, RowLaunch};
    let l = |len: usize, pitch: i64, offset: i64, stride: i64| RowLaunch {
        x: View::new(&[4], &[pitch], offset).unwrap(),
        y: View::new(&[4], &[pitch], 0).unwrap(),
        len,
        x_stride: stride,
        y_stride: 1,
    };
    assert_eq!(row_dense_shape(&l(768, 768, 0, 1), 2), Some((3, 32)));
    for (launch, esize, why) in [
        (l(768, 768, 0, 2), 2, "strided"),
        (l(768, 772, 0, 1), 2, "rows off a chunk"),
        (l(768, 768, 4, 1), 2, "offset off a chunk"),
        (l(197, 197, 0, 1), 2, "not whole chunks"),
        (l(1032, 1032, 0, 1), 2, "longer than 128 chunks"),
        (l(768, 768, 0, 1), 4, "f32: 192 chunks"),
    ] {
        assert_eq!(row_dense_shape(&launch, esize), None, "{why}");
    }
}
