//! Load-time constants: initializers, `Constant` nodes, and every node whose inputs are all
//! known is evaluated here, so what PyTorch's exporter writes around the real work (weights
//! behind `Identity`, shape arithmetic from `Shape` through `Gather`, `Unsqueeze`, `Concat`,
//! `Cast`, `Div`, `Slice` …) never reaches the GPU engine's steps, and the CPU engine's reader folds what tract
//! cannot translate (`fold_float_constants`). The batch size is the one unknown: a shape
//! element is `n·N + c`, so `Shape(x)[0]` folds to `N` and a Reshape target stays exact.

use tract_onnx::pb;

mod einsum;
mod elementwise;
mod gather_nd;
mod generate;
mod layout;
mod reduce;

/// Why a load-time constant cannot be read or folded. The builder adds the node (or names the
/// initializer) it came from.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FoldError {
    #[error("{0} depends on the batch size")]
    DependsOnBatch(Sym),
    #[error("initializer `{name}` holds the wrong number of values for dims {dims:?}")]
    ValueCount { name: String, dims: Vec<i64> },
    #[error(
        "initializer `{name}` has ONNX data type {data_type}; the GPU engine reads float, double, \
         float16 and integer constants"
    )]
    DataType { name: String, data_type: i32 },
    #[error("axis {axis} is out of range for rank {rank}")]
    Axis { axis: i64, rank: usize },
    #[error("shapes {a:?} and {b:?} do not broadcast")]
    Broadcast { a: Vec<usize>, b: Vec<usize> },
    #[error("{a} {op} {b} mixes the batch size in a way that cannot be folded")]
    MixesBatch { op: String, a: Sym, b: Sym },
    #[error("{0} / 0 in shape arithmetic")]
    DivisionByZero(Sym),
    #[error("{0} mod 0 in shape arithmetic")]
    ModuloByZero(Sym),
    #[error("{0} is not foldable on integers")]
    NotFoldableOnIntegers(String),
    #[error("{0} is not foldable")]
    NotFoldable(String),
    #[error("Reshape without a shape")]
    ReshapeWithoutShape,
    #[error("Gather without indices")]
    GatherWithoutIndices,
    #[error("a Clip bound without a value")]
    ClipBound,
    #[error("Gather index {index} out of range {len}")]
    GatherIndex { index: i64, len: usize },
    #[error("Slice with step 0")]
    SliceStepZero,
    #[error("a Constant node without a value")]
    ConstantWithoutValue,
    #[error("Constant `value` without a tensor")]
    ConstantWithoutTensor,
    #[error("Constant with `{0}` is not supported")]
    ConstantAttribute(String),
    #[error("Reshape: 0 at axis {axis} of a rank-{rank} input")]
    ReshapeZeroPastRank { axis: usize, rank: usize },
    #[error("Reshape target {0:?} is not valid")]
    ReshapeTarget(Vec<i64>),
    #[error("cannot reshape {input:?} to {target:?}")]
    Reshape { input: Vec<usize>, target: Vec<i64> },
    #[error("cannot reshape {input:?} ({total} values) to {target:?}")]
    ReshapeCount {
        input: Vec<usize>,
        total: usize,
        target: Vec<i64>,
    },
}

/// A float constant the GPU reads (a weight, a scale, a bias).
#[derive(Clone, Debug, PartialEq)]
pub struct Const {
    pub dims: Vec<usize>,
    pub data: Vec<f32>,
}

/// An integer in shape arithmetic: `n·N + c`, N the batch size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sym {
    pub n: i64,
    pub c: i64,
}

impl Sym {
    pub const fn known(c: i64) -> Sym {
        Sym { n: 0, c }
    }

    pub const BATCH: Sym = Sym { n: 1, c: 0 };

    pub fn value(self) -> Option<i64> {
        (self.n == 0).then_some(self.c)
    }
}

