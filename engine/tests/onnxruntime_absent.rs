//! ONNX Runtime pointed at a file that is not its library (its own test binary: the library is
//! loaded once per process): `cpu_engine = "onnxruntime"` is a start-up error naming the node,
//! the key and the file; `auto` falls back to tract and serves.

mod common;

use std::path::Path;

use engine::{Config, Item, Pipeline, PipelineOptions, Registry, Tensor, Value};

#[test]
fn a_library_that_does_not_load_is_an_error_or_tract() {
    let model = common::models_dir().join("tiny_cnn.onnx");
    // A file that exists and is no shared library.
    let not_a_library = common::repo_root().join("configs/tiny_cpu.toml");
    let toml = |engine: &str| {
        format!(
            "[m]\nbackend = \"TensorrtTensor\"\ndevice = \"cpu\"\nmodel = \"{}\"\n\
             cpu_engine = \"{engine}\"\nonnxruntime = \"{}\"\n",
            model.display(),
            not_a_library.display()
        )
    };
    let e = common::start_error(Config::parse(&toml("onnxruntime"), Path::new("a.toml")).unwrap());
    assert!(
        e.contains("node [m]") && e.contains("cpu_engine") && e.contains("tiny_cpu.toml"),
        "{e}"
    );
    let p = Pipeline::build(
        Config::parse(&toml("auto"), Path::new("a.toml")).unwrap(),
        Registry::with_defaults(),
        PipelineOptions::default(),
    )
    .unwrap();
    let out = p
        .run(vec![Item::new(Value::Tensor(Tensor::new(
            vec![3, 224, 224],
            vec![0.5; 3 * 224 * 224],
        )))])
        .unwrap()
        .remove(0)
        .unwrap();
    assert!(matches!(out.result, Some(Value::Tensor(ref t)) if t.data.len() == 10));
}
