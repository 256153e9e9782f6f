//! kernels.cu's reduce kernel run on the host through the warp emulator, against f64: every
//! kind, each output's threads adjacent or its outputs adjacent, from one thread per output
//! to a whole block, over the spatial axes of an NHWC map (elements far apart, outputs
//! neighbours) and over rows (elements neighbours), the elements along one dim or several, in
//! f32 and fp16.

use super::view::{self, View, REDUCE_BLOCK};
use super::warp_emulator;

const LAUNCHER: &str = r#"
#define REDUCE(T, suffix) \
extern "C" void host_reduce_##suffix(View outer, View inner, View y, const T* x, T* py, \
        int kind, unsigned int outputs, unsigned int group, int adjacent) { \
    unsigned int blocks = (outputs + 256 / group - 1) / (256 / group); \
    for (unsigned int b = 0; b < blocks; b++) \
        run_block({b, 0, 0}, 256, [=] { \
            reduce_##suffix(outer, inner, y, x, py, kind, outputs, group, adjacent); \
        }); \
}
REDUCE(float, float)
REDUCE(unsigned short, half)
"#;

type ReduceFn<T> = unsafe extern "C" fn(View, View, View, *const T, *mut T, i32, u32, u32, i32);

/// kind (plan::ReduceKind's order) of `v` in f64.
fn want(kind: i32, v: &[f64]) -> f64 {
    let n = v.len() as f64;
    match kind {
        0 => v.iter().sum::<f64>() / n,
        1 => v.iter().sum(),
        2 => v.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
        3 => v.iter().cloned().fold(f64::INFINITY, f64::min),
        4 => (v.iter().map(|a| a * a).sum::<f64>() / n).sqrt(),
        5 => v.iter().map(|a| a * a).sum(),
        6 => v.iter().map(|a| a * a).sum::<f64>().sqrt(),
        _ => v.iter().map(|a| a.abs()).sum(),
    }
}

/// The shapes: `[n, h, w, c]` stored row-major, reduced over h and w (`spatial`) or over c.
struct Case {
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    spatial: bool,
}

impl Case {
    /// (outer, inner, y) views and the number of outputs.
    fn views(&self) -> (View, View, View, usize) {
        let (h, w, c) = (self.h as i64, self.w as i64, self.c as i64);
        if self.spatial {
            let outer = View::new(&[self.n, self.c], &[h * w * c, 1], 0).unwrap();
            let inner = View::new(&[self.h, self.w], &[w * c, c], 0).unwrap();
            let y = View::new(&[self.n, self.c], &[c, 1], 0).unwrap();
            (outer, inner, y, self.n * self.c)
        } else {
            let rows = self.n * self.h * self.w;
            let outer = View::new(&[rows], &[c], 0).unwrap();
            let inner = View::new(&[self.c], &[1], 0).unwrap();
            let y = View::new(&[rows], &[1], 0).unwrap();
            (outer, inner, y, rows)
        }
    }

    /// Output `o`'s elements.
    fn elements(&self, x: &[f32], o: usize) -> Vec<f64> {
        let (outer, inner, _, _) = self.views();
        let base = outer.at(o);
        (0..inner.len())
            .map(|j| x[(base + inner.at(j)) as usize] as f64)
            .collect()
    }
}

const CASES: [Case; 4] = [
    // ConvNeXt V2's response norm, small: 2 items of 40 channels over 7 × 7.
    Case {
        n: 2,
        h: 7,
        w: 7,
        c: 40,
        spatial: true,
    },
    // Few outputs of many elements (a normalisation's chunks): 3 of 5,000.
    Case {
        n: 3,
        h: 50,
        w: 100,
        c: 1,
        spatial: true,
    },
    // One row of 49 positions (the reduced dims as view.rs merges them): elements 40 apart.
    Case {
        n: 2,
        h: 1,
        w: 49,
        c: 40,
        spatial: true,
    },
    // Rows: 30 of 197 (a softmax's or a mean's last axis).
    Case {
        n: 2,
        h: 3,
        w: 5,
        c: 197,
        spatial: false,
    },
];

