//! Writes the generated ONNX models (ResNet50, a tiny CNN, a tiny YOLO-shaped detector) into a
//! folder, `models/` by default.

use std::path::PathBuf;

fn main() {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| "models".into());
    match onnx_front::modelgen::ensure_models(&dir) {
        Ok(()) => println!("models ready in {}", dir.display()),
        Err(e) => {
            eprintln!("make-models: cannot write into {}: {e}", dir.display());
            std::process::exit(1);
        }
    }
}
