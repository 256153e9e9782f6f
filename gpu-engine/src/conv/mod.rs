//! Convolutions: descriptors, the call one convolution makes at one batch size, and the
//! libraries that can run it, one file each behind `ConvLibrary`: cuDNN's legacy calls
//! (legacy.rs), its graph API (graph.rs), our depthwise kernels (depthwise.rs), cuBLAS's row
//! product (cublas.rs) and cuBLASLt (lt.rs). The tuner (tune.rs) offers every convolution to
//! each library and keeps the fastest algorithm per batch size.

mod cublas;
mod depthwise;
mod graph;
mod legacy;
mod lt;
mod tune;

pub(crate) use lt::LT_CONFIGS;
pub(crate) use tune::Tuner;

use std::sync::Arc;

use cudarc::cudnn::sys as dnn;
use cudarc::driver::{CudaContext, CudaStream, PushKernelArg};
use serde::{Deserialize, Serialize};

use super::blas::Blas;
use super::blas_lt::{Lt, LtPlan};
use super::cuda::{
    dnn_call, ActDesc, Call, ConvDesc, DeviceBuf, FilterDesc, GpuError, Result, TensorDesc,
};
use super::graph_api;
use super::kernels::{self, Kernels};
use super::plan::view::{chunked_epilogue, View};
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

/// The most workspace one convolution may take while tuning (cuDNN's FFT algorithms ask for
/// gigabytes; they are never the fastest for these shapes on Hopper anyway).
pub(super) const WORKSPACE_LIMIT: usize = 256 << 20;

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
    /// Runs `algo` through its library with the plan `exec` prepared for it (graph API,
    /// cuBLASLt).
    pub(super) fn run(&self, algo: Algo, exec: Option<&Exec>) -> Result<()> {
        library(algo.mode).run(self, algo, exec)
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

/// A library that runs convolutions; its algorithms are the `Mode`s `library` maps to it.
trait ConvLibrary: Sync {
    /// Offers this library's algorithms for the convolution to `choice`, each checked against
    /// the reference output and timed (`Tuning::offer`). An error stops the tuning.
    fn tune(&self, t: &tune::Tuning<'_>, choice: &mut tune::Choice) -> Result<()>;
    /// Runs `algo`, one of this library's modes, with the plan prepared for it.
    fn run(&self, call: &ConvCall<'_>, algo: Algo, exec: Option<&Exec>) -> Result<()>;
}

/// Every library, in the order the tuner offers a convolution to them (of equal times the
/// first offered is kept).
const LIBRARIES: [&dyn ConvLibrary; 5] = [
    &depthwise::Depthwise,
    &cublas::Cublas,
    &legacy::Legacy,
    &lt::CublasLt,
    &graph::GraphApi,
];

/// The library whose algorithm `mode` is.
fn library(mode: Mode) -> &'static dyn ConvLibrary {
    match mode {
        Mode::Fused | Mode::Split => &legacy::Legacy,
        Mode::Graph | Mode::GraphAct => &graph::GraphApi,
        Mode::Depthwise => &depthwise::Depthwise,
        Mode::Blas => &cublas::Cublas,
        Mode::Lt => &lt::CublasLt,
    }
}

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
