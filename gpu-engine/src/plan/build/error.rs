//! Why an ONNX model has no GPU plan. Most refusals are about one node, and name it: the
//! user learns which node to change, or that the model is served with `device = "cpu"`.

use onnx_front::fold::{FoldError, Sym};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// `node` as `label` writes it: the op and the node's name (or its index).
    #[error("{node}: {why}")]
    Node { node: String, why: NodeError },
    /// An initializer that cannot be read (it names itself).
    #[error(transparent)]
    Initializer(#[from] FoldError),
    #[error("the ONNX file has no graph")]
    NoGraph,
    #[error("expected a model with one input, found {0}")]
    Inputs(usize),
    #[error(
        "the GPU engine needs an input of shape [batch, C, H, W] with fixed C, H, W; \
         input `{name}` has {dims:?}"
    )]
    InputShape {
        name: String,
        dims: Vec<Option<i64>>,
    },
    #[error("input `{name}` has dims {dims:?}")]
    InputDims {
        name: String,
        dims: Vec<Option<i64>>,
    },
    #[error("expected a model with one output, found {0}")]
    Outputs(usize),
    #[error(
        "the model output `{name}` has shape {}: a Reshape or Transpose moves the batch \
         dimension and nothing moves it back; the GPU engine returns the batch first",
        show(.shape)
    )]
    OutputMoved { name: String, shape: Vec<Sym> },
    #[error("the model's output does not depend on its input")]
    OutputConstant,
    #[error("the model output `{0}` is never produced")]
    OutputMissing(String),
    #[error("the model's output is its input")]
    OutputIsInput,
}

