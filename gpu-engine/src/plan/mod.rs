//! ONNX → the GPU engine's plan (its IR): a list of steps over values with fixed per-item
//! shapes. Pure Rust, so import, folding, fusion and the layout rules are tested on machines
//! without a GPU; the CUDA runtime (the crate's `engine`) only executes what this decides.
//!
//! - `onnx_front::fold` (shared with the CPU engine's reader): the constants PyTorch's
//!   exporter leaves in a graph (initializers, `Constant`, `Identity` over weights, shape
//!   arithmetic on `Shape`) evaluated at load time.
//! - `build`: nodes → steps, one file per op family, with the fusions that look one node ahead
//!   (BatchNorm into Conv; residual Add and ReLU into the convolution's epilogue; Flatten +
//!   Gemm as one 1×1 convolution over the map's memory).
//! - `fuse`: passes over the built plan that merge steps the build could not see together.
//! - `view`: how each step addresses memory at a batch size (the layout rules below), shared
//!   by the GPU executor and the reference executor (`reference`) the tests run.
//!
//! Layout: every value has ONNX's logical shape `[N, d1, d2, …]`. With `channels_last` (fp16,
//! for cuDNN's tensor-core kernels) a rank-4 value `[N, C, H, W]` is stored NHWC; every other
//! value is stored row-major in its logical order. Steps address their operands through
//! strided views, so Transpose, Concat, broadcasting and Reshape keep ONNX's NCHW meaning
//! whatever the storage.

mod build;
mod fuse;
use onnx_front::fold;
pub mod view;

#[cfg(test)]
mod attention_kernel_tests;
#[cfg(test)]
mod conv_kernel_tests;
#[cfg(test)]
mod host_kernels;
#[cfg(test)]
mod reduce_kernel_tests;
pub mod reference;
#[cfg(test)]
mod row_kernel_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod transpose_kernel_tests;
#[cfg(test)]
mod warp_emulator;

use std::collections::HashSet;

pub use build::{build, BuildError, NodeError, Regroup};
pub use fold::{Const, FoldError, Sym};
pub use fuse::HEAD_DIMS;

/// Per-item logical dims of a value (ONNX order, the batch dimension excluded).
pub type Dims = Vec<usize>;

#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    pub dims: Dims,
    /// Stored NHWC (a rank-3 item `[C, H, W]` when the plan is channels-last).
    pub channels_last: bool,
    /// The value whose memory this one is (a Reshape/Flatten that moves no data); itself
    /// otherwise.
    pub storage: usize,
}

impl Value {
    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `[C, H, W]` of a value a convolution or pooling reads (a flat `[K]` is `K × 1 × 1`).
    pub fn chw(&self) -> Option<[usize; 3]> {
        match self.dims.as_slice() {
            [c, h, w] => Some([*c, *h, *w]),
            [k] => Some([*k, 1, 1]),
            _ => None,
        }
    }

    /// Whether the stored bytes are in row-major logical order (so a reshape moves nothing).
    pub fn is_row_major(&self) -> bool {
        !self.channels_last || matches!(self.dims.as_slice(), [c, h, w] if *c == 1 || h * w == 1)
    }
}

/// A step's operand: an activation (with a batch dimension) or a constant (without).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operand {
    Value(usize),
    Const(usize),
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
    /// Applied after the bias and the residual: Identity, Relu, Clip (`act_p`: its bounds),
    /// Sigmoid, Swish or HardSwish.
    pub act: Unary,
    pub act_p: [f32; 2],
    /// OIHW, `cout × (cin / groups) × kh × kw`, BatchNorm already folded in.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl ConvStep {
    /// One filter per channel (groups = input channels = output channels): our depthwise
    /// kernels run it, with any activation and f32 filters.
    pub fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.cin == self.groups && self.cout == self.cin
    }

    /// A 1×1 convolution (a dense layer or a product of rows), no residual or activation yet,
    /// its output to be defined by the builder.
    pub fn pointwise(
        name: String,
        input: usize,
        cin: usize,
        cout: usize,
        weight: Vec<f32>,
        bias: Vec<f32>,
    ) -> ConvStep {
        ConvStep {
            name,
            input,
            residual: None,
            output: 0,
            cin,
            cout,
            kernel: [1, 1],
            stride: [1, 1],
            pad: [0, 0],
            dilation: [1, 1],
            groups: 1,
            act: Unary::Identity,
            act_p: [0.0, 0.0],
            weight,
            bias,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    AvgIncludePad,
    AvgExcludePad,
}

/// 2-D pooling over `[N, C, H, W]`. Windows are clipped to the padded input (ceil_mode's last
/// window may hang over it); padding never wins a max.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolStep {
    pub input: usize,
    pub output: usize,
    pub kind: PoolKind,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    /// Padding before (top, left) and after (bottom, right).
    pub pad_begin: [usize; 2],
    pub pad_end: [usize; 2],
}

