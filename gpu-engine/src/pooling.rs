//! cuDNN's pooling for the pools it computes exactly as ONNX does (symmetric padding, no
//! ceil-mode overhang) and for global average pooling, as ResNet50 ran before our own pool
//! and reduce kernels took every pool over (it ran 4–9% slower with them;
//! benches/results/NOTES.md). Everything else runs on `kernels.cu`'s pool and reduce kernels.

use std::ffi::c_void;

use cudarc::cudnn::sys as dnn;

use super::conv::tensor_desc;
use super::cuda::{dnn_call, PoolDesc, Result, TensorDesc};
use super::plan::{Plan, PoolKind, ReduceKind, ReduceStep, Step};
use super::precision::Precision;

/// A pooling step on cuDNN at one batch size.
pub(super) struct CudnnPool {
    x: TensorDesc,
    y: TensorDesc,
    pool: PoolDesc,
}

/// The window, stride and padding of a step cuDNN can run, and its mode.
fn shape(plan: &Plan, step: &Step) -> Option<(dnn::cudnnPoolingMode_t, [usize; 6])> {
    use dnn::cudnnPoolingMode_t as M;
    match step {
        Step::Pool(p) => {
            let [_, h, w] = plan.values[p.input].chw()?;
            let [_, oh, ow] = plan.values[p.output].chw()?;
            let floor = |size: usize, k: usize, s: usize, pad: usize| (size + 2 * pad - k) / s + 1;
            let exact = p.pad_begin == p.pad_end
                && floor(h, p.kernel[0], p.stride[0], p.pad_begin[0]) == oh
                && floor(w, p.kernel[1], p.stride[1], p.pad_begin[1]) == ow;
            let mode = match p.kind {
                PoolKind::Max => M::CUDNN_POOLING_MAX_DETERMINISTIC,
                PoolKind::AvgIncludePad => M::CUDNN_POOLING_AVERAGE_COUNT_INCLUDE_PADDING,
                PoolKind::AvgExcludePad => M::CUDNN_POOLING_AVERAGE_COUNT_EXCLUDE_PADDING,
            };
            exact.then_some((
                mode,
                [
                    p.kernel[0],
                    p.kernel[1],
                    p.stride[0],
                    p.stride[1],
                    p.pad_begin[0],
                    p.pad_begin[1],
                ],
            ))
        }
        Step::Reduce(ReduceStep {
            input,
            output,
            axes,
            kind: ReduceKind::Mean,
        }) if axes.as_slice() == [2, 3] => {
            let (x, y) = (&plan.values[*input], &plan.values[*output]);
            let [_, h, w] = x.chw().filter(|_| x.dims.len() == 3)?;
            (y.dims.len() == 3 && x.channels_last == y.channels_last).then_some((
                M::CUDNN_POOLING_AVERAGE_COUNT_INCLUDE_PADDING,
                [h, w, h, w, 0, 0],
            ))
        }
        _ => None,
    }
}

impl CudnnPool {
    /// cuDNN's form of `step` at batch `n`, if it has one.
    pub(super) fn new(
        plan: &Plan,
        step: &Step,
        precision: Precision,
        n: usize,
    ) -> Result<Option<CudnnPool>> {
        let Some((mode, [kh, kw, sh, sw, ph, pw])) = shape(plan, step) else {
            return Ok(None);
        };
        let (input, output) = match step {
            Step::Pool(p) => (p.input, p.output),
            Step::Reduce(r) => (r.input, r.output),
            _ => return Ok(None),
        };
        let (Some(xs), Some(ys)) = (plan.values[input].chw(), plan.values[output].chw()) else {
            return Ok(None);
        };
        let pool = PoolDesc::new()?;
        dnn_call!(cudnnSetPooling2dDescriptor(
            pool.0,
            mode,
            dnn::cudnnNanPropagation_t::CUDNN_NOT_PROPAGATE_NAN,
            kh as i32,
            kw as i32,
            ph as i32,
            pw as i32,
            sh as i32,
            sw as i32
        ))?;
        Ok(Some(CudnnPool {
            x: tensor_desc(precision, n, xs)?,
            y: tensor_desc(precision, n, ys)?,
            pool,
        }))
    }

    pub(super) fn run(&self, h: dnn::cudnnHandle_t, x: u64, y: u64) -> Result<()> {
        let (one, zero) = (1.0f32, 0.0f32);
        dnn_call!(cudnnPoolingForward(
            h,
            self.pool.0,
            &one as *const f32 as *const c_void,
            self.x.0,
            x as *const c_void,
            &zero as *const f32 as *const c_void,
            self.y.0,
            y as *mut c_void
        ))
    }
}
