//! ONNX nodes → plan steps. Nodes are visited in the file's (topological) order; a node whose
//! inputs are all known at load time is folded (`fold::eval`), the rest become steps. Fusions
//! look one node ahead: Conv absorbs the BatchNormalization, residual Add and ReLU after it;
//! Sigmoid absorbs the Mul that makes it SiLU; Flatten + Gemm becomes one 1×1 convolution over
//! the map's memory; Transposes between NCHW and NHWC that the storage already has move nothing.

mod adds;
mod attention;
mod batch_index;
mod conv1d;
pub use attention::HEAD_DIMS;
mod error;
pub use error::{BuildError, NodeError, Regroup};
mod moved;
mod moved_pairs;
mod products;
mod residuals;

use std::collections::{HashMap, HashSet};

use tract_onnx::pb;

use super::{
    Binary, ConcatStep, Const, ConvStep, Dims, MapStep, MatMulStep, Operand, Plan, PoolKind,
    PoolStep, ReduceKind, ReduceStep, RowKind, RowStep, Step, Unary, Value, CONCAT_MAX_PARTS,
};
use crate::onnx::fold::{self, attr, attr_float, attr_int, attr_ints, FoldError, Folded, Sym};
use batch_index::BatchIndex;
use moved::Moved;

/// The reductions that are a sum of an elementwise function (`Builder::reduce_norm`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Norm {
    L1,
    L2,
    SumSquare,
}

/// How one ONNX op becomes steps.
type Lower = for<'b, 'a> fn(&'b mut Builder<'a>, usize) -> R<()>;

/// The ops the GPU engine runs, under the names ONNX gives them: `Builder::step` dispatches
/// through this table, and the unsupported-op error and docs/config.md list it (`supported`).
const OPS: &[(&str, Lower)] = &[
    ("Conv", |b, i| b.conv(i)),
    ("BatchNormalization", |b, i| b.batch_norm(i)),
    ("Gemm", |b, i| b.gemm(i)),
    ("MatMul", |b, i| b.matmul(i)),
    ("MaxPool", |b, i| b.pool(i, PoolKind::Max)),
    ("AveragePool", |b, i| b.pool(i, PoolKind::AvgExcludePad)),
    ("GlobalAveragePool", |b, i| {
        b.global_pool(i, ReduceKind::Mean)
    }),
    ("GlobalMaxPool", |b, i| b.global_pool(i, ReduceKind::Max)),
    ("ReduceMean", |b, i| b.reduce_op(i, ReduceKind::Mean)),
    ("ReduceSum", |b, i| b.reduce_op(i, ReduceKind::Sum)),
    ("ReduceMax", |b, i| b.reduce_op(i, ReduceKind::Max)),
    ("ReduceMin", |b, i| b.reduce_op(i, ReduceKind::Min)),
    ("ReduceL1", |b, i| b.reduce_norm(i, Norm::L1)),
    ("ReduceL2", |b, i| b.reduce_norm(i, Norm::L2)),
    ("ReduceSumSquare", |b, i| b.reduce_norm(i, Norm::SumSquare)),
    ("Relu", |b, i| b.activation(i)),
    ("Sigmoid", |b, i| b.sigmoid(i)),
    ("HardSigmoid", |b, i| b.activation(i)),
    ("HardSwish", |b, i| b.activation(i)),
    ("Erf", |b, i| b.activation(i)),
    ("Gelu", |b, i| b.activation(i)),
    ("Sqrt", |b, i| b.activation(i)),
    ("Exp", |b, i| b.activation(i)),
    ("Tanh", |b, i| b.activation(i)),
    ("Neg", |b, i| b.activation(i)),
    ("Reciprocal", |b, i| b.activation(i)),
    ("Abs", |b, i| b.activation(i)),
    ("LeakyRelu", |b, i| b.activation(i)),
    ("Elu", |b, i| b.activation(i)),
    ("Selu", |b, i| b.activation(i)),
    ("Celu", |b, i| b.activation(i)),
    ("Softplus", |b, i| b.activation(i)),
    ("Softsign", |b, i| b.activation(i)),
    ("Mish", |b, i| b.activation(i)),
    ("Log", |b, i| b.activation(i)),
    ("ThresholdedRelu", |b, i| b.activation(i)),
    ("Clip", |b, i| b.clip(i)),
    ("Add", |b, i| b.binary(i, Binary::Add)),
    ("Sub", |b, i| b.binary(i, Binary::Sub)),
    ("Mul", |b, i| b.binary(i, Binary::Mul)),
    ("Div", |b, i| b.div(i)),
    ("Pow", |b, i| b.binary(i, Binary::Pow)),
    ("Max", |b, i| b.binary(i, Binary::Max)),
    ("Min", |b, i| b.binary(i, Binary::Min)),
    ("PRelu", |b, i| b.binary(i, Binary::PRelu)),
    ("Softmax", |b, i| b.softmax(i, RowKind::Softmax)),
    ("LogSoftmax", |b, i| b.softmax(i, RowKind::LogSoftmax)),
    ("LayerNormalization", |b, i| b.layer_norm(i)),
    ("InstanceNormalization", |b, i| b.norm_rows(i, None)),
    ("GroupNormalization", |b, i| {
        let groups = attr_int(&b.nodes[i], "num_groups", 0).max(0) as usize;
        b.norm_rows(i, Some(groups))
    }),
    ("Pad", |b, i| b.pad(i)),
    ("Resize", |b, i| b.resize(i)),
    ("Upsample", |b, i| b.resize(i)),
    ("Flatten", |b, i| b.flatten(i)),
    ("Reshape", |b, i| b.reshape(i)),
    ("Squeeze", |b, i| b.squeeze(i)),
    ("Unsqueeze", |b, i| b.squeeze(i)),
    ("Transpose", |b, i| b.transpose(i)),
    ("Concat", |b, i| b.concat(i)),
    ("Split", |b, i| b.split(i)),
    ("Slice", |b, i| b.slice(i)),
    ("Expand", |b, i| b.expand(i)),
    ("Gather", |b, i| b.gather(i)),
    ("Identity", |b, i| b.pass_through(i)),
    ("Dropout", |b, i| b.pass_through(i)),
];

/// The elementwise functions of one tensor, with their parameters from the node's attributes
/// (ONNX's defaults where absent); `None` for any other op.
fn activation_of(node: &pb::NodeProto) -> Option<Result<(Unary, f32, f32), NodeError>> {
    let f = |name: &str, default: f32| attr_float(node, name, default);
    let (unary, p0, p1) = match node.op_type.as_str() {
        "Relu" => (Unary::Relu, 0.0, 0.0),
        "Sigmoid" => (Unary::Sigmoid, 0.0, 0.0),
        "HardSigmoid" => (Unary::HardSigmoid, f("alpha", 0.2), f("beta", 0.5)),
        "HardSwish" => (Unary::HardSwish, 0.0, 0.0),
        "Erf" => (Unary::Erf, 0.0, 0.0),
        "Sqrt" => (Unary::Sqrt, 0.0, 0.0),
        "Exp" => (Unary::Exp, 0.0, 0.0),
        "Tanh" => (Unary::Tanh, 0.0, 0.0),
        "Neg" => (Unary::Neg, 0.0, 0.0),
        "Reciprocal" => (Unary::Reciprocal, 0.0, 0.0),
        "Abs" => (Unary::Abs, 0.0, 0.0),
        "LeakyRelu" => (Unary::LeakyRelu, f("alpha", 0.01), 0.0),
        "Elu" => (Unary::Elu, f("alpha", 1.0), 0.0),
        "Selu" => (Unary::Selu, f("alpha", 1.673_263_2), f("gamma", 1.050_701)),
        "Celu" => (Unary::Celu, f("alpha", 1.0), 0.0),
        "Softplus" => (Unary::Softplus, 0.0, 0.0),
        "Softsign" => (Unary::Softsign, 0.0, 0.0),
        "Mish" => (Unary::Mish, 0.0, 0.0),
        "Log" => (Unary::Log, 0.0, 0.0),
        "ThresholdedRelu" => (Unary::ThresholdedRelu, f("alpha", 1.0), 0.0),
        "Gelu" => {
            let approx = attr(node, "approximate")
                .map(|a| String::from_utf8_lossy(&a.s).into_owned())
                .unwrap_or_default();
            match approx.as_str() {
                "" | "none" => (Unary::Gelu, 0.0, 0.0),
                "tanh" => (Unary::GeluTanh, 0.0, 0.0),
                _ => return Some(Err(NodeError::GeluApproximate(approx))),
            }
        }
        _ => return None,
    };
    Some(Ok((unary, p0, p1)))
}

