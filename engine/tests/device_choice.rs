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

#[test]
fn an_output_left_on_the_gpu_needs_the_gpu_engine() {
    let err = start(&config_with(
        "output-gpu-on-cpu",
        "device = \"cpu\"\noutput = \"gpu\"",
    ))
    .err()
    .expect("output = \"gpu\" started on the CPU engine");
    assert!(
        err.contains("node [classifier], key `output` = \"gpu\"")
            && err.contains("the model runs on the CPU"),
        "{err}"
    );
    let err = start(&config_with(
        "output-bogus",
        "device = \"cpu\"\noutput = \"disk\"",
    ))
    .err()
    .expect("output = \"disk\" was accepted");
    assert!(
        err.contains("key `output` = \"disk\"") && err.contains("\"host\" or \"gpu\""),
        "{err}"
    );
    // The default and `host` run.
    drop(
        start(&config_with(
            "output-host",
            "device = \"cpu\"\noutput = \"host\"",
        ))
        .unwrap(),
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

/// The GPU configurations decode and preprocess on the GPU: without a GPU (or without the
/// feature) each must refuse to start and say why, naming the file, node and key.
#[test]
fn the_gpu_pipelines_refuse_to_start_without_a_gpu() {
    for (file, nodes) in [
        (
            "resnet50_gpu.toml",
            &["gpu_decoder", "cpu_decoder", "resnet50"][..],
        ),
        (
            "yolo_gpu.toml",
            &["gpu_decoder", "cpu_decoder", "detector", "postproc"][..],
        ),
        (
            "detect_classify_gpu.toml",
            &[
                "gpu_decoder",
                "cpu_decoder",
                "letterbox",
                "detector",
                "postproc",
                "boxes",
                "crop",
                "classifier",
            ][..],
        ),
    ] {
        gpu_pipeline_refuses_without_a_gpu(file, nodes);
    }
}

fn gpu_pipeline_refuses_without_a_gpu(file: &str, nodes: &[&str]) {
    let path = common::repo_root().join("configs").join(file);
    let models = common::models_dir();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"models/", &format!("\"{}/", models.display()));
    let config = engine::Config::parse(&text, &path).expect("the GPU TOML parses everywhere");
    let names: Vec<&str> = config.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, nodes, "{file}");
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
    assert!(err.contains(file) && err.contains("node ["), "{err}");
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

/// `device_id` one past the machine's GPUs: on a GPU machine start-up fails naming the node,
/// the key, the value and the GPUs found, for the model and for the GPU image backends; on a
/// machine without a GPU it fails as without `device_id`.
#[cfg(feature = "cuda")]
#[test]
fn a_device_id_beyond_the_machines_gpus_names_the_gpus_found() {
    let found = engine::gpu::check_libraries()
        .and_then(|()| engine::gpu::gpus())
        .unwrap_or_default();
    let n = found.len();
    let gpu_list = (n > 0).then(|| {
        let plural = if n == 1 { "" } else { "s" };
        let names: Vec<String> = found
            .iter()
            .enumerate()
            .map(|(i, name)| format!("{i} = {name}"))
            .collect();
        format!(
            "there is no GPU {n}; found {n} GPU{plural}: {}",
            names.join(", ")
        )
    });
    // A list whose first GPU is missing: `n` (none repeated, whatever `n` is).
    let ids = format!("{n},{}", n + 1);
    let model = start(&config_with(
        "device-id-missing",
        &format!("device_id = \"{ids}\""),
    ));
    let err = model.err().expect("a node naming a missing GPU started");
    println!("{err}");
    match &gpu_list {
        Some(list) => assert!(
            err.contains(&format!("node [classifier], key `device_id` = \"{ids}\": "))
                && err.contains(list),
            "{err}"
        ),
        None => assert!(err.contains("no usable GPU"), "{err}"),
    }

    // The GPU TOML with the default for every node: DecodeTensor is the first to open a GPU.
    let path = common::repo_root().join("configs/resnet50_gpu.toml");
    let models = common::models_dir();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"models/", &format!("\"{}/", models.display()));
    let text = format!("device_id = {n}\n{text}");
    let config = engine::Config::parse(&text, &path).expect("the GPU TOML parses");
    let err = common::start_error(config);
    println!("{err}");
    match &gpu_list {
        Some(list) => assert!(
            err.contains(&format!("key `device_id` = \"{n}\": ")) && err.contains(list),
            "{err}"
        ),
        None => assert!(err.contains("no usable GPU"), "{err}"),
    }
}
