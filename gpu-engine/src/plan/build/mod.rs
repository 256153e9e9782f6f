//! ONNX nodes → plan steps. Nodes are visited in the file's (topological) order; a node whose
//! inputs are all known at load time is folded (`fold::eval`), the rest become steps. Fusions
//! look one node ahead: Conv absorbs the BatchNormalization, residual Add and ReLU after it;
//! Sigmoid absorbs the Mul that makes it SiLU; Flatten + Gemm becomes one 1×1 convolution over
//! the map's memory; Transposes between NCHW and NHWC that the storage already has move nothing.
//!
//! One file per op family holds how its ops become steps, with its table of the ONNX names it
//! lowers (`OPS`); `FAMILIES` below lists the tables. A new op is a line in its family's table
//! (and a new family one file and one line here). This file holds what every family uses: the
//! `Builder`, its reading of node inputs and attributes, and the walk over the graph (`build`).

// Op families.
mod concat;
mod conv;
mod conv1d;
mod elementwise;
mod matmul;
mod norm;
mod pad;
mod pool;
mod reduce;
mod resize;
mod shape;
mod shuffle;

// Tensors the batch does not lead, and indices computed from it.
mod batch_index;
mod moved;
mod moved_pairs;

mod error;
pub use error::{BuildError, NodeError, Regroup};

use std::collections::{HashMap, HashSet};

use tract_onnx::pb;

use super::{
    Binary, ConcatStep, Const, ConvStep, Dims, MapStep, MatMulStep, Operand, Plan, PoolKind,
    PoolStep, ReduceKind, ReduceStep, RowKind, RowStep, Step, Unary, Value, CONCAT_MAX_PARTS,
};
use batch_index::BatchIndex;
use moved::Moved;
use onnx_front::fold::{self, attr, attr_float, attr_int, attr_ints, FoldError, Folded, Sym};
use shuffle::ShuffleStart;

/// How one ONNX op becomes steps.
type Lower = for<'b, 'a> fn(&'b mut Builder<'a>, usize) -> R<()>;

/// The ops the GPU engine runs, under the names ONNX gives them, family by family:
/// `Builder::step` dispatches through these tables, and the unsupported-op error and
/// docs/config.md list them (`supported`).
const FAMILIES: &[&[(&str, Lower)]] = &[
    conv::OPS,
    matmul::OPS,
    pool::OPS,
    reduce::OPS,
    elementwise::OPS,
    norm::OPS,
    pad::OPS,
    resize::OPS,
    shape::OPS,
    concat::OPS,
];

/// Every family's ops, in `FAMILIES`' order.
fn ops() -> impl Iterator<Item = &'static (&'static str, Lower)> {
    FAMILIES.iter().flat_map(|f| f.iter())
}

/// The ops the GPU engine accepts: those it runs (`FAMILIES`), then those it only evaluates at load
/// time on constants (`fold::FOLDED`), as the unsupported-op error and docs/config.md give them.
pub fn supported() -> String {
    let run: Vec<&str> = ops().map(|(name, _)| *name).collect();
    let only_folded: Vec<&str> = fold::FOLDED
        .iter()
        .copied()
        .filter(|op| !run.contains(op))
        .collect();
    format!(
        "{} (and, on constants, evaluated at load time: {})",
        run.join(", "),
        only_folded.join(", ")
    )
}

/// The batch dimension in the broadcasting of full shapes.
const BATCH: usize = usize::MAX / 2;

