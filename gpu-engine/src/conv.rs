//! Convolutions: descriptors, the ways to run one (cuDNN's legacy fused call, its legacy call +
//! our epilogue, the graph API's fused engines, our depthwise kernels, a 1×1 over NHWC as
//! cuBLAS's product + our epilogue), and the tuner that times them per batch size.

use std::ffi::c_void;
use std::sync::Arc;
use std::time::Instant;

use cudarc::cudnn::sys as dnn;
use cudarc::driver::{CudaContext, CudaStream, PushKernelArg};
use serde::{Deserialize, Serialize};

use super::blas::Blas;
use super::blas_lt::{self, Lt, LtPlan, LtShape};
use super::cuda::{
    dnn_call, ActDesc, Call, ConvDesc, DeviceBuf, Dnn, FilterDesc, GpuError, Result, TensorDesc,
    Timer,
};
use super::graph_api;
use super::kernels::{self, KView, Kernels};
use super::plan::view::{chunked_epilogue, depthwise_nhwc_threads, MatMulLaunch, View};
use super::plan::{ConvStep, Plan, Unary};
use super::precision::Precision;

/// How one convolution runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// cudnnConvolutionBiasActivationForward with legacy algorithm `algo`.
    Fused,
    /// cudnnConvolutionForward with legacy algorithm `algo`, then our bias/residual/ReLU kernel.
    Split,
    /// cuDNN's graph API: the whole conv+bias+add+ReLU graph on engine configuration number
    /// `algo` of the heuristics' list (mode A).
    Graph,
    /// Our depthwise kernel (one filter per channel, a memory-bound loop), timed against
    /// cuDNN's choices like every other candidate.
    Depthwise,
    /// The graph API's conv+bias[+add] (engine configuration `algo`), then the activation in
    /// our epilogue: for activations no graph engine fuses (on cuDNN 9.14 the tuner found no
    /// graph candidate for mobilenet_v2's ReLU6 convolutions).
    GraphAct,
    /// A 1×1 convolution over NHWC (a linear layer) as cuBLAS's product of its rows with the
    /// weights, then our epilogue: cuDNN's kernels with a heavy epilogue ran the H200's linear
    /// layers at half cuBLAS's speed (ViT's fc1 + GELU 0.098 ms, cuBLAS 0.049 + a pass).
    Blas,
    /// The same product on cuBLASLt with bias, residual and activation in its epilogue
    /// (blas_lt.rs), heuristic algorithm number `algo`.
    Lt,
}

/// Whether a convolution is a product of NHWC rows with its weights (`Mode::Blas`): 1×1,
/// stride 1, no padding, one group, both values NHWC (fp16 plans).
pub(super) fn is_rows_product(plan: &Plan, c: &ConvStep) -> bool {
    c.kernel == [1, 1]
        && c.stride == [1, 1]
        && c.pad == [0, 0]
        && c.groups == 1
        && plan.values[c.input].channels_last
        && plan.values[c.output].channels_last
}

/// `Mode::Depthwise`'s algorithm number for `depthwise_nhwc` (0 is the strided kernel).
pub(super) const DEPTHWISE_NHWC: u32 = 1;

/// The tuner's default bound on a candidate's relative L2 against the implicit GEMM's output.
pub fn default_tolerance(precision: Precision) -> f64 {
    match precision {
        // Rounding the output to fp16 alone differs by ~3e-4 (twice, in the split epilogue).
        // An algorithm above 1e-3 loses precision inside (transforms or partial sums in fp16:
        // resnet18's fp16 output was 2.3e-2 off at batch 32 under 2e-3, 1.5e-3 at the batch
        // sizes tuned otherwise).
        Precision::Fp16 => 1e-3,
        // fp32 is the reference mode: only algorithms as exact as the implicit GEMM.
        Precision::Fp32 => 1e-5,
    }
}

/// Elements in the kernels' 16-byte chunk.
pub(super) fn chunk_elements(precision: Precision) -> usize {
    16 / precision.bytes()
}

/// Whether `depthwise_nhwc` can run a depthwise convolution: its values dense NHWC, the
/// channels whole chunks, and the filters transposed for it at upload.
pub(super) fn nhwc_depthwise(c: &ConvStep, cl: bool, precision: Precision, has_taps: bool) -> bool {
    c.is_depthwise() && cl && has_taps && c.cout.is_multiple_of(chunk_elements(precision))
}

/// The algorithm chosen for one convolution at one batch size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Algo {
    pub mode: Mode,
    pub algo: u32,
    pub workspace: usize,
}

/// How many of the heuristics' engine configurations the tuner times per convolution, out of
/// the first GRAPH_SCAN it looks at.
const GRAPH_CONFIGS: usize = 3;
const GRAPH_SCAN: usize = 12;

/// The most workspace one convolution may take while tuning (cuDNN's FFT algorithms ask for
/// gigabytes; they are never the fastest for these shapes on Hopper anyway).
pub(super) const WORKSPACE_LIMIT: usize = 256 << 20;

const ALGOS: [dnn::cudnnConvolutionFwdAlgo_t; 8] = {
    use dnn::cudnnConvolutionFwdAlgo_t::*;
    [
        CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
        CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
        CUDNN_CONVOLUTION_FWD_ALGO_GEMM,
        CUDNN_CONVOLUTION_FWD_ALGO_DIRECT,
        CUDNN_CONVOLUTION_FWD_ALGO_FFT,
        CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING,
        CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD,
        CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED,
    ]
};