impl PoolStep {
    /// The pool kernel's window arguments, in its order: kind, kernel, stride, padding before
    /// and after (each height then width), then whether the values are channels-last.
    pub fn kernel_args(&self, channels_last: bool) -> [i32; 10] {
        let i = |v: usize| v as i32;
        [
            self.kind as i32,
            i(self.kernel[0]),
            i(self.kernel[1]),
            i(self.stride[0]),
            i(self.stride[1]),
            i(self.pad_begin[0]),
            i(self.pad_begin[1]),
            i(self.pad_end[0]),
            i(self.pad_end[1]),
            channels_last as i32,
        ]
    }
}

/// The binary part of an elementwise step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    /// Unary: `a` alone.
    First,
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Max,
    Min,
    /// `a < 0 ? a·b : a` (PRelu, `b` the slope).
    PRelu,
}

/// The function applied after the binary part; `p0`, `p1` are its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unary {
    Identity,
    Relu,
    Sigmoid,
    /// max(0, min(1, p0·x + p1))
    HardSigmoid,
    /// x · max(0, min(1, x/6 + 1/2))
    HardSwish,
    /// x · sigmoid(x)
    Swish,
    Erf,
    /// 0.5·x·(1 + erf(x/√2))
    Gelu,
    Sqrt,
    /// min(max(x, p0), p1)
    Clip,
    Exp,
    Tanh,
    Neg,
    Reciprocal,
    Abs,
    /// x ≥ 0 ? x : p0·x
    LeakyRelu,
    /// x > 0 ? x : p0·(eˣ − 1)
    Elu,
    /// p1 · (x > 0 ? x : p0·(eˣ − 1))
    Selu,
    /// max(0, x) + min(0, p0·(e^(x/p0) − 1))
    Celu,
    /// ln(1 + eˣ)
    Softplus,
    /// x / (1 + |x|)
    Softsign,
    /// x · tanh(softplus(x))
    Mish,
    /// GELU's tanh approximation: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
    GeluTanh,
    Log,
    /// x > p0 ? x : 0
    ThresholdedRelu,
    /// 1/√x (a normalisation's inverse deviation)
    Rsqrt,
}

/// `y[region] = unary(binary(a, b) + c)` with ONNX broadcasting of `a`, `b` and `c` to the
/// region (`c` an Add folded into the step before it: BatchNorm's shift, a residual after a
/// bias). Also the data movement: Transpose (`perm_a`), Concat (`region`), a layout change.
#[derive(Clone, Debug, PartialEq)]
pub struct MapStep {
    pub a: Operand,
    /// `a`'s full dims (batch first) are permuted before broadcasting: axis `i` of the
    /// result is axis `perm_a[i]` of `a`.
    pub perm_a: Option<Vec<usize>>,
    /// `(axis, start, step)`: reads `a` from `start` along full axis `axis`, every `step`-th
    /// element, as many as the region has (Slice, Split).
    pub a_slice: Option<(usize, usize, usize)>,
    /// `(axis, g)`: reads `a` channel-shuffled along full axis `axis` (ShuffleNet's Reshape to
    /// `[N, g, C/g, H, W]`, Transpose of the two, Reshape back, in one copy): element `c` of the
    /// shuffled axis is a's element `(c mod g)·(C/g) + c div g`, `c` counted from `a_slice`'s
    /// start when there is one (a Split of the shuffled tensor). A plain copy otherwise: no
    /// `perm_a`, `b` or `c`.
    pub shuffle: Option<(usize, usize)>,
    pub b: Option<Operand>,
    pub binary: Binary,
    pub unary: Unary,
    pub p0: f32,
    pub p1: f32,
    pub output: usize,
    /// `(axis, offset, len)`: writes only `[offset, offset + len)` along each of these full
    /// axes of the output (Concat: its part; Pad: the border and the middle).
    pub region: Vec<(usize, usize, usize)>,
    /// Added after the binary part, before the unary one.
    pub c: Option<Operand>,
}

