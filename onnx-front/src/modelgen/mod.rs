//! Deterministic ONNX models for tests, demos and benchmarks, written without Python:
//! a ResNet50 with torchvision's architecture, a tiny CNN of the same op set, and a tiny
//! detector with YOLOv8's output layout. Weights come
//! from a seeded generator, scaled so activations stay finite through 50 layers and BatchNorm
//! statistics are far from the identity (so folding them is really exercised).

mod graph;
pub use graph::{batch_fixed_at_one, noise, Graph};

use std::path::Path;

use prost::Message;
use tract_onnx::pb;

/// splitmix64: tiny, seedable, and stable across platforms and crate versions.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit() as f32
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f32 {
        let u1 = self.unit().max(1e-300);
        let u2 = self.unit();
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
}

#[derive(Clone, Copy)]
enum End {
    Relu,
    Linear,
    Residual,
}

struct Builder {
    rng: Rng,
    nodes: Vec<pb::NodeProto>,
    inits: Vec<pb::TensorProto>,
    counter: usize,
}

/// A float tensor's `ValueInfoProto`: each dim its size, or the symbol `batch` where `None`.
fn value_info(name: &str, batch: &str, dims: &[Option<i64>]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value as D, Dimension};
    let dim = |v: &Option<i64>| Dimension {
        value: Some(match v {
            Some(v) => D::DimValue(*v),
            None => D::DimParam(batch.into()),
        }),
        ..Default::default()
    };
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: dims.iter().map(dim).collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Node attributes, for graphs written in code (here and in the importers' tests).
pub fn attr_ints(name: &str, v: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    }
}

pub fn attr_int(name: &str, v: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

pub fn attr_text(name: &str, v: &str) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::String as i32,
        s: v.as_bytes().to_vec(),
        ..Default::default()
    }
}

pub fn attr_float(name: &str, v: f32) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Float as i32,
        f: v,
        ..Default::default()
    }
}

impl Builder {
    fn new(seed: u64) -> Self {
        Builder {
            rng: Rng(seed),
            nodes: Vec::new(),
            inits: Vec::new(),
            counter: 0,
        }
    }