struct Builder<'a> {
    nodes: &'a [pb::NodeProto],
    consumers: HashMap<&'a str, Vec<usize>>,
    graph_outputs: HashSet<&'a str>,
    done: Vec<bool>,
    folded: HashMap<String, Folded>,
    const_of: HashMap<String, usize>,
    value_of: HashMap<String, usize>,
    /// Flatten outputs not materialised yet: the rank-3 value they flatten (for Gemm).
    flat_of: HashMap<usize, usize>,
    /// Reshapes of a channels-last map `[C, H, W]` to `[C, H·W]` read only by a transpose to
    /// tokens `[H·W, C]` (see `Builder::tokens_pending`): the map they come from.
    tokens_of: HashMap<usize, usize>,
    /// Reshapes of a channels-last map `[C, H, W]` to one row per item `[1, C·H·W]`, on the
    /// way into or out of a normalisation over the whole item (see `Builder::whole_pending`):
    /// the map each stands for.
    whole_of: HashMap<usize, usize>,
    /// Tensors whose batch is not their first dim (see `moved`), by ONNX name.
    moved: HashMap<String, Moved>,
    /// Integer tensors computed from the item number (see `batch_index`), by ONNX name.
    batch_index: HashMap<String, BatchIndex>,
    /// Channel shuffles read only by Splits, not copied yet: the value shuffled and the groups
    /// (see `channel_shuffle`), by ONNX name.
    shuffled: HashMap<String, (usize, usize)>,
    /// The first two nodes of a channel shuffle, by the Transpose's output: the Reshape back
    /// is checked when it comes (its target may be computed by nodes between).
    shuffle_start: HashMap<String, ShuffleStart>,
    values: Vec<Value>,
    consts: Vec<Const>,
    steps: Vec<Step>,
    channels_last: bool,
    /// The model input's real channel count (value 0 may hold more, zero-padded).
    input_c: usize,
}

type R<T> = Result<T, BuildError>;

impl<'a> Builder<'a> {
    fn label(&self, i: usize) -> String {
        let n = &self.nodes[i];
        if n.name.is_empty() {
            format!("{} #{i}", n.op_type)
        } else {
            format!("{} `{}`", n.op_type, n.name)
        }
    }

    fn err(&self, i: usize, why: impl Into<NodeError>) -> BuildError {
        BuildError::Node {
            node: self.label(i),
            why: why.into(),
        }
    }