fn algo_from(id: u32) -> Result<dnn::cudnnConvolutionFwdAlgo_t> {
    ALGOS
        .get(id as usize)
        .copied()
        .ok_or_else(|| GpuError::Plan(format!("unknown cuDNN algorithm id {id}")))
}

/// The `[C, H, W]` of a convolution's input and output.
pub(super) fn conv_shapes(plan: &Plan, c: &ConvStep) -> Result<([usize; 3], [usize; 3])> {
    let shape = |v: usize| {
        plan.values[v].chw().ok_or_else(|| {
            GpuError::Plan(format!("{}: a convolution of a non-image value", c.name))
        })
    };
    Ok((shape(c.input)?, shape(c.output)?))
}

/// The views of a convolution's input and output at batch `n`, and whether they are NHWC.
pub(super) fn conv_views(plan: &Plan, c: &ConvStep, n: usize) -> Result<(View, View, bool)> {
    let v = |id: usize| -> Result<View> {
        let (d, s) = super::plan::view::value_layout(plan, id, n);
        // A flat [K] value is K × 1 × 1.
        let (d, s) = if d.len() == 2 {
            (vec![d[0], d[1], 1, 1], vec![s[0], s[1], 0, 0])
        } else {
            (d, s)
        };
        Ok(View::new(&d, &s, 0)?)
    };
    Ok((
        v(c.input)?,
        v(c.output)?,
        plan.values[c.output].channels_last,
    ))
}

/// A 4-D descriptor `[n, c, h, w]` in the precision's layout.
pub(super) fn tensor_desc(precision: Precision, n: usize, s: [usize; 3]) -> Result<TensorDesc> {
    let d = TensorDesc::new()?;
    dnn_call!(cudnnSetTensor4dDescriptor(
        d.0,
        precision.format(),
        precision.dtype(),
        n as i32,
        s[0] as i32,
        s[1] as i32,
        s[2] as i32
    ))?;
    Ok(d)
}

/// The batch-independent descriptors of one convolution.
pub(super) struct ConvDescs {
    filter: FilterDesc,
    conv: ConvDesc,
    bias: TensorDesc,
    act: ActDesc,
}

impl ConvDescs {
    pub(super) fn new(c: &ConvStep, precision: Precision) -> Result<ConvDescs> {
        let filter = FilterDesc::new()?;
        dnn_call!(cudnnSetFilter4dDescriptor(
            filter.0,
            precision.dtype(),
            precision.format(),
            c.cout as i32,
            (c.cin / c.groups) as i32,
            c.kernel[0] as i32,
            c.kernel[1] as i32
        ))?;
        let conv = ConvDesc::new()?;
        dnn_call!(cudnnSetConvolution2dDescriptor(
            conv.0,
            c.pad[0] as i32,
            c.pad[1] as i32,
            c.stride[0] as i32,
            c.stride[1] as i32,
            c.dilation[0] as i32,
            c.dilation[1] as i32,
            dnn::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
            dnn::cudnnDataType_t::CUDNN_DATA_FLOAT
        ))?;
        dnn_call!(cudnnSetConvolutionMathType(conv.0, precision.math()))?;
        if c.groups > 1 {
            dnn_call!(cudnnSetConvolutionGroupCount(conv.0, c.groups as i32))?;
        }
        let bias = TensorDesc::new()?;
        dnn_call!(cudnnSetTensor4dDescriptor(
            bias.0,
            dnn::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
            precision.dtype(),
            1,
            c.cout as i32,
            1,
            1
        ))?;
        let act = ActDesc::new()?;
        // The legacy fused call runs Relu or nothing; other activations are not offered to it.
        let mode = if c.act == Unary::Relu {
            dnn::cudnnActivationMode_t::CUDNN_ACTIVATION_RELU
        } else {
            dnn::cudnnActivationMode_t::CUDNN_ACTIVATION_IDENTITY
        };
        dnn_call!(cudnnSetActivationDescriptor(
            act.0,
            mode,
            dnn::cudnnNanPropagation_t::CUDNN_NOT_PROPAGATE_NAN,
            0.0
        ))?;
        Ok(ConvDescs {
            filter,
            conv,
            bias,
            act,
        })
    }
}

/// One convolution at one batch size, with its buffers: y = act(conv(x) + bias + z).
pub(super) struct ConvCall<'a> {
    pub(super) h: dnn::cudnnHandle_t,
    pub(super) stream: &'a CudaStream,
    pub(super) kernels: &'a Kernels,
    pub(super) precision: Precision,
    pub(super) step: &'a ConvStep,
    pub(super) d: &'a ConvDescs,
    pub(super) x_desc: &'a TensorDesc,
    pub(super) y_desc: &'a TensorDesc,
    pub(super) x: u64,
    pub(super) weights: &'a ConvWeights,
    pub(super) z: Option<u64>,
    pub(super) y: u64,
    pub(super) ws: u64,
    /// Elements of y, and its spatial size (for the NCHW epilogue).
    pub(super) y_len: usize,
    pub(super) y_hw: usize,
    /// Views of x and y (for the depthwise kernel) and whether y is stored NHWC.
    pub(super) views: Option<(View, View, bool)>,
    /// cuBLAS on this call's stream, for `Mode::Blas`.
    pub(super) blas: Option<&'a Blas>,
    /// cuBLASLt, for `Mode::Lt`, and the bytes of `ws`.
    pub(super) lt: Option<&'a Lt>,
    pub(super) ws_bytes: usize,
}

