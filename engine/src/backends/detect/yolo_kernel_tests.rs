//! The GPU pass of PostProcYoloV8 (gpu-engine/src/detect_kernels.cu's `yolo_candidates`)
//! compiled for the host with the system C++ compiler and run thread by thread over its whole
//! grid, blocks in reverse order so that its records come back out of anchor order as they may
//! on a GPU: its candidates, read back as the backend reads them (`from_records`), must equal
//! the host pass's (`candidates`) value for value, and a head holding a value that is not
//! finite must raise its flag. The device run checks the kernel on the GPU.

use std::path::{Path, PathBuf};

use super::{from_records, PostProcYoloV8, YoloSettings};
use crate::backends::detect::output::Thresholds;
use crate::item::Tensor;

#[path = "../../../tests/common/host_cxx.rs"]
mod host_cxx;

/// What detect_kernels.cu takes from CUDA, after host_cxx's prelude.
const PRELUDE: &str = r#"
#define DETECT_HOST
static inline float h2f(unsigned short u) { _Float16 h; std::memcpy(&h, &u, 2); return (float)h; }
static inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
static inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
// The grid runs one thread after another, so a plain read-modify-write is atomic here.
static inline unsigned atomicAdd(unsigned* p, unsigned v) { unsigned o = *p; *p = o + v; return o; }
static inline unsigned atomicOr(unsigned* p, unsigned v) { unsigned o = *p; *p = o | v; return o; }
"#;

/// Reads `channels anchors conf-bits` and the f32 head on stdin; runs the grid, blocks last to
/// first; writes the header and the records written to stdout.
const MAIN: &str = r#"
int main() {
    int c, a;
    unsigned bits;
    if (scanf("%d %d %u\n", &c, &a, &bits) != 3) return 2;
    float conf;
    std::memcpy(&conf, &bits, 4);
    std::vector<float> head((size_t)c * a);
    if (fread(head.data(), 4, head.size(), stdin) != head.size()) return 3;
    std::vector<unsigned> out(8 + (size_t)a * 7, 0xDEADBEEFu);
    for (int i = 0; i < 8; i++) out[i] = 0;
    blockDim.x = 256;
    unsigned blocks = (a + 255) / 256;
    for (unsigned b = 0; b < blocks; b++) {
        blockIdx.x = blocks - 1 - b;
        for (threadIdx.x = 0; threadIdx.x < 256; threadIdx.x++)
            yolo_candidates(head.data(), c, a, conf, out.data());
    }
    size_t n = out[0] < (unsigned)a ? out[0] : (unsigned)a;
    fwrite(out.data(), 4, 8 + n * 7, stdout);
    return 0;
}
"#;

fn compile() -> PathBuf {
    host_cxx::compile_program(
        "yolo-kernel",
        PRELUDE,
        "gpu-engine/src/detect_kernels.cu",
        MAIN,
    )
}

/// The kernel's header and records for `head` ([channels, anchors]).
fn run(exe: &Path, head: &[f32], channels: usize, conf: f32) -> Vec<u32> {
    let anchors = head.len() / channels;
    let header = format!("{channels} {anchors} {}", conf.to_bits());
    let bytes: Vec<u8> = head.iter().flat_map(|v| v.to_le_bytes()).collect();
    host_cxx::run_program(exe, &header, &bytes)
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn backend(classes: usize, conf: f32) -> PostProcYoloV8 {
    PostProcYoloV8 {
        s: YoloSettings {
            t: Thresholds {
                classes: Some(classes),
                conf,
                iou: 0.7,
                max_det: 300,
            },
        },
        #[cfg(feature = "cuda")]
        gpu: None,
        #[cfg(feature = "cuda")]
        stage: Default::default(),
    }
}

/// A head of `anchors` anchors: boxes in 0..640, scores from `score(seed)`.
fn head(classes: usize, anchors: usize, mut score: impl FnMut(u64) -> f32) -> Vec<f32> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut h = Vec::with_capacity((4 + classes) * anchors);
    for _ in 0..4 * anchors {
        h.push((next() % 64_000) as f32 / 100.0);
    }
    for _ in 0..classes * anchors {
        h.push(score(next()));
    }
    h
}

/// The kernel's candidates against the host pass's, for one head.
fn same_candidates(exe: &Path, h: &[f32], classes: usize, conf: f32) -> usize {
    let out = run(exe, h, 4 + classes, conf);
    assert_eq!(out[1], 0, "a finite head raised the flag");
    let gpu = from_records(&out[8..]);
    let t = Tensor::new(vec![4 + classes, h.len() / (4 + classes)], h.to_vec());
    let host = backend(classes, conf).candidates(&t).unwrap();
    assert_eq!(out[0] as usize, host.len());
    assert_eq!(gpu, host);
    host.len()
}

#[test]
fn the_gpu_pass_picks_the_host_passs_candidates() {
    let exe = compile();
    // YOLOv8's head at 640: 80 classes, 8,400 anchors, scores from 0 to 1.
    let yolo = head(80, 8400, |r| (r % 10_000) as f32 / 10_000.0);
    assert!(same_candidates(&exe, &yolo, 80, 0.25) > 0);
    // A trained head's scores are mostly low: a few anchors above the threshold.
    let sparse = head(80, 8400, |r| ((r % 10_000) as f32 / 10_000.0).powi(40));
    assert!(same_candidates(&exe, &sparse, 80, 0.5) < 8400);
    // Scores on a grid of eighths: ties between classes everywhere, the first class wins.
    let ties = head(5, 1000, |r| (r % 9) as f32 / 8.0);
    assert!(same_candidates(&exe, &ties, 5, 0.5) > 0);
    // Nothing above the threshold.
    assert_eq!(same_candidates(&exe, &head(3, 700, |_| 0.1), 3, 0.25), 0);
    // Everything above it, across a block boundary.
    assert_eq!(same_candidates(&exe, &head(2, 257, |_| 0.9), 2, 0.25), 257);
    // One anchor, one class.
    assert_eq!(same_candidates(&exe, &head(1, 1, |_| 0.9), 1, 0.25), 1);
}

#[test]
fn a_head_with_a_value_that_is_not_finite_raises_the_flag() {
    let exe = compile();
    for (at, bad) in [
        (4 * 300 + 17, f32::NAN),
        (5, f32::INFINITY),
        (900, -f32::INFINITY),
    ] {
        let mut h = head(3, 300, |r| (r % 100) as f32 / 100.0);
        h[at] = bad;
        let out = run(&exe, &h, 7, 0.25);
        assert_eq!(out[1], 1, "{bad} at {at} did not raise the flag");
    }
}