impl std::fmt::Display for Sym {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.n, self.c) {
            (0, c) => write!(f, "{c}"),
            (1, 0) => write!(f, "N"),
            (n, 0) => write!(f, "{n}N"),
            (n, c) => write!(f, "{n}N{c:+}"),
        }
    }
}

/// A value known at load time.
#[derive(Clone, Debug, PartialEq)]
pub enum Folded {
    Float(Const),
    Int { dims: Vec<usize>, data: Vec<Sym> },
}

impl Folded {
    pub fn dims(&self) -> &[usize] {
        match self {
            Folded::Float(c) => &c.dims,
            Folded::Int { dims, .. } => dims,
        }
    }

    fn len(&self) -> usize {
        match self {
            Folded::Float(c) => c.data.len(),
            Folded::Int { data, .. } => data.len(),
        }
    }

    /// As floats (integers converted; the batch symbol cannot be).
    pub fn floats(&self) -> Result<Vec<f32>, FoldError> {
        match self {
            Folded::Float(c) => Ok(c.data.clone()),
            Folded::Int { data, .. } => data
                .iter()
                .map(|s| {
                    s.value()
                        .map(|v| v as f32)
                        .ok_or(FoldError::DependsOnBatch(*s))
                })
                .collect(),
        }
    }

    /// As shape integers (floats truncated toward zero, as Cast does).
    pub fn ints(&self) -> Vec<Sym> {
        match self {
            Folded::Float(c) => c.data.iter().map(|v| Sym::known(*v as i64)).collect(),
            Folded::Int { data, .. } => data.clone(),
        }
    }

    /// Known integers (no batch symbol).
    pub fn known_ints(&self) -> Result<Vec<i64>, FoldError> {
        self.ints()
            .into_iter()
            .map(|s| s.value().ok_or(FoldError::DependsOnBatch(s)))
            .collect()
    }

    fn with(&self, dims: Vec<usize>, pick: impl Fn(usize) -> usize, n: usize) -> Folded {
        match self {
            Folded::Float(c) => Folded::Float(Const {
                dims,
                data: (0..n).map(|i| c.data[pick(i)]).collect(),
            }),
            Folded::Int { data, .. } => Folded::Int {
                dims,
                data: (0..n).map(|i| data[pick(i)]).collect(),
            },
        }
    }
}

/// Reads an initializer or a `Constant`'s tensor.
pub fn tensor(t: &pb::TensorProto) -> Result<Folded, FoldError> {
    use pb::tensor_proto::DataType as D;
    let dims: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
    let n: usize = dims.iter().product();
    let raw = &t.raw_data;
    let bad = || FoldError::ValueCount {
        name: t.name.clone(),
        dims: t.dims.clone(),
    };
    let float = |v: Vec<f32>| -> Result<Folded, FoldError> {
        if v.len() != n {
            return Err(bad());
        }
        Ok(Folded::Float(Const {
            dims: dims.clone(),
            data: v,
        }))
    };
    let int = |v: Vec<i64>| -> Result<Folded, FoldError> {
        if v.len() != n {
            return Err(bad());
        }
        Ok(Folded::Int {
            dims: dims.clone(),
            data: v.into_iter().map(Sym::known).collect(),
        })
    };
    match D::try_from(t.data_type) {
        Ok(D::Float) if !raw.is_empty() => float(
            raw.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        ),
        Ok(D::Float) => float(t.float_data.clone()),
        Ok(D::Double) if !raw.is_empty() => float(
            raw.chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
        ),
        Ok(D::Double) => float(t.double_data.iter().map(|v| *v as f32).collect()),
        Ok(D::Float16) if !raw.is_empty() => float(
            raw.chunks_exact(2)
                .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
                .collect(),
        ),
        Ok(D::Float16) => float(t.int32_data.iter().map(|v| f16_to_f32(*v as u16)).collect()),
        Ok(D::Int64) if !raw.is_empty() => int(raw
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            .collect()),
        Ok(D::Int64) => int(t.int64_data.clone()),
        Ok(D::Int32 | D::Int16 | D::Int8 | D::Uint8 | D::Uint16 | D::Bool) if !raw.is_empty() => {
            let size = match D::try_from(t.data_type) {
                Ok(D::Int32) => 4,
                Ok(D::Int16 | D::Uint16) => 2,
                _ => 1,
            };
            let signed = !matches!(D::try_from(t.data_type), Ok(D::Uint8 | D::Uint16 | D::Bool));
            int(raw
                .chunks_exact(size)
                .map(|b| match (size, signed) {
                    (4, _) => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
                    (2, true) => i16::from_le_bytes([b[0], b[1]]) as i64,
                    (2, false) => u16::from_le_bytes([b[0], b[1]]) as i64,
                    (_, true) => b[0] as i8 as i64,
                    _ => b[0] as i64,
                })
                .collect())
        }
        Ok(D::Int32 | D::Int16 | D::Int8 | D::Uint8 | D::Uint16 | D::Bool) => {
            int(t.int32_data.iter().map(|v| *v as i64).collect())
        }
        _ => Err(FoldError::DataType {
            name: t.name.clone(),
            data_type: t.data_type,
        }),
    }
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f32;
    match exp {
        0 => sign * frac * 2f32.powi(-24),
        31 if frac == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        e => sign * (1.0 + frac / 1024.0) * 2f32.powi(e - 15),
    }
}

