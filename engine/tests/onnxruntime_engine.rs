//! The ONNX Runtime CPU engine (`cpu_engine = "onnxruntime"`, the library loaded at run time):
//! ResNet50's logits on the committed photos against onnxruntime in Python on the same input
//! (relative L2 ≤ 1e-5), and tract's on the same pipeline within the same bar, for the file
//! as written inline and as PyTorch's dynamo exporter writes it (external data); the key's
//! values and errors.

mod common;

use std::path::Path;

use engine::{Config, Item, Pipeline, PipelineOptions, Registry, Tensor, Value};

fn pipeline(engine: &str) -> Pipeline {
    pipeline_of(engine, &common::models_dir().join("resnet50.onnx"))
}

fn pipeline_of(engine: &str, model: &Path) -> Pipeline {
    let toml = format!(
        "[m]\nbackend = \"Torch[TensorrtTensor]\"\ndevice = \"cpu\"\ncpu_engine = \"{engine}\"\n\
         model = \"{}\"\nmax = 4\nmean = \"123.675, 116.28, 103.53\"\n\
         std = \"58.395, 57.120, 57.375\"\n",
        model.display()
    );
    Pipeline::build(
        Config::parse(&toml, Path::new("ort.toml")).unwrap(),
        Registry::with_defaults(),
        PipelineOptions::default(),
    )
    .unwrap()
}

fn logits(p: &Pipeline, input: &[f32]) -> Vec<f32> {
    let items = input
        .chunks(3 * 224 * 224)
        .map(|x| Item::new(Value::Tensor(Tensor::new(vec![3, 224, 224], x.to_vec()))))
        .collect();
    p.run(items)
        .unwrap()
        .into_iter()
        .flat_map(|o| match o.unwrap().result {
            Some(Value::Tensor(t)) => t.data,
            other => panic!("no logits: {other:?}"),
        })
        .collect()
}

#[test]
fn both_cpu_engines_give_onnxruntimes_logits() {
    let images = common::test_images();
    let input = common::reference_input(&images);
    let (version, reference) = common::onnxruntime_logits(&images);
    for engine in ["onnxruntime", "tract"] {
        let ours = logits(&pipeline(engine), &input);
        let err = common::rel_l2(&ours, &reference);
        println!("{engine}: relative L2 {err:.2e} against onnxruntime {version} in Python");
        assert!(err <= 1e-5, "{engine}: relative L2 {err}");
    }
}

/// The generated ResNet50 as the dynamo exporter writes it: weights in `resnet50.onnx.data`.
#[test]
fn both_cpu_engines_read_a_dynamo_export_as_onnxruntime_does() {
    let model = onnx_front::modelgen::resnet50(onnx_front::modelgen::RESNET50_SEED);
    let first_conv = model.graph.as_ref().unwrap().node[0].output[0].clone();
    let path = common::temp_dir("ort-dynamo").join("resnet50.onnx");
    onnx_front::modelgen::write_dynamo_style(&model, &path, &first_conv, &[64, 112, 112]).unwrap();
    let images = common::test_images();
    let input = common::reference_input(&images);
    let (version, reference) = common::onnxruntime_logits_of(&path, &images);
    for engine in ["onnxruntime", "tract"] {
        let ours = logits(&pipeline_of(engine, &path), &input);
        let err = common::rel_l2(&ours, &reference);
        println!(
            "{engine}, dynamo-style file: relative L2 {err:.2e} against onnxruntime {version}"
        );
        assert!(err <= 1e-5, "{engine}: relative L2 {err}");
    }
}

#[test]
fn cpu_engine_takes_three_values_and_a_library_that_loads() {
    let model = common::models_dir().join("tiny_cnn.onnx");
    let toml = |extra: &str| {
        format!(
            "[m]\nbackend = \"TensorrtTensor\"\ndevice = \"cpu\"\nmodel = \"{}\"\n{extra}\n",
            model.display()
        )
    };
    let e = common::start_error(
        Config::parse(&toml("cpu_engine = \"fast\""), Path::new("a.toml")).unwrap(),
    );
    assert!(
        e.contains("cpu_engine") && e.contains("\"onnxruntime\""),
        "{e}"
    );
    // A library path that does not exist is refused when the TOML is read.
    let e = Config::parse(
        &toml("cpu_engine = \"onnxruntime\"\nonnxruntime = \"/nonexistent/libonnxruntime.so\""),
        Path::new("a.toml"),
    )
    .and_then(|c| {
        Pipeline::build(c, Registry::with_defaults(), PipelineOptions::default())
            .map(|_| ())
            .map_err(|e| match e {
                engine::EngineError::Config(c) => c,
                other => panic!("{other}"),
            })
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("onnxruntime") && e.contains("existing file"),
        "{e}"
    );
}
