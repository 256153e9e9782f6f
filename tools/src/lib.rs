//! What the developer tools (`model-check`, `preprocess-check`, `detect-preprocess-check`) do
//! alike: logging, the generated models, the photo folders they read.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Logs to stderr, at `RUST_LOG`'s levels or `info`, so that stdout holds only the tool's
/// report.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// `--write-models DIR`: writes the generated test models (resnet50.onnx, tiny_cnn.onnx) into
/// `dir` and says so; the tool then exits.
pub fn write_models(dir: &Path) -> Result<()> {
    onnx_front::modelgen::ensure_models(dir)
        .with_context(|| format!("writing models into {}", dir.display()))?;
    println!("models ready in {}", dir.display());
    Ok(())
}

/// The photos in `dir` (`.jpg`, `.jpeg`, `.png`, `.bmp`), sorted by name.
pub fn photo_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("jpg" | "jpeg" | "png" | "bmp")
            )
        })
        .collect();
    v.sort();
    Ok(v)
}