pub fn attr<'a>(node: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

pub fn attr_ints(node: &pb::NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

pub fn attr_int(node: &pb::NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map(|a| a.i).unwrap_or(default)
}

pub fn attr_float(node: &pb::NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).map(|a| a.f).unwrap_or(default)
}

/// Normalises a possibly negative axis of a rank-`rank` tensor.
pub fn axis(a: i64, rank: usize) -> Result<usize, FoldError> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if (0..r.max(1)).contains(&v) {
        Ok(v as usize)
    } else {
        Err(FoldError::Axis { axis: a, rank })
    }
}

fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// Numpy broadcasting of two shapes.
pub fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>, FoldError> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let da = if i + a.len() >= r {
                a[i + a.len() - r]
            } else {
                1
            };
            let db = if i + b.len() >= r {
                b[i + b.len() - r]
            } else {
                1
            };
            match (da, db) {
                (x, y) if x == y => Ok(x),
                (1, y) => Ok(y),
                (x, 1) => Ok(x),
                _ => Err(FoldError::Broadcast {
                    a: a.to_vec(),
                    b: b.to_vec(),
                }),
            }
        })
        .collect()
}

/// The flat index in a tensor of `dims` that element `i` of the broadcast shape `out` reads.
/// `v` (of `dims`) broadcast to `out`, `n` values.
pub fn broadcast_values<T: Copy>(v: &[T], dims: &[usize], out: &[usize], n: usize) -> Vec<T> {
    (0..n).map(|i| v[broadcast_index(i, out, dims)]).collect()
}

fn broadcast_index(i: usize, out: &[usize], dims: &[usize]) -> usize {
    let st = strides(dims);
    let mut rem = i;
    let mut idx = 0;
    let off = out.len() - dims.len();
    let ost = strides(out);
    for (k, &os) in ost.iter().enumerate() {
        let coord = rem / os;
        rem %= os;
        if k >= off && dims[k - off] != 1 {
            idx += coord * st[k - off];
        }
    }
    idx
}