/// What is wrong with one node, or what of it the GPU engine does not run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Fold(#[from] FoldError),
    #[error("input {0} is missing")]
    MissingInput(usize),
    #[error("no output")]
    NoOutput,
    #[error("input `{0}` is a constant where the GPU engine needs a tensor")]
    ConstantInput(String),
    #[error("input `{0}` is not produced by an earlier node")]
    UnknownInput(String),
    #[error("input `{0}` must be a constant")]
    NotConstant(String),
    #[error(
        "op `{0}` is not supported by the GPU engine (supported: {list}); serve this model \
         with `device = \"cpu\"`",
        list = super::supported()
    )]
    UnsupportedOp(String),

    #[error("reducing over the batch dimension is not supported")]
    ReduceOverBatch,
    #[error("a softmax over the batch is not supported")]
    SoftmaxOverBatch,
    #[error("Gelu with approximate = {0}")]
    GeluApproximate(String),
    #[error("bounds must be scalars")]
    ClipBounds,
    #[error("broadcasting {a:?} with {b:?} would change the batch dimension")]
    BroadcastChangesBatch { a: Vec<usize>, b: Vec<usize> },

    #[error("only 2-D convolutions are supported (input {0:?})")]
    ConvRank(Vec<usize>),
    #[error("weights of shape {0:?}; expected 4 dims")]
    ConvWeightRank(Vec<usize>),
    #[error("weights {weights:?} with group = {groups} do not fit an input of {cin} channels")]
    ConvGroups {
        weights: Vec<usize>,
        groups: usize,
        cin: usize,
    },
    #[error("kernel_shape {kernel:?} does not match the weights {weights:?}")]
    KernelShape {
        kernel: Vec<i64>,
        weights: Vec<usize>,
    },
    /// `[top, left, bottom, right]`.
    #[error("pads {0:?} are asymmetric; cuDNN needs top = bottom and left = right")]
    AsymmetricPads([usize; 4]),
    #[error("a convolution's input must be [C, H, W]")]
    ConvInput,
    #[error("kernel larger than its padded input")]
    KernelLargerThanInput,
    #[error("expected 5 inputs (x, scale, B, mean, var)")]
    BatchNormInputs,
    #[error("parameters must have {0} values")]
    BatchNormParameters(usize),
    #[error("a scalar input")]
    ScalarInput,

    #[error("expects a flat input")]
    NotFlat,
    #[error("weights of {values} values do not fit an input of {input:?}")]
    DenseWeights { values: usize, input: Vec<usize> },
    #[error("weight dims {0:?}; expected 2")]
    GemmWeightRank(Vec<usize>),
    #[error("bias of {values} values for {outputs} outputs")]
    GemmBias { values: usize, outputs: usize },
    #[error("only Gemm on a flat [N, K] input with transA = 0")]
    GemmInput,
    /// `b` is the right operand's full shape (a tensor's batch as a placeholder dim).
    #[error(
        "a product of [N, {a:?}] and {b:?} is not supported (the right operand must \
         be a [K, P] constant or a tensor with the same leading dimensions)"
    )]
    MatMulShapes { a: Vec<usize>, b: Vec<usize> },

    #[error("auto_pad = {0} is not supported; export with explicit pads")]
    AutoPad(String),
    #[error("pads {0:?} are not supported")]
    Pads(Vec<i64>),
    #[error("`{attribute}` = {values:?}; expected two positive values")]
    Pair {
        attribute: &'static str,
        values: Vec<i64>,
    },
    #[error("only 2-D pooling of [N, C, H, W] is supported")]
    PoolRank,
    #[error("the Indices output is not supported")]
    PoolIndices,
    #[error("kernel_shape is required")]
    NoKernelShape,
    #[error("dilated pooling is not supported")]
    DilatedPool,
    #[error("window larger than its input")]
    WindowLargerThanInput,

    #[error("only a LayerNormalization over the last axis is supported")]
    LayerNormAxis,
    #[error("the Mean and InvStdDev outputs are not supported")]
    LayerNormOutputs,
    #[error("scale and bias must have {0} values")]
    LayerNormParameters(usize),

    #[error("a normalization of {0} channels needs a rank-3 or higher input")]
    NormRank(usize),
    #[error("{channels} channels do not split into {groups} groups")]
    NormGroups { channels: usize, groups: usize },
    #[error("scale and bias must have one value per channel ({channels}) or per group ({groups})")]
    NormParameters { channels: usize, groups: usize },
    #[error(
        "only a nearest-neighbour Resize of `[N, C, H, W]` by whole factors of H and W is \
         supported ({0})"
    )]
    ResizeForm(String),
    #[error(
        "only a constant Pad of the item's dims (not the batch) is supported ({0}); reflect \
         and edge modes are not"
    )]
    PadForm(String),
    #[error("a Reshape to a scalar is not supported")]
    ReshapeToScalar,
    #[error("the batch dimension cannot be squeezed or inserted")]
    SqueezeBatch,
    #[error("perm {perm:?} of a rank-{rank} tensor")]
    Perm { perm: Vec<usize>, rank: usize },
    #[error("only a Gather of one index along an axis other than the batch is supported")]
    GatherForm,
    #[error(
        "the item number (`Range(0, N, 1)`, an `as_strided` or `arange` over the batch) is used \
         here in a way the GPU engine does not plan; it follows it through Cast, Unsqueeze, Add \
         and Mul by a scalar into a Gather"
    )]
    ItemIndexUse,
    #[error(
        "a Gather by item-number indices is planned where each item reads its own values in \
         order (a reshape); these indices read others"
    )]
    ItemGather,
    #[error("index {index} out of range {len}")]
    GatherIndex { index: i64, len: i64 },
    #[error("an Expand to a scalar is not supported")]
    ExpandToScalar,
    #[error("only an Expand along the batch is supported")]
    ExpandForm,
    #[error("concatenating along the batch is not supported")]
    ConcatBatch,
    #[error("inputs {a:?} and {b:?} do not concatenate")]
    ConcatShapes { a: Vec<usize>, b: Vec<usize> },
    #[error("splitting the batch is not supported")]
    SplitBatch,
    #[error("split sizes {sizes:?} do not cover {total}")]
    SplitSizes { sizes: Vec<usize>, total: usize },
    #[error("only slices with positive steps off the batch are supported")]
    SliceForm,

    // Tensors whose batch dimension has moved (see `moved`); `shape` is ONNX's.
    #[error("no moved input")]
    NoMovedInput,
    #[error(
        "reads a tensor of shape {} whose batch dimension has moved; the GPU \
         engine runs Transpose, Reshape, Squeeze, Unsqueeze, Gather, Slice and Split (off the \
         batch), MatMul, Gemm, Softmax over the last dim and elementwise ops on such tensors",
        show(.0)
    )]
    MovedUnsupported(Vec<Sym>),
    #[error("axis {axis} of {} is not 1", show(.shape))]
    MovedSqueeze { axis: usize, shape: Vec<Sym> },
    #[error("a Reshape of {} to {}: {why}", show(.shape), show(.target))]
    MovedReshape {
        shape: Vec<Sym>,
        target: Vec<Sym>,
        why: Regroup,
    },
    #[error(
        "only a Gather of one index along an axis of its own is supported on {}",
        show(.0)
    )]
    MovedGatherForm(Vec<Sym>),
    #[error("a Gather along the batch is not supported")]
    MovedGatherBatch,
    #[error(
        "a product of {} and [{k}, {p}]: the last dim must be {k} and hold no batch",
        show(.shape)
    )]
    MovedProduct { shape: Vec<Sym>, k: usize, p: usize },
    #[error("only Gemm on a [rows, K] input with transA = 0")]
    MovedGemmInput,
    #[error("a constant of {dims:?} does not broadcast to {}", show(.shape))]
    MovedConstant { dims: Vec<usize>, shape: Vec<Sym> },
}

/// Why a Reshape of a tensor whose batch has moved finds no grouping of its storage's axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Regroup {
    #[error("0 past the input's rank")]
    ZeroPastRank,
    #[error("a dim the GPU engine cannot place")]
    Unplaceable,
    #[error("the batch in two dims")]
    BatchTwice,
    #[error("the sizes do not match")]
    Sizes,
    #[error("it would split or move the batch")]
    MovesBatch,
    #[error(
        "the target holds exactly one item's values: the exporter fixed the batch at 1 here, so \
         the file runs only with a batch of 1 (export it with a dynamic batch: \
         `torch.onnx.export(..., dynamic_shapes=...)`, or `dynamo=False` with `dynamic_axes`)"
    )]
    FixedBatch,
    #[error("the dims do not split the input's")]
    Split,
}

/// A shape with the batch symbol, as `[8N, 4, 4]`.
fn show(shape: &[Sym]) -> String {
    let s: Vec<String> = shape.iter().map(Sym::to_string).collect();
    format!("[{}]", s.join(", "))
}
