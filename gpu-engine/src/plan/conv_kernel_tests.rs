//! The convolution kernels of `kernels.cu` that run beside cuDNN (the depthwise kernels, the
//! split epilogue), compiled for the host and checked against a direct convolution written
//! here, with fp32 and fp16 storage (the 16-byte chunks are 4 and 8 elements).

use super::host_kernels::HostKernels;
use super::view::{chunked_epilogue, depthwise_nhwc_threads, View};
use super::Unary;

/// One depthwise convolution over NHWC `[n, h, w, c]`.
#[derive(Clone, Copy, Debug)]
struct Case {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    k: [usize; 2],
    s: usize,
    p: usize,
    d: usize,
    act: Unary,
    residual: bool,
}

impl Case {
    fn out(&self) -> [usize; 2] {
        let o = |i: usize, k: usize| (i + 2 * self.p - self.d * (k - 1) - 1) / self.s + 1;
        [o(self.h, self.k[0]), o(self.w, self.k[1])]
    }
}

#[rustfmt::skip]
const CASES: [Case; 6] = [
    // MobileNet's 3×3, stride 1 and 2; a width that is not a multiple of the row tile.
    Case { n: 2, c: 16, h: 9, w: 7, k: [3, 3], s: 1, p: 1, d: 1, act: Unary::Clip, residual: false },
    Case { n: 1, c: 24, h: 10, w: 11, k: [3, 3], s: 2, p: 1, d: 1, act: Unary::Relu, residual: false },
    // EfficientNet's 5×5 stride 2 with SiLU; ConvNeXt's 7×7 with a residual.
    Case { n: 2, c: 8, h: 9, w: 9, k: [5, 5], s: 2, p: 2, d: 1, act: Unary::Swish, residual: false },
    Case { n: 1, c: 32, h: 8, w: 13, k: [7, 7], s: 1, p: 3, d: 1, act: Unary::Identity, residual: true },
    // Dilation, and a non-square window without padding.
    Case { n: 1, c: 8, h: 9, w: 10, k: [3, 3], s: 1, p: 2, d: 2, act: Unary::HardSwish, residual: true },
    Case { n: 3, c: 8, h: 6, w: 5, k: [1, 3], s: 1, p: 0, d: 1, act: Unary::Sigmoid, residual: false },
];

fn act(u: Unary, x: f32) -> f32 {
    super::reference::unary(u, x, 0.0, 6.0)
}

fn values(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0 - 1.0)
        .collect()
}

/// The convolution as its definition reads: y[b, oy, ox, c] over NHWC, weights `[C, kh, kw]`.
fn direct(t: &Case, x: &[f32], w: &[f32], bias: &[f32], z: &[f32]) -> Vec<f32> {
    let [oh, ow] = t.out();
    let mut y = vec![0f32; t.n * oh * ow * t.c];
    for b in 0..t.n {
        for oy in 0..oh {
            for ox in 0..ow {
                for ch in 0..t.c {
                    let mut acc = bias[ch];
                    for ky in 0..t.k[0] {
                        for kx in 0..t.k[1] {
                            let yy = (oy * t.s + ky * t.d) as isize - t.p as isize;
                            let xx = (ox * t.s + kx * t.d) as isize - t.p as isize;
                            if yy < 0 || xx < 0 || yy >= t.h as isize || xx >= t.w as isize {
                                continue;
                            }
                            let xi = ((b * t.h + yy as usize) * t.w + xx as usize) * t.c + ch;
                            acc += x[xi] * w[(ch * t.k[0] + ky) * t.k[1] + kx];
                        }
                    }
                    let yi = ((b * oh + oy) * ow + ox) * t.c + ch;
                    if t.residual {
                        acc += z[yi];
                    }
                    y[yi] = act(t.act, acc);
                }
            }
        }
    }
    y
}

/// Storage of one precision: f32 as is, or f16 words.
trait Elem: Copy {
    const NAME: &'static str;
    fn from(v: f32) -> Self;
    fn to(self) -> f32;
}

impl Elem for f32 {
    const NAME: &'static str = "float";
    fn from(v: f32) -> f32 {
        v
    }
    fn to(self) -> f32 {
        self
    }
}

