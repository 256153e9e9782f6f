//! cuDNN's graph (backend) API for one fused convolution: conv → +bias → (+residual) →
//! (ReLU, ReLU6, sigmoid or SiLU), fp16 NHWC in and out, fp32 inside. cuDNN's heuristics list the engines that can run
//! the whole graph as one kernel; the tuner times them against the legacy API's choices.

use std::ffi::c_void;

use cudarc::cudnn::sys as dnn;
use dnn::cudnnBackendAttributeName_t as A;
use dnn::cudnnBackendAttributeType_t as T;
use dnn::cudnnBackendDescriptorType_t as D;

use super::cuda::{dnn_call, Result};
use super::plan::{ConvStep, Unary};

/// An owned backend descriptor.
pub struct BDesc(pub dnn::cudnnBackendDescriptor_t);

// SAFETY: descriptors are host objects used by one thread at a time.
unsafe impl Send for BDesc {}

impl Drop for BDesc {
    fn drop(&mut self) {
        // SAFETY: created by cudnnBackendCreateDescriptor, destroyed once.
        unsafe { dnn::cudnnBackendDestroyDescriptor(self.0) };
    }
}

impl BDesc {
    pub fn new(t: D) -> Result<BDesc> {
        let mut d = std::ptr::null_mut();
        dnn_call!(cudnnBackendCreateDescriptor(t, &mut d))?;
        Ok(BDesc(d))
    }

    fn set<V>(&self, name: A, ty: T, values: &[V]) -> Result<()> {
        dnn_call!(cudnnBackendSetAttribute(
            self.0,
            name,
            ty,
            values.len() as i64,
            values.as_ptr() as *const c_void
        ))
    }

    fn i64s(&self, name: A, v: &[i64]) -> Result<()> {
        self.set(name, T::CUDNN_TYPE_INT64, v)
    }

    fn descs(&self, name: A, v: &[&BDesc]) -> Result<()> {
        let raw: Vec<dnn::cudnnBackendDescriptor_t> = v.iter().map(|d| d.0).collect();
        self.set(name, T::CUDNN_TYPE_BACKEND_DESCRIPTOR, &raw)
    }

    fn dtype(&self, name: A, t: dnn::cudnnDataType_t) -> Result<()> {
        self.set(name, T::CUDNN_TYPE_DATA_TYPE, &[t])
    }

    fn handle(&self, name: A, h: dnn::cudnnHandle_t) -> Result<()> {
        self.set(name, T::CUDNN_TYPE_HANDLE, &[h])
    }

    pub fn finalize(self) -> Result<BDesc> {
        dnn_call!(cudnnBackendFinalize(self.0))?;
        Ok(self)
    }
}

const HALF: dnn::cudnnDataType_t = dnn::cudnnDataType_t::CUDNN_DATA_HALF;
const FLOAT: dnn::cudnnDataType_t = dnn::cudnnDataType_t::CUDNN_DATA_FLOAT;

/// Unique ids of the tensors a variant pack binds.
pub const UID_X: i64 = 1;
pub const UID_W: i64 = 2;
pub const UID_B: i64 = 3;
pub const UID_Z: i64 = 4;
pub const UID_Y: i64 = 5;

/// An NHWC tensor with logical dims `[n, c, h, w]`.
fn tensor(
    uid: i64,
    n: usize,
    s: [usize; 3],
    dtype: dnn::cudnnDataType_t,
    virt: bool,
) -> Result<BDesc> {
    let t = BDesc::new(D::CUDNN_BACKEND_TENSOR_DESCRIPTOR)?;
    let (c, h, w) = (s[0] as i64, s[1] as i64, s[2] as i64);
    t.dtype(A::CUDNN_ATTR_TENSOR_DATA_TYPE, dtype)?;
    t.i64s(A::CUDNN_ATTR_TENSOR_DIMENSIONS, &[n as i64, c, h, w])?;
    t.i64s(A::CUDNN_ATTR_TENSOR_STRIDES, &[c * h * w, 1, w * c, c])?;
    t.i64s(A::CUDNN_ATTR_TENSOR_UNIQUE_ID, &[uid])?;
    t.i64s(A::CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, &[16])?;
    if virt {
        t.set(
            A::CUDNN_ATTR_TENSOR_IS_VIRTUAL,
            T::CUDNN_TYPE_BOOLEAN,
            &[true],
        )?;
    }
    t.finalize()
}