fn sym_bin(op: &str, a: Sym, b: Sym) -> Result<Sym, FoldError> {
    let both = || FoldError::MixesBatch {
        op: op.to_string(),
        a,
        b,
    };
    Ok(match op {
        "Add" => Sym {
            n: a.n + b.n,
            c: a.c + b.c,
        },
        "Sub" => Sym {
            n: a.n - b.n,
            c: a.c - b.c,
        },
        "Mul" => match (a.value(), b.value()) {
            (Some(x), _) => Sym {
                n: b.n * x,
                c: b.c * x,
            },
            (_, Some(y)) => Sym {
                n: a.n * y,
                c: a.c * y,
            },
            _ => return Err(both()),
        },
        "Div" => match b.value() {
            Some(0) => return Err(FoldError::DivisionByZero(a)),
            Some(y) if a.n % y == 0 => Sym {
                n: a.n / y,
                c: a.c.div_euclid(y),
            },
            _ => return Err(both()),
        },
        "Max" | "Min" => match (a.value(), b.value()) {
            (Some(x), Some(y)) => Sym::known(if op == "Max" { x.max(y) } else { x.min(y) }),
            _ => return Err(both()),
        },
        // ONNX's integer Mod (fmod = 0): the remainder takes the divisor's sign, as Python's.
        "Mod" => match (a.value(), b.value()) {
            (_, Some(0)) => return Err(FoldError::ModuloByZero(a)),
            (Some(x), Some(y)) => Sym::known(((x % y) + y) % y),
            _ => return Err(both()),
        },
        "Equal" => {
            // N ≥ 1: n·N + c with n and c of one sign (and n ≠ 0) is never 0.
            let d = Sym {
                n: a.n - b.n,
                c: a.c - b.c,
            };
            match d {
                Sym { n: 0, c } => Sym::known((c == 0) as i64),
                Sym { n, c } if (n > 0 && c >= 0) || (n < 0 && c <= 0) => Sym::known(0),
                _ => return Err(both()),
            }
        }
        _ => return Err(FoldError::NotFoldableOnIntegers(op.to_string())),
    })
}

fn float_bin(op: &str, a: f32, b: f32) -> Result<f32, FoldError> {
    Ok(match op {
        "Add" => a + b,
        "Sub" => a - b,
        "Mul" => a * b,
        "Div" => a / b,
        "Pow" => a.powf(b),
        "Max" => a.max(b),
        "Min" => a.min(b),
        // Float Mod is C's fmod (ONNX requires fmod = 1 for floats): the dividend's sign.
        "Mod" => a % b,
        "Equal" => (a == b) as i32 as f32,
        _ => return Err(FoldError::NotFoldable(op.to_string())),
    })
}

fn float_unary(op: &str, x: f32) -> Option<f32> {
    Some(match op {
        "Sqrt" => x.sqrt(),
        "Neg" => -x,
        "Reciprocal" => 1.0 / x,
        "Floor" => x.floor(),
        "Ceil" => x.ceil(),
        "Exp" => x.exp(),
        "Relu" => x.max(0.0),
        "Sigmoid" => 1.0 / (1.0 + (-x).exp()),
        "Abs" => x.abs(),
        _ => return None,
    })
}

/// The ops `eval` evaluates, as the unsupported-op error and docs/config.md list those the
/// GPU engine accepts only on constants (the others also run as steps).
pub const FOLDED: &[&str] = &[
    "Constant",
    "Shape",
    "Cast",
    "ConstantOfShape",
    "Range",
    "Where",
    "Equal",
    "Mod",
    "Floor",
    "Ceil",
    "Einsum",
    "GatherND",
    "Clip",
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "BatchNormalization",
    "Split",
];

