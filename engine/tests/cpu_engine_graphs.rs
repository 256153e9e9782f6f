//! Graphs the CPU engine (tract) needs help with, written by hand.

use engine::backends::model::{CpuModel, ModelEngine};
use engine::Tensor;
use onnx_front::modelgen::{self, noise, Graph};

/// `g`'s graph with output `y`, saved and loaded by the CPU engine.
fn load(g: &Graph, y: &str, tag: &str) -> Result<CpuModel, String> {
    let dir = std::env::temp_dir().join(format!("tp-cpu-{tag}-{}", std::process::id()));
    let path = dir.join("m.onnx");
    modelgen::write(&g.model(y), &path).unwrap();
    let model = CpuModel::load(&path).map_err(|e| e.to_string());
    let _ = std::fs::remove_dir_all(dir);
    model
}

/// A model whose exporter fixed the batch at 1 (the dynamo exporter writes ViT's attention
/// reshapes so when given `dynamic_axes` alone): the CPU engine says the file runs only with a
/// batch of 1 and how to export it instead, rather than tract's shape mismatch alone.
#[test]
fn a_batch_fixed_by_the_exporter_is_named_by_the_cpu_engine() {
    let (g, y) = modelgen::batch_fixed_at_one();
    let err = load(&g, &y, "fixed-batch").err().expect("loaded");
    assert!(
        err.contains("runs only with a batch of 1") && err.contains("dynamic_shapes"),
        "{err}"
    );
}

/// A strided Slice of a tensor a Reshape split the sliced axes into (LeViT's attention
/// subsampling, `x.view(B, H, W, C)[:, ::2, ::2]`): tract's optimiser fails on it, and the CPU
/// engine serves tract's typed model as it is. Checked against the subsampling computed here.
#[test]
fn a_strided_slice_after_a_reshape_loads_and_subsamples() {
    let (c, h, w) = (4, 6, 8);
    let mut g = Graph::new(c, h, w);
    let flat = g.init_i(&[0, c as i64, (h * w) as i64]);
    let x = g.op("Reshape", &["x", &flat], vec![]);
    let x = g.op("Relu", &[&x], vec![]);
    let maps = g.init_i(&[0, c as i64, h as i64, w as i64]);
    let x = g.op("Reshape", &[&x, &maps], vec![]);
    let starts = g.init_i(&[0, 0]);
    let ends = g.init_i(&[i64::MAX, i64::MAX]);
    let axes = g.init_i(&[2, 3]);
    let steps = g.init_i(&[2, 2]);
    let y = g.op("Slice", &[&x, &starts, &ends, &axes, &steps], vec![]);
    let model = load(&g, &y, "strided-slice").unwrap_or_else(|e| panic!("{e}"));
    assert!(
        model.describe().contains("unoptimised"),
        "{}",
        model.describe()
    );
    let n = 2;
    let input = noise(n * c * h * w, 5);
    let got = model
        .run(Tensor::new(vec![n, c, h, w], input.clone()))
        .unwrap();
    let mut want = Vec::new();
    for item in 0..n * c {
        for i in (0..h).step_by(2) {
            for j in (0..w).step_by(2) {
                want.push(input[(item * h + i) * w + j].max(0.0));
            }
        }
    }
    assert_eq!(got.shape, vec![n, c * (h / 2) * (w / 2)]);
    assert_eq!(got.data, want);
}
