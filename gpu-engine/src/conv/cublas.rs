//! A 1×1 convolution over NHWC (a linear layer) as cuBLAS's product of its rows with the
//! weights, then our epilogue (`Mode::Blas`).

use super::tune::{Choice, Tuning};
use super::{is_rows_product, Algo, ConvCall, ConvLibrary, Exec, Mode};
use crate::cuda::{GpuError, Result};
use crate::plan::view::MatMulLaunch;

pub(super) struct Cublas;

impl ConvLibrary for Cublas {
    fn tune(&self, t: &Tuning<'_>, choice: &mut Choice) -> Result<()> {
        if is_rows_product(t.input.plan, t.call.step) && t.call.blas.is_some() {
            t.offer(
                Algo {
                    mode: Mode::Blas,
                    algo: 0,
                    workspace: 0,
                },
                choice,
            );
        }
        Ok(())
    }

    fn run(&self, call: &ConvCall<'_>, _: Algo, _: Option<&Exec>) -> Result<()> {
        call.run_rows()
    }
}

impl ConvCall<'_> {
    fn run_rows(&self) -> Result<()> {
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
}
