//! ONNX → a list of fused GPU steps. Pure Rust, so every folding and fusion rule is tested on
//! machines without a GPU; the CUDA side (`engine.rs`) only executes what this decides.
//!
//! Fusions: Conv → BatchNormalization (folded into the weights) → Add (the residual input of
//! cuDNN's fused convolution) → Relu (its activation). Gemm and MatMul(+Add) on a 1×1 spatial
//! tensor become 1×1 convolutions, so the classifier shares the same fused bias path.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb;

/// Per-item shape of a value (channels, height, width); the batch dimension is implicit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Shape {
    pub fn len(&self) -> usize {
        self.c * self.h * self.w
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ConvStep {
    /// The ONNX node this step starts from (for errors and logs).
    pub name: String,
    pub input: usize,
    /// Added before the activation (a residual branch), same shape as the output.
    pub residual: Option<usize>,
    pub output: usize,
    /// Input channels as stored on the device (the model input may be padded, see `Plan`).
    pub cin: usize,
    pub cout: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub pad: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
    pub relu: bool,
    /// OIHW, `cout × (cin / groups) × kh × kw`, BatchNorm already folded in.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    AvgIncludePad,
    AvgExcludePad,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PoolStep {
    pub input: usize,
    pub output: usize,
    pub kind: PoolKind,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub pad: [usize; 2],
}

#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    Conv(ConvStep),
    Pool(PoolStep),
    /// Elementwise `a + b`, then optionally ReLU (an Add that could not be fused into a conv).
    Add {
        a: usize,
        b: usize,
        output: usize,
        relu: bool,
    },
    /// Elementwise clamp: Relu is `[0, ∞)`, Clip/ReLU6 its own bounds.
    Clamp {
        input: usize,
        output: usize,
        lo: f32,
        hi: f32,
    },
    /// Softmax over channels of a `c × 1 × 1` value.
    Softmax {
        input: usize,
        output: usize,
    },
}

impl Step {
    pub fn output(&self) -> usize {
        match self {
            Step::Conv(c) => c.output,
            Step::Pool(p) => p.output,
            Step::Add { output, .. }
            | Step::Clamp { output, .. }
            | Step::Softmax { output, .. } => *output,
        }
    }

    pub fn inputs(&self) -> Vec<usize> {
        match self {
            Step::Conv(c) => std::iter::once(c.input).chain(c.residual).collect(),
            Step::Pool(p) => vec![p.input],
            Step::Add { a, b, .. } => vec![*a, *b],
            Step::Clamp { input, .. } | Step::Softmax { input, .. } => vec![*input],
        }
    }
}

/// The executable form of a model. Value 0 is the model input after the input conversion
/// (normalised, in the engine's layout and precision, channels padded to `input_padded_c`).
#[derive(Clone, Debug)]
pub struct Plan {
    /// The ONNX input's per-item shape (`3 × 224 × 224`).
    pub input: Shape,
    /// Channels of value 0 on the device: 3 RGB channels padded to 8 when every consumer is a
    /// convolution (zero weights), because cuDNN's fp16 tensor-core kernels want C % 8 == 0.
    pub input_padded_c: usize,
    pub values: Vec<Shape>,
    pub steps: Vec<Step>,
    pub output: usize,
}

impl Plan {
    pub fn convs(&self) -> impl Iterator<Item = &ConvStep> {
        self.steps.iter().filter_map(|s| match s {
            Step::Conv(c) => Some(c),
            _ => None,
        })
    }

    pub fn convs_mut(&mut self) -> impl Iterator<Item = &mut ConvStep> {
        self.steps.iter_mut().filter_map(|s| match s {
            Step::Conv(c) => Some(c),
            _ => None,
        })
    }

    /// Device buffers for the values, reused once a value is dead: `slots[i]` is the size in
    /// elements per item of slot `i`, `slot_of[v]` the slot holding value `v`.
    pub fn slots(&self) -> (Vec<usize>, Vec<usize>) {
        let mut last_use = vec![0usize; self.values.len()];
        for (i, step) in self.steps.iter().enumerate() {
            for v in step.inputs() {
                last_use[v] = i;
            }
        }
        last_use[self.output] = usize::MAX;
        let mut sizes: Vec<usize> = Vec::new();
        let mut slot_of = vec![usize::MAX; self.values.len()];
        let mut free: Vec<usize> = Vec::new();
        let take = |need: usize, sizes: &mut Vec<usize>, free: &mut Vec<usize>| {
            // Smallest free slot that fits, else grow the largest free one, else a new slot.
            let fit = free
                .iter()
                .enumerate()
                .filter(|(_, &s)| sizes[s] >= need)
                .min_by_key(|(_, &s)| sizes[s])
                .map(|(i, _)| i)
                .or_else(|| {
                    free.iter()
                        .enumerate()
                        .max_by_key(|(_, &s)| sizes[s])
                        .map(|(i, _)| i)
                });
            match fit {
                Some(i) => {
                    let s = free.swap_remove(i);
                    sizes[s] = sizes[s].max(need);
                    s
                }
                None => {
                    sizes.push(need);
                    sizes.len() - 1
                }
            }
        };
        slot_of[0] = take(self.values[0].len(), &mut sizes, &mut free);
        if self.steps.is_empty() {
            return (sizes, slot_of);
        }
        for (i, step) in self.steps.iter().enumerate() {
            let out = step.output();
            if slot_of[out] == usize::MAX {
                slot_of[out] = take(self.values[out].len(), &mut sizes, &mut free);
            }
            let mut seen = HashSet::new();
            for v in step.inputs() {
                if last_use[v] == i && seen.insert(v) {
                    free.push(slot_of[v]);
                }
            }
        }
        (sizes, slot_of)
    }
}

fn attr<'a>(node: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn attr_ints(node: &pb::NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

fn attr_int(node: &pb::NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map(|a| a.i).unwrap_or(default)
}

fn attr_float(node: &pb::NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).map(|a| a.f).unwrap_or(default)
}

