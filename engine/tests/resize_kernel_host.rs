//! The GPU resize kernels (gpu-engine/src/image_kernels.cu) compiled for the host with the
//! system C++ compiler, with the CUDA intrinsics they use mapped to the same IEEE operations:
//! their output must equal the CPU path's bit for bit: resize_to_chw that of resize_bilinear,
//! channel swap, CHW f32; canvas_to_chw that of LetterBoxMat / ResizePadMat, cvtColorMat and
//! Mat2Tensor; warp_affine_hwc that of WarpAffineMat.
//! This checks the kernel's arithmetic on every machine; the device run checks it on the GPU.

mod common;
#[path = "common/host_cxx.rs"]
mod host_cxx;

use std::path::{Path, PathBuf};

use engine::image::{decode_bgr, resize_bilinear, swap_red_blue, to_chw_f32, DEFAULT_MAX_PIXELS};
use engine::Mat;

/// The intrinsics the resize kernels use, after host_cxx's prelude.
const PRELUDE: &str = r#"
static inline double __ddiv_rn(double a, double b) { return a / b; }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline double __dsub_rn(double a, double b) { return a - b; }
static inline float __double2float_rn(double a) { return (float)a; }
"#;

/// Reads `sh sw dh dw swap` and the HWC pixels on stdin, runs the kernel's whole grid for one
/// job, writes the CHW f32 output to stdout.
const MAIN: &str = r#"
int main() {
    int sh, sw, dh, dw, swap;
    if (scanf("%d %d %d %d %d\n", &sh, &sw, &dh, &dw, &swap) != 5) return 2;
    std::vector<unsigned char> src((size_t)sh * sw * 3);
    if (fread(src.data(), 1, src.size(), stdin) != src.size()) return 3;
    std::vector<float> dst((size_t)3 * dh * dw, -1.0f);
    Job job = {src.data(), dst.data(), sh, sw, swap, 0};
    blockDim.x = 256;
    blockIdx.y = 0;
    unsigned blocks = (dh * dw + 255) / 256;
    for (blockIdx.x = 0; blockIdx.x < blocks; blockIdx.x++)
        for (threadIdx.x = 0; threadIdx.x < 256; threadIdx.x++)
            resize_to_chw(&job, dh, dw);
    fwrite(dst.data(), sizeof(float), dst.size(), stdout);
    return 0;
}
"#;

/// Reads `sh sw ch cw nh nw top left swap pad0 pad1 pad2` and the HWC pixels on stdin, runs
/// the canvas kernel's whole grid for one job, writes the CHW f32 canvas to stdout.
const MAIN_CANVAS: &str = r#"
int main() {
    int sh, sw, ch, cw, nh, nw, top, left, swap, p0, p1, p2;
    if (scanf("%d %d %d %d %d %d %d %d %d %d %d %d\n", &sh, &sw, &ch, &cw, &nh, &nw, &top,
              &left, &swap, &p0, &p1, &p2) != 12) return 2;
    std::vector<unsigned char> src((size_t)sh * sw * 3);
    if (fread(src.data(), 1, src.size(), stdin) != src.size()) return 3;
    std::vector<float> dst((size_t)3 * ch * cw, -1.0f);
    CanvasJob job = {src.data(), dst.data(), sh, sw, nh, nw, top, left, swap, {p0, p1, p2}};
    blockDim.x = 256;
    blockIdx.y = 0;
    unsigned blocks = (ch * cw + 255) / 256;
    for (blockIdx.x = 0; blockIdx.x < blocks; blockIdx.x++)
        for (threadIdx.x = 0; threadIdx.x < 256; threadIdx.x++)
            canvas_to_chw(&job, ch, cw);
    fwrite(dst.data(), sizeof(float), dst.size(), stdout);
    return 0;
}
"#;