    fn input(&self, i: usize, k: usize) -> R<&'a str> {
        self.nodes[i]
            .input
            .get(k)
            .filter(|s| !s.is_empty())
            .map(String::as_str)
            .ok_or_else(|| self.err(i, NodeError::MissingInput(k)))
    }

    fn out(&self, i: usize) -> R<String> {
        self.nodes[i]
            .output
            .first()
            .cloned()
            .ok_or_else(|| self.err(i, NodeError::NoOutput))
    }

    fn value(&self, i: usize, k: usize) -> R<usize> {
        let name = self.input(i, k)?;
        if let Some(&v) = self.value_of.get(name) {
            return Ok(v);
        }
        Err(self.err(
            i,
            if self.folded.contains_key(name) {
                NodeError::ConstantInput(name.to_string())
            } else {
                NodeError::UnknownInput(name.to_string())
            },
        ))
    }

    fn folded(&self, i: usize, k: usize) -> R<&Folded> {
        let name = self.input(i, k)?;
        self.folded
            .get(name)
            .ok_or_else(|| self.err(i, NodeError::NotConstant(name.to_string())))
    }

    /// Integers given as input `k` (newer opsets) or as attribute `name` (older ones).
    fn ints_arg(&self, i: usize, k: usize, name: &str) -> R<Option<Vec<i64>>> {
        match self.nodes[i].input.get(k).filter(|s| !s.is_empty()) {
            Some(_) => self
                .folded(i, k)?
                .known_ints()
                .map(Some)
                .map_err(|e| self.err(i, e)),
            None => Ok(attr_ints(&self.nodes[i], name)),
        }
    }

    fn floats(&self, i: usize, k: usize) -> R<Vec<f32>> {
        self.folded(i, k)?.floats().map_err(|e| self.err(i, e))
    }

    fn operand(&mut self, i: usize, k: usize) -> R<Operand> {
        let name = self.input(i, k)?;
        if let Some(&v) = self.value_of.get(name) {
            return Ok(Operand::Value(v));
        }
        let f = self.folded(i, k)?.clone();
        Ok(Operand::Const(
            self.add_const(name, &f).map_err(|e| self.err(i, e))?,
        ))
    }

    fn add_const(&mut self, name: &str, f: &Folded) -> Result<usize, FoldError> {
        if let Some(&c) = self.const_of.get(name) {
            return Ok(c);
        }
        let dims = f.dims().to_vec();
        self.consts.push(Const {
            dims,
            data: f.floats()?,
        });
        let id = self.consts.len() - 1;
        self.const_of.insert(name.to_string(), id);
        Ok(id)
    }

    fn new_const(&mut self, dims: Vec<usize>, data: Vec<f32>) -> usize {
        self.consts.push(Const { dims, data });
        self.consts.len() - 1
    }

    fn define(&mut self, name: &str, dims: Dims, channels_last: bool) -> usize {
        let id = self.values.len();
        let channels_last = channels_last && self.channels_last && dims.len() == 3;
        self.values.push(Value {
            dims,
            channels_last,
            storage: id,
        });
        self.value_of.insert(name.to_string(), id);
        id
    }

    /// A value that is `of`'s memory under other dims/layout.
    fn alias(&mut self, name: &str, of: usize, dims: Dims, channels_last: bool) -> usize {
        let id = self.values.len();
        self.values.push(Value {
            dims,
            channels_last,
            storage: self.values[of].storage,
        });
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

    /// Whether `name` is not a model output and every node reading it (one at least) passes
    /// `reads` (given the node's index): a value the builder may leave pending for its readers.
    fn read_only_by(&self, name: &str, reads: impl Fn(usize) -> bool) -> bool {
        !self.graph_outputs.contains(name)
            && self
                .consumers
                .get(name)
                .is_some_and(|cs| !cs.is_empty() && cs.iter().all(|&k| reads(k)))
    }

    /// A Relu, or the exporter's GELU chain, that alone reads `out` is absorbed: the name to
    /// define and the unary to apply.
    fn absorb_relu(&mut self, out: String) -> R<(String, Unary)> {
        if let Some(r) = self.sole_consumer(&out, "Relu") {
            self.done[r] = true;
            return Ok((self.out(r)?, Unary::Relu));
        }
        if let Some((nodes, y)) = self.gelu_chain(&out) {
            for k in nodes {
                self.done[k] = true;
            }
            return Ok((y, Unary::Gelu));
        }
        Ok((out, Unary::Identity))
    }

    /// Whether `name` is a folded scalar within 1e-6 of `v`.
    fn is_scalar(&self, name: &str, v: f64) -> bool {
        self.folded
            .get(name)
            .and_then(|f| f.floats().ok())
            .is_some_and(|d| d.len() == 1 && (d[0] as f64 - v).abs() < 1e-6)
    }

    fn map(&mut self, m: MapStep) {
        self.steps.push(Step::Map(m));
    }

    /// `v` stored with `channels_last` as asked (a copy when it is not).
    fn with_layout(&mut self, v: usize, channels_last: bool) -> usize {
        let want = channels_last && self.channels_last && self.values[v].dims.len() == 3;
        if self.values[v].channels_last == want {
            return v;
        }
        let name = format!("{}#layout{v}", self.values.len());
        let dims = self.values[v].dims.clone();
        let out = self.define(&name, dims, want);
        self.map(MapStep::copy(v, out));
        out
    }

    /// `v` in row-major order (for reshapes and matrix products).
    fn row_major(&mut self, v: usize) -> usize {
        if self.values[v].is_row_major() {
            v
        } else {
            self.with_layout(v, false)
        }
    }

    fn full_dims(&self, o: Operand) -> Vec<usize> {
        match o {
            Operand::Value(v) => std::iter::once(BATCH)
                .chain(self.values[v].dims.iter().copied())
                .collect(),
            Operand::Const(c) => self.consts[c].dims.clone(),
        }
    }

    fn step(&mut self, i: usize) -> R<()> {
        if self.nodes[i]
            .input
            .iter()
            .any(|n| self.moved.contains_key(n))
        {
            return self.moved_step(i);
        }
        let op = self.nodes[i].op_type.as_str();
        match ops().find(|(name, _)| *name == op) {
            Some((_, lower)) => lower(self, i),
            None => Err(self.err(i, NodeError::UnsupportedOp(op.to_string()))),
        }
    }

    /// The Add of a constant `[cout]` (or `[1, …, cout]`: along the last dim) that alone reads
    /// a product's output `out`: the Add's node and the bias.
    fn bias_add(&self, out: &str, cout: usize) -> Option<(usize, Vec<f32>)> {
        let add = self.sole_consumer(out, "Add")?;
        let f = self.folded.get(self.other_input(add, out)?)?;
        let along_last = f.dims().iter().rev().skip(1).all(|&d| d == 1);
        let b = f.floats().ok()?;
        (along_last && b.len() == cout).then_some((add, b))
    }

    /// The input of two-input node `k` besides `known`, which the node reads once.
    fn other_input(&self, k: usize, known: &str) -> Option<&'a str> {
        match self.nodes[k].input.as_slice() {
            [a, b] if a == known && b != known => Some(b),
            [a, b] if b == known && a != known => Some(a),
            _ => None,
        }
    }

    /// The Add that alone reads `out` with another value of `dims` (a residual branch): the
    /// Add's node and that value.
    fn residual_add(&self, out: &str, dims: &[usize]) -> Option<(usize, usize)> {
        let add = self.sole_consumer(out, "Add")?;
        let id = *self.value_of.get(self.other_input(add, out)?)?;
        (self.values[id].dims == dims).then_some((add, id))
    }

    /// A pending flatten becomes a real row-major value.
    fn materialise(&mut self, x: usize) -> usize {
        let Some(src) = self.flat_of.remove(&x) else {
            return x;
        };
        let src = self.row_major(src);
        self.values[x].storage = self.values[src].storage;
        self.values[x].channels_last = false;
        x
    }

    fn pads(&self, i: usize) -> R<([usize; 2], [usize; 2])> {
        let node = &self.nodes[i];
        self.check_auto_pad(i)?;
        match attr_ints(node, "pads").as_deref() {
            None | Some([]) => Ok(([0, 0], [0, 0])),
            Some([t, l, b, r]) if [t, l, b, r].iter().all(|v| **v >= 0) => {
                Ok(([*t as usize, *l as usize], [*b as usize, *r as usize]))
            }
            Some(p) => Err(self.err(i, NodeError::Pads(p.to_vec()))),
        }
    }

    fn pair(&self, i: usize, name: &'static str, default: usize) -> R<[usize; 2]> {
        match attr_ints(&self.nodes[i], name).as_deref() {
            None => Ok([default, default]),
            Some([a, b]) if *a > 0 && *b > 0 => Ok([*a as usize, *b as usize]),
            Some(v) => Err(self.err(
                i,
                NodeError::Pair {
                    attribute: name,
                    values: v.to_vec(),
                },
            )),
        }
    }
}

