//! Which engine serves `TensorrtTensor`, and what a node that asks for a GPU gets on a machine or
//! a build without one.

mod common;

use std::path::{Path, PathBuf};

/// The tiny pipeline's model node with `extra` added, written beside the test's temp folder.
fn config_with(name: &str, extra: &str) -> PathBuf {
    let models = common::models_dir();
    let dir = common::temp_dir(name);
    let path = dir.join("pipeline.toml");
    let toml = format!(
        r#"
[classifier]
backend = "Torch[TensorrtTensor]"
min = 1
max = 2
model = "{}"
mean = "123.675, 116.28, 103.53"
std = "58.395, 57.120, 57.375"
{extra}
"#,
        models.join("tiny_cnn.onnx").display()
    );
    std::fs::write(&path, toml).unwrap();
    path
}

fn start(path: &Path) -> Result<engine::Pipeline, String> {
    engine::Pipeline::from_toml(path).map_err(|e| e.to_string())
}

#[test]
fn device_cpu_runs_the_cpu_engine_in_every_build() {
    let p = start(&config_with("device-cpu", r#"device = "cpu""#)).unwrap();
    drop(p);
}

#[test]
fn an_unknown_device_names_the_choices() {
    let err = start(&config_with("device-tpu", r#"device = "tpu""#))
        .err()
        .expect("device = \"tpu\" was accepted");
    assert!(
        err.contains("node [classifier]") && err.contains("`device`") && err.contains("\"cpu\""),
        "{err}"
    );
}

#[cfg(not(feature = "cuda"))]
#[test]
fn asking_for_the_gpu_without_the_cuda_feature_names_the_feature() {
    let err = start(&config_with("device-gpu", r#"device = "gpu""#))
        .err()
        .expect("a GPU node started in a build without the cuda feature");
    assert!(
        err.contains("`device`") && err.contains("--features cuda"),
        "{err}"
    );
    // Without the feature, the default stays the CPU engine.
    start(&config_with("device-default", "")).unwrap();
}

/// With the feature compiled in, the default is the GPU: on a machine without one (CI, the
/// development machine) start-up fails and says why; on a GPU machine it starts.
#[cfg(feature = "cuda")]
#[test]
fn the_gpu_default_fails_clearly_without_a_gpu() {
    for extra in ["", r#"device = "gpu""#] {
        let result = start(&config_with("device-gpu", extra));
        match engine::gpu::check_libraries() {
            Err(_) => {
                let err = result.err().expect("no GPU here, yet the GPU node started");
                assert!(
                    err.contains("node [classifier]")
                        && err.contains("`device`")
                        && err.contains("no usable GPU")
                        && err.contains("libcuda"),
                    "{err}"
                );
            }
            Ok(()) => {
                result.unwrap();
            }
        }
    }
}

/// configs/resnet50_gpu.toml decodes and preprocesses on the GPU: without a GPU (or without
/// the feature) it must refuse to start and say why, naming the file, node and key.
#[test]
fn the_gpu_pipeline_refuses_to_start_without_a_gpu() {
    let path = common::repo_root().join("configs/resnet50_gpu.toml");
    let models = common::models_dir();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"models/", &format!("\"{}/", models.display()));
    let config = engine::Config::parse(&text, &path).expect("the GPU TOML parses everywhere");
    let names: Vec<&str> = config.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["gpu_decoder", "cpu_decoder", "resnet50"]);
    let built = engine::Pipeline::build(
        config,
        engine::Registry::with_defaults(),
        engine::PipelineOptions::default(),
    );
    #[cfg(feature = "cuda")]
    if engine::gpu::check_libraries().is_ok() {
        built.expect("a GPU machine starts the GPU pipeline");
        return;
    }
    let err = built
        .err()
        .expect("the GPU pipeline started on a machine without a GPU")
        .to_string();
    assert!(
        err.contains("resnet50_gpu.toml") && err.contains("node ["),
        "{err}"
    );
    if cfg!(feature = "cuda") {
        assert!(
            err.contains("no usable GPU") && err.contains("libcuda"),
            "{err}"
        );
    } else {
        assert!(
            err.contains("--features cuda") && err.contains("runs on the GPU")
                || err.contains("`device`") && err.contains("--features cuda"),
            "{err}"
        );
    }
}