/// Reads `sh sw h w` and the six numbers of the sampling map, then the HWC pixels on stdin,
/// runs the affine warp kernel's whole grid for one job, writes the HWC u8 output to stdout.
const MAIN_WARP: &str = r#"
int main() {
    int sh, sw, h, w;
    double m[6];
    if (scanf("%d %d %d %d %lf %lf %lf %lf %lf %lf\n", &sh, &sw, &h, &w, &m[0], &m[1], &m[2],
              &m[3], &m[4], &m[5]) != 10) return 2;
    std::vector<unsigned char> src((size_t)sh * sw * 3);
    if (fread(src.data(), 1, src.size(), stdin) != src.size()) return 3;
    std::vector<unsigned char> dst((size_t)h * w * 3, 7);
    WarpJob job = {src.data(), dst.data(), sh, sw, {m[0], m[1], m[2], m[3], m[4], m[5]}};
    blockDim.x = 256;
    blockIdx.y = 0;
    unsigned blocks = (h * w + 255) / 256;
    for (blockIdx.x = 0; blockIdx.x < blocks; blockIdx.x++)
        for (threadIdx.x = 0; threadIdx.x < 256; threadIdx.x++)
            warp_affine_hwc(&job, h, w);
    fwrite(dst.data(), 1, dst.size(), stdout);
    return 0;
}
"#;

fn compile() -> PathBuf {
    compile_with(MAIN, "resize-kernel-host")
}

fn compile_with(main: &str, name: &str) -> PathBuf {
    host_cxx::compile_program(name, PRELUDE, "gpu-engine/src/image_kernels.cu", main)
}

fn run_kernel(exe: &Path, src: &Mat, dh: usize, dw: usize, swap: bool) -> Vec<f32> {
    let header = format!("{} {} {dh} {dw} {}", src.height, src.width, swap as i32);
    run_exe(exe, &header, src)
}

/// Runs a compiled kernel program: `header` and the image's pixels in, the f32 output back.
fn run_exe(exe: &Path, header: &str, src: &Mat) -> Vec<f32> {
    run_exe_bytes(exe, header, src)
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// As `run_exe`, the output's bytes as they come.
fn run_exe_bytes(exe: &Path, header: &str, src: &Mat) -> Vec<u8> {
    host_cxx::run_program(exe, header, &src.data)
}

fn cpu(src: &Mat, dh: usize, dw: usize, swap: bool) -> Vec<f32> {
    let mut m = resize_bilinear(src, dh, dw);
    if swap {
        swap_red_blue(&mut m);
    }
    to_chw_f32(&m).data
}

/// A deterministic noisy image with edges (xorshift), so rounding differences would show.
fn noise(h: usize, w: usize, seed: u64) -> Mat {
    let mut x = seed | 1;
    let data = (0..h * w * 3)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if (i / 3 / w / 7 + i / 3 % w / 5).is_multiple_of(2) {
                (x % 256) as u8
            } else {
                (x % 16) as u8 * 16
            }
        })
        .collect();
    Mat::new(h, w, 3, data)
}

#[test]
fn the_gpu_resize_kernel_matches_the_cpu_resize_bit_for_bit() {
    let exe = compile();
    let mut cases: Vec<(String, Mat)> = vec![
        ("noise 375x500".into(), noise(375, 500, 1)),
        ("noise 37x53 (upscale)".into(), noise(37, 53, 2)),
        ("noise 448x448 (exact half)".into(), noise(448, 448, 3)),
        ("noise 224x224 (same size)".into(), noise(224, 224, 4)),
        ("noise 1x1".into(), noise(1, 1, 5)),
        ("noise 10000x1".into(), noise(10000, 1, 6)),
        ("noise 427x640".into(), noise(427, 640, 7)),
    ];
    for path in common::test_images() {
        let bytes = std::fs::read(&path).unwrap();
        let mat = decode_bgr(&bytes, DEFAULT_MAX_PIXELS).unwrap();
        cases.push((path.file_name().unwrap().to_string_lossy().into(), mat));
    }
    for (name, src) in &cases {
        for (dh, dw, swap) in [(224, 224, true), (224, 224, false), (97, 131, true)] {
            let want = cpu(src, dh, dw, swap);
            let got = run_kernel(&exe, src, dh, dw, swap);
            assert_eq!(got.len(), want.len(), "{name}");
            let differ = got.iter().zip(&want).filter(|(a, b)| a != b).count();
            assert_eq!(
                differ, 0,
                "{name} → {dh}x{dw} swap={swap}: {differ} values differ from the CPU resize"
            );
        }
    }
}

