//! A 1×1 convolution over NHWC on cuBLASLt with bias, residual and activation in its epilogue
//! (blas_lt.rs; `Mode::Lt`), heuristic algorithm number `algo`.

use super::tune::{Choice, Tuning};
use super::{is_rows_product, Algo, ConvCall, ConvLibrary, Exec, Mode};
use crate::blas_lt::{self, LtPlan, LtShape};
use crate::cuda::{GpuError, Result};

/// How many of cuBLASLt's heuristic algorithms the tuner times per linear layer.
pub(crate) const LT_CONFIGS: usize = 3;

pub(super) struct CublasLt;

impl ConvLibrary for CublasLt {
    /// cuBLASLt's first LT_CONFIGS algorithms for a linear layer.
    fn tune(&self, t: &Tuning<'_>, choice: &mut Choice) -> Result<()> {
        if !is_rows_product(t.input.plan, t.call.step) {
            return Ok(());
        }
        let plans = match t.call.lt_plans(LT_CONFIGS) {
            Ok(p) => p,
            Err(e) => {
                choice.report.push(format!("Lt unavailable: {e}"));
                return Ok(());
            }
        };
        for (i, plan) in plans.into_iter().enumerate() {
            let algo = Algo {
                mode: Mode::Lt,
                algo: i as u32,
                workspace: plan.workspace,
            };
            t.offer_with(algo, Some(&Exec::Lt(plan)), choice);
        }
        Ok(())
    }

    fn run(&self, call: &ConvCall<'_>, _: Algo, exec: Option<&Exec>) -> Result<()> {
        call.run_lt(exec)
    }
}

impl ConvCall<'_> {
    /// cuBLASLt's first `count` algorithms for this 1×1 convolution over NHWC rows, or none
    /// where its epilogue cannot compute the activation.
    pub(crate) fn lt_plans(&self, count: usize) -> Result<Vec<LtPlan>> {
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

    fn run_lt(&self, exec: Option<&Exec>) -> Result<()> {
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
}