fn pointwise(
    mode: dnn::cudnnPointwiseMode_t,
    x: &BDesc,
    b: Option<&BDesc>,
    y: &BDesc,
) -> Result<BDesc> {
    pointwise_clipped(mode, None, x, b, y)
}

/// A pointwise op; `upper`: a Relu's upper clip (ReLU6).
fn pointwise_clipped(
    mode: dnn::cudnnPointwiseMode_t,
    upper: Option<f32>,
    x: &BDesc,
    b: Option<&BDesc>,
    y: &BDesc,
) -> Result<BDesc> {
    let pw = BDesc::new(D::CUDNN_BACKEND_POINTWISE_DESCRIPTOR)?;
    pw.set(
        A::CUDNN_ATTR_POINTWISE_MODE,
        T::CUDNN_TYPE_POINTWISE_MODE,
        &[mode],
    )?;
    pw.dtype(A::CUDNN_ATTR_POINTWISE_MATH_PREC, FLOAT)?;
    if let Some(u) = upper {
        // The clip's type follows the math precision (float).
        pw.set(
            A::CUDNN_ATTR_POINTWISE_RELU_UPPER_CLIP,
            T::CUDNN_TYPE_FLOAT,
            &[u],
        )?;
    }
    let pw = pw.finalize()?;
    let op = BDesc::new(D::CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR)?;
    op.descs(A::CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, &[&pw])?;
    op.descs(A::CUDNN_ATTR_OPERATION_POINTWISE_XDESC, &[x])?;
    if let Some(b) = b {
        op.descs(A::CUDNN_ATTR_OPERATION_POINTWISE_BDESC, &[b])?;
    }
    op.descs(A::CUDNN_ATTR_OPERATION_POINTWISE_YDESC, &[y])?;
    op.finalize()
}

/// The operation graph of one fused convolution at batch `n`.
pub struct ConvGraph {
    pub graph: BDesc,
    // The graph refers to these; they live as long as it does.
    _parts: Vec<BDesc>,
}

