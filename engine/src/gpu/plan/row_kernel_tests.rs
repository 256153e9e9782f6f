//! kernels.cu's row kernel (LayerNorm, Softmax, LogSoftmax along one axis, one warp per row)
//! run on the host through the warp emulator, against f64: rows shorter and longer than a
//! warp's width many times, contiguous and strided.

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
        let want: Vec<f64> = match kind {
            2 => {
                let mean = v.iter().sum::<f64>() / len as f64;
                let var = v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / len as f64;
                v.iter()
                    .enumerate()
                    .map(|(k, a)| {
                        (a - mean) / (var + 1e-5).sqrt() * scale[k] as f64 + bias[k] as f64
                    })
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
        };
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