    fn name(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}_{}", self.counter)
    }

    fn init(&mut self, name: &str, dims: &[i64], values: Vec<f32>) -> String {
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.inits.push(pb::TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: pb::tensor_proto::DataType::Float as i32,
            raw_data: raw,
            ..Default::default()
        });
        name.to_string()
    }

    fn node(&mut self, op: &str, inputs: Vec<String>, attrs: Vec<pb::AttributeProto>) -> String {
        let out = self.name(&op.to_lowercase());
        self.nodes.push(pb::NodeProto {
            name: format!("{out}_node"),
            op_type: op.into(),
            input: inputs,
            output: vec![out.clone()],
            attribute: attrs,
            ..Default::default()
        });
        out
    }

    fn conv(
        &mut self,
        x: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> String {
        let name = self.name("conv_w");
        let std = (2.0 / (cin * k * k) as f32).sqrt();
        let w: Vec<f32> = (0..cout * cin * k * k)
            .map(|_| self.rng.normal() * std)
            .collect();
        let w = self.init(&name, &[cout as i64, cin as i64, k as i64, k as i64], w);
        let (k, s, p) = (k as i64, stride as i64, pad as i64);
        self.node(
            "Conv",
            vec![x.into(), w],
            vec![
                attr_ints("kernel_shape", &[k, k]),
                attr_ints("strides", &[s, s]),
                attr_ints("pads", &[p, p, p, p]),
                attr_ints("dilations", &[1, 1]),
                attr_int("group", 1),
            ],
        )
    }

    fn bn(&mut self, x: &str, c: usize, gamma_scale: f32) -> String {
        let param = |b: &mut Builder, what: &str, lo: f32, hi: f32, scale: f32| {
            let v: Vec<f32> = (0..c).map(|_| b.rng.uniform(lo, hi) * scale).collect();
            let n = b.name(what);
            b.init(&n, &[c as i64], v)
        };
        let gamma = param(self, "bn_gamma", 0.8, 1.2, gamma_scale);
        let beta = param(self, "bn_beta", -0.1, 0.1, 1.0);
        let mean = param(self, "bn_mean", -0.1, 0.1, 1.0);
        let var = param(self, "bn_var", 0.5, 1.5, 1.0);
        self.node(
            "BatchNormalization",
            vec![x.into(), gamma, beta, mean, var],
            vec![attr_float("epsilon", 1e-5)],
        )
    }

    fn relu(&mut self, x: &str) -> String {
        self.node("Relu", vec![x.into()], vec![])
    }

    fn conv_bn(
        &mut self,
        x: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        end: End,
    ) -> String {
        let y = self.conv(x, cin, cout, k, stride, k / 2);
        match end {
            End::Relu => {
                let y = self.bn(&y, cout, 1.0);
                self.relu(&y)
            }
            End::Linear => self.bn(&y, cout, 1.0),
            // A residual branch's last BN is scaled down so the sum of 16 blocks stays finite.
            End::Residual => self.bn(&y, cout, 0.25),
        }
    }

    fn maxpool(&mut self, x: &str) -> String {
        self.node(
            "MaxPool",
            vec![x.into()],
            vec![
                attr_ints("kernel_shape", &[3, 3]),
                attr_ints("strides", &[2, 2]),
                attr_ints("pads", &[1, 1, 1, 1]),
            ],
        )
    }

    /// torchvision's Bottleneck (v1.5: the stride sits on the 3×3 conv).
    fn bottleneck(&mut self, x: &str, cin: usize, planes: usize, stride: usize) -> String {
        let cout = planes * 4;
        let y = self.conv_bn(x, cin, planes, 1, 1, End::Relu);
        let y = self.conv_bn(&y, planes, planes, 3, stride, End::Relu);
        let y = self.conv_bn(&y, planes, cout, 1, 1, End::Residual);
        let shortcut = if stride != 1 || cin != cout {
            self.conv_bn(x, cin, cout, 1, stride, End::Linear)
        } else {
            x.to_string()
        };
        let sum = self.node("Add", vec![y, shortcut], vec![]);
        self.relu(&sum)
    }

    fn head(&mut self, x: &str, features: usize, classes: usize) -> String {
        let pooled = self.node("GlobalAveragePool", vec![x.into()], vec![]);
        let flat = self.node("Flatten", vec![pooled], vec![attr_int("axis", 1)]);
        let std = 2.0 / (features as f32).sqrt();
        let w: Vec<f32> = (0..classes * features)
            .map(|_| self.rng.normal() * std)
            .collect();
        let w = self.init("fc_weight", &[classes as i64, features as i64], w);
        let b: Vec<f32> = (0..classes).map(|_| self.rng.uniform(-0.1, 0.1)).collect();
        let b = self.init("fc_bias", &[classes as i64], b);
        self.node(
            "Gemm",
            vec![flat, w, b],
            vec![
                attr_float("alpha", 1.0),
                attr_float("beta", 1.0),
                attr_int("transB", 1),
            ],
        )
    }

    fn finish(
        mut self,
        graph_name: &str,
        last: String,
        input_hw: usize,
        classes: usize,
    ) -> pb::ModelProto {
        // Rename the last output to `output` with an Identity, so consumers find it by name.
        self.nodes.push(pb::NodeProto {
            name: "output_node".into(),
            op_type: "Identity".into(),
            input: vec![last],
            output: vec!["output".into()],
            ..Default::default()
        });
        let hw = input_hw as i64;
        let input = value_info("input", "batch", &[None, Some(3), Some(hw), Some(hw)]);
        let output = value_info("output", "batch", &[None, Some(classes as i64)]);
        pb::ModelProto {
            ir_version: 8,
            producer_name: "torchpipe-rs modelgen".into(),
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(pb::GraphProto {
                name: graph_name.into(),
                node: self.nodes,
                initializer: self.inits,
                input: vec![input],
                output: vec![output],
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// ResNet50 as torchvision builds it: 7×7 stem, max-pool, 3-4-6-3 bottlenecks, global average
/// pool, 1000-way classifier; input `[batch, 3, 224, 224]`, output `[batch, 1000]`.
pub fn resnet50(seed: u64) -> pb::ModelProto {
    let mut b = Builder::new(seed);
    let x = b.conv_bn("input", 3, 64, 7, 2, End::Relu);
    let mut x = b.maxpool(&x);
    let mut cin = 64;
    for (planes, blocks, stride) in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)] {
        for i in 0..blocks {
            x = b.bottleneck(&x, cin, planes, if i == 0 { stride } else { 1 });
            cin = planes * 4;
        }
    }
    let logits = b.head(&x, 2048, 1000);
    b.finish("resnet50", logits, 224, 1000)
}

/// The same op set in a few hundred thousand FLOPs: fast enough for debug-build tests.
/// Input `[batch, 3, 224, 224]`, output `[batch, 10]`.
pub fn tiny_cnn(seed: u64) -> pb::ModelProto {
    let mut b = Builder::new(seed);
    let x = b.conv_bn("input", 3, 8, 7, 4, End::Relu);
    let x = b.maxpool(&x);
    let x = b.bottleneck(&x, 8, 4, 2);
    let x = b.bottleneck(&x, 16, 4, 1);
    let logits = b.head(&x, 16, 10);
    b.finish("tiny_cnn", logits, 224, 10)
}

/// A detector with the output YOLOv8 and YOLO11 export, small enough for debug-build tests:
/// input `[batch, 3, 64, 64]` (0..1), two convolutions to 7 maps of 9×9, reshaped to
/// `[batch, 4 + 3, 81]`: per anchor a box's centre, width and height in input pixels (a sigmoid
/// times 64) and three class scores (sigmoids), as `PostProcYoloV8` reads them.
pub fn tiny_yolo() -> pb::ModelProto {
    let mut g = Graph::new(3, 64, 64);
    let x = g.conv("x", 3, 8, 3, 2, 1);
    let x = g.op("Relu", &[&x], vec![]);
    let x = g.conv(&x, 8, 7, 4, 4, 1);
    let shape = g.init_i(&[0, 7, -1]);
    let x = g.op("Reshape", &[&x, &shape], vec![]);
    let split = g.init_i(&[4, 3]);
    let parts = g.op_n("Split", &[&x, &split], vec![attr_int("axis", 1)], 2);
    let boxes = g.op("Sigmoid", &[&parts[0]], vec![]);
    let side = g.init_f(&[1], vec![64.0]);
    let boxes = g.op("Mul", &[&boxes, &side], vec![]);
    let scores = g.op("Sigmoid", &[&parts[1]], vec![]);
    let y = g.op("Concat", &[&boxes, &scores], vec![attr_int("axis", 1)]);
    g.model(&y)
}

pub const RESNET50_SEED: u64 = 50;
pub const TINY_SEED: u64 = 7;

pub fn write(model: &pb::ModelProto, path: &Path) -> std::io::Result<()> {
    use std::io::Write;
    crate::files::write_atomically(path, |f| f.write_all(&model.encode_to_vec()))
}

/// Writes `model` as PyTorch's dynamo exporter (its default since 2.9) writes files: every
/// initializer's bytes in `<file>.data` beside it (`external_data` entries with location,
/// offset and length), the batch dimension named `batch_size` on the input and output, and a
/// `value_info` entry giving `value` the per-item `dims` behind that symbol, as the exporter
/// records every intermediate value's shape.
pub fn write_dynamo_style(
    model: &pb::ModelProto,
    path: &Path,
    value: &str,
    dims: &[i64],
) -> std::io::Result<()> {
    use pb::tensor_shape_proto::{dimension::Value as D, Dimension};
    let mut model = model.clone();
    let data_name = format!(
        "{}.data",
        path.file_name().unwrap_or_default().to_string_lossy()
    );
    let mut data = Vec::new();
    let Some(g) = model.graph.as_mut() else {
        return Err(std::io::Error::other("the model has no graph"));
    };
    for t in &mut g.initializer {
        let bytes = std::mem::take(&mut t.raw_data);
        let entry = |key: &str, value: String| pb::StringStringEntryProto {
            key: key.into(),
            value,
        };
        t.external_data = vec![
            entry("location", data_name.clone()),
            entry("offset", data.len().to_string()),
            entry("length", bytes.len().to_string()),
        ];
        t.data_location = Some(pb::tensor_proto::DataLocation::External as i32);
        data.extend_from_slice(&bytes);
    }
    let batch = || Dimension {
        value: Some(D::DimParam("batch_size".into())),
        ..Default::default()
    };
    let Some(mut hint) = g.input.first().cloned() else {
        return Err(std::io::Error::other("the model has no input"));
    };
    hint.name = value.into();
    for v in g
        .input
        .iter_mut()
        .chain(g.output.iter_mut())
        .chain([&mut hint])
    {
        if let Some(pb::type_proto::Value::TensorType(t)) =
            v.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            let shape = t.shape.get_or_insert_with(Default::default);
            if v.name == value {
                shape.dim = std::iter::once(batch())
                    .chain(dims.iter().map(|&d| Dimension {
                        value: Some(D::DimValue(d)),
                        ..Default::default()
                    }))
                    .collect();
            } else if let Some(first) = shape.dim.first_mut() {
                *first = batch();
            }
        }
    }
    g.value_info.push(hint);
    std::fs::write(path.with_file_name(&data_name), data)?;
    write(&model, path)
}

/// Writes `resnet50.onnx`, `tiny_cnn.onnx` and `tiny_yolo.onnx` into `dir` unless they are
/// already there.
pub fn ensure_models(dir: &Path) -> std::io::Result<()> {
    for (name, build) in [
        ("resnet50.onnx", resnet50 as fn(u64) -> pb::ModelProto),
        ("tiny_cnn.onnx", tiny_cnn),
        ("tiny_yolo.onnx", |_| tiny_yolo()),
    ] {
        let path = dir.join(name);
        if !path.is_file() {
            let seed = if name.starts_with("resnet") {
                RESNET50_SEED
            } else {
                TINY_SEED
            };
            write(&build(seed), &path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_writers_of_one_model_all_succeed() {
        let dir = std::env::temp_dir().join(format!("tp-modelgen-race-{}", std::process::id()));
        let path = dir.join("tiny.onnx");
        let model = tiny_cnn(TINY_SEED);
        let want = model.encode_to_vec();
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..20 {
                        write(&model, &path).unwrap();
                    }
                });
            }
        });
        assert_eq!(std::fs::read(&path).unwrap(), want);
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1, "temporary files left behind: {left:?}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn generation_is_deterministic() {
        let a = tiny_cnn(TINY_SEED).encode_to_vec();
        let b = tiny_cnn(TINY_SEED).encode_to_vec();
        assert_eq!(a, b);
        assert_ne!(a, tiny_cnn(TINY_SEED + 1).encode_to_vec());
    }

    #[test]
    fn resnet50_has_torchvisions_shape() {
        let m = resnet50(RESNET50_SEED);
        let g = m.graph.as_ref().unwrap();
        let convs = g.node.iter().filter(|n| n.op_type == "Conv").count();
        // 1 stem + 16 blocks × 3 + 4 downsample shortcuts.
        assert_eq!(convs, 53);
        let params: usize = g
            .initializer
            .iter()
            .filter(|t| !t.name.starts_with("bn_mean") && !t.name.starts_with("bn_var"))
            .map(|t| t.dims.iter().product::<i64>() as usize)
            .sum();
        // torchvision's resnet50 has 25,557,032 parameters.
        assert_eq!(params, 25_557_032);
    }
}