/// Evaluates `node` when every input is known (`inputs[i]` is `None` for an activation).
/// `dims_of` gives an activation's full shape (batch included), for `Shape`. `Ok(None)`: not
/// foldable here (the op runs on the GPU).
pub fn eval(
    node: &pb::NodeProto,
    inputs: &[Option<&Folded>],
    dims_of: &dyn Fn(&str) -> Option<Vec<Sym>>,
) -> Result<Option<Folded>, FoldError> {
    let op = node.op_type.as_str();
    if op == "Constant" {
        return constant(node).map(Some);
    }
    if op == "Shape" {
        let Some(name) = node.input.first() else {
            return Ok(None);
        };
        let full: Vec<Sym> = match (inputs.first().copied().flatten(), dims_of(name)) {
            (Some(f), _) => f.dims().iter().map(|&d| Sym::known(d as i64)).collect(),
            (None, Some(d)) => d,
            _ => return Ok(None),
        };
        let r = full.len() as i64;
        let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
        let start = clampi(attr_int(node, "start", 0));
        let end = clampi(attr_int(node, "end", r));
        let data = full[start..end.max(start)].to_vec();
        return Ok(Some(Folded::Int {
            dims: vec![data.len()],
            data,
        }));
    }
    let mut known = Vec::with_capacity(inputs.len());
    for (i, f) in inputs.iter().enumerate() {
        match f {
            Some(f) => known.push(*f),
            // An absent optional input is named "".
            None if node.input.get(i).is_some_and(|n| n.is_empty()) => {}
            None => return Ok(None),
        }
    }
    if known.is_empty() {
        return Ok(None);
    }
    let x = known[0];
    let folded = match op {
        "Identity" | "Dropout" => x.clone(),
        "Cast" => elementwise::cast(node, x)?,
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" | "Mod" | "Equal"
            if known.len() == 2 =>
        {
            elementwise::binary(op, known[0], known[1])?
        }
        "Sqrt" | "Neg" | "Reciprocal" | "Floor" | "Ceil" | "Exp" | "Relu" | "Sigmoid" | "Abs" => {
            elementwise::unary(op, x)?
        }
        "Clip" => elementwise::clip(node, inputs, x)?,
        "Unsqueeze" => layout::unsqueeze(node, &known)?,
        "Squeeze" => layout::squeeze(node, &known)?,
        "Reshape" | "Flatten" => layout::reshape(node, &known)?,
        "Transpose" => layout::transpose(node, x)?,
        "Einsum" => einsum::einsum(node, &known)?,
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" => {
            let axes = match inputs.get(1).copied().flatten() {
                Some(a) => Some(a.known_ints()?),
                None => attr_ints(node, "axes"),
            };
            reduce::reduce(node, x, axes)?
        }
        "BatchNormalization" => reduce::batch_norm(node, &known)?,
        "GatherND" => gather_nd::gather_nd(
            node,
            x,
            known.get(1).ok_or(FoldError::GatherWithoutIndices)?,
        )?,
        "Gather" => layout::gather(node, &known)?,
        "Concat" => layout::concat(node, &known)?,
        "Slice" => layout::slice(node, &known)?,
        "ConstantOfShape" => generate::constant_of_shape(node, x)?,
        "Range" if known.len() == 3 => generate::range(&known)?,
        "Expand" if known.len() == 2 => match layout::expand(x, known[1])? {
            Some(f) => f,
            None => return Ok(None),
        },
        "Where" if known.len() == 3 => elementwise::select_where(known[0], known[1], known[2])?,
        _ => return Ok(None),
    };
    Ok(Some(folded))
}

/// A Split's parts when no sizes are given: `outputs` parts of `total`, the last smaller
/// where it does not divide (ONNX's rule).
pub fn equal_parts(total: usize, outputs: usize) -> Vec<usize> {
    let k = outputs.max(1);
    let each = total.div_ceil(k);
    (0..k)
        .map(|j| each.min(total.saturating_sub(j * each)))
        .collect()
}

