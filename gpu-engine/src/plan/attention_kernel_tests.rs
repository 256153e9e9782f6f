//! `attention.cu` run on the host through the warp emulator (its mma.sync and shuffles
//! emulated by real threads, the fragment layouts as the PTX ISA defines them): the kernel's
//! own code against an f64 reference — tiling, masking, the online softmax, strided views.

use super::warp_emulator::{self, Halves};
use super::HeadView;

/// As kernels.rs compiles it for the GPU: attention.cu after kernels.cu.
const SOURCE: &str = concat!(
    include_str!("../kernels.cu"),
    include_str!("../attention.cu")
);

const LAUNCHER: &str = r#"
typedef void (*Entry)(const unsigned short*, const unsigned short*, const unsigned short*,
    unsigned short*, Heads, Heads, Heads, Heads, int, int, float);

extern "C" int host_attention(int d, const unsigned short* q, const unsigned short* k,
        const unsigned short* v, unsigned short* o, Heads qv, Heads kv, Heads vv, Heads ov,
        int lq, int lk, float scale_log2, unsigned int heads, unsigned int n) {
    Entry f = d == 16 ? attention_d16 : d == 32 ? attention_d32 : d == 64 ? attention_d64
        : d == 128 ? attention_d128 : nullptr;
    if (!f) return 1;
    const unsigned int gx = (unsigned int)(lq + ATT_BQ - 1) / ATT_BQ;
    for (unsigned int z = 0; z < n; z++)
        for (unsigned int y = 0; y < heads; y++)
            for (unsigned int x = 0; x < gx; x++)
                run_block({x, y, z}, ATT_THREADS, [=] {
                    f(q, k, v, o, qv, kv, vv, ov, lq, lk, scale_log2);
                });
    return 0;
}
"#;

#[repr(C)]
#[derive(Clone, Copy)]
struct Heads {
    offset: i64,
    batch: i64,
    head: i64,
    row: i64,
}

impl From<&HeadView> for Heads {
    fn from(h: &HeadView) -> Heads {
        Heads {
            offset: h.offset,
            batch: h.batch,
            head: h.head,
            row: h.row,
        }
    }
}

type Entry = unsafe extern "C" fn(
    i32,
    *const u16,
    *const u16,
    *const u16,
    *mut u16,
    Heads,
    Heads,
    Heads,
    Heads,
    i32,
    i32,
    f32,
    u32,
    u32,
) -> i32;

/// One attention as ViT lays it out: q, k, v read from one packed projection `[n, l, 3·h·d]`
/// (q at 0, k at h·d, v at 2·h·d; head `i` at `i·d`), the output written token-major `[n, l,
/// h, d]`. Returns the largest error relative to the largest output magnitude.
fn packed(n: usize, heads: usize, l: usize, d: usize, gain: f32) -> f64 {
    let lib = warp_emulator::build("attention", SOURCE, LAUNCHER);
    let h = Halves::of(&lib);
    let (to_half, from_half) = (|x: f32| h.to(x), |x: u16| h.from(x));
    let e = heads * d;
    let row = 3 * e;
    let qkv: Vec<u16> = warp_emulator::values(n * l * row, 7)
        .iter()
        .map(|v| to_half(v * gain))
        .collect();
    let view = |at: usize, rs: usize, item: usize| HeadView {
        value: 0,
        offset: at as i64,
        batch: item as i64,
        head: d as i64,
        row: rs as i64,
    };
    let (q, k, v) = (
        view(0, row, l * row),
        view(e, row, l * row),
        view(2 * e, row, l * row),
    );
    let o = view(0, e, l * e);
    let mut out = vec![0u16; n * l * e];
    let alpha = 1.0 / (d as f32).sqrt();
    // SAFETY: `host_attention` as LAUNCHER defines it; the views stay inside the buffers.
    let rc = unsafe {
        let f: libloading::Symbol<Entry> = lib.get(b"host_attention").unwrap();
        f(
            d as i32,
            qkv.as_ptr(),
            qkv.as_ptr(),
            qkv.as_ptr(),
            out.as_mut_ptr(),
            (&q).into(),
            (&k).into(),
            (&v).into(),
            (&o).into(),
            l as i32,
            l as i32,
            alpha * std::f32::consts::LOG2_E,
            heads as u32,
            n as u32,
        )
    };
    assert_eq!(rc, 0);
    let at = |x: &HeadView, b: usize, h: usize, i: usize, j: usize| {
        (x.offset + b as i64 * x.batch + h as i64 * x.head + i as i64 * x.row) as usize + j
    };
    let (mut worst, mut largest) = (0f64, 0f64);
    for b in 0..n {
        for h in 0..heads {
            for i in 0..l {
                let s: Vec<f64> = (0..l)
                    .map(|j| {
                        (0..d)
                            .map(|c| {
                                from_half(qkv[at(&q, b, h, i, c)]) as f64
                                    * from_half(qkv[at(&k, b, h, j, c)]) as f64
                            })
                            .sum::<f64>()
                            * alpha as f64
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let p: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let sum: f64 = p.iter().sum();
                for c in 0..d {
                    let want: f64 = (0..l)
                        .map(|j| p[j] * from_half(qkv[at(&v, b, h, j, c)]) as f64)
                        .sum::<f64>()
                        / sum;
                    let got = from_half(out[at(&o, b, h, i, c)]) as f64;
                    assert!(got.is_finite(), "item {b} head {h} row {i} col {c}: {got}");
                    worst = worst.max((got - want).abs());
                    largest = largest.max(want.abs());
                }
            }
        }
    }
    worst / largest
}

#[test]
fn attention_over_partial_tiles_and_several_heads_matches_f64() {
    // 70 rows: two query blocks (the second of 6 rows) and two key tiles (the second of 6
    // keys, 58 masked); scores large enough that the running maximum moves between tiles.
    let err = packed(2, 2, 70, 16, 3.0);
    assert!(err < 4e-3, "relative error {err}");
}

#[test]
fn attention_of_vit_b_16_shape_matches_f64() {
    // One head of ViT-B/16: 197 tokens of 64.
    let err = packed(1, 1, 197, 64, 1.0);
    assert!(err < 4e-3, "relative error {err}");
}