/// One launch of the host-compiled kernel over `case`'s views: the outputs.
fn launch<T: Copy>(
    f: &ReduceFn<T>,
    case: &Case,
    xs: &[T],
    nan: T,
    kind: i32,
    group: usize,
    adjacent: i32,
) -> Vec<T> {
    let (outer, inner, yv, outputs) = case.views();
    let mut y = vec![nan; outputs];
    // SAFETY: `host_reduce_*` as LAUNCHER defines it; the views address inside xs (the case's
    // n·h·w·c elements) and y (`outputs`).
    unsafe {
        f(
            outer,
            inner,
            yv,
            xs.as_ptr(),
            y.as_mut_ptr(),
            kind,
            outputs as u32,
            group as u32,
            adjacent,
        )
    };
    y
}

/// Every kind at every group width (`None`: the engine's choice) and both thread orders;
/// returns the largest error relative to the output's magnitude (at least 1).
fn run<T: Copy>(
    f: &ReduceFn<T>,
    case: &Case,
    x: &[f32],
    store: impl Fn(f32) -> T,
    load: impl Fn(T) -> f32,
    groups: &[Option<usize>],
) -> f64 {
    let xs: Vec<T> = x.iter().map(|&v| store(v)).collect();
    let stored: Vec<f32> = xs.iter().map(|&v| load(v)).collect();
    let inner = case.views().1;
    let mut worst = 0.0f64;
    for kind in 0..8 {
        for &group in groups {
            let group = group.unwrap_or_else(|| view::reduce_group(inner.len()));
            for adjacent in [0, 1] {
                let y = launch(f, case, &xs, store(f32::NAN), kind, group, adjacent);
                for (o, &got) in y.iter().enumerate() {
                    let w = want(kind, &case.elements(&stored, o));
                    let err = (load(got) as f64 - w).abs() / w.abs().max(1.0);
                    assert!(
                        err.is_finite(),
                        "kind {kind} group {group} adjacent {adjacent}: output {o} is {}",
                        load(got)
                    );
                    worst = worst.max(err);
                }
            }
        }
    }
    worst
}

#[test]
fn every_kind_at_every_group_width_matches_f64() {
    let lib = warp_emulator::build("reduce", include_str!("../kernels.cu"), LAUNCHER);
    // SAFETY: the launcher's signature as ReduceFn<f32>.
    let f: libloading::Symbol<ReduceFn<f32>> = unsafe { lib.get(b"host_reduce_float") }.unwrap();
    for (k, case) in CASES.iter().enumerate() {
        let len = case.n * case.h * case.w * case.c;
        let x = warp_emulator::values(len, 11 + k as u64);
        let groups = [Some(1), Some(2), Some(32), Some(REDUCE_BLOCK), None];
        let err = run(&f, case, &x, |v| v, |v| v, &groups);
        assert!(err < 1e-5, "case {k}: error {err}");
    }
}

#[test]
fn fp16_reductions_sum_in_f32() {
    let lib = warp_emulator::build("reduce_half", include_str!("../kernels.cu"), LAUNCHER);
    let h = warp_emulator::Halves::of(&lib);
    // SAFETY: the launcher's signature as ReduceFn<u16>.
    let f: libloading::Symbol<ReduceFn<u16>> = unsafe { lib.get(b"host_reduce_half") }.unwrap();
    // 5,000 values of up to 64: their sum of squares (≈ 6.8 M) is far past fp16's range, its
    // square root (≈ 2,600) is not; one output's error is then only its own rounding.
    let case = &CASES[1];
    let x: Vec<f32> = warp_emulator::values(case.n * case.h * case.w, 5)
        .iter()
        .map(|v| v * 64.0)
        .collect();
    let mut worst = 0.0f64;
    for kind in [0, 4, 6] {
        let xs: Vec<u16> = x.iter().map(|&v| h.to(v)).collect();
        let stored: Vec<f32> = xs.iter().map(|&v| h.from(v)).collect();
        let y = launch(&f, case, &xs, h.to(f32::NAN), kind, REDUCE_BLOCK, 0);
        for (o, &got) in y.iter().enumerate() {
            let w = want(kind, &case.elements(&stored, o));
            worst = worst.max((h.from(got) as f64 - w).abs() / w.abs().max(1.0));
        }
    }
    // fp16's own rounding of the output: 2⁻¹¹ relative.
    assert!(worst < 1e-3, "error {worst}");
}

#[test]
fn group_widths_take_about_32_elements_a_thread() {
    assert_eq!(view::reduce_group(1), 1);
    assert_eq!(view::reduce_group(49), 2);
    assert_eq!(view::reduce_group(3136), 128);
    assert_eq!(view::reduce_group(1 << 20), REDUCE_BLOCK);
}