/// What a convolution's mode prepared at one batch size: a graph-API plan or a cuBLASLt one.
pub(super) enum Exec {
    Graph(GraphExec),
    Lt(LtPlan),
}

impl Exec {
    /// The workspace bytes the plan runs with.
    pub(super) fn workspace(&self) -> usize {
        match self {
            Exec::Graph(g) => g.plan.workspace,
            Exec::Lt(p) => p.workspace,
        }
    }

    /// The library that made the plan, for messages.
    pub(super) fn library(&self) -> &'static str {
        match self {
            Exec::Graph(_) => "cuDNN",
            Exec::Lt(_) => "cuBLASLt",
        }
    }
}

/// A graph-API plan bound to one set of buffers.
pub(super) struct GraphExec {
    _graph: Option<graph_api::ConvGraph>,
    pub(super) plan: graph_api::Plan,
    pack: graph_api::BDesc,
}

impl ConvCall<'_> {
    /// The plan for engine configuration `cfg_index`: from its saved JSON when there is one
    /// (no heuristics, no operation graph), else through the heuristics.
    pub(super) fn graph_exec(
        &self,
        mode: Mode,
        cfg_index: usize,
        n: usize,
        x_shape: [usize; 3],
        y_shape: [usize; 3],
        json: Option<&str>,
    ) -> Result<GraphExec> {
        let pack = || {
            graph_api::variant_pack(
                self.x,
                self.weights.w.ptr,
                self.weights.bias.ptr,
                self.z,
                self.y,
                self.ws,
            )
        };
        if let Some(json) = json {
            match graph_api::plan_from_json(self.h, json) {
                Ok(plan) => {
                    return Ok(GraphExec {
                        _graph: None,
                        plan,
                        pack: pack()?,
                    })
                }
                Err(e) => tracing::warn!(
                    "{}: cannot load the saved cuDNN plan ({e}); asking the heuristics again",
                    self.step.name
                ),
            }
        }
        let g = graph_api::conv_graph(self.h, &self.graph_step(mode), n, x_shape, y_shape)?;
        let cfgs = graph_api::engine_configs(&g, cfg_index + 1)?;
        let cfg = cfgs.get(cfg_index).ok_or_else(|| {
            GpuError::Plan(format!(
                "heuristics offer no engine configuration #{cfg_index}"
            ))
        })?;
        let plan = graph_api::plan(self.h, cfg)?;
        Ok(GraphExec {
            _graph: Some(g),
            plan,
            pack: pack()?,
        })
    }

    /// The depthwise kernels' window and epilogue arguments: kernel, stride, pad, dilation
    /// (each height then width), the activation and whether a residual is added.
    fn depthwise_args(&self) -> [i32; 10] {
        let c = self.step;
        let i = |v: usize| v as i32;
        [
            i(c.kernel[0]),
            i(c.kernel[1]),
            i(c.stride[0]),
            i(c.stride[1]),
            i(c.pad[0]),
            i(c.pad[1]),
            i(c.dilation[0]),
            i(c.dilation[1]),
            c.act as i32,
            self.z.is_some() as i32,
        ]
    }

    fn depthwise_nhwc(&self) -> Result<()> {
        let (xv, yv, cl) = self
            .views
            .ok_or_else(|| GpuError::Plan("a depthwise convolution without its views".into()))?;
        let c = self.step;
        let dw = self.weights.depthwise.as_ref();
        let (taps, bias) = match dw.and_then(|d| d.taps.as_ref().map(|t| (t, &d.bias))) {
            Some(t) if nhwc_depthwise(c, cl, self.precision, true) => t,
            _ => {
                return Err(GpuError::Plan(format!(
                    "{}: the NHWC depthwise kernel cannot run this convolution",
                    c.name
                )))
            }
        };
        // Views are [1, 1, N, C, H, W] (RANK 6, leading dims 1).
        let sizes = [yv.dims[3], xv.dims[4], xv.dims[5], yv.dims[4], yv.dims[5]];
        let [p0, p1] = c.act_p;
        let z = self.z.unwrap_or(self.y);
        let chunk = chunk_elements(self.precision);
        let threads = depthwise_nhwc_threads(
            yv.dims[2] as usize,
            yv.dims[3] as usize,
            yv.dims[4] as usize,
            yv.dims[5] as usize,
            chunk,
        );
        let f = match self.precision {
            Precision::Fp16 => &self.kernels.depthwise_nhwc.half,
            Precision::Fp32 => &self.kernels.depthwise_nhwc.float,
        };
        let mut l = self.stream.launch_builder(f);
        l.arg(&self.x)
            .arg(&taps.ptr)
            .arg(&bias.ptr)
            .arg(&z)
            .arg(&self.y);
        let window = self.depthwise_args();
        for a in sizes.iter().chain(&window) {
            l.arg(a);
        }
        let n = threads as u32;
        l.arg(&p0).arg(&p1).arg(&n);
        // SAFETY: argument types match `depthwise_nhwc_*`; x and y are dense NHWC buffers of
        // the views' sizes with whole 16-byte chunks of channels (nhwc_depthwise), the taps
        // hold kh × kw × C f32 values and the bias C (depthwise_weights).
        unsafe { l.launch(kernels::launch_1d(threads)) }.call("cuLaunchKernel")?;
        Ok(())
    }

    pub(super) fn run(&self, algo: Algo, exec: Option<&Exec>) -> Result<()> {
        let one = 1.0f32;
        let zero = 0.0f32;
        match algo.mode {
            Mode::Fused => {
                let alpha2 = if self.z.is_some() { 1.0f32 } else { 0.0 };
                dnn_call!(cudnnConvolutionBiasActivationForward(
                    self.h,
                    &one as *const f32 as *const c_void,
                    self.x_desc.0,
                    self.x as *const c_void,
                    self.d.filter.0,
                    self.weights.w.ptr as *const c_void,
                    self.d.conv.0,
                    algo_from(algo.algo)?,
                    self.ws as *mut c_void,
                    algo.workspace,
                    &alpha2 as *const f32 as *const c_void,
                    self.y_desc.0,
                    self.z.unwrap_or(self.y) as *const c_void,
                    self.d.bias.0,
                    self.weights.bias.ptr as *const c_void,
                    self.d.act.0,
                    self.y_desc.0,
                    self.y as *mut c_void
                ))
            }
            Mode::Split => {
                dnn_call!(cudnnConvolutionForward(
                    self.h,
                    &one as *const f32 as *const c_void,
                    self.x_desc.0,
                    self.x as *const c_void,
                    self.d.filter.0,
                    self.weights.w.ptr as *const c_void,
                    self.d.conv.0,
                    algo_from(algo.algo)?,
                    self.ws as *mut c_void,
                    algo.workspace,
                    &zero as *const f32 as *const c_void,
                    self.y_desc.0,
                    self.y as *mut c_void
                ))?;
                self.epilogue(true, self.z)
            }
            Mode::Depthwise if algo.algo == DEPTHWISE_NHWC => self.depthwise_nhwc(),
            Mode::Depthwise => {
                let (xv, yv, cl) = self.views.ok_or_else(|| {
                    GpuError::Plan("a depthwise convolution without its views".into())
                })?;
                let c = self.step;
                let (geometry, cl) = (self.depthwise_args(), cl as i32);
                let args = geometry.iter().chain(std::iter::once(&cl));
                let [p0, p1] = c.act_p;
                let z = self.z.unwrap_or(self.y);
                let n = self.y_len as u32;
                let (xv, yv) = (KView(xv), KView(yv));
                let dw = self.weights.depthwise.as_ref().ok_or_else(|| {
                    GpuError::Plan(format!("{}: no f32 depthwise filters", c.name))
                })?;
                let f = match self.precision {
                    Precision::Fp16 => &self.kernels.depthwise.half,
                    Precision::Fp32 => &self.kernels.depthwise.float,
                };
                let mut l = self.stream.launch_builder(f);
                l.arg(&xv)
                    .arg(&yv)
                    .arg(&self.x)
                    .arg(&dw.w.ptr)
                    .arg(&dw.bias.ptr);
                l.arg(&z).arg(&self.y);
                for a in args {
                    l.arg(a);
                }
                l.arg(&p0).arg(&p1).arg(&n);
                // SAFETY: argument types match `depthwise_*`; the views address buffers sized
                // for the batch, the f32 filters hold cout × kh × kw values and the bias cout.
                unsafe { l.launch(kernels::launch_1d(self.y_len)) }.call("cuLaunchKernel")?;
                Ok(())
            }
            Mode::Blas => {
                let blas = self
                    .blas
                    .ok_or_else(|| GpuError::Plan("a cuBLAS convolution without cuBLAS".into()))?;
                let c = self.step;
                // NHWC rows [n·h·w, cin] times the weights [cout, cin] (KRSC of a 1×1) read
                // transposed.
                let rows = MatMulLaunch {
                    m: self.y_len / c.cout,
                    k: c.cin,
                    p: c.cout,
                    count: 1,
                    a_stride: 0,
                    b_stride: 0,
                    y_stride: 0,
                    alpha: 1.0,
                    b_trans: true,
                };
                blas.matmul(&rows, self.precision, self.x, self.weights.w.ptr, self.y)?;
                self.epilogue(true, self.z)
            }
            Mode::Lt => {
                let (Some(lt), Some(Exec::Lt(plan))) = (self.lt, exec) else {
                    return Err(GpuError::Plan(
                        "a cuBLASLt convolution without cuBLASLt or its plan".into(),
                    ));
                };
                lt.run(
                    plan,
                    self.stream,
                    self.x,
                    self.weights.w.ptr,
                    self.z,
                    self.y,
                    self.ws,
                    self.ws_bytes,
                )
            }
            Mode::Graph | Mode::GraphAct => {
                let Some(Exec::Graph(g)) = exec else {
                    return Err(GpuError::Plan(
                        "graph-API convolution without its plan".into(),
                    ));
                };
                graph_api::execute(self.h, &g.plan, &g.pack)?;
                if algo.mode == Mode::GraphAct {
                    // The graph added the bias and the residual.
                    self.epilogue(false, None)?;
                }
                Ok(())
            }
        }
    }

    /// cuBLASLt's first `count` algorithms for this 1×1 convolution over NHWC rows, or none
    /// where its epilogue cannot compute the activation.
    pub(super) fn lt_plans(&self, count: usize) -> Result<Vec<LtPlan>> {
        let (Some(lt), Some(epilogue)) =
            (self.lt, blas_lt::epilogue(self.step.act, self.precision))
        else {
            return Ok(Vec::new());
        };
        let c = self.step;
        lt.plans(
            &LtShape {
                m: self.y_len / c.cout,
                k: c.cin,
                p: c.cout,
                precision: self.precision,
                epilogue,
                bias: self.weights.bias.ptr,
                residual: self.z.is_some(),
            },
            count,
        )
    }

    /// The convolution the graph API computes in `mode`: all of it, or all but the activation.
    fn graph_step(&self, mode: Mode) -> ConvStep {
        let mut c = ConvStep {
            weight: Vec::new(),
            bias: Vec::new(),
            ..self.step.clone()
        };
        if mode == Mode::GraphAct {
            c.act = Unary::Identity;
        }
        c
    }

    /// Our epilogue over y in place: y = act(y [+ bias] [+ z]), 16 bytes per thread where the
    /// layout allows.
    fn epilogue(&self, with_bias: bool, z: Option<u64>) -> Result<()> {
        let (len, cout) = (self.y_len as i64, self.step.cout as i32);
        let (act, has_z, has_bias) = (self.step.act as i32, z.is_some() as i32, with_bias as i32);
        let [p0, p1] = self.step.act_p;
        let z = z.unwrap_or(self.y);
        let cl = self.views.is_some_and(|(_, _, cl)| cl);
        let hw = if cl { 1 } else { self.y_hw as i32 };
        let chunk = chunk_elements(self.precision);
        if chunked_epilogue(self.step.cout, self.y_hw, cl, chunk) {
            let f = match self.precision {
                Precision::Fp16 => &self.kernels.bias_act_chunk.half,
                Precision::Fp32 => &self.kernels.bias_act_chunk.float,
            };
            let mut l = self.stream.launch_builder(f);
            l.arg(&self.y)
                .arg(&z)
                .arg(&self.weights.bias.ptr)
                .arg(&len)
                .arg(&cout)
                .arg(&hw)
                .arg(&act)
                .arg(&p0)
                .arg(&p1)
                .arg(&has_z)
                .arg(&has_bias);
            // SAFETY: argument types match `bias_act_chunk_*`; y and z hold `len` elements,
            // whole chunks of 16 aligned bytes (chunked_epilogue).
            unsafe { l.launch(kernels::launch_1d(self.y_len / chunk)) }.call("cuLaunchKernel")?;
            return Ok(());
        }
        let mut l = match self.precision {
            Precision::Fp16 => self.stream.launch_builder(&self.kernels.bias_act.half),
            Precision::Fp32 => self.stream.launch_builder(&self.kernels.bias_act.float),
        };
        l.arg(&self.y)
            .arg(&z)
            .arg(&self.weights.bias.ptr)
            .arg(&len)
            .arg(&cout);
        if self.precision == Precision::Fp32 {
            l.arg(&hw);
        }
        l.arg(&act).arg(&p0).arg(&p1).arg(&has_z).arg(&has_bias);
        // SAFETY: argument types match the kernel; y and z hold `len` elements.
        unsafe { l.launch(kernels::launch_1d(self.y_len)) }.call("cuLaunchKernel")?;
        Ok(())
    }
}

