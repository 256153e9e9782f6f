//! kernels.cu's tiled transpose (view::transpose) through the warp emulator (its blocks meet at
//! `__syncthreads`): the copies it takes, in the storage order view::map gives them, against
//! the element-by-element copy.

use super::view::{self, MapLaunch, View};
use super::warp_emulator;
use super::{Binary, Unary};

const LAUNCHER: &str = r#"
extern "C" void host_transpose(View outer, View outer_y, const float* a, float* y,
        unsigned int d0, unsigned int d1, long long a0, long long a1, long long y0, long long y1,
        unsigned int tiles0, unsigned int tiles1, unsigned int blocks) {
    for (unsigned int b = 0; b < blocks; b++)
        run_block({b, 0, 0}, 256, [=] {
            transpose_float(outer, outer_y, a, y, d0, d1, a0, a1, y0, y1, tiles0, tiles1);
        });
}
"#;

type TransposeFn = unsafe extern "C" fn(
    View,
    View,
    *const f32,
    *mut f32,
    u32,
    u32,
    i64,
    i64,
    i64,
    i64,
    u32,
    u32,
    u32,
);

/// A copy over `dims` (storage order of the destination) reading `a` strides, writing `y`.
fn copy(dims: &[usize], a: &[i64], y: &[i64]) -> MapLaunch {
    let (a, y) = (
        View::new(dims, a, 0).unwrap(),
        View::new(dims, y, 0).unwrap(),
    );
    MapLaunch {
        a,
        b: a,
        c: a,
        has_c: false,
        y,
        linear: 0,
        vec: 1,
        binary: Binary::First,
        unary: Unary::Identity,
        p0: 0.0,
        p1: 0.0,
    }
}

fn check(lib: &libloading::Library, l: &MapLaunch) {
    let t = view::transpose(l).expect("a transpose");
    let len = l.y.len();
    let src: Vec<f32> = (0..len).map(|i| i as f32).collect();
    let mut want = vec![f32::NAN; len];
    for i in 0..len {
        want[l.y.at(i) as usize] = src[l.a.at(i) as usize];
    }
    let mut got = vec![f32::NAN; len];
    // SAFETY: `host_transpose` as LAUNCHER defines it; the views address `len` elements.
    unsafe {
        let f: libloading::Symbol<TransposeFn> = lib.get(b"host_transpose").unwrap();
        f(
            t.outer,
            t.outer_y,
            src.as_ptr(),
            got.as_mut_ptr(),
            t.d0,
            t.d1,
            t.a0,
            t.a1,
            t.y0,
            t.y1,
            t.tiles0,
            t.tiles1,
            t.blocks() as u32,
        )
    };
    assert_eq!(got, want, "{t:?}");
}

#[test]
fn copies_that_transpose_run_in_tiles_and_match_the_elementwise_copy() {
    let lib = warp_emulator::build("transpose", include_str!("../kernels.cu"), LAUNCHER);
    let (c, h, w) = (116usize, 9usize, 9usize);
    // NHWC → NCHW, [2, 116, 9, 9] (destination order n, c, h, w).
    check(
        &lib,
        &copy(
            &[2, c, h, w],
            &[(c * h * w) as i64, 1, (w * c) as i64, c as i64],
            &[(c * h * w) as i64, (h * w) as i64, w as i64, 1],
        ),
    );
    // NCHW → NHWC, 40 channels (destination order n, h, w, c).
    let c2 = 40usize;
    check(
        &lib,
        &copy(
            &[2, h, w, c2],
            &[(c2 * h * w) as i64, w as i64, 1, (h * w) as i64],
            &[(c2 * h * w) as i64, (w * c2) as i64, c2 as i64, 1],
        ),
    );
    // ShuffleNet's shuffle, first half: NHWC [n, 116, h, w] read as [n, 58, 2, h, w] (channel
    // j·58 + i), written row-major.
    let hw = (h * w) as i64;
    check(
        &lib,
        &copy(
            &[2, 58, 2, h, w],
            &[(c * h * w) as i64, 1, 58, (w * c) as i64, c as i64],
            &[(c * h * w) as i64, 2 * hw, hw, w as i64, 1],
        ),
    );
    // Large enough for several tiles along both dims and partial ones at the edges.
    check(&lib, &copy(&[3, 70, 45], &[3150, 1, 70], &[3150, 45, 1]));
}

#[test]
fn only_strided_plain_copies_become_transposes() {
    let dense = copy(&[2, 8, 8], &[64, 8, 1], &[64, 8, 1]);
    assert!(view::transpose(&dense).is_none());
    let mut scaled = copy(&[2, 64, 64], &[4096, 1, 64], &[4096, 64, 1]);
    assert!(view::transpose(&scaled).is_some());
    scaled.unary = Unary::Relu;
    assert!(view::transpose(&scaled).is_none());
    // Too narrow a tile: 3 along the destination's dense dim.
    let narrow = copy(&[2, 64, 3], &[192, 1, 64], &[192, 3, 1]);
    assert!(view::transpose(&narrow).is_none());
}