impl Elem for u16 {
    const NAME: &'static str = "half";
    fn from(v: f32) -> u16 {
        half::f16::from_f32(v).to_bits()
    }
    fn to(self) -> f32 {
        half::f16::from_bits(self).to_f32()
    }
}

fn store<T: Elem>(v: &[f32]) -> Vec<T> {
    v.iter().map(|&x| T::from(x)).collect()
}

fn load<T: Elem>(v: &[T]) -> Vec<f32> {
    v.iter().map(|&x| x.to()).collect()
}

/// The largest difference relative to the largest reference value; infinite where an output
/// was left unwritten (NaN) or is not finite.
fn max_rel_err(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    got.iter()
        .zip(want)
        .map(|(g, w)| {
            if g.is_finite() {
                (g - w).abs() / scale
            } else {
                f32::INFINITY
            }
        })
        .fold(0f32, f32::max)
}

type DwNhwcFn<T> = unsafe extern "C" fn(
    *const T,
    *const f32,
    *const f32,
    *const T,
    *mut T,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    f32,
    f32,
    u32,
);
type DwFn<T> = unsafe extern "C" fn(
    View,
    View,
    *const T,
    *const f32,
    *const f32,
    *const T,
    *mut T,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    f32,
    f32,
    u32,
);

/// Runs `t` on the NHWC kernel and on the strided one; both must match `direct` on the
/// rounded inputs.
fn depthwise_case<T: Elem>(k: &HostKernels, t: &Case, tol: f32) {
    let [oh, ow] = t.out();
    let taps = t.k[0] * t.k[1];
    // Inputs rounded to the storage precision first, so the reference sees what the kernel
    // does; filters and bias are f32 in both precisions.
    let round = |v: Vec<f32>| load::<T>(&store::<T>(&v));
    let x = round(values(t.n * t.h * t.w * t.c, 1));
    let w: Vec<f32> = values(t.c * taps, 2).iter().map(|v| v * 0.5).collect();
    let bias = values(t.c, 3);
    let z = round(values(t.n * oh * ow * t.c, 4));
    let want = direct(t, &x, &w, &bias, &z);
    // The taps transposed to [kh, kw, C], as upload_weights writes them.
    let wt: Vec<f32> = (0..taps * t.c)
        .map(|i| w[(i % t.c) * taps + i / t.c])
        .collect();
    let (xs, ws, wts, bs, zs) = (store::<T>(&x), &w, &wt, &bias, store::<T>(&z));
    let i = |v: usize| v as i32;
    let (act, has_z) = (t.act as i32, t.residual as i32);
    let chunk = 16 / std::mem::size_of::<T>();

    let mut y = vec![T::from(f32::NAN); want.len()];
    let name = format!("depthwise_nhwc_{}", T::NAME);
    // SAFETY: the kernel's signature as kernels.cu declares it (DwNhwcFn).
    let f: libloading::Symbol<DwNhwcFn<T>> = unsafe { k.lib.get(name.as_bytes()) }.unwrap();
    let threads = depthwise_nhwc_threads(t.n, t.c, oh, ow, chunk);
    let py = y.as_mut_ptr();
    k.grid(threads, || {
        // SAFETY: dense NHWC buffers of the case's sizes; the kernel stays inside them.
        unsafe {
            f(
                xs.as_ptr(),
                wts.as_ptr(),
                bs.as_ptr(),
                zs.as_ptr(),
                py,
                i(t.c),
                i(t.h),
                i(t.w),
                i(oh),
                i(ow),
                i(t.k[0]),
                i(t.k[1]),
                i(t.s),
                i(t.s),
                i(t.p),
                i(t.p),
                i(t.d),
                i(t.d),
                act,
                has_z,
                0.0,
                6.0,
                threads as u32,
            )
        }
    });
    let err = max_rel_err(&load(&y), &want);
    assert!(err <= tol, "{name} {t:?}: max error {err}");

    let mut y = vec![T::from(f32::NAN); want.len()];
    let name = format!("depthwise_{}", T::NAME);
    // SAFETY: as above (DwFn).
    let f: libloading::Symbol<DwFn<T>> = unsafe { k.lib.get(name.as_bytes()) }.unwrap();
    let nhwc = |n: usize, c: usize, h: usize, w: usize| {
        View::new(
            &[n, c, h, w],
            &[(h * w * c) as i64, 1, (w * c) as i64, c as i64],
            0,
        )
        .unwrap()
    };
    let (xv, yv) = (nhwc(t.n, t.c, t.h, t.w), nhwc(t.n, t.c, oh, ow));
    let py = y.as_mut_ptr();
    k.grid(want.len(), || {
        // SAFETY: as above; the views address the same dense buffers.
        unsafe {
            f(
                xv,
                yv,
                xs.as_ptr(),
                ws.as_ptr(),
                bs.as_ptr(),
                zs.as_ptr(),
                py,
                i(t.k[0]),
                i(t.k[1]),
                i(t.s),
                i(t.s),
                i(t.p),
                i(t.p),
                i(t.d),
                i(t.d),
                act,
                has_z,
                1,
                0.0,
                6.0,
                want.len() as u32,
            )
        }
    });
    let err = max_rel_err(&load(&y), &want);
    assert!(err <= tol, "{name} {t:?}: max error {err}");
}