/// The ops the GPU engine accepts: those it runs (`OPS`), then those it only evaluates at load
/// time on constants (`fold::FOLDED`), as the unsupported-op error and docs/config.md give them.
pub fn supported() -> String {
    let run: Vec<&str> = OPS.iter().map(|(name, _)| *name).collect();
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

/// A Reshape `reshape` of `x` to `[g, C/g, H, W]` and the Transpose `transpose` of those two
/// axes, not built yet (`Builder::channel_shuffle`).
#[derive(Clone, Copy)]
struct ShuffleStart {
    reshape: usize,
    transpose: usize,
    x: usize,
    g: usize,
    /// x's `[C, H, W]`.
    chw: [usize; 3],
}

/// A Gemm's constants: `B` as a row-major `[k, p]` matrix with `alpha` applied, `C` as `p`
/// values with `beta` applied (`None` when absent).
struct GemmOperands {
    k: usize,
    p: usize,
    b: Vec<f32>,
    bias: Option<Vec<f32>>,
}

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

    /// GELU as PyTorch's exporter writes it, read from its input `x`:
    /// `Mul(Mul(x, Add(Erf(Div(x, √2)), 1)), 0.5)`. Returns the chain's nodes and its output.
    fn gelu_chain(&self, x: &str) -> Option<(Vec<usize>, String)> {
        if self.graph_outputs.contains(x) {
            return None;
        }
        let readers = self.consumers.get(x)?;
        let [r0, r1] = readers[..] else {
            return None;
        };
        let (div, mul1) = if self.nodes[r0].op_type == "Div" {
            (r0, r1)
        } else {
            (r1, r0)
        };
        let other = |k: usize, known: &str| {
            self.nodes[k]
                .input
                .iter()
                .find(|n| n.as_str() != known)
                .cloned()
                .unwrap_or_default()
        };
        let (d, m1) = (&self.nodes[div], &self.nodes[mul1]);
        let div_ok = d.op_type == "Div"
            && d.input.first().is_some_and(|n| n == x)
            && d.input
                .get(1)
                .is_some_and(|c| self.is_scalar(c, std::f64::consts::SQRT_2));
        if !div_ok || m1.op_type != "Mul" || self.done[div] || self.done[mul1] {
            return None;
        }
        let erf = self.sole_consumer(d.output.first()?, "Erf")?;
        let e_out = self.nodes[erf].output.first()?;
        let add = self.sole_consumer(e_out, "Add")?;
        if !self.is_scalar(&other(add, e_out), 1.0) {
            return None;
        }
        let a_out = self.nodes[add].output.first()?;
        if self.sole_consumer(a_out, "Mul") != Some(mul1) || other(mul1, a_out) != x {
            return None;
        }
        let m_out = m1.output.first()?;
        let mul2 = self.sole_consumer(m_out, "Mul")?;
        if !self.is_scalar(&other(mul2, m_out), 0.5) {
            return None;
        }
        Some((
            vec![div, erf, add, mul1, mul2],
            self.nodes[mul2].output.first()?.clone(),
        ))
    }

    fn map(&mut self, m: MapStep) {
        self.steps.push(Step::Map(m));
    }

    fn copy_step(a: usize, output: usize) -> MapStep {
        MapStep {
            a: Operand::Value(a),
            perm_a: None,
            a_slice: None,
            shuffle: None,
            b: None,
            binary: Binary::First,
            unary: Unary::Identity,
            p0: 0.0,
            p1: 0.0,
            output,
            region: None,
            c: None,
        }
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
        self.map(Self::copy_step(v, out));
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
        match OPS.iter().find(|(name, _)| *name == op) {
            Some((_, lower)) => lower(self, i),
            None => Err(self.err(i, NodeError::UnsupportedOp(op.to_string()))),
        }
    }

    fn global_pool(&mut self, i: usize, kind: ReduceKind) -> R<()> {
        let x = self.value(i, 0)?;
        let r = self.values[x].dims.len();
        self.reduce(i, x, (2..=r).collect(), kind, true)
    }

    /// A reduction's full-dims axes and `keepdims`, or `None` where it reduces nothing
    /// (`noop_with_empty_axes`).
    fn reduce_axes(&self, i: usize, x: usize) -> R<Option<(Vec<usize>, bool)>> {
        let rank = self.values[x].dims.len() + 1;
        let axes = self.ints_arg(i, 1, "axes")?.unwrap_or_default();
        let mut axes = axes
            .iter()
            .map(|&a| fold::axis(a, rank))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(i, e))?;
        if axes.is_empty() {
            if attr_int(&self.nodes[i], "noop_with_empty_axes", 0) != 0 {
                return Ok(None);
            }
            axes = (0..rank).collect();
        }
        if axes.contains(&0) {
            return Err(self.err(i, NodeError::ReduceOverBatch));
        }
        let keep = attr_int(&self.nodes[i], "keepdims", 1) != 0;
        Ok(Some((axes, keep)))
    }

    fn reduce_op(&mut self, i: usize, kind: ReduceKind) -> R<()> {
        let x = self.value(i, 0)?;
        let Some((axes, keep)) = self.reduce_axes(i, x)? else {
            return self.pass_through(i);
        };
        self.reduce(i, x, axes, kind, keep)
    }

    /// ReduceL1, ReduceL2 (ConvNeXt V2's global response norm), ReduceSumSquare: the
    /// elementwise part, a sum, and for L2 its square root.
    fn reduce_norm(&mut self, i: usize, norm: Norm) -> R<()> {
        let x = self.value(i, 0)?;
        let out = self.out(i)?;
        let axes = self.reduce_axes(i, x)?;
        let (dims, cl) = (self.values[x].dims.clone(), self.values[x].channels_last);
        let pre = self.define(&format!("{out}#elementwise"), dims, cl);
        self.map(match norm {
            Norm::L1 => MapStep {
                unary: Unary::Abs,
                ..Self::copy_step(x, pre)
            },
            Norm::L2 | Norm::SumSquare => MapStep {
                b: Some(Operand::Value(x)),
                binary: Binary::Mul,
                ..Self::copy_step(x, pre)
            },
        });
        let sum_name = if norm == Norm::L2 {
            format!("{out}#sum")
        } else {
            out.clone()
        };
        let sum = match axes {
            Some((axes, keep)) => self.reduce_to(&sum_name, pre, axes, ReduceKind::Sum, keep),
            None => {
                self.value_of.insert(sum_name, pre);
                pre
            }
        };
        if norm == Norm::L2 {
            let (dims, cl) = (
                self.values[sum].dims.clone(),
                self.values[sum].channels_last,
            );
            let output = self.define(&out, dims, cl);
            self.map(MapStep {
                unary: Unary::Sqrt,
                ..Self::copy_step(sum, output)
            });
        }
        Ok(())
    }

    fn clip(&mut self, i: usize) -> R<()> {
        let (lo, hi) = self.clip_bounds(i)?;
        self.unary(i, Unary::Clip, lo, hi)
    }

    fn div(&mut self, i: usize) -> R<()> {
        // The start of a GELU chain on a tensor nothing absorbed: one step.
        let x = self.input(i, 0)?.to_string();
        if let (Some(&v), Some((nodes, y))) = (self.value_of.get(&x), self.gelu_chain(&x)) {
            let dims = self.values[v].dims.clone();
            let cl = self.values[v].channels_last;
            for k in nodes {
                self.done[k] = true;
            }
            let output = self.define(&y, dims, cl);
            self.map(MapStep {
                unary: Unary::Gelu,
                ..Self::copy_step(v, output)
            });
            return Ok(());
        }
        self.binary(i, Binary::Div)
    }

    /// An elementwise function of one tensor (`activation_of`).
    fn activation(&mut self, i: usize) -> R<()> {
        let Some(a) = activation_of(&self.nodes[i]) else {
            let op = self.nodes[i].op_type.clone();
            return Err(self.err(i, NodeError::UnsupportedOp(op)));
        };
        let (unary, p0, p1) = a.map_err(|e| self.err(i, e))?;
        self.unary(i, unary, p0, p1)
    }

    fn softmax(&mut self, i: usize, kind: RowKind) -> R<()> {
        let x = self.value(i, 0)?;
        let rank = self.values[x].dims.len() + 1;
        let axis =
            fold::axis(attr_int(&self.nodes[i], "axis", -1), rank).map_err(|e| self.err(i, e))?;
        if axis == 0 {
            return Err(self.err(i, NodeError::SoftmaxOverBatch));
        }
        self.row(i, x, axis, kind)
    }

    /// The output is the input's value itself (Identity, Dropout at inference).
    fn pass_through(&mut self, i: usize) -> R<()> {
        let x = self.value(i, 0)?;
        let out = self.out(i)?;
        self.value_of.insert(out, x);
        Ok(())
    }

    fn conv(&mut self, i: usize) -> R<()> {
        let node = &self.nodes[i];
        let x = self.value(i, 0)?;
        if self.values[x].dims.len() == 2 {
            return self.conv1d(i, x);
        }
        let Some([mut cin, _, _]) = self.values[x].chw() else {
            return Err(self.err(i, NodeError::ConvRank(self.values[x].dims.clone())));
        };
        if x == 0 {
            // The padding channels get zero weights once the plan is built.
            cin = self.input_c;
        }
        let x = self.with_layout(x, true);
        let w = self.folded(i, 1)?;
        let w_dims = w.dims().to_vec();
        let weight = w.floats().map_err(|e| self.err(i, e))?;
        let [cout, _, kh, kw] = w_dims[..] else {
            return Err(self.err(i, NodeError::ConvWeightRank(w_dims)));
        };
        let (groups, bias) = self.conv_groups_and_bias(i, &w_dims, cin)?;
        if let Some(k) = attr_ints(node, "kernel_shape") {
            if k != [kh as i64, kw as i64] {
                return Err(self.err(
                    i,
                    NodeError::KernelShape {
                        kernel: k,
                        weights: w_dims,
                    },
                ));
            }
        }
        let (pb, pe) = self.pads(i)?;
        // cuDNN pads symmetrically: what TF-style "same" padding adds on one side only is a
        // padded copy of the input first.
        let sym = [pb[0].min(pe[0]), pb[1].min(pe[1])];
        let x = if pb != pe {
            let name = format!("{}#padded", self.out(i)?);
            let begin = [0, pb[0] - sym[0], pb[1] - sym[1]];
            let end = [0, pe[0] - sym[0], pe[1] - sym[1]];
            self.pad_copy(&name, x, &begin, &end, 0.0)
        } else {
            x
        };
        let conv = ConvStep {
            name: self.label(i),
            input: x,
            residual: None,
            output: 0,
            cin,
            cout,
            kernel: [kh, kw],
            stride: self.pair(i, "strides", 1)?,
            pad: sym,
            dilation: self.pair(i, "dilations", 1)?,
            groups,
            act: Unary::Identity,
            act_p: [0.0, 0.0],
            weight,
            bias,
        };
        self.finish_conv(i, conv)
    }

    /// A convolution's `group` checked against its weights `[O, I/group, …]` and `cin`, and
    /// its bias (zeros where it has none).
    pub(super) fn conv_groups_and_bias(
        &self,
        i: usize,
        w_dims: &[usize],
        cin: usize,
    ) -> R<(usize, Vec<f32>)> {
        let node = &self.nodes[i];
        let groups = attr_int(node, "group", 1).max(1) as usize;
        let (cout, cin_g) = (w_dims[0], w_dims[1]);
        if cin_g * groups != cin || !cout.is_multiple_of(groups) {
            return Err(self.err(
                i,
                NodeError::ConvGroups {
                    weights: w_dims.to_vec(),
                    groups,
                    cin,
                },
            ));
        }
        let bias = match node.input.get(2).filter(|b| !b.is_empty()) {
            Some(_) => self.floats(i, 2)?,
            None => vec![0.0; cout],
        };
        Ok((groups, bias))
    }

    /// `auto_pad` other than NOTSET or VALID (explicit pads only) is refused.
    pub(super) fn check_auto_pad(&self, i: usize) -> R<()> {
        if let Some(p) = attr(&self.nodes[i], "auto_pad") {
            let mode = String::from_utf8_lossy(&p.s);
            if mode != "NOTSET" && !mode.is_empty() && mode != "VALID" {
                return Err(self.err(i, NodeError::AutoPad(mode.into_owned())));
            }
        }
        Ok(())
    }

    /// Absorbs BatchNormalization, Add(residual) and Relu after a conv, defines its output.
    fn finish_conv(&mut self, i: usize, mut conv: ConvStep) -> R<()> {
        let mut out = self.out(i)?;
        if self.nodes[i].op_type == "Conv" {
            if let Some(bn) = self.sole_consumer(&out, "BatchNormalization") {
                self.fold_bn(bn, &mut conv)?;
                self.done[bn] = true;
                out = self.out(bn)?;
            }
        }
        let shape = self.conv_shape(&conv).map_err(|e| self.err(i, e))?;
        if let Some((add, id)) = self.residual_add(&out, &shape) {
            let id = self.with_layout(id, true);
            conv.residual = Some(id);
            self.done[add] = true;
            out = self.out(add)?;
        }
        let out = self.fuse_act(out, &mut conv)?;
        conv.output = self.define(&out, shape, true);
        self.steps.push(Step::Conv(conv));
        Ok(())
    }

    /// The activation that alone reads a convolution's output, absorbed into its epilogue:
    /// Relu, Clip (ReLU6), Sigmoid, Sigmoid times its own input (SiLU), or the exporter's
    /// GELU chain.
    fn fuse_act(&mut self, out: String, conv: &mut ConvStep) -> R<String> {
        if self.graph_outputs.contains(out.as_str()) {
            return Ok(out);
        }
        if let Some((nodes, y)) = self.gelu_chain(&out) {
            for k in nodes {
                self.done[k] = true;
            }
            conv.act = Unary::Gelu;
            return Ok(y);
        }
        let readers = self
            .consumers
            .get(out.as_str())
            .cloned()
            .unwrap_or_default();
        // SiLU as the exporter writes it: x read by a Sigmoid and by the Mul of both.
        if let [a, b] = readers[..] {
            for (sig, mul) in [(a, b), (b, a)] {
                let (ns, nm) = (&self.nodes[sig], &self.nodes[mul]);
                if ns.op_type == "Sigmoid"
                    && nm.op_type == "Mul"
                    && !self.done[sig]
                    && !self.done[mul]
                    && ns.output.first().is_some_and(|so| {
                        self.sole_consumer(so, "Mul") == Some(mul) && nm.input.contains(&out)
                    })
                {
                    conv.act = Unary::Swish;
                    self.done[sig] = true;
                    self.done[mul] = true;
                    return self.out(mul);
                }
            }
        }
        let [next] = readers[..] else {
            return Ok(out);
        };
        if self.done[next] {
            return Ok(out);
        }
        let (act, p) = match self.nodes[next].op_type.as_str() {
            "Relu" => (Unary::Relu, [0.0, 0.0]),
            "Clip" => {
                let (lo, hi) = self.clip_bounds(next)?;
                (Unary::Clip, [lo, hi])
            }
            // HardSwish and HardSigmoid stay separate steps: cuDNN's graph API cannot fuse them,
            // and on the H200 a split convolution cost more than the extra launch saved.
            "Sigmoid" => (Unary::Sigmoid, [0.0, 0.0]),
            _ => return Ok(out),
        };
        conv.act = act;
        conv.act_p = p;
        self.done[next] = true;
        self.out(next)
    }

    fn conv_shape(&self, c: &ConvStep) -> Result<Dims, NodeError> {
        let Some([_, h, w]) = self.values[c.input].chw() else {
            return Err(NodeError::ConvInput);
        };
        let dim = |size: usize, k: usize, s: usize, p: usize, d: usize| {
            let span = d * (k - 1) + 1;
            (size + 2 * p)
                .checked_sub(span)
                .map(|v| v / s.max(1) + 1)
                .ok_or(NodeError::KernelLargerThanInput)
        };
        Ok(vec![
            c.cout,
            dim(h, c.kernel[0], c.stride[0], c.pad[0], c.dilation[0])?,
            dim(w, c.kernel[1], c.stride[1], c.pad[1], c.dilation[1])?,
        ])
    }

    /// y = γ (x − μ) / √(σ² + ε) + β per channel: `(scale, shift)`.
    fn bn_params(&self, i: usize, channels: usize) -> R<(Vec<f32>, Vec<f32>)> {
        if self.nodes[i].input.len() != 5 {
            return Err(self.err(i, NodeError::BatchNormInputs));
        }
        let eps = attr_float(&self.nodes[i], "epsilon", 1e-5);
        let (gamma, beta, mean, var) = (
            self.floats(i, 1)?,
            self.floats(i, 2)?,
            self.floats(i, 3)?,
            self.floats(i, 4)?,
        );
        if [&gamma, &beta, &mean, &var]
            .iter()
            .any(|v| v.len() != channels)
        {
            return Err(self.err(i, NodeError::BatchNormParameters(channels)));
        }
        let scale: Vec<f32> = (0..channels)
            .map(|o| gamma[o] / (var[o] + eps).sqrt())
            .collect();
        let shift = (0..channels)
            .map(|o| beta[o] - mean[o] * scale[o])
            .collect();
        Ok((scale, shift))
    }

    fn fold_bn(&self, i: usize, conv: &mut ConvStep) -> R<()> {
        let (scale, shift) = self.bn_params(i, conv.cout)?;
        let per_out = conv.weight.len() / conv.cout;
        for o in 0..conv.cout {
            for w in &mut conv.weight[o * per_out..(o + 1) * per_out] {
                *w *= scale[o];
            }
            conv.bias[o] = conv.bias[o] * scale[o] + shift[o];
        }
        Ok(())
    }

    /// A BatchNormalization that follows no conv (DenseNet's pre-activation): x·scale + shift
    /// per channel, then the Relu after it if any.
    fn batch_norm(&mut self, i: usize) -> R<()> {
        let x = self.value(i, 0)?;
        let dims = self.values[x].dims.clone();
        let c = *dims
            .first()
            .ok_or_else(|| self.err(i, NodeError::ScalarInput))?;
        let (scale, shift) = self.bn_params(i, c)?;
        let mut cd = vec![c];
        cd.extend(std::iter::repeat_n(1, dims.len() - 1));
        let (sc, sh) = (self.new_const(cd.clone(), scale), self.new_const(cd, shift));
        let cl = self.values[x].channels_last;
        let out = self.out(i)?;
        let tmp = self.define(&format!("{out}#scaled"), dims.clone(), cl);
        self.map(MapStep {
            b: Some(Operand::Const(sc)),
            binary: Binary::Mul,
            ..Self::copy_step(x, tmp)
        });
        let (out, unary) = self.absorb_relu(out)?;
        let y = self.define(&out, dims, cl);
        self.map(MapStep {
            b: Some(Operand::Const(sh)),
            binary: Binary::Add,
            unary,
            ..Self::copy_step(tmp, y)
        });
        Ok(())
    }

    /// A dense layer `[cout][cin]` on `x`: a 1×1 convolution on a flat value, or a convolution
    /// over the whole map when `x` is a rank-3 value flattened (NCHW order = OIHW weights).
    fn dense(
        &mut self,
        i: usize,
        x: usize,
        weight: Vec<f32>,
        bias: Vec<f32>,
        cout: usize,
    ) -> R<()> {
        // Flatten + dense: the map's own memory read as one flat vector, in its storage order
        // (NHWC: the weights are permuted to match), so the product is a 1×1 convolution,
        // a GEMM for cuDNN. (As a convolution over the whole map it took 3.8 ms for vgg16's
        // first classifier layer at batch 32 on the H200.)
        let (input, weight) = match self.flat_of.get(&x).copied() {
            Some(src) => {
                let Some([c, h, w]) = self.values[src].chw() else {
                    return Err(self.err(i, NodeError::NotFlat));
                };
                let k = c * h * w;
                let weight = if self.values[src].channels_last && weight.len() == cout * k {
                    let mut p = vec![0.0; weight.len()];
                    for o in 0..cout {
                        for ch in 0..c {
                            for yx in 0..h * w {
                                p[o * k + yx * c + ch] = weight[o * k + ch * h * w + yx];
                            }
                        }
                    }
                    p
                } else {
                    weight
                };
                let name = format!("{}#flat", self.values.len());
                (self.alias(&name, src, vec![k], false), weight)
            }
            None => (x, weight),
        };
        let Some([c, _, _]) = self.values[input].chw() else {
            return Err(self.err(i, NodeError::NotFlat));
        };
        let cin = c;
        if weight.len() != cout * cin {
            return Err(self.err(
                i,
                NodeError::DenseWeights {
                    values: weight.len(),
                    input: self.values[x].dims.clone(),
                },
            ));
        }
        let conv = ConvStep::pointwise(self.label(i), input, cin, cout, weight, bias);
        // A dense layer's output is flat `[cout]`.
        let mut out = self.out(i)?;
        let mut conv = conv;
        if self.nodes[i].op_type == "MatMul" {
            out = self.absorb_bias(out, &mut conv)?;
        }
        let out = self.fuse_act(out, &mut conv)?;
        conv.output = self.define(&out, vec![cout], false);
        self.steps.push(Step::Conv(conv));
        Ok(())
    }

    /// The Add of a constant `[cout]` (or `[1, …, cout]`: along the last dim) that alone reads
    /// a product's output `out`: the Add's node and the bias.
    fn bias_add(&self, out: &str, cout: usize) -> Option<(usize, Vec<f32>)> {
        let add = self.sole_consumer(out, "Add")?;
        let bn = self.nodes[add].input.iter().find(|n| n.as_str() != out)?;
        let f = self.folded.get(bn)?;
        let along_last = f.dims().iter().rev().skip(1).all(|&d| d == 1);
        let b = f.floats().ok()?;
        (along_last && b.len() == cout).then_some((add, b))
    }

    /// `bias_add`, taken into `conv`: the name its output now defines.
    fn absorb_bias(&mut self, out: String, conv: &mut ConvStep) -> R<String> {
        match self.bias_add(&out, conv.cout) {
            Some((add, b)) => {
                conv.bias = b;
                self.done[add] = true;
                self.out(add)
            }
            None => Ok(out),
        }
    }

    /// The Add that alone reads `out` with another value of `dims` (a residual branch): the
    /// Add's node and that value.
    fn residual_add(&self, out: &str, dims: &[usize]) -> Option<(usize, usize)> {
        let add = self.sole_consumer(out, "Add")?;
        let node = &self.nodes[add];
        if node.input.len() != 2 {
            return None;
        }
        let other = node.input.iter().find(|n| n.as_str() != out)?;
        let id = *self.value_of.get(other)?;
        (self.values[id].dims == dims).then_some((add, id))
    }

    /// A product of row-major rows `x` (`[..., K]`) by a constant `[K, P]` (`b`, row-major)
    /// as a 1×1 convolution: in a channels-last plan the rows' memory is an NHWC map
    /// `[K, rows, 1]` byte for byte, so cuDNN runs the product and its epilogue takes the
    /// bias, a residual Add and the activation that follow (ViT's and ConvNeXt's linear
    /// layers; after a cuBLAS product each of those was a pass over the output of its own).
    /// Row-major plans (fp32) keep the cuBLAS product: an NCHW map puts the channels
    /// outermost. The step is finished by `push_rows_conv`.
    fn rows_conv(
        &mut self,
        i: usize,
        x: usize,
        b: &[f32],
        k: usize,
        p: usize,
    ) -> (ConvStep, usize) {
        let rows = self.values[x].len() / k.max(1);
        let name = format!("{}#rows", self.values.len());
        let input = self.alias(&name, x, vec![k, rows, 1], true);
        let weight = oihw_of_kp(b, k, p);
        let conv = ConvStep::pointwise(self.label(i), input, k, p, weight, vec![0.0; p]);
        (conv, rows)
    }

    /// Whether products of rows by a constant run as `rows_conv`.
    fn rows_as_conv(&self) -> bool {
        self.channels_last
    }

    /// Defines `conv`'s output (`[P, rows, 1]` NHWC), pushes the step, and returns its memory
    /// as the row-major value of `dims`.
    fn push_rows_conv(&mut self, mut conv: ConvStep, rows: usize, dims: Dims) -> usize {
        let name = format!("{}#rows", self.values.len());
        let y = self.define(&name, vec![conv.cout, rows, 1], true);
        conv.output = y;
        self.steps.push(Step::Conv(conv));
        let name = format!("{}#rows", self.values.len());
        self.alias(&name, y, dims, false)
    }

    /// MatMul of batch-first rows `[..., K]` by a constant (see `rows_conv`), with the bias
    /// Add, residual Add and activation that follow folded in.
    fn dense_rows(&mut self, i: usize, x: usize, b: Vec<f32>, k: usize, p: usize) -> R<()> {
        let x = self.materialise(x);
        let x = self.row_major(x);
        let (mut conv, rows) = self.rows_conv(i, x, &b, k, p);
        let out = self.out(i)?;
        let mut out = self.absorb_bias(out, &mut conv)?;
        let mut out_dims = self.values[x].dims.clone();
        if let Some(last) = out_dims.last_mut() {
            *last = p;
        }
        if let Some((add, id)) = self.residual_add(&out, &out_dims) {
            let id = self.materialise(id);
            let id = self.row_major(id);
            let name = format!("{}#rows", self.values.len());
            conv.residual = Some(self.alias(&name, id, vec![p, rows, 1], true));
            self.done[add] = true;
            out = self.out(add)?;
        }
        let out = self.fuse_act(out, &mut conv)?;
        let y = self.push_rows_conv(conv, rows, out_dims);
        self.value_of.insert(out, y);
        Ok(())
    }

    fn is_flat(&self, x: usize) -> bool {
        self.flat_of.contains_key(&x) || self.values[x].dims.len() == 1
    }

    /// Gemm's `B` and `C` as `GemmOperands` says. `transA` is the caller's to check.
    fn gemm_operands(&self, i: usize) -> R<GemmOperands> {
        let node = &self.nodes[i];
        let tb = attr_int(node, "transB", 0);
        let (alpha, beta) = (
            attr_float(node, "alpha", 1.0),
            attr_float(node, "beta", 1.0),
        );
        let w = self.folded(i, 1)?;
        let [d0, d1] = w.dims()[..] else {
            return Err(self.err(i, NodeError::GemmWeightRank(w.dims().to_vec())));
        };
        let wv = w.floats().map_err(|e| self.err(i, e))?;
        let (k, p) = if tb != 0 { (d1, d0) } else { (d0, d1) };
        let mut b = vec![0.0; k * p];
        for r in 0..k {
            for c in 0..p {
                let v = if tb != 0 {
                    wv[c * k + r]
                } else {
                    wv[r * p + c]
                };
                b[r * p + c] = alpha * v;
            }
        }
        let bias = match node.input.get(2).filter(|b| !b.is_empty()) {
            Some(_) => Some(match self.floats(i, 2)? {
                v if v.len() == p => v.iter().map(|x| beta * x).collect(),
                v if v.len() == 1 => vec![beta * v[0]; p],
                v => {
                    return Err(self.err(
                        i,
                        NodeError::GemmBias {
                            values: v.len(),
                            outputs: p,
                        },
                    ))
                }
            }),
            None => None,
        };
        Ok(GemmOperands { k, p, b, bias })
    }

    fn gemm(&mut self, i: usize) -> R<()> {
        let x = self.value(i, 0)?;
        if attr_int(&self.nodes[i], "transA", 0) != 0 || !self.is_flat(x) {
            return Err(self.err(i, NodeError::GemmInput));
        }
        let GemmOperands {
            k: cin,
            p: cout,
            b,
            bias,
        } = self.gemm_operands(i)?;
        let weight = oihw_of_kp(&b, cin, cout);
        self.dense(i, x, weight, bias.unwrap_or_else(|| vec![0.0; cout]), cout)
    }

    fn matmul(&mut self, i: usize) -> R<()> {
        let x = self.value(i, 0)?;
        let b = self.operand(i, 1)?;
        if let Operand::Const(c) = b {
            if let (&[cin, cout], true) = (self.consts[c].dims.as_slice(), self.is_flat(x)) {
                let weight = oihw_of_kp(&self.consts[c].data, cin, cout);
                return self.dense(i, x, weight, vec![0.0; cout], cout);
            }
            let rows_of_k = self.values[x].dims.len() >= 2
                && self.consts[c].dims.len() == 2
                && self.values[x].dims.last() == self.consts[c].dims.first();
            if self.rows_as_conv() && rows_of_k && !self.is_flat(x) {
                let (k, p) = (self.consts[c].dims[0], self.consts[c].dims[1]);
                let b = self.consts[c].data.clone();
                return self.dense_rows(i, x, b, k, p);
            }
        }
        let x = self.materialise(x);
        let x = self.row_major(x);
        let xd = self.values[x].dims.clone();
        let b = match b {
            Operand::Value(v) => Operand::Value(self.row_major(v)),
            c => c,
        };
        let bd = self.full_dims(b);
        let ok = match b {
            Operand::Const(_) => bd.len() == 2,
            Operand::Value(_) => {
                bd.len() == xd.len() + 1 && bd[1..bd.len() - 2] == xd[..xd.len() - 2]
            }
        };
        if xd.is_empty() || bd.len() < 2 || !ok || bd[bd.len() - 2] != xd[xd.len() - 1] {
            return Err(self.err(i, NodeError::MatMulShapes { a: xd, b: bd }));
        }
        let mut dims = xd.clone();
        let last = dims.len() - 1;
        dims[last] = bd[bd.len() - 1];
        let out = self.out(i)?;
        let output = self.define(&out, dims, false);
        self.steps.push(Step::MatMul(MatMulStep::new(x, b, output)));
        Ok(())
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

    fn pool(&mut self, i: usize, kind: PoolKind) -> R<()> {
        let node = &self.nodes[i];
        let x = self.value(i, 0)?;
        let Some([c, h, w]) = self.values[x]
            .chw()
            .filter(|_| self.values[x].dims.len() == 3)
        else {
            return Err(self.err(i, NodeError::PoolRank));
        };
        if node.output.len() > 1 && !node.output[1].is_empty() {
            return Err(self.err(i, NodeError::PoolIndices));
        }
        let ceil = attr_int(node, "ceil_mode", 0) != 0;
        let kind = match kind {
            PoolKind::Max => PoolKind::Max,
            _ if attr_int(node, "count_include_pad", 0) != 0 => PoolKind::AvgIncludePad,
            _ => PoolKind::AvgExcludePad,
        };
        let kernel = self.pair(i, "kernel_shape", 0)?;
        if kernel.contains(&0) {
            return Err(self.err(i, NodeError::NoKernelShape));
        }
        if self.pair(i, "dilations", 1)? != [1, 1] {
            return Err(self.err(i, NodeError::DilatedPool));
        }
        let stride = self.pair(i, "strides", 1)?;
        let (pb, pe) = self.pads(i)?;
        let dim = |size: usize, k: usize, s: usize, b: usize, e: usize| -> Option<usize> {
            let span = (size + b + e).checked_sub(k)?;
            let mut out = if ceil { span.div_ceil(s) } else { span / s } + 1;
            // The last window must start inside the input or its leading padding.
            if ceil && (out - 1) * s >= size + b {
                out -= 1;
            }
            Some(out)
        };
        let (Some(oh), Some(ow)) = (
            dim(h, kernel[0], stride[0], pb[0], pe[0]),
            dim(w, kernel[1], stride[1], pb[1], pe[1]),
        ) else {
            return Err(self.err(i, NodeError::WindowLargerThanInput));
        };
        let out = self.out(i)?;
        let output = self.define(&out, vec![c, oh, ow], true);
        self.steps.push(Step::Pool(PoolStep {
            input: x,
            output,
            kind,
            kernel,
            stride,
            pad_begin: pb,
            pad_end: pe,
        }));
        Ok(())
    }

    fn reduce(
        &mut self,
        i: usize,
        x: usize,
        axes: Vec<usize>,
        kind: ReduceKind,
        keep: bool,
    ) -> R<()> {
        let out = self.out(i)?;
        self.reduce_to(&out, x, axes, kind, keep);
        Ok(())
    }

    /// A Reduce step of `x` over full-dims `axes` defining `out` (`keep`: the axes stay as 1);
    /// returns `out`'s value.
    fn reduce_to(
        &mut self,
        out: &str,
        x: usize,
        axes: Vec<usize>,
        kind: ReduceKind,
        keep: bool,
    ) -> usize {
        let xd = self.values[x].dims.clone();
        let kept: Dims = (1..=xd.len())
            .map(|a| if axes.contains(&a) { 1 } else { xd[a - 1] })
            .collect();
        let cl = self.values[x].channels_last;
        let keep_name = if keep {
            out.to_string()
        } else {
            format!("{out}#kept")
        };
        let output = self.define(&keep_name, kept.clone(), cl);
        let reduced_axes = axes.clone();
        self.steps.push(Step::Reduce(ReduceStep {
            input: x,
            output,
            axes,
            kind,
        }));
        if keep {
            return output;
        }
        let output = self.row_major(output);
        let squeezed: Dims = kept
            .iter()
            .enumerate()
            .filter(|(k, _)| !reduced_axes.contains(&(k + 1)))
            .map(|(_, d)| *d)
            .collect();
        self.alias(out, output, squeezed, false)
    }

    fn unary(&mut self, i: usize, unary: Unary, p0: f32, p1: f32) -> R<()> {
        let x = self.value(i, 0)?;
        let dims = self.values[x].dims.clone();
        let cl = self.values[x].channels_last;
        let out = self.out(i)?;
        let output = self.define(&out, dims, cl);
        self.map(MapStep {
            unary,
            p0,
            p1,
            ..Self::copy_step(x, output)
        });
        Ok(())
    }

    /// Sigmoid, or SiLU when its only reader multiplies it by its own input.
    fn sigmoid(&mut self, i: usize) -> R<()> {
        let out = self.out(i)?;
        let x_name = self.input(i, 0)?;
        if let Some(m) = self.sole_consumer(&out, "Mul") {
            let node = &self.nodes[m];
            if node.input.len() == 2 && node.input.iter().any(|n| n == x_name) {
                self.done[m] = true;
                let x = self.value(i, 0)?;
                let dims = self.values[x].dims.clone();
                let cl = self.values[x].channels_last;
                let mo = self.out(m)?;
                let output = self.define(&mo, dims, cl);
                self.map(MapStep {
                    unary: Unary::Swish,
                    ..Self::copy_step(x, output)
                });
                return Ok(());
            }
        }
        self.unary(i, Unary::Sigmoid, 0.0, 0.0)
    }

    fn clip_bounds(&self, i: usize) -> R<(f32, f32)> {
        let node = &self.nodes[i];
        let bound = |k: usize, attr_name: &str, default: f32| -> R<f32> {
            match node.input.get(k).filter(|n| !n.is_empty()) {
                Some(_) => match self.floats(i, k)?.as_slice() {
                    [v] => Ok(*v),
                    _ => Err(self.err(i, NodeError::ClipBounds)),
                },
                None => Ok(attr_float(node, attr_name, default)),
            }
        };
        Ok((
            bound(1, "min", f32::NEG_INFINITY)?,
            bound(2, "max", f32::INFINITY)?,
        ))
    }

    fn binary(&mut self, i: usize, binary: Binary) -> R<()> {
        let a = self.operand(i, 0)?;
        let b = self.operand(i, 1)?;
        let (ad, bd) = (self.full_dims(a), self.full_dims(b));
        let full = fold::broadcast(&ad, &bd).map_err(|e| self.err(i, e))?;
        if full.first() != Some(&BATCH) {
            return Err(self.err(i, NodeError::BroadcastChangesBatch { a: ad, b: bd }));
        }
        let dims: Dims = full[1..].to_vec();
        // The output takes the layout of an operand of its own shape.
        let cl = [a, b].iter().any(|o| match o {
            Operand::Value(v) => self.values[*v].dims == dims && self.values[*v].channels_last,
            Operand::Const(_) => false,
        });
        let (out, unary) = self.absorb_relu(self.out(i)?)?;
        let output = self.define(&out, dims, cl);
        self.map(MapStep {
            a,
            perm_a: None,
            a_slice: None,
            shuffle: None,
            b: Some(b),
            binary,
            unary,
            p0: 0.0,
            p1: 0.0,
            output,
            region: None,
            c: None,
        });
        Ok(())
    }

    fn row(&mut self, i: usize, x: usize, axis: usize, kind: RowKind) -> R<()> {
        let dims = self.values[x].dims.clone();
        let cl = self.values[x].channels_last;
        let out = self.out(i)?;
        let output = self.define(&out, dims, cl);
        self.steps.push(Step::Row(RowStep {
            input: x,
            output,
            axis,
            kind,
        }));
        Ok(())
    }

    fn layer_norm(&mut self, i: usize) -> R<()> {
        let x = self.value(i, 0)?;
        let rank = self.values[x].dims.len() + 1;
        let axis =
            fold::axis(attr_int(&self.nodes[i], "axis", -1), rank).map_err(|e| self.err(i, e))?;
        if axis != rank - 1 {
            return Err(self.err(i, NodeError::LayerNormAxis));
        }
        if self.nodes[i].output.iter().skip(1).any(|o| !o.is_empty()) {
            return Err(self.err(i, NodeError::LayerNormOutputs));
        }
        let len = self.values[x].dims[axis - 1];
        let name = self.input(i, 1)?.to_string();
        let f = self.folded(i, 1)?.clone();
        let scale = self.add_const(&name, &f).map_err(|e| self.err(i, e))?;
        let bias = match self.nodes[i].input.get(2).filter(|s| !s.is_empty()) {
            Some(n) => {
                let n = n.clone();
                let f = self.folded(i, 2)?.clone();
                Some(self.add_const(&n, &f).map_err(|e| self.err(i, e))?)
            }
            None => None,
        };
        if self.consts[scale].data.len() != len
            || bias.is_some_and(|b| self.consts[b].data.len() != len)
        {
            return Err(self.err(i, NodeError::LayerNormParameters(len)));
        }
        let eps = attr_float(&self.nodes[i], "epsilon", 1e-5);
        self.row(i, x, axis, RowKind::LayerNorm { scale, bias, eps })
    }

    /// InstanceNormalization (`groups` = channels) and GroupNormalization: each item's
    /// `[C, …]` normalized over rows of `C / groups` channels (a LayerNorm over the rows of
    /// its row-major storage), then scaled and shifted per channel (opset 21) or per group
    /// (opset 18).
    fn norm_rows(&mut self, i: usize, groups: Option<usize>) -> R<()> {
        let x = self.value(i, 0)?;
        let dims = self.values[x].dims.clone();
        let Some(&channels) = dims.first().filter(|_| dims.len() >= 2) else {
            return Err(self.err(i, NodeError::NormRank(dims.first().copied().unwrap_or(0))));
        };
        let groups = groups.unwrap_or(channels);
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(self.err(i, NodeError::NormGroups { channels, groups }));
        }
        let out = self.out(i)?;
        let spatial: usize = dims[1..].iter().product();
        let row = channels / groups * spatial;
        let xr = self.row_major(x);
        let rows = self.alias(&format!("{out}#rows"), xr, vec![groups, row], false);
        let ones = self.new_const(vec![row], vec![1.0; row]);
        let eps = attr_float(&self.nodes[i], "epsilon", 1e-5);
        let normalized = self.define(&format!("{out}#normalized"), vec![groups, row], false);
        self.steps.push(Step::Row(RowStep {
            input: rows,
            output: normalized,
            axis: 2,
            kind: RowKind::LayerNorm {
                scale: ones,
                bias: None,
                eps,
            },
        }));
        // Scale and shift per channel, over the `[C, spatial]` view.
        let per_channel = |b: &Self, k: usize| -> R<Vec<f32>> {
            let v = b.folded(i, k)?.floats().map_err(|e| b.err(i, e))?;
            match v.len() {
                n if n == channels => Ok(v),
                n if n == groups => Ok((0..channels).map(|c| v[c / (channels / groups)]).collect()),
                _ => Err(b.err(i, NodeError::NormParameters { channels, groups })),
            }
        };
        let (scale, bias) = (per_channel(self, 1)?, per_channel(self, 2)?);
        let by_channel = self.alias(
            &format!("{out}#by-channel"),
            normalized,
            vec![channels, spatial],
            false,
        );
        if scale.iter().all(|&s| s == 1.0) && bias.iter().all(|&b| b == 0.0) {
            self.alias(&out, by_channel, dims, false);
            return Ok(());
        }
        let scale = self.new_const(vec![channels, 1], scale);
        let bias = self.new_const(vec![channels, 1], bias);
        let affine = self.define(&format!("{out}#affine"), vec![channels, spatial], false);
        self.map(MapStep {
            b: Some(Operand::Const(scale)),
            binary: Binary::Mul,
            c: Some(Operand::Const(bias)),
            ..Self::copy_step(by_channel, affine)
        });
        self.alias(&out, affine, dims, false);
        Ok(())
    }

    /// Resize (and the older Upsample) in nearest mode by whole factors, as `interpolate(…,
    /// scale_factor = 2, mode = "nearest")` exports for HRNet's fusion layers: with a whole
    /// factor every coordinate mode reads input pixel `⌊i / f⌋`, so the output is the input
    /// broadcast over a factor axis after each of H and W: one copy.
    fn resize(&mut self, i: usize) -> R<()> {
        let x = self.value(i, 0)?;
        let dims = self.values[x].dims.clone();
        let form = |b: &Self, why: String| b.err(i, NodeError::ResizeForm(why));
        let mode = attr(&self.nodes[i], "mode")
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
            .unwrap_or_else(|| "nearest".into());
        if mode != "nearest" {
            return Err(form(self, format!("mode \"{mode}\"")));
        }
        let &[c, h, w] = dims.as_slice() else {
            return Err(form(self, format!("an input of item dims {dims:?}")));
        };
        // Upsample: [X, scales]; Resize 11+: [X, roi, scales, sizes]; Resize 10: [X, scales].
        let inputs = &self.nodes[i].input;
        let given = |k: usize| inputs.get(k).filter(|s| !s.is_empty()).is_some();
        let (scales_at, sizes_at) = if self.nodes[i].op_type == "Upsample" || inputs.len() == 2 {
            (Some(1), None)
        } else {
            (given(2).then_some(2), given(3).then_some(3))
        };
        let factors: Vec<f64> = match (scales_at, sizes_at) {
            (_, Some(k)) => {
                let sizes = self.folded(i, k)?.ints();
                let item: Vec<i64> = sizes.iter().skip(1).filter_map(|s| s.value()).collect();
                if sizes.len() != 4 || item.len() != 3 {
                    return Err(form(self, format!("sizes {sizes:?}")));
                }
                let mut f = vec![1.0];
                f.extend(item.iter().zip(&dims).map(|(&o, &d)| o as f64 / d as f64));
                f
            }
            (Some(k), None) => {
                let s = self.folded(i, k)?.floats().map_err(|e| self.err(i, e))?;
                s.iter().map(|&v| v as f64).collect()
            }
            (None, None) => return Err(form(self, "neither scales nor sizes".into())),
        };
        let whole = |f: f64| (f >= 1.0 && f.fract() == 0.0).then_some(f as usize);
        let (Some(1), Some(1), Some(fh), Some(fw)) = (
            factors.first().copied().and_then(whole),
            factors.get(1).copied().and_then(whole),
            factors.get(2).copied().and_then(whole),
            factors.get(3).copied().and_then(whole),
        ) else {
            return Err(form(self, format!("scales {factors:?}")));
        };
        let out = self.out(i)?;
        let xr = self.row_major(x);
        let spread = self.alias(&format!("{out}#spread"), xr, vec![c, h, 1, w, 1], false);
        let up = self.define(&format!("{out}#up"), vec![c, h, fh, w, fw], false);
        self.map(Self::copy_step(spread, up));
        self.alias(&out, up, vec![c, h * fh, w * fw], false);
        Ok(())
    }

    /// Pad in constant mode (a zero width moves nothing: timm's Swin and MaxViT export such
    /// Pads where their windows already divide the map).
    fn pad(&mut self, i: usize) -> R<()> {
        let form = |b: &Self, why: String| b.err(i, NodeError::PadForm(why));
        let mode = attr(&self.nodes[i], "mode")
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
            .unwrap_or_else(|| "constant".into());
        let pads = self.ints_arg(i, 1, "pads")?.unwrap_or_default();
        if pads.iter().all(|&p| p == 0) {
            return self.pass_through(i);
        }
        if mode != "constant" {
            return Err(form(self, format!("mode \"{mode}\"")));
        }
        let x = self.value(i, 0)?;
        let rank = self.values[x].dims.len() + 1;
        // Opset 18's `axes` input names the padded axes; before, pads cover every axis.
        let axes: Vec<usize> = match self.ints_arg(i, 3, "axes")? {
            Some(a) => a
                .iter()
                .map(|&a| fold::axis(a, rank))
                .collect::<Result<_, _>>()
                .map_err(|e| self.err(i, e))?,
            None => (0..rank).collect(),
        };
        if pads.len() != 2 * axes.len() || pads.iter().any(|&p| p < 0) {
            return Err(form(self, format!("pads {pads:?}")));
        }
        let (mut begin, mut end) = (vec![0; rank], vec![0; rank]);
        for (k, &a) in axes.iter().enumerate() {
            begin[a] = pads[k] as usize;
            end[a] = pads[k + axes.len()] as usize;
        }
        if begin[0] + end[0] > 0 {
            return Err(form(self, format!("pads {pads:?} on the batch")));
        }
        let value = match self.nodes[i].input.get(2).filter(|s| !s.is_empty()) {
            Some(_) => self.floats(i, 2)?.first().copied().unwrap_or(0.0),
            None => attr_float(&self.nodes[i], "value", 0.0),
        };
        let out = self.out(i)?;
        let padded = self.pad_copy(&out, x, &begin[1..], &end[1..], value);
        self.value_of.insert(out, padded);
        Ok(())
    }

    /// `x` with `begin[k]` and `end[k]` values of `value` around item axis `k`: per padded
    /// axis, the output filled with `value` and `x` copied into its middle (two steps), in
    /// `x`'s layout.
    fn pad_copy(
        &mut self,
        name: &str,
        x: usize,
        begin: &[usize],
        end: &[usize],
        value: f32,
    ) -> usize {
        let cl = self.values[x].channels_last;
        let fill = self.new_const(vec![1], vec![value]);
        let mut cur = x;
        for k in 0..begin.len() {
            if begin[k] + end[k] == 0 {
                continue;
            }
            let mut dims = self.values[cur].dims.clone();
            let len = dims[k];
            dims[k] += begin[k] + end[k];
            let padded = self.define(&format!("{name}#pad{k}"), dims, cl);
            self.map(MapStep {
                a: Operand::Const(fill),
                ..Self::copy_step(cur, padded)
            });
            self.map(MapStep {
                region: Some((k + 1, begin[k], len)),
                ..Self::copy_step(cur, padded)
            });
            cur = padded;
        }
        cur
    }

    fn flatten(&mut self, i: usize) -> R<()> {
        let x = self.value(i, 0)?;
        let dims = self.values[x].dims.clone();
        let rank = dims.len() + 1;
        let a = fold::axis(attr_int(&self.nodes[i], "axis", 1), rank + 1)
            .map_err(|e| self.err(i, e))?;
        if a != 1 {
            // `[N·d1…, rest]` or `[1, N·…]`: the batch merges with other dims (see `moved`).
            let inner: usize = dims[a.max(1) - 1..].iter().product();
            let outer: usize = dims[..a.max(1) - 1].iter().product();
            let target = if a == 0 {
                [
                    Sym::known(1),
                    Sym {
                        n: inner as i64,
                        c: 0,
                    },
                ]
            } else {
                [
                    Sym {
                        n: outer as i64,
                        c: 0,
                    },
                    Sym::known(inner as i64),
                ]
            };
            let x = self.materialise(x);
            let m = self.leave_batch_first(x);
            let r = self.regroup(i, m, &target, false)?;
            let out = self.out(i)?;
            self.bind(&out, r);
            return Ok(());
        }
        let out = self.out(i)?;
        let len = dims.iter().product();
        if dims.len() == 3
            && self.consumers.get(out.as_str()).is_some_and(|c| {
                c.iter()
                    .all(|&k| matches!(self.nodes[k].op_type.as_str(), "Gemm" | "MatMul"))
            })
        {
            // Flatten + dense layer: one convolution over the map, nothing moved.
            let id = self.define(&out, vec![len], false);
            self.flat_of.insert(id, x);
            return Ok(());
        }
        let x = self.row_major(x);
        self.alias(&out, x, vec![len], false);
        Ok(())
    }

    fn reshape(&mut self, i: usize) -> R<()> {
        if let Some(start) = self.shuffle_start.remove(self.input(i, 0)?) {
            if self.shuffle_end(i, start)? {
                return Ok(());
            }
        }
        let x = self.value(i, 0)?;
        let x = self.materialise(x);
        let dims = self.values[x].dims.clone();
        let Some(new) = self.reshape_target(i, &dims)? else {
            // The batch merged or moved: regrouped over the same storage (see `moved`).
            let target = self.folded(i, 1)?.ints();
            let allowzero = attr_int(&self.nodes[i], "allowzero", 0) != 0;
            let m = self.leave_batch_first(x);
            let r = self.regroup(i, m, &target, allowzero)?;
            let out = self.out(i)?;
            self.bind(&out, r);
            return Ok(());
        };
        if self.channel_shuffle(i, x, &new)? {
            return Ok(());
        }
        self.reshape_to(i, x, new)
    }

    /// Reshape `i`'s item dims for an input of item dims `dims`, or None where it merges or
    /// moves the batch.
    fn reshape_target(&self, i: usize, dims: &[usize]) -> R<Option<Dims>> {
        let target = self.folded(i, 1)?.ints();
        let allowzero = attr_int(&self.nodes[i], "allowzero", 0) != 0;
        let item: usize = dims.iter().product();
        let Some((&first, rest)) = target.split_first() else {
            return Err(self.err(i, NodeError::ReshapeToScalar));
        };
        let keeps_batch = first == Sym::BATCH
            || (first == Sym::known(0) && !allowzero)
            || (first == Sym::known(-1)
                && rest.iter().all(|s| s.value().is_some_and(|v| v > 0))
                && rest.iter().map(|s| s.c as usize).product::<usize>() == item);
        let rest: Option<Vec<i64>> = rest
            .iter()
            .enumerate()
            .map(|(k, s)| match s.value() {
                Some(0) if !allowzero => dims.get(k).map(|&d| d as i64),
                v => v,
            })
            .collect();
        let (true, Some(rest)) = (keeps_batch, rest) else {
            return Ok(None);
        };
        fold::reshape_dims(dims, &rest, allowzero)
            .map(Some)
            .map_err(|e| self.err(i, e))
    }

    /// ShuffleNet's channel shuffle, Reshape `i` of `x` (`[C, H, W]`) to `new` =
    /// `[g, C/g, H, W]`, alone read by a Transpose of those two axes, alone read by a Reshape
    /// back to `[C, H, W]`: one copy instead of the five a reshaped NHWC value costs (to row
    /// major, the transpose, back), or none when only Splits read it, each of its parts then
    /// copied straight from `x`. True when taken: the Reshape and the Transpose wait for the
    /// Reshape back (`shuffle_end`), whose target the exporter computes from the tensor's
    /// shape with nodes that come later.
    fn channel_shuffle(&mut self, i: usize, x: usize, new: &[usize]) -> R<bool> {
        let (&[c, h, w], &[g, cg, h2, w2]) = (self.values[x].dims.as_slice(), new) else {
            return Ok(false);
        };
        if g < 2 || g * cg != c || (h2, w2) != (h, w) {
            return Ok(false);
        }
        let Some(t) = self.sole_consumer(&self.out(i)?, "Transpose") else {
            return Ok(false);
        };
        if self.perm(t, 5)? != [0, 2, 1, 3, 4] {
            return Ok(false);
        }
        let out_t = self.out(t)?;
        if self.sole_consumer(&out_t, "Reshape").is_none() {
            return Ok(false);
        }
        self.done[t] = true;
        self.shuffle_start.insert(
            out_t,
            ShuffleStart {
                reshape: i,
                transpose: t,
                x,
                g,
                chw: [c, h, w],
            },
        );
        Ok(true)
    }

    /// Reshape `r` of a channel shuffle's Transpose: when it restores `[C, H, W]`, the shuffle
    /// (true); otherwise the Reshape and the Transpose are built as they are, and `r` is left
    /// to build as any Reshape (false).
    fn shuffle_end(&mut self, r: usize, s: ShuffleStart) -> R<bool> {
        let ShuffleStart {
            x,
            g,
            chw: [c, h, w],
            ..
        } = s;
        let back = self.reshape_target(r, &[c / g, g, h, w])?;
        if back.as_deref() != Some(&[c, h, w][..]) {
            self.reshape_to(s.reshape, x, vec![g, c / g, h, w])?;
            self.transpose(s.transpose)?;
            return Ok(false);
        }
        let name = self.out(r)?;
        let only_splits = !self.graph_outputs.contains(name.as_str())
            && self
                .consumers
                .get(name.as_str())
                .is_some_and(|k| k.iter().all(|&k| self.nodes[k].op_type == "Split"));
        if only_splits {
            self.shuffled.insert(name, (x, g));
        } else {
            self.shuffle_copy(&name, x, g);
        }
        Ok(true)
    }

    /// `x` channel-shuffled in `g` groups, copied into a new value `name`.
    fn shuffle_copy(&mut self, name: &str, x: usize, g: usize) -> usize {
        let (dims, cl) = (self.values[x].dims.clone(), self.values[x].channels_last);
        let output = self.define(name, dims, cl);
        self.map(MapStep {
            shuffle: Some((1, g)),
            ..Self::copy_step(x, output)
        });
        output
    }

    fn reshape_to(&mut self, i: usize, x: usize, dims: Dims) -> R<()> {
        let out = self.out(i)?;
        if dims == self.values[x].dims {
            self.value_of.insert(out, x);
            return Ok(());
        }
        let x = self.row_major(x);
        self.alias(&out, x, dims, false);
        Ok(())
    }

    fn squeeze(&mut self, i: usize) -> R<()> {
        let x = self.value(i, 0)?;
        let x = self.materialise(x);
        let full: Vec<usize> = std::iter::once(BATCH)
            .chain(self.values[x].dims.iter().copied())
            .collect();
        let (squeeze, ax) = self.squeeze_axes(i, full.len())?;
        if ax.contains(&0) {
            return Err(self.err(i, NodeError::SqueezeBatch));
        }
        let dims: Vec<usize> = if squeeze {
            full.iter()
                .enumerate()
                .filter(|(k, d)| {
                    *k > 0
                        && if ax.is_empty() {
                            **d != 1
                        } else {
                            !ax.contains(k)
                        }
                })
                .map(|(_, d)| *d)
                .collect()
        } else {
            let mut d = full.clone();
            for a in ax {
                d.insert(a, 1);
            }
            d[1..].to_vec()
        };
        self.reshape_to(i, x, dims)
    }

    /// Transpose `i`'s `perm` for a rank-`rank` input (reversed when absent), checked.
    fn perm(&self, i: usize, rank: usize) -> R<Vec<usize>> {
        let perm: Vec<usize> = match attr_ints(&self.nodes[i], "perm") {
            Some(p) => p
                .iter()
                .map(|&a| fold::axis(a, rank))
                .collect::<Result<_, _>>()
                .map_err(|e| self.err(i, e))?,
            None => (0..rank).rev().collect(),
        };
        let mut seen = perm.clone();
        seen.sort_unstable();
        if seen != (0..rank).collect::<Vec<_>>() {
            return Err(self.err(i, NodeError::Perm { perm, rank }));
        }
        Ok(perm)
    }

    /// Whether Squeeze/Unsqueeze `i` squeezes, and its axes (sorted, resolved against the
    /// output's rank for Unsqueeze) for an input of rank `rank_in`.
    fn squeeze_axes(&self, i: usize, rank_in: usize) -> R<(bool, Vec<usize>)> {
        let axes = self.ints_arg(i, 1, "axes")?.unwrap_or_default();
        let squeeze = self.nodes[i].op_type == "Squeeze";
        let rank = if squeeze {
            rank_in
        } else {
            rank_in + axes.len()
        };
        let mut ax = axes
            .iter()
            .map(|&a| fold::axis(a, rank))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(i, e))?;
        ax.sort_unstable();
        Ok((squeeze, ax))
    }

    fn transpose(&mut self, i: usize) -> R<()> {
        let x = self.value(i, 0)?;
        let x = self.materialise(x);
        let dims = self.values[x].dims.clone();
        let rank = dims.len() + 1;
        let perm = self.perm(i, rank)?;
        if perm[0] != 0 {
            let m = self.leave_batch_first(x);
            let groups = perm.iter().map(|&p| m.groups[p].clone()).collect();
            let out = self.out(i)?;
            self.bind(&out, Moved { groups, ..m });
            return Ok(());
        }
        let full: Vec<usize> = std::iter::once(0).chain(dims.iter().copied()).collect();
        let out_dims: Dims = perm[1..].iter().map(|&p| full[p]).collect();
        let out = self.out(i)?;
        let v = &self.values[x];
        // NCHW ↔ NHWC between a channels-last value and a row-major one: the same bytes.
        if self.channels_last && rank == 4 {
            if perm == [0, 2, 3, 1] && v.channels_last {
                self.alias(&out, x, out_dims, false);
                return Ok(());
            }
            if perm == [0, 3, 1, 2] && !v.channels_last {
                self.alias(&out, x, out_dims, true);
                return Ok(());
            }
        }
        let output = self.define(&out, out_dims, false);
        self.map(MapStep {
            perm_a: Some(perm),
            ..Self::copy_step(x, output)
        });
        Ok(())
    }

    /// `x[:, k]` (ViT's class token read back): one index along an axis other than the batch.
    fn gather(&mut self, i: usize) -> R<()> {
        let x = self.value(i, 0)?;
        let x = self.materialise(x);
        let rank = self.values[x].dims.len() + 1;
        let a =
            fold::axis(attr_int(&self.nodes[i], "axis", 0), rank).map_err(|e| self.err(i, e))?;
        let idx = self.folded(i, 1)?.clone();
        let ids = idx.known_ints().map_err(|e| self.err(i, e))?;
        let (&[k], true) = (ids.as_slice(), a > 0 && idx.dims().len() <= 1) else {
            return Err(self.err(i, NodeError::GatherForm));
        };
        let len = self.values[x].dims[a - 1] as i64;
        let k = if k < 0 { k + len } else { k };
        if !(0..len).contains(&k) {
            return Err(self.err(i, NodeError::GatherIndex { index: k, len }));
        }
        let out = self.out(i)?;
        if !idx.dims().is_empty() {
            self.slice_to(&out, x, (a, k as usize, 1), 1, None);
            return Ok(());
        }
        let name = format!("{out}#gathered");
        let g = self.slice_to(&name, x, (a, k as usize, 1), 1, None);
        let g = self.row_major(g);
        let mut dims = self.values[g].dims.clone();
        dims.remove(a - 1);
        self.alias(&out, g, dims, false);
        Ok(())
    }

    /// Expand to a batch-sized shape (ViT's class token, `expand(N, -1, -1)`): a broadcast copy.
    fn expand(&mut self, i: usize) -> R<()> {
        let x = self.operand(i, 0)?;
        let target = self.folded(i, 1)?.ints();
        let Some((first, rest)) = target.split_first() else {
            return Err(self.err(i, NodeError::ExpandToScalar));
        };
        let rest: Option<Vec<usize>> = rest
            .iter()
            .map(|s| s.value().map(|v| v.max(0) as usize))
            .collect();
        let (true, Some(rest)) = (*first == Sym::BATCH || *first == Sym::known(1), rest) else {
            return Err(self.err(i, NodeError::ExpandForm));
        };
        let mut target_full = vec![BATCH];
        target_full.extend(rest);
        let full = fold::broadcast(&self.full_dims(x), &target_full).map_err(|e| self.err(i, e))?;
        if full.first() != Some(&BATCH) {
            return Err(self.err(i, NodeError::ExpandForm));
        }
        let out = self.out(i)?;
        let output = self.define(&out, full[1..].to_vec(), false);
        self.map(MapStep {
            a: x,
            ..Self::copy_step(0, output)
        });
        Ok(())
    }

    fn concat(&mut self, i: usize) -> R<()> {
        let n = self.nodes[i].input.len();
        let mut parts = Vec::with_capacity(n);
        for k in 0..n {
            let v = self.value(i, k)?;
            parts.push(self.materialise(v));
        }
        let first = self.values[parts[0]].dims.clone();
        let rank = first.len() + 1;
        let axis =
            fold::axis(attr_int(&self.nodes[i], "axis", 0), rank).map_err(|e| self.err(i, e))?;
        if axis == 0 {
            return Err(self.err(i, NodeError::ConcatBatch));
        }
        let mut dims = first.clone();
        dims[axis - 1] = 0;
        for &p in &parts {
            let d = &self.values[p].dims;
            let same = d.len() == first.len()
                && d.iter()
                    .zip(&first)
                    .enumerate()
                    .all(|(k, (a, b))| k == axis - 1 || a == b);
            if !same {
                return Err(self.err(
                    i,
                    NodeError::ConcatShapes {
                        a: first,
                        b: d.clone(),
                    },
                ));
            }
            dims[axis - 1] += d[axis - 1];
        }
        let cl = self.values[parts[0]].channels_last;
        let out = self.out(i)?;
        let output = self.define(&out, dims, cl || rank == 4);
        let out_cl = self.values[output].channels_last;
        // One storage order (and an axis longer than 1, so that it has its own place in it):
        // each launch copies up to CONCAT_MAX_PARTS parts.
        if self.values[output].dims[axis - 1] > 1
            && parts
                .iter()
                .all(|&p| self.values[p].channels_last == out_cl)
        {
            let mut at = 0;
            for group in parts.chunks(CONCAT_MAX_PARTS) {
                self.steps.push(Step::Concat(ConcatStep {
                    parts: group.to_vec(),
                    output,
                    axis,
                    at,
                }));
                at += group
                    .iter()
                    .map(|&p| self.values[p].dims[axis - 1])
                    .sum::<usize>();
            }
            return Ok(());
        }
        let mut at = 0;
        for p in parts {
            let len = self.values[p].dims[axis - 1];
            self.map(MapStep {
                region: Some((axis, at, len)),
                ..Self::copy_step(p, output)
            });
            at += len;
        }
        Ok(())
    }

    /// Copies `len` elements of `x` along a full axis, from `start` every `step`-th
    /// (`a_slice`: `(axis, start, step)`), into a new value `name` (of `x` channel-shuffled,
    /// `MapStep::shuffle`, when `shuffle` is given).
    fn slice_to(
        &mut self,
        name: &str,
        x: usize,
        a_slice: (usize, usize, usize),
        len: usize,
        shuffle: Option<(usize, usize)>,
    ) -> usize {
        let mut dims = self.values[x].dims.clone();
        dims[a_slice.0 - 1] = len;
        let cl = self.values[x].channels_last;
        let output = self.define(name, dims, cl);
        self.map(MapStep {
            a_slice: Some(a_slice),
            shuffle,
            ..Self::copy_step(x, output)
        });
        output
    }

    /// A Split's part sizes along an axis of `total`: given (input 1 or the `split`
    /// attribute), else equal parts for the outputs.
    pub(super) fn split_sizes(&self, i: usize, total: usize) -> R<Vec<usize>> {
        let outs = self.nodes[i].output.len();
        let sizes: Vec<usize> = match self.ints_arg(i, 1, "split")? {
            Some(s) => s.iter().map(|&v| v.max(0) as usize).collect(),
            None => fold::equal_parts(total, outs),
        };
        if sizes.len() != outs || sizes.iter().sum::<usize>() != total {
            return Err(self.err(i, NodeError::SplitSizes { sizes, total }));
        }
        Ok(sizes)
    }

    fn split(&mut self, i: usize) -> R<()> {
        let input = self.input(i, 0)?;
        let shuffled = self.shuffled.get(input).copied();
        let x = match shuffled {
            Some((src, _)) => src,
            None => {
                let x = self.value(i, 0)?;
                self.materialise(x)
            }
        };
        let dims = self.values[x].dims.clone();
        let rank = dims.len() + 1;
        let axis =
            fold::axis(attr_int(&self.nodes[i], "axis", 0), rank).map_err(|e| self.err(i, e))?;
        if axis == 0 {
            return Err(self.err(i, NodeError::SplitBatch));
        }
        let outs: Vec<String> = self.nodes[i].output.clone();
        let total = dims[axis - 1];
        let sizes = self.split_sizes(i, total)?;
        // Parts of a channel shuffle are copied from the value shuffled when they fall on whole
        // groups; otherwise the shuffle is copied first, once.
        let (x, shuffle) = match shuffled {
            Some((src, g)) if axis == 1 && sizes.iter().all(|s| s.is_multiple_of(g)) => {
                (src, Some(g))
            }
            Some((src, g)) => {
                self.shuffled.remove(input);
                (self.shuffle_copy(input, src, g), None)
            }
            None => (x, None),
        };
        let mut at = 0;
        for (name, len) in outs.iter().zip(sizes) {
            if !name.is_empty() {
                self.slice_to(name, x, (axis, at, 1), len, shuffle.map(|g| (axis, g)));
            }
            at += len;
        }
        Ok(())
    }

    /// A Slice's `(full axis, start, end, step)` per sliced axis, for a tensor of `rank`
    /// (batch included); starts and ends as written (negative, past the end).
    pub(super) fn slice_args(&self, i: usize, rank: usize) -> R<Vec<(usize, i64, i64, i64)>> {
        let ints = |k: usize| -> R<Option<Vec<i64>>> {
            match self.nodes[i].input.get(k).filter(|s| !s.is_empty()) {
                Some(_) => Ok(Some(
                    self.folded(i, k)?
                        .known_ints()
                        .map_err(|e| self.err(i, e))?,
                )),
                None => Ok(None),
            }
        };
        let (starts, ends) = (ints(1)?.unwrap_or_default(), ints(2)?.unwrap_or_default());
        let axes = ints(3)?.unwrap_or_else(|| (0..starts.len() as i64).collect());
        let steps = ints(4)?.unwrap_or_else(|| vec![1; starts.len()]);
        axes.iter()
            .enumerate()
            .map(|(k, &a)| {
                let a = fold::axis(a, rank).map_err(|e| self.err(i, e))?;
                match (starts.get(k), ends.get(k)) {
                    (Some(&s), Some(&e)) => Ok((a, s, e, steps.get(k).copied().unwrap_or(1))),
                    _ => Err(self.err(i, NodeError::SliceForm)),
                }
            })
            .collect()
    }

    fn slice(&mut self, i: usize) -> R<()> {
        let x = self.value(i, 0)?;
        let x = self.materialise(x);
        let rank = self.values[x].dims.len() + 1;
        let args = self.slice_args(i, rank)?;
        let mut cur = x;
        let out = self.out(i)?;
        for (k, &(a, start, end, step)) in args.iter().enumerate() {
            if a == 0 || step < 1 {
                return Err(self.err(i, NodeError::SliceForm));
            }
            let (s, len) = slice_range(self.values[cur].dims[a - 1], start, end, step);
            let name = if k + 1 == args.len() {
                out.clone()
            } else {
                format!("{out}#slice{k}")
            };
            cur = self.slice_to(&name, cur, (a, s, step as usize), len, None);
        }
        if args.is_empty() {
            self.value_of.insert(out, x);
        }
        Ok(())
    }
}