pub fn conv_graph(
    h: dnn::cudnnHandle_t,
    c: &ConvStep,
    n: usize,
    x_shape: [usize; 3],
    y_shape: [usize; 3],
) -> Result<ConvGraph> {
    let x = tensor(UID_X, n, x_shape, HALF, false)?;
    let w_shape = [c.cin / c.groups, c.kernel[0], c.kernel[1]];
    // Filter dims [k, c, r, s] in KRSC order: the same stride pattern as an NHWC tensor.
    let w = tensor(UID_W, c.cout, w_shape, HALF, false)?;
    let b = tensor(UID_B, 1, [c.cout, 1, 1], HALF, false)?;
    let y = tensor(UID_Y, n, y_shape, HALF, false)?;
    let conv = BDesc::new(D::CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR)?;
    conv.dtype(A::CUDNN_ATTR_CONVOLUTION_COMP_TYPE, FLOAT)?;
    conv.set(
        A::CUDNN_ATTR_CONVOLUTION_CONV_MODE,
        T::CUDNN_TYPE_CONVOLUTION_MODE,
        &[dnn::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION],
    )?;
    conv.i64s(A::CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, &[2])?;
    let pair = |v: [usize; 2]| [v[0] as i64, v[1] as i64];
    conv.i64s(A::CUDNN_ATTR_CONVOLUTION_DILATIONS, &pair(c.dilation))?;
    conv.i64s(A::CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, &pair(c.stride))?;
    conv.i64s(A::CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, &pair(c.pad))?;
    conv.i64s(A::CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, &pair(c.pad))?;
    let conv = conv.finalize()?;

    let mut parts = Vec::new();
    let mut ops = Vec::new();
    let mut next_uid = 100;
    let mut virt = || -> Result<BDesc> {
        next_uid += 1;
        tensor(next_uid, n, y_shape, FLOAT, true)
    };
    let conv_out = virt()?;
    let op = BDesc::new(D::CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR)?;
    op.descs(A::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, &[&x])?;
    op.descs(A::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, &[&w])?;
    op.descs(A::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, &[&conv_out])?;
    op.descs(
        A::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC,
        &[&conv],
    )?;
    op.set(
        A::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA,
        T::CUDNN_TYPE_FLOAT,
        &[1.0f32],
    )?;
    op.set(
        A::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA,
        T::CUDNN_TYPE_FLOAT,
        &[0.0f32],
    )?;
    ops.push(op.finalize()?);

    // conv_out + bias → [+ z] → [activation]; the last op writes y. Relu, ReLU6 (a Relu with
    // an upper clip), Sigmoid, SiLU and GELU have pointwise modes; the rest run split.
    let act = match (c.act, c.act_p) {
        (Unary::Identity, _) => None,
        (Unary::Relu, _) => Some((dnn::cudnnPointwiseMode_t::CUDNN_POINTWISE_RELU_FWD, None)),
        (Unary::Clip, [lo, hi]) if lo == 0.0 && hi.is_finite() => Some((
            dnn::cudnnPointwiseMode_t::CUDNN_POINTWISE_RELU_FWD,
            Some(hi),
        )),
        (Unary::Sigmoid, _) => Some((dnn::cudnnPointwiseMode_t::CUDNN_POINTWISE_SIGMOID_FWD, None)),
        (Unary::Swish, _) => Some((dnn::cudnnPointwiseMode_t::CUDNN_POINTWISE_SWISH_FWD, None)),
        // GELU_FWD is the erf form ONNX's chain computes (GELU_APPROX_TANH_FWD is the other).
        (Unary::Gelu, _) => Some((dnn::cudnnPointwiseMode_t::CUDNN_POINTWISE_GELU_FWD, None)),
        (other, _) => {
            return Err(super::cuda::GpuError::Plan(format!(
                "the graph API has no fused {other:?}"
            )))
        }
    };
    let tail = c.residual.is_some() as usize + act.is_some() as usize;
    let after_bias = if tail == 0 { None } else { Some(virt()?) };
    ops.push(pointwise(
        dnn::cudnnPointwiseMode_t::CUDNN_POINTWISE_ADD,
        &conv_out,
        Some(&b),
        after_bias.as_ref().unwrap_or(&y),
    )?);
    let mut cur = after_bias;
    if c.residual.is_some() {
        let z = tensor(UID_Z, n, y_shape, HALF, false)?;
        let out = if act.is_some() { Some(virt()?) } else { None };
        let input = cur.take().ok_or_else(|| {
            super::cuda::GpuError::Plan("fused graph: residual without an input".into())
        })?;
        ops.push(pointwise(
            dnn::cudnnPointwiseMode_t::CUDNN_POINTWISE_ADD,
            &input,
            Some(&z),
            out.as_ref().unwrap_or(&y),
        )?);
        parts.push(input);
        parts.push(z);
        cur = out;
    }
    if let Some((mode, upper)) = act {
        let input = cur.take().ok_or_else(|| {
            super::cuda::GpuError::Plan("fused graph: an activation without an input".into())
        })?;
        ops.push(pointwise_clipped(mode, upper, &input, None, &y)?);
        parts.push(input);
    }
    let graph = BDesc::new(D::CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR)?;
    graph.handle(A::CUDNN_ATTR_OPERATIONGRAPH_HANDLE, h)?;
    graph.descs(
        A::CUDNN_ATTR_OPERATIONGRAPH_OPS,
        &ops.iter().collect::<Vec<_>>(),
    )?;
    let graph = graph.finalize()?;
    parts.extend([x, w, b, y, conv, conv_out]);
    parts.extend(ops);
    Ok(ConvGraph {
        graph,
        _parts: parts,
    })
}