fn tensor_data(t: &pb::TensorProto) -> Result<Vec<f32>, String> {
    if t.data_type != pb::tensor_proto::DataType::Float as i32 {
        return Err(format!(
            "initializer `{}` has data type {}; the GPU engine reads float32 weights",
            t.name, t.data_type
        ));
    }
    let n: i64 = t.dims.iter().product();
    let data: Vec<f32> = if !t.raw_data.is_empty() {
        t.raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    } else {
        t.float_data.clone()
    };
    if data.len() as i64 != n {
        return Err(format!(
            "initializer `{}` holds {} values for dims {:?}",
            t.name,
            data.len(),
            t.dims
        ));
    }
    Ok(data)
}

/// Static input shape `[batch, c, h, w]` of the model's only non-initializer input.
fn input_shape(g: &pb::GraphProto, inits: &HashSet<&str>) -> Result<(String, Shape), String> {
    let inputs: Vec<&pb::ValueInfoProto> = g
        .input
        .iter()
        .filter(|i| !inits.contains(i.name.as_str()))
        .collect();
    let [input] = inputs.as_slice() else {
        return Err(format!(
            "expected a model with one input, found {}",
            inputs.len()
        ));
    };
    let dims: Vec<Option<i64>> = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(pb::type_proto::Value::TensorType(t)) => t
            .shape
            .as_ref()
            .map(|s| {
                s.dim
                    .iter()
                    .map(|d| match d.value {
                        Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) => Some(v),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    match dims.as_slice() {
        [_, Some(c), Some(h), Some(w)] if *c > 0 && *h > 0 && *w > 0 => Ok((
            input.name.clone(),
            Shape {
                c: *c as usize,
                h: *h as usize,
                w: *w as usize,
            },
        )),
        _ => Err(format!(
            "the GPU engine needs an input of shape [batch, C, H, W] with fixed C, H, W; \
             input `{}` has {dims:?}",
            input.name
        )),
    }
}

struct Builder<'a> {
    nodes: &'a [pb::NodeProto],
    inits: HashMap<&'a str, &'a pb::TensorProto>,
    consumers: HashMap<&'a str, Vec<usize>>,
    graph_outputs: HashSet<&'a str>,
    done: Vec<bool>,
    value_of: HashMap<String, usize>,
    values: Vec<Shape>,
    steps: Vec<Step>,
    /// The model input's real channel count (value 0 may hold more, zero-padded).
    input_c: usize,
}

impl<'a> Builder<'a> {
    fn node_label(&self, i: usize) -> String {
        let n = &self.nodes[i];
        if n.name.is_empty() {
            format!("{} #{i}", n.op_type)
        } else {
            format!("{} `{}`", n.op_type, n.name)
        }
    }

    fn init(&self, name: &str, node: usize) -> Result<Vec<f32>, String> {
        match self.inits.get(name) {
            Some(t) => tensor_data(t),
            None => Err(format!(
                "{}: input `{name}` must be a constant initializer",
                self.node_label(node)
            )),
        }
    }

    fn value(&self, name: &str, node: usize) -> Result<usize, String> {
        self.value_of.get(name).copied().ok_or_else(|| {
            format!(
                "{}: input `{name}` is not produced by an earlier node",
                self.node_label(node)
            )
        })
    }

    fn define(&mut self, name: &str, shape: Shape) -> usize {
        self.values.push(shape);
        let id = self.values.len() - 1;
        self.value_of.insert(name.to_string(), id);
        id
    }

    /// The node that alone reads `name`, if it is `op` and `name` is not a model output.
    fn sole_consumer(&self, name: &str, op: &str) -> Option<usize> {
        if self.graph_outputs.contains(name) {
            return None;
        }
        match self.consumers.get(name).map(Vec::as_slice) {
            Some([one]) if self.nodes[*one].op_type == op && !self.done[*one] => Some(*one),
            _ => None,
        }
    }

    /// After a conv (or a Gemm turned conv): absorb Add(residual) and Relu that follow.
    fn fuse_tail(&mut self, mut out: String, conv: &mut ConvStep) -> Result<String, String> {
        if let Some(add) = self.sole_consumer(&out, "Add") {
            let node = &self.nodes[add];
            let other = node.input.iter().find(|i| **i != out).cloned();
            if let Some(other) = other {
                if let Some(&id) = self.value_of.get(&other) {
                    if self.values[id] == self.conv_shape(conv)? && node.input.len() == 2 {
                        conv.residual = Some(id);
                        self.done[add] = true;
                        out = node.output[0].clone();
                    }
                }
            }
        }
        if let Some(relu) = self.sole_consumer(&out, "Relu") {
            conv.relu = true;
            self.done[relu] = true;
            out = self.nodes[relu].output[0].clone();
        }
        Ok(out)
    }

    fn conv_shape(&self, c: &ConvStep) -> Result<Shape, String> {
        let x = self.values[c.input];
        let dim = |size: usize, k: usize, s: usize, p: usize, d: usize| {
            let span = d * (k - 1) + 1;
            (size + 2 * p)
                .checked_sub(span)
                .map(|v| v / s + 1)
                .ok_or_else(|| format!("`{}`: kernel larger than its padded input", c.name))
        };
        Ok(Shape {
            c: c.cout,
            h: dim(x.h, c.kernel[0], c.stride[0], c.pad[0], c.dilation[0])?,
            w: dim(x.w, c.kernel[1], c.stride[1], c.pad[1], c.dilation[1])?,
        })
    }

    fn symmetric_pads(&self, i: usize) -> Result<[usize; 2], String> {
        let node = &self.nodes[i];
        if let Some(p) = attr(node, "auto_pad") {
            let mode = String::from_utf8_lossy(&p.s);
            if mode != "NOTSET" && !mode.is_empty() {
                return Err(format!(
                    "{}: auto_pad = {mode} is not supported; export with explicit pads",
                    self.node_label(i)
                ));
            }
        }
        match attr_ints(node, "pads").as_deref() {
            None | Some([]) => Ok([0, 0]),
            Some([t, l, b, r]) if t == b && l == r && *t >= 0 && *l >= 0 => {
                Ok([*t as usize, *l as usize])
            }
            Some(p) => Err(format!(
                "{}: pads {p:?} are asymmetric; cuDNN needs top = bottom and left = right",
                self.node_label(i)
            )),
        }
    }

    fn pair(&self, i: usize, name: &str, default: usize) -> Result<[usize; 2], String> {
        match attr_ints(&self.nodes[i], name).as_deref() {
            None | Some([]) => Ok([default, default]),
            Some([a, b]) if *a > 0 && *b > 0 => Ok([*a as usize, *b as usize]),
            Some(v) => Err(format!(
                "{}: `{name}` = {v:?}; expected two positive values (2-D)",
                self.node_label(i)
            )),
        }
    }

    fn conv(&mut self, i: usize) -> Result<(), String> {
        let node = &self.nodes[i];
        let input = self.value(&node.input[0], i)?;
        let w_name = node.input.get(1).cloned().unwrap_or_default();
        let w_dims = self
            .inits
            .get(w_name.as_str())
            .map(|t| t.dims.clone())
            .unwrap_or_default();
        let weight = self.init(&w_name, i)?;
        let [cout, cin_g, kh, kw] = match w_dims.as_slice() {
            [a, b, c, d] => [*a as usize, *b as usize, *c as usize, *d as usize],
            d => {
                return Err(format!(
                    "{}: weight dims {d:?}; only 2-D convolutions are supported",
                    self.node_label(i)
                ))
            }
        };
        let groups = attr_int(node, "group", 1).max(1) as usize;
        // Value 0 may be padded on the device; the ONNX weights see the real channels.
        let cin = if input == 0 {
            self.input_c
        } else {
            self.values[input].c
        };
        if cin_g * groups != cin || !cout.is_multiple_of(groups) {
            return Err(format!(
                "{}: weights {w_dims:?} with group = {groups} do not fit an input of {cin} channels",
                self.node_label(i)
            ));
        }
        let bias = match node.input.get(2).filter(|b| !b.is_empty()) {
            Some(b) => self.init(b, i)?,
            None => vec![0.0; cout],
        };
        let mut conv = ConvStep {
            name: self.node_label(i),
            input,
            residual: None,
            output: 0,
            cin,
            cout,
            kernel: [kh, kw],
            stride: self.pair(i, "strides", 1)?,
            pad: self.symmetric_pads(i)?,
            dilation: self.pair(i, "dilations", 1)?,
            groups,
            relu: false,
            weight,
            bias,
        };
        if let Some(k) = attr_ints(node, "kernel_shape") {
            if k != [kh as i64, kw as i64] {
                return Err(format!(
                    "{}: kernel_shape {k:?} does not match the weights {w_dims:?}",
                    self.node_label(i)
                ));
            }
        }
        let mut out = node.output[0].clone();
        if let Some(bn) = self.sole_consumer(&out, "BatchNormalization") {
            self.fold_bn(bn, &mut conv)?;
            self.done[bn] = true;
            out = self.nodes[bn].output[0].clone();
        }
        let out = self.fuse_tail(out, &mut conv)?;
        let shape = self.conv_shape(&conv)?;
        conv.output = self.define(&out, shape);
        self.steps.push(Step::Conv(conv));
        Ok(())
    }

    /// y = γ (conv(x) + b − μ) / √(σ² + ε) + β: scale each output channel's weights and bias.
    fn fold_bn(&self, i: usize, conv: &mut ConvStep) -> Result<(), String> {
        let node = &self.nodes[i];
        if node.input.len() != 5 {
            return Err(format!(
                "{}: expected 5 inputs (x, scale, B, mean, var)",
                self.node_label(i)
            ));
        }
        let eps = attr_float(node, "epsilon", 1e-5);
        let [gamma, beta, mean, var] = [1, 2, 3, 4].map(|k| self.init(&node.input[k], i));
        let (gamma, beta, mean, var) = (gamma?, beta?, mean?, var?);
        if [&gamma, &beta, &mean, &var]
            .iter()
            .any(|v| v.len() != conv.cout)
        {
            return Err(format!(
                "{}: parameters must have {} values (the conv's output channels)",
                self.node_label(i),
                conv.cout
            ));
        }
        let per_out = conv.weight.len() / conv.cout;
        for o in 0..conv.cout {
            let scale = gamma[o] / (var[o] + eps).sqrt();
            for w in &mut conv.weight[o * per_out..(o + 1) * per_out] {
                *w *= scale;
            }
            conv.bias[o] = (conv.bias[o] - mean[o]) * scale + beta[o];
        }
        Ok(())
    }

    /// Gemm / MatMul on a `c × 1 × 1` value as a 1×1 convolution. `weight` is `[cout][cin]`.
    fn dense(
        &mut self,
        i: usize,
        weight: Vec<f32>,
        bias: Vec<f32>,
        cout: usize,
    ) -> Result<(), String> {
        let node = &self.nodes[i];
        let input = self.value(&node.input[0], i)?;
        let x = self.values[input];
        if x.h != 1 || x.w != 1 || weight.len() != cout * x.c {
            return Err(format!(
                "{}: expects a flat input of {} features; got {:?}",
                self.node_label(i),
                weight.len() / cout.max(1),
                x
            ));
        }
        let mut conv = ConvStep {
            name: self.node_label(i),
            input,
            residual: None,
            output: 0,
            cin: x.c,
            cout,
            kernel: [1, 1],
            stride: [1, 1],
            pad: [0, 0],
            dilation: [1, 1],
            groups: 1,
            relu: false,
            weight,
            bias,
        };
        let mut out = node.output[0].clone();
        // MatMul + Add(bias): take the bias from the Add.
        if node.op_type == "MatMul" {
            if let Some(add) = self.sole_consumer(&out, "Add") {
                let a = &self.nodes[add];
                if let Some(b) = a.input.iter().find(|n| **n != out) {
                    if let Some(t) = self.inits.get(b.as_str()) {
                        let b = tensor_data(t)?;
                        if b.len() == cout {
                            conv.bias = b;
                            self.done[add] = true;
                            out = a.output[0].clone();
                        }
                    }
                }
            }
        }
        let out = self.fuse_tail(out, &mut conv)?;
        conv.output = self.define(
            &out,
            Shape {
                c: cout,
                h: 1,
                w: 1,
            },
        );
        self.steps.push(Step::Conv(conv));
        Ok(())
    }

    /// A 2-D weight initializer (input 1 of Gemm/MatMul) and its dims.
    fn matrix(&self, i: usize) -> Result<(Vec<f32>, [usize; 2]), String> {
        let name = self.nodes[i].input.get(1).cloned().unwrap_or_default();
        let dims = self
            .inits
            .get(name.as_str())
            .map(|t| t.dims.clone())
            .unwrap_or_default();
        let w = self.init(&name, i)?;
        match dims.as_slice() {
            [a, b] => Ok((w, [*a as usize, *b as usize])),
            d => Err(format!(
                "{}: weight dims {d:?}; expected 2",
                self.node_label(i)
            )),
        }
    }

    fn gemm(&mut self, i: usize) -> Result<(), String> {
        let node = &self.nodes[i];
        if attr_int(node, "transA", 0) != 0 {
            return Err(format!(
                "{}: transA = 1 is not supported",
                self.node_label(i)
            ));
        }
        let (w, [d0, d1]) = self.matrix(i)?;
        let alpha = attr_float(node, "alpha", 1.0);
        let beta = attr_float(node, "beta", 1.0);
        let (cout, cin) = if attr_int(node, "transB", 0) != 0 {
            (d0, d1)
        } else {
            (d1, d0)
        };
        let mut weight = vec![0.0; cout * cin];
        for o in 0..cout {
            for k in 0..cin {
                let v = if attr_int(node, "transB", 0) != 0 {
                    w[o * cin + k]
                } else {
                    w[k * cout + o]
                };
                weight[o * cin + k] = alpha * v;
            }
        }
        let bias = match node.input.get(2).filter(|b| !b.is_empty()) {
            Some(b) => {
                let b = self.init(b, i)?;
                match b.len() {
                    n if n == cout => b.iter().map(|v| beta * v).collect(),
                    1 => vec![beta * b[0]; cout],
                    n => {
                        return Err(format!(
                            "{}: bias of {n} values for {cout} outputs",
                            self.node_label(i)
                        ))
                    }
                }
            }
            None => vec![0.0; cout],
        };
        self.dense(i, weight, bias, cout)
    }

    fn matmul(&mut self, i: usize) -> Result<(), String> {
        let (w, [cin, cout]) = self.matrix(i)?;
        let mut weight = vec![0.0; cout * cin];
        for k in 0..cin {
            for o in 0..cout {
                weight[o * cin + k] = w[k * cout + o];
            }
        }
        self.dense(i, weight, vec![0.0; cout], cout)
    }

    fn pool(&mut self, i: usize, kind: PoolKind) -> Result<(), String> {
        let node = &self.nodes[i];
        let input = self.value(&node.input[0], i)?;
        if attr_int(node, "ceil_mode", 0) != 0 {
            return Err(format!(
                "{}: ceil_mode = 1 is not supported",
                self.node_label(i)
            ));
        }
        if node.output.len() > 1 {
            return Err(format!(
                "{}: the Indices output is not supported",
                self.node_label(i)
            ));
        }
        let kind = match kind {
            PoolKind::Max => PoolKind::Max,
            _ if attr_int(node, "count_include_pad", 0) != 0 => PoolKind::AvgIncludePad,
            _ => PoolKind::AvgExcludePad,
        };
        let kernel = self.pair(i, "kernel_shape", 0)?;
        if kernel.contains(&0) {
            return Err(format!("{}: kernel_shape is required", self.node_label(i)));
        }
        let p = PoolStep {
            input,
            output: 0,
            kind,
            kernel,
            stride: self.pair(i, "strides", 1)?,
            pad: self.symmetric_pads(i)?,
        };
        if kind == PoolKind::Max && self.pair(i, "dilations", 1)? != [1, 1] {
            return Err(format!(
                "{}: dilated pooling is not supported",
                self.node_label(i)
            ));
        }
        let x = self.values[input];
        let dim = |size: usize, k: usize, s: usize, pad: usize| {
            (size + 2 * pad).checked_sub(k).map(|v| v / s + 1)
        };
        let (Some(h), Some(w)) = (
            dim(x.h, p.kernel[0], p.stride[0], p.pad[0]),
            dim(x.w, p.kernel[1], p.stride[1], p.pad[1]),
        ) else {
            return Err(format!(
                "{}: window larger than its input",
                self.node_label(i)
            ));
        };
        self.push_pool(p, &node.output[0].clone(), Shape { c: x.c, h, w });
        Ok(())
    }

    fn push_pool(&mut self, mut p: PoolStep, out: &str, shape: Shape) {
        p.output = self.define(out, shape);
        self.steps.push(Step::Pool(p));
    }

    fn clamp(&mut self, i: usize, lo: f32, hi: f32) -> Result<(), String> {
        let node = &self.nodes[i];
        let input = self.value(&node.input[0], i)?;
        let shape = self.values[input];
        let out = node.output[0].clone();
        let output = self.define(&out, shape);
        self.steps.push(Step::Clamp {
            input,
            output,
            lo,
            hi,
        });
        Ok(())
    }

    fn clip_bounds(&self, i: usize) -> Result<(f32, f32), String> {
        let node = &self.nodes[i];
        let bound = |k: usize, attr_name: &str, default: f32| -> Result<f32, String> {
            match node.input.get(k).filter(|n| !n.is_empty()) {
                Some(name) => match self.init(name, i)?.as_slice() {
                    [v] => Ok(*v),
                    _ => Err(format!(
                        "{}: bound `{name}` must be a scalar",
                        self.node_label(i)
                    )),
                },
                None => Ok(attr_float(node, attr_name, default)),
            }
        };
        Ok((
            bound(1, "min", f32::NEG_INFINITY)?,
            bound(2, "max", f32::INFINITY)?,
        ))
    }

    /// Flatten / Reshape to `[N, features]`: free on a `c × 1 × 1` value (NHWC and NCHW agree).
    fn flatten(&mut self, i: usize) -> Result<(), String> {
        let node = &self.nodes[i];
        let input = self.value(&node.input[0], i)?;
        let x = self.values[input];
        if node.op_type == "Flatten" && attr_int(node, "axis", 1) != 1 {
            return Err(format!(
                "{}: only axis = 1 is supported",
                self.node_label(i)
            ));
        }
        if node.op_type == "Reshape" {
            let target = node
                .input
                .get(1)
                .and_then(|n| self.inits.get(n.as_str()))
                .map(|t| {
                    if !t.raw_data.is_empty() {
                        t.raw_data
                            .chunks_exact(8)
                            .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                            .collect::<Vec<_>>()
                    } else {
                        t.int64_data.clone()
                    }
                });
            let ok = matches!(target.as_deref(), Some([a, b])
                if (*a == 0 || *a == -1) && (*b == -1 || *b == x.len() as i64));
            if !ok {
                return Err(format!(
                    "{}: only a reshape to [N, {}] is supported (target {target:?})",
                    self.node_label(i),
                    x.len()
                ));
            }
        }
        if x.h != 1 || x.w != 1 {
            return Err(format!(
                "{}: flattening a spatial tensor ({x:?}) is not supported; \
                 only after a global pool",
                self.node_label(i)
            ));
        }
        self.value_of.insert(node.output[0].clone(), input);
        Ok(())
    }

    fn step(&mut self, i: usize) -> Result<(), String> {
        let op = self.nodes[i].op_type.clone();
        match op.as_str() {
            "Conv" => self.conv(i),
            "Gemm" => self.gemm(i),
            "MatMul" => self.matmul(i),
            "MaxPool" => self.pool(i, PoolKind::Max),
            "AveragePool" => self.pool(i, PoolKind::AvgExcludePad),
            "GlobalAveragePool" => {
                let input = self.value(&self.nodes[i].input[0], i)?;
                let x = self.values[input];
                let p = PoolStep {
                    input,
                    output: 0,
                    kind: PoolKind::AvgIncludePad,
                    kernel: [x.h, x.w],
                    stride: [x.h, x.w],
                    pad: [0, 0],
                };
                let out = self.nodes[i].output[0].clone();
                self.push_pool(p, &out, Shape { c: x.c, h: 1, w: 1 });
                Ok(())
            }
            "Relu" => self.clamp(i, 0.0, f32::INFINITY),
            "Clip" => {
                let (lo, hi) = self.clip_bounds(i)?;
                self.clamp(i, lo, hi)
            }
            "Add" => {
                let node = &self.nodes[i];
                let (a, b) = match node.input.as_slice() {
                    [a, b] => (self.value(a, i)?, self.value(b, i)?),
                    _ => return Err(format!("{}: expected 2 inputs", self.node_label(i))),
                };
                if self.values[a] != self.values[b] {
                    return Err(format!(
                        "{}: broadcasting {:?} + {:?} is not supported",
                        self.node_label(i),
                        self.values[a],
                        self.values[b]
                    ));
                }
                let mut out = node.output[0].clone();
                let mut relu = false;
                if let Some(r) = self.sole_consumer(&out, "Relu") {
                    relu = true;
                    self.done[r] = true;
                    out = self.nodes[r].output[0].clone();
                }
                let shape = self.values[a];
                let output = self.define(&out, shape);
                self.steps.push(Step::Add { a, b, output, relu });
                Ok(())
            }
            "Softmax" => {
                let node = &self.nodes[i];
                let input = self.value(&node.input[0], i)?;
                let x = self.values[input];
                let axis = attr_int(node, "axis", -1);
                if x.h != 1 || x.w != 1 || !(axis == 1 || axis == -1) {
                    return Err(format!(
                        "{}: only a softmax over the features of [N, C] is supported",
                        self.node_label(i)
                    ));
                }
                let out = node.output[0].clone();
                let output = self.define(&out, x);
                self.steps.push(Step::Softmax { input, output });
                Ok(())
            }
            "Flatten" | "Reshape" => self.flatten(i),
            "Identity" | "Dropout" => {
                let node = &self.nodes[i];
                let input = self.value(&node.input[0], i)?;
                self.value_of.insert(node.output[0].clone(), input);
                Ok(())
            }
            "BatchNormalization" => Err(format!(
                "{}: a BatchNormalization must directly follow a Conv (it is folded into it)",
                self.node_label(i)
            )),
            other => Err(format!(
                "{}: op `{other}` is not supported by the GPU engine (supported: Conv, \
                 BatchNormalization after Conv, Relu, Clip, Add, MaxPool, AveragePool, \
                 GlobalAveragePool, Flatten, Reshape, Gemm, MatMul, Softmax, Identity, Dropout)",
                self.node_label(i)
            )),
        }
    }
}

/// Builds the plan of an ONNX model.
pub fn build(model: &pb::ModelProto) -> Result<Plan, String> {
    let g = model.graph.as_ref().ok_or("the ONNX file has no graph")?;
    let inits: HashMap<&str, &pb::TensorProto> =
        g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let init_names: HashSet<&str> = inits.keys().copied().collect();
    let (input_name, input) = input_shape(g, &init_names)?;
    let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for name in &n.input {
            consumers.entry(name.as_str()).or_default().push(i);
        }
    }
    let [output] = g.output.as_slice() else {
        return Err(format!(
            "expected a model with one output, found {}",
            g.output.len()
        ));
    };
    let mut b = Builder {
        nodes: &g.node,
        inits,
        consumers,
        graph_outputs: std::iter::once(output.name.as_str()).collect(),
        done: vec![false; g.node.len()],
        value_of: HashMap::new(),
        values: Vec::new(),
        steps: Vec::new(),
        input_c: input.c,
    };
    let pad_input = input.c < 8
        && b.consumers
            .get(input_name.as_str())
            .is_some_and(|c| c.iter().all(|&i| g.node[i].op_type == "Conv"));
    let input_padded_c = if pad_input { 8 } else { input.c };
    b.define(
        &input_name,
        Shape {
            c: input_padded_c,
            ..input
        },
    );
    for i in 0..g.node.len() {
        if !b.done[i] {
            b.step(i)?;
            b.done[i] = true;
        }
    }
    // Convs reading the padded input get zero weights for the padding channels.
    if pad_input {
        for conv in b.steps.iter_mut().filter_map(|s| match s {
            Step::Conv(c) if c.input == 0 => Some(c),
            _ => None,
        }) {
            let (k, real) = (conv.kernel[0] * conv.kernel[1], input.c);
            let mut w = vec![0.0; conv.cout * input_padded_c * k];
            for o in 0..conv.cout {
                for c in 0..real {
                    let src = (o * real + c) * k;
                    let dst = (o * input_padded_c + c) * k;
                    w[dst..dst + k].copy_from_slice(&conv.weight[src..src + k]);
                }
            }
            conv.weight = w;
            conv.cin = input_padded_c;
        }
    }
    let out = *b
        .value_of
        .get(&output.name)
        .ok_or_else(|| format!("the model output `{}` is never produced", output.name))?;
    if out == 0 {
        return Err("the model's output is its input".into());
    }
    Ok(Plan {
        input,
        input_padded_c,
        values: b.values,
        steps: b.steps,
        output: out,
    })
}

/// Reference execution of a plan in f32 on the CPU (NCHW, direct loops): the tests use it to
/// prove folding and fusion preserve the function.
#[cfg(test)]
fn run_reference(plan: &Plan, input: &[f32], n: usize) -> Vec<f32> {
    let mut vals: Vec<Vec<f32>> = vec![Vec::new(); plan.values.len()];
    let x = plan.input;
    let pc = plan.input_padded_c;
    let mut v0 = vec![0.0; n * pc * x.h * x.w];
    for b in 0..n {
        for c in 0..x.c {
            let src = (b * x.c + c) * x.h * x.w;
            let dst = (b * pc + c) * x.h * x.w;
            v0[dst..dst + x.h * x.w].copy_from_slice(&input[src..src + x.h * x.w]);
        }
    }
    vals[0] = v0;
    for step in &plan.steps {
        let out = match step {
            Step::Conv(c) => {
                let xs = plan.values[c.input];
                let ys = plan.values[c.output];
                let xin = &vals[c.input];
                let mut y = vec![0.0f32; n * ys.len()];
                let cin_g = c.cin / c.groups;
                let cout_g = c.cout / c.groups;
                for b in 0..n {
                    for o in 0..c.cout {
                        let g = o / cout_g;
                        for oy in 0..ys.h {
                            for ox in 0..ys.w {
                                let mut acc = c.bias[o];
                                for ci in 0..cin_g {
                                    let ic = g * cin_g + ci;
                                    for ky in 0..c.kernel[0] {
                                        let iy = (oy * c.stride[0] + ky * c.dilation[0]) as isize
                                            - c.pad[0] as isize;
                                        if iy < 0 || iy >= xs.h as isize {
                                            continue;
                                        }
                                        for kx in 0..c.kernel[1] {
                                            let ix = (ox * c.stride[1] + kx * c.dilation[1])
                                                as isize
                                                - c.pad[1] as isize;
                                            if ix < 0 || ix >= xs.w as isize {
                                                continue;
                                            }
                                            let wv = c.weight[((o * cin_g + ci) * c.kernel[0]
                                                + ky)
                                                * c.kernel[1]
                                                + kx];
                                            let xv = xin[((b * xs.c + ic) * xs.h + iy as usize)
                                                * xs.w
                                                + ix as usize];
                                            acc += wv * xv;
                                        }
                                    }
                                }
                                let idx = ((b * ys.c + o) * ys.h + oy) * ys.w + ox;
                                if let Some(r) = c.residual {
                                    acc += vals[r][idx];
                                }
                                y[idx] = if c.relu { acc.max(0.0) } else { acc };
                            }
                        }
                    }
                }
                y
            }
            Step::Pool(p) => {
                let xs = plan.values[p.input];
                let ys = plan.values[p.output];
                let xin = &vals[p.input];
                let mut y = vec![0.0f32; n * ys.len()];
                for b in 0..n {
                    for c in 0..xs.c {
                        for oy in 0..ys.h {
                            for ox in 0..ys.w {
                                let (mut acc, mut cnt) = match p.kind {
                                    PoolKind::Max => (f32::NEG_INFINITY, 0),
                                    _ => (0.0, 0),
                                };
                                for ky in 0..p.kernel[0] {
                                    for kx in 0..p.kernel[1] {
                                        let iy =
                                            (oy * p.stride[0] + ky) as isize - p.pad[0] as isize;
                                        let ix =
                                            (ox * p.stride[1] + kx) as isize - p.pad[1] as isize;
                                        if iy < 0
                                            || ix < 0
                                            || iy >= xs.h as isize
                                            || ix >= xs.w as isize
                                        {
                                            continue;
                                        }
                                        let v = xin[((b * xs.c + c) * xs.h + iy as usize) * xs.w
                                            + ix as usize];
                                        cnt += 1;
                                        acc = match p.kind {
                                            PoolKind::Max => acc.max(v),
                                            _ => acc + v,
                                        };
                                    }
                                }
                                let div = match p.kind {
                                    PoolKind::Max => 1.0,
                                    PoolKind::AvgIncludePad => (p.kernel[0] * p.kernel[1]) as f32,
                                    PoolKind::AvgExcludePad => cnt.max(1) as f32,
                                };
                                y[((b * ys.c + c) * ys.h + oy) * ys.w + ox] = acc / div;
                            }
                        }
                    }
                }
                y
            }
            Step::Add { a, b, relu, .. } => vals[*a]
                .iter()
                .zip(&vals[*b])
                .map(|(x, y)| if *relu { (x + y).max(0.0) } else { x + y })
                .collect(),
            Step::Clamp { input, lo, hi, .. } => {
                vals[*input].iter().map(|v| v.clamp(*lo, *hi)).collect()
            }
            Step::Softmax { input, .. } => {
                let c = plan.values[*input].c;
                vals[*input]
                    .chunks(c)
                    .flat_map(|row| {
                        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                        let e: Vec<f32> = row.iter().map(|v| (v - m).exp()).collect();
                        let s: f32 = e.iter().sum();
                        e.into_iter().map(move |v| v / s)
                    })
                    .collect()
            }
        };
        vals[step.output()] = out;
    }
    std::mem::take(&mut vals[plan.output])
}

#[cfg(test)]
mod tests;