#[test]
fn the_depthwise_kernels_compute_the_convolution() {
    let k = HostKernels::load();
    for t in &CASES {
        depthwise_case::<f32>(&k, t, 1e-6);
        // fp16 storage: the output's rounding (2⁻¹¹ relative) plus a little.
        depthwise_case::<u16>(&k, t, 2e-3);
    }
}

type BiasActFn<T> =
    unsafe extern "C" fn(*mut T, *const T, *const T, i64, i32, i32, i32, f32, f32, i32, i32);

fn epilogue_case<T: Elem>(k: &HostKernels, n: usize, cout: usize, hw: usize, nhwc: bool) {
    for with_bias in [true, false] {
        epilogue_run::<T>(k, n, cout, hw, nhwc, with_bias);
    }
}

fn epilogue_run<T: Elem>(
    k: &HostKernels,
    n: usize,
    cout: usize,
    hw: usize,
    nhwc: bool,
    with_bias: bool,
) {
    let chunk = 16 / std::mem::size_of::<T>();
    assert!(chunked_epilogue(cout, hw, nhwc, chunk));
    let len = n * cout * hw;
    let round = |v: Vec<f32>| load::<T>(&store::<T>(&v));
    let (y0, z, bias) = (
        round(values(len, 5)),
        round(values(len, 6)),
        round(values(cout, 7)),
    );
    let want: Vec<f32> = (0..len)
        .map(|i| {
            let ch = if nhwc { i % cout } else { (i / hw) % cout };
            let b = if with_bias { bias[ch] } else { 0.0 };
            act(Unary::Swish, y0[i] + b + z[i])
        })
        .collect();
    let (mut ys, zs, bs) = (store::<T>(&y0), store::<T>(&z), store::<T>(&bias));
    let name = format!("bias_act_chunk_{}", T::NAME);
    // SAFETY: the kernel's signature as kernels.cu declares it (BiasActFn).
    let f: libloading::Symbol<BiasActFn<T>> = unsafe { k.lib.get(name.as_bytes()) }.unwrap();
    let py = ys.as_mut_ptr();
    let hw_arg = if nhwc { 1 } else { hw as i32 };
    k.grid(len / chunk, || {
        // SAFETY: y and z hold `len` elements, bias `cout`.
        unsafe {
            f(
                py,
                zs.as_ptr(),
                bs.as_ptr(),
                len as i64,
                cout as i32,
                hw_arg,
                Unary::Swish as i32,
                0.0,
                0.0,
                1,
                with_bias as i32,
            )
        }
    });
    let err = max_rel_err(&load(&ys), &want);
    assert!(
        err <= 2e-3,
        "{name} nhwc {nhwc} bias {with_bias}: max error {err}"
    );
}

#[test]
fn the_chunked_epilogue_adds_bias_and_residual_per_channel_in_both_layouts() {
    let k = HostKernels::load();
    epilogue_case::<f32>(&k, 2, 12, 5, true);
    epilogue_case::<u16>(&k, 2, 16, 5, true);
    epilogue_case::<f32>(&k, 2, 3, 8, false);
    epilogue_case::<u16>(&k, 1, 5, 16, false);
    // Where a chunk would straddle two channels the plain kernel runs.
    assert!(!chunked_epilogue(12, 5, true, 8));
    assert!(!chunked_epilogue(3, 12, false, 8));
}
