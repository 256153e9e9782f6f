//! Helpers shared by the engine's end-to-end tests.
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
    engine::modelgen::ensure_models(&dir).expect("cannot write models/");
    dir
}

/// Runs a Python helper; the test suite's dependencies (numpy, opencv-python-headless,
/// onnxruntime) are installed by scripts/test.
pub fn python(script: &str, args: &[&str]) -> String {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(script);
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

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("torchpipe-rs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