/// Builds the plan of an ONNX model; `channels_last`: rank-4 values stored NHWC (fp16).
pub fn build(model: &pb::ModelProto, channels_last: bool) -> Result<Plan, BuildError> {
    let g = model.graph.as_ref().ok_or(BuildError::NoGraph)?;
    let mut folded = HashMap::new();
    for t in &g.initializer {
        folded.insert(t.name.clone(), fold::tensor(t)?);
    }
    let inputs: Vec<&pb::ValueInfoProto> = g
        .input
        .iter()
        .filter(|i| !folded.contains_key(&i.name))
        .collect();
    let [input] = inputs.as_slice() else {
        return Err(BuildError::Inputs(inputs.len()));
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
    let [_, Some(c), Some(h), Some(w)] = dims[..] else {
        return Err(BuildError::InputShape {
            name: input.name.clone(),
            dims,
        });
    };
    if c <= 0 || h <= 0 || w <= 0 {
        return Err(BuildError::InputDims {
            name: input.name.clone(),
            dims,
        });
    }
    let (c, h, w) = (c as usize, h as usize, w as usize);
    let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for name in &n.input {
            consumers.entry(name.as_str()).or_default().push(i);
        }
    }
    let [output] = g.output.as_slice() else {
        return Err(BuildError::Outputs(g.output.len()));
    };
    let mut b = Builder {
        nodes: &g.node,
        consumers,
        graph_outputs: std::iter::once(output.name.as_str()).collect(),
        done: vec![false; g.node.len()],
        folded,
        const_of: HashMap::new(),
        value_of: HashMap::new(),
        flat_of: HashMap::new(),
        tokens_of: HashMap::new(),
        whole_of: HashMap::new(),
        moved: HashMap::new(),
        batch_index: HashMap::new(),
        shuffled: HashMap::new(),
        shuffle_start: HashMap::new(),
        values: Vec::new(),
        consts: Vec::new(),
        steps: Vec::new(),
        channels_last,
        input_c: c,
    };
    // (Not where a Conv pads the input on one side: its padded copy is made from the input
    // as stored, and that copy, not the input, is what the convolution reads.)
    let symmetric = |n: &pb::NodeProto| {
        attr_ints(n, "pads").is_none_or(|p| p.len() != 4 || (p[0] == p[2] && p[1] == p[3]))
    };
    let pad_input = c < 8
        && b.consumers.get(input.name.as_str()).is_some_and(|cs| {
            cs.iter()
                .all(|&i| g.node[i].op_type == "Conv" && symmetric(&g.node[i]))
        });
    let input_padded_c = if pad_input { 8 } else { c };
    b.define(&input.name, vec![input_padded_c, h, w], true);
    // Constant nodes first: a fusion looks ahead at nodes (a Clip's bounds) whose constants
    // the exporter may write after the node being fused.
    for (i, node) in g.node.iter().enumerate() {
        if node.op_type == "Constant" {
            let f = fold::eval(node, &[], &|_| None).map_err(|e| b.err(i, e))?;
            if let (Some(f), Some(out)) = (f, node.output.first()) {
                b.folded.insert(out.clone(), f);
                b.done[i] = true;
            }
        }
    }
    for i in 0..g.node.len() {
        if b.done[i] {
            continue;
        }
        if b.batch_index_step(i)? {
            b.done[i] = true;
            continue;
        }
        let node = &g.node[i];
        let known: Vec<Option<&Folded>> = node.input.iter().map(|n| b.folded.get(n)).collect();
        let dims_of = |name: &str| -> Option<Vec<Sym>> {
            if let Some(m) = b.moved.get(name) {
                return Some(b.moved_shape(m));
            }
            b.value_of.get(name).map(|&v| {
                let dims = if v == 0 {
                    vec![c, h, w]
                } else {
                    b.values[v].dims.clone()
                };
                std::iter::once(Sym::BATCH)
                    .chain(dims.iter().map(|&d| Sym::known(d as i64)))
                    .collect()
            })
        };
        if node.op_type == "Split" {
            if let Some(parts) = fold::split(node, &known).map_err(|e| b.err(i, e))? {
                for (out, part) in node.output.iter().zip(parts) {
                    b.folded.insert(out.clone(), part);
                }
                b.done[i] = true;
                continue;
            }
        }
        let f = fold::eval(node, &known, &dims_of).map_err(|e| b.err(i, e))?;
        if let Some(f) = f {
            if let Some(out) = node.output.first() {
                b.folded.insert(out.clone(), f);
            }
        } else {
            b.step(i)?;
        }
        b.done[i] = true;
    }
    // Convs reading the padded input get zero weights for the padding channels.
    if pad_input {
        for conv in b.steps.iter_mut().filter_map(|s| match s {
            Step::Conv(cv) if cv.input == 0 => Some(cv),
            _ => None,
        }) {
            let k = conv.kernel[0] * conv.kernel[1];
            let mut wt = vec![0.0; conv.cout * input_padded_c * k];
            for o in 0..conv.cout {
                for ch in 0..c {
                    let src = (o * c + ch) * k;
                    let dst = (o * input_padded_c + ch) * k;
                    wt[dst..dst + k].copy_from_slice(&conv.weight[src..src + k]);
                }
            }
            conv.weight = wt;
            conv.cin = input_padded_c;
        }
    }
    let out = match b.value_of.get(&output.name) {
        Some(&v) => b.materialise(v),
        None if b.moved.contains_key(&output.name) => {
            return Err(BuildError::OutputMoved {
                name: output.name.clone(),
                shape: b.moved_shape(&b.moved[&output.name]),
            });
        }
        None if b.folded.contains_key(&output.name) => return Err(BuildError::OutputConstant),
        None => return Err(BuildError::OutputMissing(output.name.clone())),
    };
    if out == 0 {
        return Err(BuildError::OutputIsInput);
    }
    let mut plan = Plan {
        input: [c, h, w],
        input_padded_c,
        channels_last: b.channels_last,
        values: b.values,
        consts: b.consts,
        steps: b.steps,
        output: out,
    };
    super::fuse::fuse(&mut plan);
    Ok(plan)
}
