//! The seed's flow with the model as PyTorch's default exporter (dynamo, since 2.9) writes it:
//! the weights in `resnet50.onnx.data` beside the model and `value_info` naming the batch
//! `batch_size`. `server --toml` on the seed's TOML serves the files as they are, with the same
//! answers as the same weights stored inline; a data file that is missing or cut short stops
//! the server at start-up with an error naming both files.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use engine::backends::control::softmax_argmax;
use engine::{Item, Value};
use serve_thrift::serve::{InferenceParams, TInferenceServiceSyncClient};

/// The generated ResNet50 written in the dynamo exporter's style into a folder of its own.
fn dynamo_resnet50() -> PathBuf {
    let model = onnx_front::modelgen::resnet50(onnx_front::modelgen::RESNET50_SEED);
    let first_conv = model.graph.as_ref().unwrap().node[0].output[0].clone();
    let path = common::temp_dir("dynamo-export").join("resnet50.onnx");
    onnx_front::modelgen::write_dynamo_style(&model, &path, &first_conv, &[64, 112, 112]).unwrap();
    path
}

/// The seed's TOML (model node on the CPU engine) pointed at `model`.
fn seed_toml(model: &Path) -> PathBuf {
    let inline = format!("{}/resnet50.onnx", common::models_dir().display());
    common::config_copy("resnet50.toml", &[(&inline, model.to_str().unwrap())])
}

#[test]
fn the_seed_toml_serves_a_dynamo_export_as_written() {
    let model = dynamo_resnet50();
    assert!(model.with_file_name("resnet50.onnx.data").is_file());
    let config = seed_toml(&model);
    assert!(std::fs::read_to_string(&config)
        .unwrap()
        .contains(model.to_str().unwrap()));

    let images = common::test_images();
    let server = common::Server::start(&["--toml", config.to_str().unwrap()]);
    let mut client = common::client(server.port);
    let served: Vec<(String, f64)> = images
        .iter()
        .map(|p| {
            let r = client
                .infer_batch(InferenceParams::new(
                    p.display().to_string(),
                    std::fs::read(p).unwrap(),
                ))
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (r.label, r.score.0)
        })
        .collect();
    let (status, log) = server.stop();
    assert!(status.success(), "server exit {status}: {log}");

    // The same weights stored inline, through the same pipeline in-process.
    let inline = common::repo_pipeline("resnet50.toml");
    let items = images
        .iter()
        .map(|p| Item::new(std::fs::read(p).unwrap()))
        .collect();
    let want = inline.run(items).unwrap();
    for ((path, (label, score)), outcome) in images.iter().zip(&served).zip(want) {
        let Some(Value::Tensor(t)) = outcome.unwrap().result else {
            panic!("no logits")
        };
        let c = softmax_argmax(&t.data).unwrap();
        assert_eq!(*label, c.index.to_string(), "{}", path.display());
        assert!(
            (score - c.score).abs() <= 1e-6,
            "{}: score {score} against {} inline",
            path.display(),
            c.score
        );
    }
}

/// `server --toml` exits non-zero with this on stderr.
fn start_failure(config: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_server"))
        .args(["--toml", config.to_str().unwrap(), "--port", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "the server started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_missing_or_truncated_data_file_is_a_start_up_error_naming_both_files() {
    let model = dynamo_resnet50();
    let data = model.with_file_name("resnet50.onnx.data");
    let config = seed_toml(&model);

    let bytes = std::fs::read(&data).unwrap();
    std::fs::write(&data, &bytes[..bytes.len() / 2]).unwrap();
    let e = start_failure(&config);
    assert!(e.contains("node [resnet50], key `model`"), "{e}");
    assert!(
        e.contains(model.to_str().unwrap()) && e.contains(data.to_str().unwrap()),
        "{e}"
    );
    assert!(e.contains("truncated"), "{e}");

    std::fs::remove_file(&data).unwrap();
    let e = start_failure(&config);
    assert!(
        e.contains(model.to_str().unwrap()) && e.contains(data.to_str().unwrap()),
        "{e}"
    );
    assert!(e.contains("cannot be read"), "{e}");
}
