//! ONNX graphs written by hand, for the importers' tests: an input `x` of `[N, c, h, w]`,
//! nodes added one by one, the output `y`.

use tract_onnx::pb;

use super::{attr_int, attr_ints, value_info};

/// Values in the range a normalised image has, never zeros.
pub fn noise(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let h = (i as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed.wrapping_mul(40_503))
                >> 8;
            (h % 4001) as f32 / 1000.0 - 2.0 + 0.0005
        })
        .collect()
}

/// A tiny ONNX graph written by hand: input `x` of `[N, c, h, w]`, output `y`.
pub struct Graph {
    pub nodes: Vec<pb::NodeProto>,
    pub inits: Vec<pb::TensorProto>,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub seed: u32,
}

impl Graph {
    pub fn new(c: usize, h: usize, w: usize) -> Graph {
        Graph {
            nodes: Vec::new(),
            inits: Vec::new(),
            c,
            h,
            w,
            seed: 1,
        }
    }

    pub fn weight(&mut self, dims: &[usize], scale: f32) -> String {
        self.seed += 1;
        let n = dims.iter().product();
        let v = noise(n, self.seed).iter().map(|x| x * scale).collect();
        self.init_f(dims, v)
    }

    pub fn init_f(&mut self, dims: &[usize], v: Vec<f32>) -> String {
        let name = format!("w{}", self.inits.len());
        self.inits.push(pb::TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: pb::tensor_proto::DataType::Float as i32,
            float_data: v,
            ..Default::default()
        });
        name
    }

    pub fn init_i(&mut self, v: &[i64]) -> String {
        let name = format!("i{}", self.inits.len());
        self.inits.push(pb::TensorProto {
            name: name.clone(),
            dims: vec![v.len() as i64],
            data_type: pb::tensor_proto::DataType::Int64 as i32,
            int64_data: v.to_vec(),
            ..Default::default()
        });
        name
    }

    /// A 0-d int64 initializer (a Gather's scalar index).
    pub fn scalar_i(&mut self, v: i64) -> String {
        let name = self.init_i(&[v]);
        if let Some(t) = self.inits.last_mut() {
            t.dims.clear();
        }
        name
    }

    pub fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<pb::AttributeProto>) -> String {
        let out = format!("t{}", self.nodes.len());
        self.op_n(op, inputs, attrs, 1);
        out
    }

    pub fn op_n(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<pb::AttributeProto>,
        outs: usize,
    ) -> Vec<String> {
        let k = self.nodes.len();
        let output: Vec<String> = (0..outs)
            .map(|j| {
                if j == 0 {
                    format!("t{k}")
                } else {
                    format!("t{k}_{j}")
                }
            })
            .collect();
        self.nodes.push(pb::NodeProto {
            name: format!("{op}_{k}"),
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: output.clone(),
            attribute: attrs,
            ..Default::default()
        });
        output
    }

    pub fn conv(
        &mut self,
        x: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        groups: usize,
    ) -> String {
        let w = self.weight(&[cout, cin / groups, k, k], 0.3);
        let b = self.weight(&[cout], 0.1);
        let p = (k / 2) as i64;
        self.op(
            "Conv",
            &[x, &w, &b],
            vec![
                attr_ints("kernel_shape", &[k as i64, k as i64]),
                attr_ints("strides", &[stride as i64, stride as i64]),
                attr_ints("pads", &[p, p, p, p]),
                attr_int("group", groups as i64),
            ],
        )
    }

    pub fn model(&self, y: &str) -> pb::ModelProto {
        let mut nodes = self.nodes.clone();
        nodes.push(pb::NodeProto {
            name: "out".into(),
            op_type: "Identity".into(),
            input: vec![y.into()],
            output: vec!["y".into()],
            ..Default::default()
        });
        pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            }],
            graph: Some(pb::GraphProto {
                name: "g".into(),
                node: nodes,
                initializer: self.inits.clone(),
                input: vec![value_info(
                    "x",
                    "N",
                    &[
                        None,
                        Some(self.c as i64),
                        Some(self.h as i64),
                        Some(self.w as i64),
                    ],
                )],
                output: vec![value_info("y", "N", &[])],
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// A graph whose exporter fixed the batch at 1 (the dynamo exporter writes ViT's attention
/// reshapes so when given `dynamic_axes` alone): a Reshape to `[1, 128]` of an item's
/// `[8, 4, 4]` map, then a Gemm. Returns the graph and its output.
pub fn batch_fixed_at_one() -> (Graph, String) {
    let mut g = Graph::new(8, 4, 4);
    let x = g.conv("x", 8, 8, 3, 1, 1);
    let target = g.init_i(&[1, 128]);
    let r = g.op("Reshape", &[&x, &target], vec![]);
    let w = g.weight(&[5, 128], 0.1);
    let y = g.op("Gemm", &[&r, &w], vec![attr_int("transB", 1)]);
    (g, y)
}