/// The fastest candidate so far for one convolution, its saved plan if it runs on the graph
/// API, and what every candidate measured (for the debug log).
struct Choice {
    best: Option<(f32, Algo)>,
    json: Option<String>,
    report: Vec<String>,
}

impl Choice {
    /// Records a measured candidate; true when it is the fastest so far.
    fn offer(&mut self, ms: f32, algo: Algo, line: String) -> bool {
        self.report.push(line);
        let better = self.best.is_none_or(|(t, _)| ms < t);
        if better {
            self.best = Some((ms, algo));
        }
        better
    }
}

/// A batch size's algorithms (one per convolution) and its graph-API plans by convolution.
type Tuned = (Vec<Algo>, Vec<(usize, String)>);

/// Chooses each convolution's algorithm per batch size by timing the fused call itself on
/// scratch buffers filled with non-zero data.
pub(super) struct Tuner {
    stream: Arc<CudaStream>,
    dnn: Dnn,
    x: DeviceBuf,
    y: DeviceBuf,
    z: DeviceBuf,
    ws: DeviceBuf,
    timer: Timer,
    precision: Precision,
    /// A candidate further than this from the implicit GEMM's output is refused.
    tolerance: f64,
    blas: Option<Blas>,
    lt: Option<Lt>,
}

/// How many of cuBLASLt's heuristic algorithms the tuner times per linear layer.
pub(super) const LT_CONFIGS: usize = 3;