/// The engine configurations cuDNN's heuristics propose for a graph, best first.
pub fn engine_configs(g: &ConvGraph, limit: usize) -> Result<Vec<BDesc>> {
    let heur = BDesc::new(D::CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR)?;
    heur.descs(A::CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, &[&g.graph])?;
    heur.set(
        A::CUDNN_ATTR_ENGINEHEUR_MODE,
        T::CUDNN_TYPE_HEUR_MODE,
        &[dnn::cudnnBackendHeurMode_t::CUDNN_HEUR_MODE_A],
    )?;
    let heur = heur.finalize()?;
    let mut count = 0i64;
    dnn_call!(cudnnBackendGetAttribute(
        heur.0,
        A::CUDNN_ATTR_ENGINEHEUR_RESULTS,
        T::CUDNN_TYPE_BACKEND_DESCRIPTOR,
        0,
        &mut count,
        std::ptr::null_mut()
    ))?;
    let want = (count.max(0) as usize).min(limit);
    let cfgs = (0..want)
        .map(|_| BDesc::new(D::CUDNN_BACKEND_ENGINECFG_DESCRIPTOR))
        .collect::<Result<Vec<_>>>()?;
    let mut raw: Vec<dnn::cudnnBackendDescriptor_t> = cfgs.iter().map(|d| d.0).collect();
    let mut got = 0i64;
    dnn_call!(cudnnBackendGetAttribute(
        heur.0,
        A::CUDNN_ATTR_ENGINEHEUR_RESULTS,
        T::CUDNN_TYPE_BACKEND_DESCRIPTOR,
        want as i64,
        &mut got,
        raw.as_mut_ptr() as *mut c_void
    ))?;
    let mut cfgs = cfgs;
    cfgs.truncate(got.max(0) as usize);
    Ok(cfgs)
}

/// What cuDNN says of an engine configuration's engine.
pub struct Notes {
    /// The kernel is compiled at plan time (NVRTC inside cuDNN: tens of milliseconds per
    /// plan, batch size and start) rather than precompiled.
    pub runtime_compiled: bool,
    /// Results may differ bit-wise between runs (atomics, split reductions).
    pub nondeterministic: bool,
    /// Accumulates in less than fp32 (fp16 reductions): errors grow with depth.
    pub reduced_precision: bool,
}

pub fn notes(cfg: &BDesc) -> Result<Notes> {
    let engine = BDesc::new(D::CUDNN_BACKEND_ENGINE_DESCRIPTOR)?;
    let mut raw = engine.0;
    let mut got = 0i64;
    dnn_call!(cudnnBackendGetAttribute(
        cfg.0,
        A::CUDNN_ATTR_ENGINECFG_ENGINE,
        T::CUDNN_TYPE_BACKEND_DESCRIPTOR,
        1,
        &mut got,
        &mut raw as *mut dnn::cudnnBackendDescriptor_t as *mut c_void
    ))?;
    // Read as plain integers: cuDNN may report notes newer than these bindings know.
    let read = |name: A, ty: T| -> Result<Vec<u32>> {
        let mut v = [u32::MAX; 16];
        let mut got = 0i64;
        dnn_call!(cudnnBackendGetAttribute(
            engine.0,
            name,
            ty,
            v.len() as i64,
            &mut got,
            v.as_mut_ptr() as *mut c_void
        ))?;
        Ok(v[..got.clamp(0, 16) as usize].to_vec())
    };
    let behaviour = read(
        A::CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE,
        T::CUDNN_TYPE_BEHAVIOR_NOTE,
    )?;
    let numerical = read(
        A::CUDNN_ATTR_ENGINE_NUMERICAL_NOTE,
        T::CUDNN_TYPE_NUMERICAL_NOTE,
    )?;
    Ok(Notes {
        runtime_compiled: behaviour.contains(
            &(dnn::cudnnBackendBehaviorNote_t::CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION as u32),
        ),
        nondeterministic: numerical.contains(
            &(dnn::cudnnBackendNumericalNote_t::CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC as u32),
        ),
        reduced_precision: numerical.contains(
            &(dnn::cudnnBackendNumericalNote_t::CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION
                as u32),
        ),
    })
}

