//! cuDNN's legacy convolution calls: `cudnnConvolutionBiasActivationForward` (`Mode::Fused`,
//! bias and ReLU in the call) and `cudnnConvolutionForward` then our epilogue (`Mode::Split`),
//! with the algorithms cuDNN's own heuristics list for the convolution.

use std::ffi::c_void;

use cudarc::cudnn::sys as dnn;

use super::tune::{Choice, Tuning};
use super::{Algo, ConvCall, ConvLibrary, Exec, Mode, WORKSPACE_LIMIT};
use crate::cuda::{dnn_call, GpuError, Result};
use crate::plan::Unary;

pub(super) struct Legacy;

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

impl ConvLibrary for Legacy {
    /// The algorithms cuDNN's heuristics list as deterministic, within the workspace limit:
    /// each as the fused call (where the activation is ReLU or none) and as the plain call.
    fn tune(&self, t: &Tuning<'_>, choice: &mut Choice) -> Result<()> {
        let call = t.call;
        let mut perf: [dnn::cudnnConvolutionFwdAlgoPerf_t; 8] =
            // SAFETY: a plain C struct; every field is overwritten by cuDNN or unused.
            unsafe { std::mem::zeroed() };
        let mut found = 0i32;
        dnn_call!(cudnnGetConvolutionForwardAlgorithm_v7(
            call.h,
            call.x_desc.0,
            call.d.filter.0,
            call.d.conv.0,
            call.y_desc.0,
            8,
            &mut found,
            perf.as_mut_ptr()
        ))?;
        for p in perf.iter().take(found.max(0) as usize) {
            let ok = p.status == dnn::cudnnStatus_t::CUDNN_STATUS_SUCCESS
                && p.determinism == dnn::cudnnDeterminism_t::CUDNN_DETERMINISTIC
                && p.memory <= WORKSPACE_LIMIT;
            if ok {
                let modes: &[Mode] = if matches!(call.step.act, Unary::Identity | Unary::Relu) {
                    &[Mode::Fused, Mode::Split]
                } else {
                    &[Mode::Split]
                };
                for &mode in modes {
                    t.offer(
                        Algo {
                            mode,
                            algo: p.algo as u32,
                            workspace: p.memory,
                        },
                        choice,
                    );
                }
            }
        }
        Ok(())
    }

    fn run(&self, call: &ConvCall<'_>, algo: Algo, _: Option<&Exec>) -> Result<()> {
        call.run_legacy(algo)
    }
}

impl ConvCall<'_> {
    fn run_legacy(&self, algo: Algo) -> Result<()> {
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
            other => Err(GpuError::Plan(format!(
                "{other:?} is not a legacy cuDNN algorithm"
            ))),
        }
    }
}