/// Output elements compared with the reference when tuning (enough to catch an engine that
/// computes something else anywhere in the batch; few enough to cost little).
/// One convolution's constants on the device.
pub(super) struct ConvWeights {
    /// In the device layout (`device_weights`).
    pub(super) w: DeviceBuf,
    pub(super) bias: DeviceBuf,
    /// A depthwise convolution's filters and bias in f32 for our kernels, in both precisions.
    pub(super) depthwise: Option<DepthwiseWeights>,
}

/// What our depthwise kernels read (kernels.cu says why f32).
pub(super) struct DepthwiseWeights {
    /// `[C, kh, kw]`, for `depthwise`.
    pub(super) w: DeviceBuf,
    /// `[kh, kw, C]`, for `depthwise_nhwc` (channels-last plans only): 16-byte loads give a
    /// tap of neighbouring channels.
    pub(super) taps: Option<DeviceBuf>,
    pub(super) bias: DeviceBuf,
}

/// What the tuner reads of a loaded model: its plan, precision and error bound, the
/// convolutions' weights (in plan order) and the compiled kernels, on the model's context.
pub(super) struct TuneInput<'a> {
    pub(super) ctx: &'a Arc<CudaContext>,
    pub(super) plan: &'a Plan,
    pub(super) precision: Precision,
    pub(super) tolerance: f64,
    pub(super) weights: &'a [ConvWeights],
    pub(super) kernels: &'a Kernels,
}