/// An execution plan and the workspace it needs.
pub struct Plan {
    pub plan: BDesc,
    pub workspace: usize,
}

/// Finalizes a plan descriptor and reads the workspace it needs.
fn finalize_plan(p: BDesc) -> Result<Plan> {
    let p = p.finalize()?;
    let mut ws = 0i64;
    let mut got = 0i64;
    dnn_call!(cudnnBackendGetAttribute(
        p.0,
        A::CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
        T::CUDNN_TYPE_INT64,
        1,
        &mut got,
        &mut ws as *mut i64 as *mut c_void
    ))?;
    Ok(Plan {
        plan: p,
        workspace: ws.max(0) as usize,
    })
}

pub fn plan(h: dnn::cudnnHandle_t, cfg: &BDesc) -> Result<Plan> {
    let p = BDesc::new(D::CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR)?;
    p.handle(A::CUDNN_ATTR_EXECUTION_PLAN_HANDLE, h)?;
    p.descs(A::CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, &[cfg])?;
    finalize_plan(p)
}

/// The plan as cuDNN's JSON, which `plan_from_json` turns back into a plan without the
/// operation graph, the heuristics or (for precompiled engines) any compilation.
pub fn plan_json(p: &Plan) -> Result<String> {
    let mut len = 0i64;
    dnn_call!(cudnnBackendGetAttribute(
        p.plan.0,
        A::CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION,
        T::CUDNN_TYPE_CHAR,
        0,
        &mut len,
        std::ptr::null_mut()
    ))?;
    let mut buf = vec![0u8; len.max(0) as usize + 1];
    let mut got = 0i64;
    dnn_call!(cudnnBackendGetAttribute(
        p.plan.0,
        A::CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION,
        T::CUDNN_TYPE_CHAR,
        buf.len() as i64,
        &mut got,
        buf.as_mut_ptr() as *mut c_void
    ))?;
    buf.truncate(got.clamp(0, buf.len() as i64) as usize);
    while buf.last() == Some(&0) {
        buf.pop();
    }
    String::from_utf8(buf)
        .map_err(|_| super::cuda::GpuError::Plan("cuDNN's plan JSON is not UTF-8".into()))
}

pub fn plan_from_json(h: dnn::cudnnHandle_t, json: &str) -> Result<Plan> {
    let p = BDesc::new(D::CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR)?;
    p.handle(A::CUDNN_ATTR_EXECUTION_PLAN_HANDLE, h)?;
    p.set(
        A::CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION,
        T::CUDNN_TYPE_CHAR,
        json.as_bytes(),
    )?;
    finalize_plan(p)
}

/// Binds device pointers to a plan's tensors.
pub fn variant_pack(x: u64, w: u64, b: u64, z: Option<u64>, y: u64, ws: u64) -> Result<BDesc> {
    let mut ids = vec![UID_X, UID_W, UID_B, UID_Y];
    let mut ptrs = vec![
        x as *mut c_void,
        w as *mut c_void,
        b as *mut c_void,
        y as *mut c_void,
    ];
    if let Some(z) = z {
        ids.push(UID_Z);
        ptrs.push(z as *mut c_void);
    }
    let vp = BDesc::new(D::CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR)?;
    vp.i64s(A::CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, &ids)?;
    vp.set(
        A::CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS,
        T::CUDNN_TYPE_VOID_PTR,
        &ptrs,
    )?;
    vp.set(
        A::CUDNN_ATTR_VARIANT_PACK_WORKSPACE,
        T::CUDNN_TYPE_VOID_PTR,
        &[ws as *mut c_void],
    )?;
    vp.finalize()
}

pub fn execute(h: dnn::cudnnHandle_t, plan: &Plan, vp: &BDesc) -> Result<()> {
    dnn_call!(cudnnBackendExecute(h, plan.plan.0, vp.0))
}