/// ONNX Slice's `start`, `end` (negative: from the end; clamped) and positive `step` along a
/// dim of `n`: the first element taken and how many.
pub(super) fn slice_range(n: usize, start: i64, end: i64, step: i64) -> (usize, usize) {
    let n = n as i64;
    let fix = |v: i64| (if v < 0 { v.saturating_add(n) } else { v }).clamp(0, n);
    let (s, e) = (fix(start), fix(end));
    let len = if e > s { (e - s + step - 1) / step } else { 0 };
    (s as usize, len as usize)
}

/// A product's `[K, P]` right operand (row-major) as the OIHW weights `[P, K, 1, 1]` of the
/// 1×1 convolution computing it.
fn oihw_of_kp(b: &[f32], k: usize, p: usize) -> Vec<f32> {
    let mut weight = vec![0.0; p * k];
    for r in 0..k {
        for o in 0..p {
            weight[o * k + r] = b[r * p + o];
        }
    }
    weight
}

/// The steps writing memory `root` (under any of its names: a value and its aliases).
fn writers(plan: &Plan, root: usize) -> Vec<usize> {
    (0..plan.steps.len())
        .filter(|&i| plan.values[plan.steps[i].output()].storage == root)
        .collect()
}

/// The step writing `v` when step `reader` is its only reader, `v` owns its memory, no other
/// value shares it and it is not the plan's output or input: a step the plan's later folds
/// (into products, into Adds) may merge into its reader.
fn sole_producer(plan: &Plan, v: usize, reader: usize) -> Option<usize> {
    if v == plan.output || v == 0 || plan.values[v].storage != v {
        return None;
    }
    if plan
        .values
        .iter()
        .enumerate()
        .any(|(w, val)| w != v && val.storage == v)
    {
        return None;
    }
    let readers = plan
        .steps
        .iter()
        .filter(|s| s.inputs().contains(&v))
        .count();
    let writers: Vec<usize> = (0..plan.steps.len())
        .filter(|&i| plan.steps[i].output() == v)
        .collect();
    match (readers, writers.as_slice()) {
        (1, &[p]) if p < reader => Some(p),
        _ => None,
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
    products::fold_into_products(&mut plan);
    residuals::fold_conv_tails(&mut plan);
    adds::fold_adds(&mut plan);
    attention::fuse_attention(&mut plan);
    Ok(plan)
}