const SAMPLE: usize = 65536;
const SAMPLE_ROWS: usize = 2048;

impl Tuner {
    pub(super) fn new(m: &TuneInput<'_>, max_batch: usize) -> Result<Tuner> {
        let stream = m.ctx.new_stream().call("cuStreamCreate")?;
        let dnn = Dnn::new(&stream)?;
        let rows = m.plan.convs().any(|c| is_rows_product(m.plan, c));
        let largest = m.plan.values.iter().map(|s| s.len()).max().unwrap_or(1);
        let bytes = largest * max_batch * m.precision.bytes();
        // Small values of both signs, as activations have; never zeros (METHOD.md).
        let fill: Vec<u8> = match m.precision {
            Precision::Fp16 => (0..bytes / 2)
                .flat_map(|i| {
                    half::f16::from_f32(((i * 7919) % 200) as f32 / 100.0 - 1.0).to_le_bytes()
                })
                .collect(),
            Precision::Fp32 => (0..bytes / 4)
                .flat_map(|i| (((i * 7919) % 200) as f32 / 100.0 - 1.0).to_le_bytes())
                .collect(),
        };
        Ok(Tuner {
            x: DeviceBuf::from_host(m.ctx, &fill)?,
            y: DeviceBuf::new(m.ctx, bytes)?,
            z: DeviceBuf::from_host(m.ctx, &fill)?,
            ws: DeviceBuf::new(m.ctx, WORKSPACE_LIMIT)?,
            timer: Timer::new()?,
            precision: m.precision,
            tolerance: m.tolerance,
            blas: if rows {
                Some(Blas::new(&stream)?)
            } else {
                None
            },
            lt: if rows { Some(Lt::new()?) } else { None },
            stream,
            dnn,
        })
    }

    /// About SAMPLE elements of the scratch output, as f32: all of it when small, else
    /// SAMPLE_ROWS runs of 64 bytes spread evenly over it (so every item of the batch and
    /// every part of the map is looked at).
    fn sample(&self, call: &ConvCall<'_>) -> Result<Vec<f32>> {
        use cudarc::driver::sys as cu;
        self.stream.synchronize().call("cuStreamSynchronize")?;
        let esize = self.precision.bytes();
        let total = call.y_len * esize;
        let raw = if call.y_len <= SAMPLE {
            let mut raw = vec![0u8; total];
            // SAFETY: the scratch output holds y_len elements; the stream is idle.
            unsafe { cudarc::driver::result::memcpy_dtoh_sync(&mut raw, self.y.ptr) }
                .call("cuMemcpyDtoH")?;
            raw
        } else {
            const WIDTH: usize = 64;
            let pitch = (total / SAMPLE_ROWS) / esize * esize;
            let mut raw = vec![0u8; WIDTH * SAMPLE_ROWS];
            let copy = cu::CUDA_MEMCPY2D_st {
                srcXInBytes: 0,
                srcY: 0,
                srcMemoryType: cu::CUmemorytype::CU_MEMORYTYPE_DEVICE,
                srcHost: std::ptr::null(),
                srcDevice: self.y.ptr,
                srcArray: std::ptr::null_mut(),
                srcPitch: pitch,
                dstXInBytes: 0,
                dstY: 0,
                dstMemoryType: cu::CUmemorytype::CU_MEMORYTYPE_HOST,
                dstHost: raw.as_mut_ptr() as *mut std::ffi::c_void,
                dstDevice: 0,
                dstArray: std::ptr::null_mut(),
                dstPitch: WIDTH,
                WidthInBytes: WIDTH,
                Height: SAMPLE_ROWS,
            };
            // SAFETY: rows of WIDTH ≤ pitch bytes at pitch intervals stay inside the `total`
            // bytes of the scratch output (pitch × rows ≤ total); the host buffer holds them.
            unsafe { cu::cuMemcpy2D_v2(&copy) }
                .result()
                .call("cuMemcpy2D")?;
            raw
        };
        Ok(self.precision.to_f32(&raw))
    }

    /// Times one candidate: a warm-up call whose output is checked against the reference
    /// algorithm's (an engine that computes something else, or computes it less exactly than
    /// fp16 storage allows, is refused whatever its speed), then REPS calls between events.
    /// Returns the time and the relative L2 difference from the reference.
    fn time(
        &self,
        call: &ConvCall<'_>,
        algo: Algo,
        exec: Option<&Exec>,
        reference: Option<&[f32]>,
    ) -> Result<(f32, f64)> {
        call.run(algo, exec)?;
        let mut err = 0f64;
        if let Some(want) = reference {
            let got = self.sample(call)?;
            let num: f64 = got
                .iter()
                .zip(want)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum();
            let den: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
            err = (num / den.max(1e-30)).sqrt();
            if err.is_nan() || err > self.tolerance {
                return Err(GpuError::Plan(format!(
                    "{:?}/{} computes a different result (relative L2 {err:.2e} against \
                     IMPLICIT_GEMM)",
                    algo.mode, algo.algo
                )));
            }
        }
        self.stream.synchronize().call("cuStreamSynchronize")?;
        const REPS: usize = 5;
        self.timer.start(&self.stream)?;
        for _ in 0..REPS {
            call.run(algo, exec)?;
        }
        Ok((self.timer.stop(&self.stream)? / REPS as f32, err))
    }