/// Where LetterBoxMat puts an `h`×`w` image on a `ch`×`cw` canvas (its `fit`): the resized
/// size, rounded half away from zero, and the centred corner.
fn letterbox_fit(h: usize, w: usize, ch: usize, cw: usize) -> (usize, usize, usize, usize) {
    let scale = (cw as f64 / w as f64).min(ch as f64 / h as f64);
    let nh = ((h as f64 * scale).round() as usize).clamp(1, ch);
    let nw = ((w as f64 * scale).round() as usize).clamp(1, cw);
    (nh, nw, (ch - nh) / 2, (cw - nw) / 2)
}

/// ResizePadMat's resized size (from the f32 aspect ratio), at the top-left corner.
fn resize_pad_fit(h: usize, w: usize, ch: usize, cw: usize) -> (usize, usize, usize, usize) {
    let ratio = w as f32 / h as f32;
    let (nh, nw) = if ch as f32 * ratio <= cw as f32 {
        (ch, ((ch as f32 * ratio).round() as usize).min(cw))
    } else {
        (((cw as f32 / ratio).round() as usize).min(ch), cw)
    };
    (nh.max(1), nw.max(1), 0, 0)
}

#[test]
fn the_gpu_canvas_kernel_matches_letterbox_and_resize_pad_bit_for_bit() {
    use engine::{Config, Item, Pipeline, PipelineOptions, Registry, Tensor, Value};
    let exe = compile_with(MAIN_CANVAS, "canvas-kernel-host");
    let mut cases: Vec<(String, Mat)> = vec![
        ("noise 375x500".into(), noise(375, 500, 11)),
        ("noise 37x53".into(), noise(37, 53, 12)),
        ("noise 1280x640 (exact half)".into(), noise(1280, 640, 13)),
        ("noise 1x10000".into(), noise(1, 10000, 14)),
    ];
    for path in common::test_images().into_iter().take(4) {
        let bytes = std::fs::read(&path).unwrap();
        let mat = decode_bgr(&bytes, DEFAULT_MAX_PIXELS).unwrap();
        cases.push((path.file_name().unwrap().to_string_lossy().into(), mat));
    }
    let pad = [114u8, 50, 7];
    for (backend, keys, fit) in [
        (
            "LetterBoxMat",
            "resize_h = 640\nresize_w = 640\npad_val = \"114,50,7\"",
            letterbox_fit as fn(usize, usize, usize, usize) -> (usize, usize, usize, usize),
        ),
        (
            "ResizePadMat",
            "max_h = 640\nmax_w = 640\npad_value = \"114,50,7\"",
            resize_pad_fit,
        ),
    ] {
        for rgb in [true, false] {
            let toml = format!(
                "[n]\nbackend = \"Sequential[{backend},cvtColorMat,Mat2Tensor]\"\n{keys}\ncolor = \"{}\"\n",
                if rgb { "rgb" } else { "bgr" }
            );
            let p = Pipeline::build(
                Config::parse(&toml, Path::new("canvas.toml")).unwrap(),
                Registry::with_defaults(),
                PipelineOptions::default(),
            )
            .unwrap();
            for (name, src) in &cases {
                let out = p
                    .run(vec![Item::new(Value::Mat(src.clone()))])
                    .unwrap()
                    .remove(0)
                    .unwrap();
                let Some(Value::Tensor(Tensor { data: want, .. })) = &out.result else {
                    panic!("{backend} {name}: no tensor")
                };
                let (nh, nw, top, left) = fit(src.height, src.width, 640, 640);
                let header = format!(
                    "{} {} 640 640 {nh} {nw} {top} {left} {} {} {} {}",
                    src.height, src.width, rgb as i32, pad[0], pad[1], pad[2]
                );
                let got = run_exe(&exe, &header, src);
                assert_eq!(got.len(), want.len(), "{backend} {name}");
                let differ = got.iter().zip(want).filter(|(a, b)| a != b).count();
                assert_eq!(
                    differ, 0,
                    "{backend} {name} rgb={rgb}: {differ} values differ"
                );
            }
        }
    }
}

