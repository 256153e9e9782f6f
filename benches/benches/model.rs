//! The CPU engine's ResNet50 (generated, fp32) latency per batch at batch 1 and 4.

use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use engine::backends::model::CpuModel;
use engine::Tensor;

fn bench(c: &mut Criterion) {
    let models = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models");
    onnx_front::modelgen::ensure_models(&models).unwrap();
    let model = CpuModel::load(&models.join("resnet50.onnx")).unwrap();
    let mut g = c.benchmark_group("resnet50_cpu_fp32");
    for batch in [1usize, 4] {
        let input = Tensor::new(vec![batch, 3, 224, 224], vec![0.5; batch * 3 * 224 * 224]);
        g.bench_function(format!("batch_{batch}"), |b| {
            b.iter(|| model.run(input.clone()).unwrap())
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(10));
    targets = bench
}
criterion_main!(benches);
