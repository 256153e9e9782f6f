//! Helpers shared by the end-to-end tests (the server's tests include this file too).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The committed test photos (benches/imgs), sorted by name.
pub fn test_images() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo_root().join("benches/imgs"))
        .expect("benches/imgs is part of the repo")
        .map(|e| e.unwrap().path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("jpg" | "png" | "bmp")
            )
        })
        .collect();
    v.sort();
    v
}

/// The generated models, made on first use into the git-ignored models/ folder.
pub fn models_dir() -> PathBuf {
    let dir = repo_root().join("models");
    onnx_front::modelgen::ensure_models(&dir).expect("cannot write models/");
    dir
}

/// Runs a Python helper; the test suite's dependencies (numpy, opencv-python-headless,
/// onnxruntime) are installed by scripts/test.
pub fn python(script: &str, args: &[&str]) -> String {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let path = repo_root().join("engine/tests/py").join(script);
    let out = Command::new(&python)
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {python}: {e} (scripts/test installs the Python test dependencies)")
        });
    assert!(
        out.status.success(),
        "{script} failed (scripts/test installs numpy, opencv-python-headless and onnxruntime):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Reads the "H W C\n" + raw u8 files the Python helpers write.
pub fn read_raw(path: &Path) -> (usize, usize, usize, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let nl = bytes.iter().position(|&b| b == b'\n').unwrap();
    let head = std::str::from_utf8(&bytes[..nl]).unwrap();
    let dims: Vec<usize> = head.split(' ').map(|v| v.parse().unwrap()).collect();
    (dims[0], dims[1], dims[2], bytes[nl + 1..].to_vec())
}

/// A fresh folder of its own: tests run in parallel threads, so every call gets a new one.
pub fn temp_dir(name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("torchpipe-rs-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Pins a config's model nodes to the CPU engine. These tests exercise the pipeline on the CPU,
/// which CI has; a `cuda` build would otherwise send the seed's model node to the GPU (tested on
/// the device by `model-check`).
pub fn on_cpu(text: String) -> String {
    if text.contains("\ndevice") {
        return text;
    }
    text.lines()
        .map(|line| {
            if line.starts_with("backend = ") && line.contains("TensorrtTensor") {
                format!("device = \"cpu\"\n{line}\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect()
}

/// A repo config with its `models/` paths made absolute, so tests need no particular cwd, and
/// its model nodes on the CPU.
pub fn load_repo_config(name: &str) -> engine::Config {
    let path = repo_root().join("configs").join(name);
    let models = models_dir();
    let text = on_cpu(
        std::fs::read_to_string(&path)
            .unwrap()
            .replace("\"models/", &format!("\"{}/", models.display())),
    );
    engine::Config::parse(&text, &path).unwrap()
}

pub fn write_f32(path: &Path, dims: &[usize], data: &[f32]) {
    let mut bytes = dims
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(" ")
        .into_bytes();
    bytes.push(b'\n');
    for v in data {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

pub fn read_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let nl = bytes.iter().position(|&b| b == b'\n').unwrap();
    let dims = std::str::from_utf8(&bytes[..nl])
        .unwrap()
        .split(' ')
        .map(|v| v.parse().unwrap())
        .collect();
    let data = bytes[nl + 1..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (dims, data)
}

pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
    (num / den).sqrt()
}

pub fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap()
}

/// Why a pipeline with every backend does not start on `config` (it must not).
pub fn start_error(config: engine::Config) -> String {
    engine::Pipeline::build(
        config,
        engine::Registry::with_defaults(),
        engine::PipelineOptions::default(),
    )
    .err()
    .expect("the pipeline started")
    .to_string()
}

/// A repo config loaded into a running pipeline with every backend.
pub fn repo_pipeline(name: &str) -> engine::Pipeline {
    let config = load_repo_config(name);
    engine::Pipeline::build(
        config,
        engine::Registry::with_defaults(),
        engine::PipelineOptions::default(),
    )
    .unwrap()
}

/// The seed's preprocessing as plain function calls (decode, resize to 224, RGB, CHW f32), for
/// the reference's input: `[images.len(), 3, 224, 224]`.
pub fn reference_input(images: &[PathBuf]) -> Vec<f32> {
    use engine::image::{
        decode_bgr, resize_bilinear, swap_red_blue, to_chw_f32, DEFAULT_MAX_PIXELS,
    };
    let mut input = Vec::new();
    for path in images {
        let decoded = decode_bgr(&std::fs::read(path).unwrap(), DEFAULT_MAX_PIXELS).unwrap();
        let mut m = resize_bilinear(&decoded, 224, 224);
        swap_red_blue(&mut m);
        input.extend(to_chw_f32(&m).data);
    }
    input
}

/// onnxruntime's logits for the images on the generated ResNet50, with the seed's mean/std:
/// `(onnxruntime version, [images.len() × 1000])`.
pub fn onnxruntime_logits(images: &[PathBuf]) -> (String, Vec<f32>) {
    onnxruntime_logits_of(&models_dir().join("resnet50.onnx"), images)
}

/// The same for another file of the generated ResNet50 (its dynamo-style copy).
pub fn onnxruntime_logits_of(model: &Path, images: &[PathBuf]) -> (String, Vec<f32>) {
    let dir = temp_dir("onnxruntime");
    let (inp, outp) = (dir.join("input.bin"), dir.join("logits.bin"));
    write_f32(&inp, &[images.len(), 3, 224, 224], &reference_input(images));
    let version = python(
        "ort_ref.py",
        &[
            model.to_str().unwrap(),
            inp.to_str().unwrap(),
            outp.to_str().unwrap(),
            "123.675,116.28,103.53",
            "58.395,57.120,57.375",
        ],
    );
    let (dims, logits) = read_f32(&outp);
    assert_eq!(dims, [images.len(), 1000]);
    (version.trim().to_string(), logits)
}

/// Two detection lists equal: the same count, classes equal, corners and scores within `tol`.
pub fn assert_same_detections(ours: &engine::Tensor, theirs: &[Vec<f32>], tol: f32) {
    assert_eq!(ours.shape, [theirs.len(), 6]);
    for (i, (a, b)) in ours.data.chunks(6).zip(theirs).enumerate() {
        assert_eq!(a[5], b[5], "detection {i}: class");
        for k in 0..5 {
            assert!(
                (a[k] - b[k]).abs() <= tol,
                "detection {i}: {a:?} against {b:?}"
            );
        }
    }
}