impl MapStep {
    /// A plain copy of value `a` into `output` (through the views: a change of layout or a
    /// gather of a region).
    pub fn copy(a: usize, output: usize) -> MapStep {
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
            region: Vec::new(),
            c: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceKind {
    Mean,
    Sum,
    Max,
    Min,
    /// √(mean of the squares): the standard deviation of centred values, in their own range
    /// (an fp16 plan stores every partial without the squares' overflow).
    Rms,
    /// The sum of the squares (ReduceSumSquare).
    SumSquare,
    /// √(sum of the squares) (ReduceL2: ConvNeXt V2's global response norm); the squares are
    /// summed in f32, so an fp16 plan never stores them.
    L2,
    /// The sum of the absolute values (ReduceL1).
    L1,
}

/// A reduction over `axes` (full-dims indices, never the batch); the output keeps them as 1.
#[derive(Clone, Debug, PartialEq)]
pub struct ReduceStep {
    pub input: usize,
    pub output: usize,
    pub axes: Vec<usize>,
    pub kind: ReduceKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum RowKind {
    Softmax,
    LogSoftmax,
    /// (x − mean) / √(var + eps) · scale + bias over the axis.
    LayerNorm {
        scale: usize,
        bias: Option<usize>,
        eps: f32,
    },
}

/// An operation along one full axis (`axis ≥ 1`) of every row.
#[derive(Clone, Debug, PartialEq)]
pub struct RowStep {
    pub input: usize,
    pub output: usize,
    pub axis: usize,
    pub kind: RowKind,
}

/// ONNX MatMul (numpy semantics): `y = alpha · a [N, …, M, K] · b [… , K, P] → [N, …, M, P]`,
/// both stored row-major; `b` a constant `[K, P]` or a value with the same leading dims as `a`,
/// read transposed (stored `[…, P, K]`) when `b_trans`.
#[derive(Clone, Debug, PartialEq)]
pub struct MatMulStep {
    pub a: usize,
    pub b: Operand,
    pub output: usize,
    pub alpha: f32,
    pub b_trans: bool,
}

impl MatMulStep {
    pub fn new(a: usize, b: Operand, output: usize) -> MatMulStep {
        MatMulStep {
            a,
            b,
            output,
            alpha: 1.0,
            b_trans: false,
        }
    }
}

/// Concat of values stored in one order (all NHWC or all row-major) along a full axis: in
/// storage order every part is `outer` runs of contiguous elements, so one launch copies every
/// part. Writes `[at, at + Σ parts' dims)` along `axis` of the output (a Concat of more parts
/// than one launch takes is several steps).
#[derive(Clone, Debug, PartialEq)]
pub struct ConcatStep {
    pub parts: Vec<usize>,
    pub output: usize,
    pub axis: usize,
    pub at: usize,
}

/// The most parts one ConcatStep copies (kernels.cu's CAT_MAX).
pub const CONCAT_MAX_PARTS: usize = 32;

/// Where element `(n, h, i, j)` of a `[N, heads, rows, d]` operand of an attention step is:
/// `offset + n·batch + h·head + i·row + j` elements into `value`'s memory (its storage's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadView {
    pub value: usize,
    pub offset: i64,
    pub batch: i64,
    pub head: i64,
    pub row: i64,
}

/// `o = softmax(alpha · q · kᵀ) · v` for every item and head in one step, the scores never in
/// memory (fp16 plans: `attention.cu`). Fused from the product, Softmax and product the
/// builder makes of an attention, reading q, k and v where the copies before it read them and
/// writing where the copy after it wrote (`build/attention.rs`).
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionStep {
    pub q: HeadView,
    pub k: HeadView,
    pub v: HeadView,
    /// `o`; its value is the step's output.
    pub o: HeadView,
    pub heads: usize,
    /// Query rows, key rows, and values per row.
    pub lq: usize,
    pub lk: usize,
    pub d: usize,
    pub alpha: f32,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    Conv(ConvStep),
    Pool(PoolStep),
    Map(MapStep),
    Reduce(ReduceStep),
    Row(RowStep),
    MatMul(MatMulStep),
    Concat(ConcatStep),
    Attention(AttentionStep),
}

impl Step {
    /// What a step is, for logs and traces: a convolution's ONNX node, an elementwise step's
    /// operations, otherwise its kind.
    pub fn name(&self) -> String {
        match self {
            Step::Conv(c) => c.name.clone(),
            Step::Map(m) => format!("{:?}/{:?}", m.binary, m.unary),
            other => other.kind().to_string(),
        }
    }

    pub fn output(&self) -> usize {
        match self {
            Step::Conv(c) => c.output,
            Step::Pool(p) => p.output,
            Step::Map(m) => m.output,
            Step::Reduce(r) => r.output,
            Step::Row(r) => r.output,
            Step::MatMul(m) => m.output,
            Step::Concat(c) => c.output,
            Step::Attention(a) => a.o.value,
        }
    }

    /// The values (not constants) a step reads.
    pub fn inputs(&self) -> Vec<usize> {
        let val = |o: &Operand| match o {
            Operand::Value(v) => Some(*v),
            Operand::Const(_) => None,
        };
        match self {
            Step::Conv(c) => std::iter::once(c.input).chain(c.residual).collect(),
            Step::Pool(p) => vec![p.input],
            Step::Map(m) => val(&m.a)
                .into_iter()
                .chain(m.b.as_ref().and_then(val))
                .chain(m.c.as_ref().and_then(val))
                .collect(),
            Step::Reduce(r) => vec![r.input],
            Step::Row(r) => vec![r.input],
            Step::MatMul(m) => std::iter::once(m.a).chain(val(&m.b)).collect(),
            Step::Concat(c) => c.parts.clone(),
            Step::Attention(a) => vec![a.q.value, a.k.value, a.v.value],
        }
    }

    /// The constants a step reads.
    pub fn consts(&self) -> Vec<usize> {
        let cst = |o: &Operand| match o {
            Operand::Const(c) => Some(*c),
            Operand::Value(_) => None,
        };
        match self {
            Step::Map(m) => cst(&m.a)
                .into_iter()
                .chain(m.b.as_ref().and_then(cst))
                .chain(m.c.as_ref().and_then(cst))
                .collect(),
            Step::Row(RowStep {
                kind: RowKind::LayerNorm { scale, bias, .. },
                ..
            }) => std::iter::once(*scale).chain(*bias).collect(),
            Step::MatMul(m) => cst(&m.b).into_iter().collect(),
            _ => Vec::new(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Step::Conv(_) => "conv",
            Step::Pool(_) => "pool",
            Step::Map(_) => "elementwise",
            Step::Reduce(_) => "reduce",
            Step::Row(_) => "row",
            Step::MatMul(_) => "matmul",
            Step::Concat(_) => "concat",
            Step::Attention(_) => "attention",
        }
    }
}

/// The executable form of a model. Value 0 is the model input after the input conversion
/// (normalised, in the engine's layout and precision, channels padded to `input_padded_c`).
#[derive(Clone, Debug)]
pub struct Plan {
    /// The ONNX input's per-item shape (`3 × 224 × 224`).
    pub input: [usize; 3],
    /// Channels of value 0 on the device: 3 RGB channels padded to 8 when every consumer is a
    /// convolution (zero weights), because cuDNN's fp16 tensor-core kernels want C % 8 == 0.
    pub input_padded_c: usize,
    pub channels_last: bool,
    pub values: Vec<Value>,
    pub consts: Vec<Const>,
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

    /// Elements per item of the model output.
    pub fn output_len(&self) -> usize {
        self.values[self.output].len()
    }

    /// Device buffers for the values, reused once a value is dead: `slots[i]` is the size in
    /// elements per item of slot `i`, `slot_of[v]` the slot holding value `v` (aliases share
    /// their storage's slot).
    pub fn slots(&self) -> (Vec<usize>, Vec<usize>) {
        let root = |v: usize| self.values[v].storage;
        let mut last_use = vec![0usize; self.values.len()];
        for (i, step) in self.steps.iter().enumerate() {
            for v in step.inputs() {
                last_use[root(v)] = last_use[root(v)].max(i);
            }
        }
        last_use[root(self.output)] = usize::MAX;
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
        for (i, step) in self.steps.iter().enumerate() {
            let out = root(step.output());
            if slot_of[out] == usize::MAX {
                slot_of[out] = take(self.values[out].len(), &mut sizes, &mut free);
            }
            let mut seen = HashSet::new();
            for v in step.inputs() {
                let r = root(v);
                if last_use[r] == i && seen.insert(r) && r != out {
                    free.push(slot_of[r]);
                }
            }
        }
        for v in 0..self.values.len() {
            if slot_of[v] == usize::MAX {
                slot_of[v] = slot_of[root(v)];
            }
        }
        (sizes, slot_of)
    }
}
