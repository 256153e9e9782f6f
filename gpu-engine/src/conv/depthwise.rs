//! Our depthwise convolution kernels (one filter per channel, a memory-bound loop): the strided
//! kernel over any layout, and the NHWC kernel with 16-byte loads of neighbouring channels
//! (`DEPTHWISE_NHWC`), timed against cuDNN's choices like every other candidate.

use cudarc::driver::PushKernelArg;

use super::tune::{Choice, Tuning};
use super::{
    chunk_elements, nhwc_depthwise, Algo, ConvCall, ConvLibrary, Exec, Mode, DEPTHWISE_NHWC,
};
use crate::cuda::{Call, GpuError, Result};
use crate::kernels::{self, KView};
use crate::plan::view::depthwise_nhwc_threads;
use crate::precision::Precision;

pub(super) struct Depthwise;

impl ConvLibrary for Depthwise {
    fn tune(&self, t: &Tuning<'_>, choice: &mut Choice) -> Result<()> {
        let (c, plan) = (t.call.step, t.input.plan);
        if !c.is_depthwise() {
            return Ok(());
        }
        t.offer(
            Algo {
                mode: Mode::Depthwise,
                algo: 0,
                workspace: 0,
            },
            choice,
        );
        let cl = plan.values[c.output].channels_last && plan.values[c.input].channels_last;
        let taps = t
            .weights
            .depthwise
            .as_ref()
            .is_some_and(|d| d.taps.is_some());
        if nhwc_depthwise(c, cl, t.input.precision, taps) {
            t.offer(
                Algo {
                    mode: Mode::Depthwise,
                    algo: DEPTHWISE_NHWC,
                    workspace: 0,
                },
                choice,
            );
        }
        Ok(())
    }

    fn run(&self, call: &ConvCall<'_>, algo: Algo, _: Option<&Exec>) -> Result<()> {
        if algo.algo == DEPTHWISE_NHWC {
            call.depthwise_nhwc()
        } else {
            call.depthwise_strided()
        }
    }
}

impl ConvCall<'_> {
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

    fn depthwise_strided(&self) -> Result<()> {
        let (xv, yv, cl) = self
            .views
            .ok_or_else(|| GpuError::Plan("a depthwise convolution without its views".into()))?;
        let c = self.step;
        let (geometry, cl) = (self.depthwise_args(), cl as i32);
        let args = geometry.iter().chain(std::iter::once(&cl));
        let [p0, p1] = c.act_p;
        let z = self.z.unwrap_or(self.y);
        let n = self.y_len as u32;
        let (xv, yv) = (KView(xv), KView(yv));
        let dw = self
            .weights
            .depthwise
            .as_ref()
            .ok_or_else(|| GpuError::Plan(format!("{}: no f32 depthwise filters", c.name)))?;
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
}