#[test]
fn the_gpu_warp_kernel_matches_warp_affine_mat_bit_for_bit() {
    use engine::{Config, Item, Pipeline, PipelineOptions, Registry, Tensor, Value};
    let exe = compile_with(MAIN_WARP, "warp-kernel-host");
    let mut cases: Vec<(String, Mat)> = vec![
        ("noise 375x500".into(), noise(375, 500, 21)),
        ("noise 37x53".into(), noise(37, 53, 22)),
    ];
    for path in common::test_images().into_iter().take(4) {
        let bytes = std::fs::read(&path).unwrap();
        let mat = decode_bgr(&bytes, DEFAULT_MAX_PIXELS).unwrap();
        cases.push((path.file_name().unwrap().to_string_lossy().into(), mat));
    }
    let (h, w) = (160usize, 200usize);
    let p = Pipeline::build(
        Config::parse(
            &format!("[n]\nbackend = \"WarpAffineMat\"\ntarget_h = {h}\ntarget_w = {w}\n"),
            Path::new("warp.toml"),
        )
        .unwrap(),
        Registry::with_defaults(),
        PipelineOptions::default(),
    )
    .unwrap();
    for (name, src) in &cases {
        let (cx, cy) = (src.width as f32 / 2.0, src.height as f32 / 2.0);
        // cv2.getRotationMatrix2D((cx, cy), 30°, 0.45) moved to the output's centre; a shear
        // with a translation; a 2.3× zoom on a corner; a 0.37× reduction half outside.
        let (c, s) = (
            0.45 * 30f32.to_radians().cos(),
            0.45 * 30f32.to_radians().sin(),
        );
        let matrices: [[f32; 6]; 4] = [
            [
                c,
                s,
                w as f32 / 2.0 - c * cx - s * cy,
                -s,
                c,
                h as f32 / 2.0 + s * cx - c * cy,
            ],
            [0.3, 0.12, 5.5, -0.05, 0.33, 17.25],
            [2.3, 0.0, -11.0, 0.0, 2.3, -7.0],
            [0.37, 0.0, 90.0, 0.0, 0.37, -5.0],
        ];
        for m in matrices {
            let mut item = Item::new(Value::Mat(src.clone()));
            item.set(
                "affine_matrix",
                Value::Tensor(Tensor::new(vec![6], m.to_vec())),
            );
            let out = p.run(vec![item]).unwrap().remove(0).unwrap();
            let Some(Value::Mat(want)) = &out.result else {
                panic!("WarpAffineMat {name}: no image")
            };
            assert_eq!((want.height, want.width, want.channels), (h, w, 3));
            let inv = engine::image::warp::affine_inverse(&m.map(f64::from)).unwrap();
            let header = format!(
                "{} {} {h} {w} {:?} {:?} {:?} {:?} {:?} {:?}",
                src.height, src.width, inv[0], inv[1], inv[2], inv[3], inv[4], inv[5]
            );
            let got = run_exe_bytes(&exe, &header, src);
            assert_eq!(got.len(), want.data.len(), "{name}");
            let differ = got
                .iter()
                .zip(want.data.iter())
                .filter(|(a, b)| a != b)
                .count();
            assert_eq!(
                differ, 0,
                "{name} {m:?}: {differ} values differ from WarpAffineMat"
            );
            // Not a blank: the map lands on the image for some of the output.
            assert!(got.iter().any(|&v| v != 0), "{name} {m:?}: all border");
        }
    }
}