/// A Split of a constant (EVA's rotary position table), one constant per output; `Ok(None)`
/// where the input is not known at load time.
pub fn split(
    node: &pb::NodeProto,
    inputs: &[Option<&Folded>],
) -> Result<Option<Vec<Folded>>, FoldError> {
    let Some(x) = inputs.first().copied().flatten() else {
        return Ok(None);
    };
    let d = x.dims().to_vec();
    let a = axis(attr_int(node, "axis", 0), d.len())?;
    let outs = node.output.len().max(1);
    let sizes: Vec<usize> = match (inputs.get(1).copied().flatten(), attr_ints(node, "split")) {
        (Some(s), _) => s.known_ints()?.iter().map(|&v| v.max(0) as usize).collect(),
        (None, Some(s)) => s.iter().map(|&v| v.max(0) as usize).collect(),
        (None, None) => equal_parts(d[a], outs),
    };
    if sizes.len() != outs || sizes.iter().sum::<usize>() != d[a] {
        return Err(FoldError::NotFoldable(format!(
            "Split of {} into {sizes:?}",
            d[a]
        )));
    }
    let inner: usize = d[a + 1..].iter().product();
    let mut at = 0;
    let mut parts = Vec::with_capacity(outs);
    for len in sizes {
        let mut dims = d.clone();
        dims[a] = len;
        let n: usize = dims.iter().product();
        let block = len * inner;
        parts.push(x.with(
            dims,
            |i| {
                let (outer, rest) = (i / block.max(1), i % block.max(1));
                (outer * d[a] + at) * inner + rest
            },
            n,
        ));
        at += len;
    }
    Ok(Some(parts))
}

/// Unsqueeze/Squeeze axes: input 1 (opset 13 on) or the `axes` attribute.
fn axes_arg(node: &pb::NodeProto, known: &[&Folded]) -> Result<Vec<i64>, FoldError> {
    match known.get(1) {
        Some(a) => a.known_ints(),
        None => Ok(attr_ints(node, "axes").unwrap_or_default()),
    }
}

/// `out`'s elements from `a` where `pick`, else from `b`, each broadcast from its dims.
fn select<T: Copy>(
    out: &[usize],
    pick: impl Fn(usize) -> bool,
    (a, ad): (&[T], &[usize]),
    (b, bd): (&[T], &[usize]),
) -> Vec<T> {
    let n: usize = out.iter().product();
    (0..n)
        .map(|i| {
            if pick(i) {
                a[broadcast_index(i, out, ad)]
            } else {
                b[broadcast_index(i, out, bd)]
            }
        })
        .collect()
}

fn constant(node: &pb::NodeProto) -> Result<Folded, FoldError> {
    let a = node
        .attribute
        .first()
        .ok_or(FoldError::ConstantWithoutValue)?;
    Ok(match a.name.as_str() {
        "value" => tensor(a.t.as_ref().ok_or(FoldError::ConstantWithoutTensor)?)?,
        "value_float" => Folded::Float(Const {
            dims: vec![],
            data: vec![a.f],
        }),
        "value_floats" => Folded::Float(Const {
            dims: vec![a.floats.len()],
            data: a.floats.clone(),
        }),
        "value_int" => Folded::Int {
            dims: vec![],
            data: vec![Sym::known(a.i)],
        },
        "value_ints" => Folded::Int {
            dims: vec![a.ints.len()],
            data: a.ints.iter().map(|&v| Sym::known(v)).collect(),
        },
        other => return Err(FoldError::ConstantAttribute(other.to_string())),
    })
}