    /// Times the graph API's precompiled engine configurations (the heuristics' first
    /// GRAPH_CONFIGS of them; runtime-compiled ones cost tens of ms per plan and start, and are
    /// tried only when no precompiled one exists).
    #[allow(clippy::too_many_arguments)]
    fn tune_graph(
        &self,
        mode: Mode,
        call: &ConvCall<'_>,
        n: usize,
        xs: [usize; 3],
        ys: [usize; 3],
        reference: Option<&[f32]>,
        choice: &mut Choice,
    ) -> Result<()> {
        let g = graph_api::conv_graph(call.h, &call.graph_step(mode), n, xs, ys)?;
        let cfgs = graph_api::engine_configs(&g, GRAPH_SCAN)?;
        let offered = cfgs.len();
        let mut picks: Vec<usize> = cfgs
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                // Unknown notes count against a config: determinism is a promise we test.
                graph_api::notes(c).is_ok_and(|n| {
                    !n.runtime_compiled && !n.nondeterministic && !n.reduced_precision
                })
            })
            .map(|(i, _)| i)
            .take(GRAPH_CONFIGS)
            .collect();
        if picks.is_empty() {
            // Compile one at plan time rather than give up on the graph API, if deterministic.
            picks.extend(cfgs.iter().position(|c| {
                graph_api::notes(c).is_ok_and(|n| !n.nondeterministic && !n.reduced_precision)
            }));
        }
        drop(cfgs);
        if picks.is_empty() {
            choice.report.push(format!(
                "{mode:?}: none of the {offered} engine configurations offered is usable"
            ));
        }
        for i in picks {
            let built = Instant::now();
            let exec = match call.graph_exec(mode, i, n, xs, ys, None) {
                Ok(e) => Exec::Graph(e),
                Err(e) => {
                    choice.report.push(format!("{mode:?}/{i} plan failed: {e}"));
                    continue;
                }
            };
            if exec.workspace() > WORKSPACE_LIMIT {
                continue;
            }
            let algo = Algo {
                mode,
                algo: i as u32,
                workspace: exec.workspace(),
            };
            match self.time(call, algo, Some(&exec), reference) {
                Ok((ms, err)) => {
                    let line = format!(
                        "{mode:?}/{i} {ms:.4} (rel L2 {err:.1e}, plan built in {:.1} ms)",
                        built.elapsed().as_secs_f64() * 1e3
                    );
                    if let (true, Exec::Graph(g)) = (choice.offer(ms, algo, line), &exec) {
                        choice.json = graph_api::plan_json(&g.plan).ok();
                    }
                }
                Err(e) => choice.report.push(format!("{mode:?}/{i} failed: {e}")),
            }
        }
        Ok(())
    }

    /// Times cuBLASLt's first LT_CONFIGS algorithms for a linear layer.
    fn tune_lt(&self, call: &ConvCall<'_>, reference: Option<&[f32]>, choice: &mut Choice) {
        let plans = match call.lt_plans(LT_CONFIGS) {
            Ok(p) => p,
            Err(e) => {
                choice.report.push(format!("Lt unavailable: {e}"));
                return;
            }
        };
        for (i, plan) in plans.into_iter().enumerate() {
            let algo = Algo {
                mode: Mode::Lt,
                algo: i as u32,
                workspace: plan.workspace,
            };
            match self.time(call, algo, Some(&Exec::Lt(plan)), reference) {
                Ok((ms, err)) => choice.offer(ms, algo, format!("Lt/{i} {ms:.4} ({err:.1e})")),
                Err(e) => {
                    choice.report.push(format!("Lt/{i} refused: {e}"));
                    false
                }
            };
        }
    }

    /// The algorithm of every convolution at batch `n`, and the saved plans of those that run
    /// on the graph API.
    pub(super) fn tune(&self, m: &TuneInput<'_>, n: usize) -> Result<Tuned> {
        let mut chosen = Vec::new();
        let mut jsons = Vec::new();
        let mut total_ms = 0f32;
        let mut modes = [0usize; 7];
        for (c, cw) in m.plan.convs().zip(m.weights) {
            let d = ConvDescs::new(c, m.precision)?;
            let (xs, ys) = conv_shapes(m.plan, c)?;
            let xd = tensor_desc(m.precision, n, xs)?;
            let yd = tensor_desc(m.precision, n, ys)?;
            let call = ConvCall {
                h: self.dnn.h,
                stream: &self.stream,
                kernels: m.kernels,
                precision: m.precision,
                step: c,
                d: &d,
                x_desc: &xd,
                y_desc: &yd,
                x: self.x.ptr,
                weights: cw,
                z: c.residual.map(|_| self.z.ptr),
                y: self.y.ptr,
                ws: self.ws.ptr,
                y_len: ys.iter().product::<usize>() * n,
                y_hw: ys[1] * ys[2],
                views: Some(conv_views(m.plan, c, n)?),
                blas: self.blas.as_ref(),
                lt: self.lt.as_ref(),
                ws_bytes: WORKSPACE_LIMIT,
            };
            let mut perf: [dnn::cudnnConvolutionFwdAlgoPerf_t; 8] =
                // SAFETY: a plain C struct; every field is overwritten by cuDNN or unused.
                unsafe { std::mem::zeroed() };
            let mut found = 0i32;
            dnn_call!(cudnnGetConvolutionForwardAlgorithm_v7(
                self.dnn.h,
                xd.0,
                d.filter.0,
                d.conv.0,
                yd.0,
                8,
                &mut found,
                perf.as_mut_ptr()
            ))?;
            let mut candidates = Vec::new();
            if c.is_depthwise() {
                candidates.push(Algo {
                    mode: Mode::Depthwise,
                    algo: 0,
                    workspace: 0,
                });
                let cl =
                    m.plan.values[c.output].channels_last && m.plan.values[c.input].channels_last;
                if nhwc_depthwise(
                    c,
                    cl,
                    m.precision,
                    cw.depthwise.as_ref().is_some_and(|d| d.taps.is_some()),
                ) {
                    candidates.push(Algo {
                        mode: Mode::Depthwise,
                        algo: DEPTHWISE_NHWC,
                        workspace: 0,
                    });
                }
            }
            if is_rows_product(m.plan, c) && self.blas.is_some() {
                candidates.push(Algo {
                    mode: Mode::Blas,
                    algo: 0,
                    workspace: 0,
                });
            }
            for p in perf.iter().take(found.max(0) as usize) {
                let ok = p.status == dnn::cudnnStatus_t::CUDNN_STATUS_SUCCESS
                    && p.determinism == dnn::cudnnDeterminism_t::CUDNN_DETERMINISTIC
                    && p.memory <= WORKSPACE_LIMIT;
                if ok {
                    let modes: &[Mode] = if matches!(c.act, Unary::Identity | Unary::Relu) {
                        &[Mode::Fused, Mode::Split]
                    } else {
                        &[Mode::Split]
                    };
                    for &mode in modes {
                        candidates.push(Algo {
                            mode,
                            algo: p.algo as u32,
                            workspace: p.memory,
                        });
                    }
                }
            }
            let mut choice = Choice {
                best: None,
                json: None,
                report: Vec::new(),
            };
            // The reference every candidate's output is compared with: the plain implicit GEMM
            // (no workspace, every layout) and our epilogue.
            let implicit = Algo {
                mode: Mode::Split,
                algo: 0,
                workspace: 0,
            };
            let reference = match call.run(implicit, None).and_then(|()| self.sample(&call)) {
                Ok(r) => Some(r),
                Err(e) => {
                    choice.report.push(format!("no reference output ({e})"));
                    None
                }
            };
            for algo in candidates {
                // The fused call supports fewer algorithms than the plain one: refusals are
                // expected, and reported beside the times.
                match self.time(&call, algo, None, reference.as_deref()) {
                    Ok((ms, err)) => {
                        let line = format!("{:?}/{} {ms:.4} ({err:.1e})", algo.mode, algo.algo);
                        choice.offer(ms, algo, line);
                    }
                    Err(e) => choice
                        .report
                        .push(format!("{:?}/{} refused: {e}", algo.mode, algo.algo)),
                }
            }
            if is_rows_product(m.plan, c) {
                self.tune_lt(&call, reference.as_deref(), &mut choice);
            }
            if m.precision == Precision::Fp16 {
                let r = reference.as_deref();
                if let Err(e) = self.tune_graph(Mode::Graph, &call, n, xs, ys, r, &mut choice) {
                    choice.report.push(format!("graph API unavailable: {e}"));
                }
                // An activation no graph engine fused: the graph without it, then ours.
                let fused = choice.best.is_some_and(|(_, a)| a.mode == Mode::Graph);
                if c.act != Unary::Identity && !fused {
                    if let Err(e) =
                        self.tune_graph(Mode::GraphAct, &call, n, xs, ys, r, &mut choice)
                    {
                        choice
                            .report
                            .push(format!("graph API without the activation: {e}"));
                    }
                }
            }
            let Choice {
                best,
                json: mut best_json,
                report,
            } = choice;
            tracing::debug!(
                batch = n,
                conv = %c.name,
                "tuning (ms): {} -> {:?}",
                report.join(", "),
                best.map(|(t, a)| (a.mode, a.algo, t))
            );
            match best {
                Some((t, a)) => {
                    total_ms += t;
                    modes[a.mode as usize] += 1;
                    if matches!(a.mode, Mode::Graph | Mode::GraphAct) {
                        if let Some(j) = best_json.take() {
                            jsons.push((chosen.len(), j));
                        }
                    }
                    chosen.push(a)
                }
                None => {
                    return Err(GpuError::Plan(format!(
                        "{}: cuDNN offers no working algorithm at batch {n} ({})",
                        c.name,
                        report.join(", ")
                    )))
                }
            }
        }
        tracing::info!(
            "GPU engine: batch {n}: convolutions sum to {total_ms:.3} ms as tuned \
             (fused {}, split {}, graph API {}, depthwise kernel {}, graph API + our activation {}, \
             cuBLAS + our epilogue {}, cuBLASLt {})",
            modes[0],
            modes[1],
            modes[2],
            modes[3],
            modes[4],
            modes[5],
            modes[6]
        );
        Ok((chosen, jsons))
    }
}
