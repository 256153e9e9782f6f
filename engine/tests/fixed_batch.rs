//! A model whose exporter fixed the batch at 1 (the dynamo exporter writes ViT's attention
//! reshapes so when given `dynamic_axes` alone): the CPU engine says the file runs only with a
//! batch of 1 and how to export it instead, rather than tract's shape mismatch alone.

use engine::backends::model::CpuModel;
use onnx_front::modelgen::{self, attr_int, Graph};

#[test]
fn a_batch_fixed_by_the_exporter_is_named_by_the_cpu_engine() {
    let mut g = Graph::new(8, 4, 4);
    let x = g.conv("x", 8, 8, 3, 1, 1);
    let target = g.init_i(&[1, 128]);
    let r = g.op("Reshape", &[&x, &target], vec![]);
    let w = g.weight(&[5, 128], 0.1);
    let y = g.op("Gemm", &[&r, &w], vec![attr_int("transB", 1)]);
    let dir = std::env::temp_dir().join(format!("tp-fixed-batch-{}", std::process::id()));
    let path = dir.join("m.onnx");
    modelgen::write(&g.model(&y), &path).unwrap();
    let err = CpuModel::load(&path).err().expect("loaded").to_string();
    let _ = std::fs::remove_dir_all(dir);
    assert!(
        err.contains("runs only with a batch of 1") && err.contains("dynamic_shapes"),
        "{err}"
    );
}
