//! MaxPool, AveragePool and the global pools.

use super::*;

pub(super) const OPS: &[(&str, Lower)] = &[
    ("MaxPool", |b, i| b.pool(i, PoolKind::Max)),
    ("AveragePool", |b, i| b.pool(i, PoolKind::AvgExcludePad)),
    ("GlobalAveragePool", |b, i| {
        b.global_pool(i, ReduceKind::Mean)
    }),
    ("GlobalMaxPool", |b, i| b.global_pool(i, ReduceKind::Max)),
];

impl Builder<'_> {
    fn global_pool(&mut self, i: usize, kind: ReduceKind) -> R<()> {
        let x = self.value(i, 0)?;
        let r = self.values[x].dims.len();
        self.reduce(i, x, (2..=r).collect(), kind, true)
    }

    fn pool(&mut self, i: usize, kind: PoolKind) -> R<()> {
        let node = &self.nodes[i];
        let x = self.value(i, 0)?;
        let Some([c, h, w]) = self.values[x]
            .chw()
            .filter(|_| self.values[x].dims.len() == 3)
        else {
            return Err(self.err(i, NodeError::PoolRank));
        };
        if node.output.len() > 1 && !node.output[1].is_empty() {
            return Err(self.err(i, NodeError::PoolIndices));
        }
        let ceil = attr_int(node, "ceil_mode", 0) != 0;
        let kind = match kind {
            PoolKind::Max => PoolKind::Max,
            _ if attr_int(node, "count_include_pad", 0) != 0 => PoolKind::AvgIncludePad,
            _ => PoolKind::AvgExcludePad,
        };
        let kernel = self.pair(i, "kernel_shape", 0)?;
        if kernel.contains(&0) {
            return Err(self.err(i, NodeError::NoKernelShape));
        }
        if self.pair(i, "dilations", 1)? != [1, 1] {
            return Err(self.err(i, NodeError::DilatedPool));
        }
        let stride = self.pair(i, "strides", 1)?;
        let (pb, pe) = self.pads(i)?;
        let dim = |size: usize, k: usize, s: usize, b: usize, e: usize| -> Option<usize> {
            let span = (size + b + e).checked_sub(k)?;
            let mut out = if ceil { span.div_ceil(s) } else { span / s } + 1;
            // The last window must start inside the input or its leading padding.
            if ceil && (out - 1) * s >= size + b {
                out -= 1;
            }
            Some(out)
        };
        let (Some(oh), Some(ow)) = (
            dim(h, kernel[0], stride[0], pb[0], pe[0]),
            dim(w, kernel[1], stride[1], pb[1], pe[1]),
        ) else {
            return Err(self.err(i, NodeError::WindowLargerThanInput));
        };
        let out = self.out(i)?;
        let output = self.define(&out, vec![c, oh, ow], true);
        self.steps.push(Step::Pool(PoolStep {
            input: x,
            output,
            kind,
            kernel,
            stride,
            pad_begin: pb,
            pad_end: pe,
        }));
        Ok(())
    }
}