/// ONNX Reshape's target (0 copies the input dim unless `allowzero`, one −1 is inferred).
pub fn reshape_dims(
    input: &[usize],
    target: &[i64],
    allowzero: bool,
) -> Result<Vec<usize>, FoldError> {
    let total: usize = input.iter().product();
    let mut out = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(*input.get(i).ok_or(FoldError::ReshapeZeroPastRank {
                axis: i,
                rank: input.len(),
            })?),
            t if t >= 0 => out.push(t as usize),
            _ => return Err(FoldError::ReshapeTarget(target.to_vec())),
        }
    }
    let known: usize = out.iter().product();
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(FoldError::Reshape {
                input: input.to_vec(),
                target: target.to_vec(),
            });
        }
        out[i] = total / known;
    } else if known != total {
        return Err(FoldError::ReshapeCount {
            input: input.to_vec(),
            total,
            target: target.to_vec(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modelgen::attr_int;

    fn ints(v: &[i64]) -> Folded {
        Folded::Int {
            dims: vec![v.len()],
            data: v.iter().map(|&x| Sym::known(x)).collect(),
        }
    }

    /// Every op `FOLDED` names is evaluated on constants: the list cannot claim an op `eval`
    /// does not have.
    #[test]
    fn every_listed_op_folds() {
        let one = ints(&[1]);
        let three = ints(&[3]);
        let zero = ints(&[0]);
        let value = pb::TensorProto {
            dims: vec![1],
            data_type: pb::tensor_proto::DataType::Int64 as i32,
            int64_data: vec![7],
            ..Default::default()
        };
        for &op in FOLDED {
            let mut node = pb::NodeProto {
                op_type: op.into(),
                input: vec!["a".into()],
                output: vec!["y".into()],
                ..Default::default()
            };
            let inputs: Vec<Option<&Folded>> = match op {
                "Constant" => {
                    node.input.clear();
                    node.attribute.push(pb::AttributeProto {
                        name: "value".into(),
                        t: Some(value.clone()),
                        ..Default::default()
                    });
                    vec![]
                }
                "Shape" => vec![None],
                "Cast" => {
                    node.attribute.push(attr_int("to", 7));
                    vec![Some(&three)]
                }
                "ConstantOfShape" | "Floor" | "Ceil" | "ReduceMean" | "ReduceSum" | "ReduceMax"
                | "ReduceMin" => vec![Some(&three)],
                "Range" | "Where" | "Clip" => vec![Some(&one), Some(&three), Some(&one)],
                "Einsum" => {
                    node.attribute.push(pb::AttributeProto {
                        name: "equation".into(),
                        s: b"i,i->".to_vec(),
                        ..Default::default()
                    });
                    vec![Some(&three), Some(&three)]
                }
                "GatherND" => vec![Some(&three), Some(&zero)],
                "BatchNormalization" => vec![Some(&three); 5],
                _ => vec![Some(&three), Some(&one)],
            };
            node.input.resize(inputs.len(), "a".into());
            let dims = |_: &str| Some(vec![Sym::known(2), Sym::known(3)]);
            if op == "Split" {
                let parts = split(&node, &[Some(&ints(&[1, 2, 3, 4]))])
                    .unwrap()
                    .unwrap();
                assert_eq!(parts[0].known_ints().unwrap(), vec![1, 2, 3, 4]);
                continue;
            }
            let got = eval(&node, &inputs, &dims);
            assert!(matches!(got, Ok(Some(_))), "{op}: {got:?}");
        }
    }

    /// Integer Abs, Relu and Clip keep integers and compute them (pads and sizes).
    #[test]
    fn integer_abs_relu_and_clip() {
        let x = ints(&[-3, 0, 5]);
        let run = |op: &str, inputs: Vec<Option<&Folded>>| {
            let node = pb::NodeProto {
                op_type: op.into(),
                input: inputs
                    .iter()
                    .map(|f| if f.is_some() { "a" } else { "" }.into())
                    .collect(),
                ..Default::default()
            };
            match eval(&node, &inputs, &|_| None) {
                Ok(Some(f)) => f.known_ints().unwrap(),
                other => panic!("{op}: {other:?}"),
            }
        };
        assert_eq!(run("Abs", vec![Some(&x)]), vec![3, 0, 5]);
        assert_eq!(run("Relu", vec![Some(&x)]), vec![0, 0, 5]);
        let (lo, hi) = (ints(&[-1]), ints(&[2]));
        assert_eq!(
            run("Clip", vec![Some(&x), Some(&lo), Some(&hi)]),
            vec![-1, 0, 2]
        );
        assert_eq!(run("Clip", vec![Some(&x), None, Some(&hi)]), vec![-3, 0, 2]);
    }
}
