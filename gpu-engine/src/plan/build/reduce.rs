//! The reductions: ReduceMean/Sum/Max/Min over any axes, and ReduceL1/L2/SumSquare as a sum of
//! an elementwise function.

use super::*;

/// The reductions that are a sum of an elementwise function (`Builder::reduce_norm`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Norm {
    L1,
    L2,
    SumSquare,
}

pub(super) const OPS: &[(&str, Lower)] = &[
    ("ReduceMean", |b, i| b.reduce_op(i, ReduceKind::Mean)),
    ("ReduceSum", |b, i| b.reduce_op(i, ReduceKind::Sum)),
    ("ReduceMax", |b, i| b.reduce_op(i, ReduceKind::Max)),
    ("ReduceMin", |b, i| b.reduce_op(i, ReduceKind::Min)),
    ("ReduceL1", |b, i| b.reduce_norm(i, Norm::L1)),
    ("ReduceL2", |b, i| b.reduce_norm(i, Norm::L2)),
    ("ReduceSumSquare", |b, i| b.reduce_norm(i, Norm::SumSquare)),
];

impl Builder<'_> {
    /// A reduction's full-dims axes and `keepdims`, or `None` where it reduces nothing
    /// (`noop_with_empty_axes`).
    fn reduce_axes(&self, i: usize, x: usize) -> R<Option<(Vec<usize>, bool)>> {
        let rank = self.values[x].dims.len() + 1;
        let axes = self.ints_arg(i, 1, "axes")?.unwrap_or_default();
        let mut axes = axes
            .iter()
            .map(|&a| fold::axis(a, rank))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(i, e))?;
        if axes.is_empty() {
            if attr_int(&self.nodes[i], "noop_with_empty_axes", 0) != 0 {
                return Ok(None);
            }
            axes = (0..rank).collect();
        }
        if axes.contains(&0) {
            return Err(self.err(i, NodeError::ReduceOverBatch));
        }
        let keep = attr_int(&self.nodes[i], "keepdims", 1) != 0;
        Ok(Some((axes, keep)))
    }

    fn reduce_op(&mut self, i: usize, kind: ReduceKind) -> R<()> {
        let x = self.value(i, 0)?;
        let Some((axes, keep)) = self.reduce_axes(i, x)? else {
            return self.pass_through(i);
        };
        self.reduce(i, x, axes, kind, keep)
    }

    /// ReduceL1, ReduceL2 (ConvNeXt V2's global response norm), ReduceSumSquare: one reduce
    /// step that applies the elementwise part as it sums (an elementwise step alone where no
    /// axis is reduced).
    fn reduce_norm(&mut self, i: usize, norm: Norm) -> R<()> {
        let x = self.value(i, 0)?;
        let out = self.out(i)?;
        if let Some((axes, keep)) = self.reduce_axes(i, x)? {
            let kind = match norm {
                Norm::L1 => ReduceKind::L1,
                Norm::L2 => ReduceKind::L2,
                Norm::SumSquare => ReduceKind::SumSquare,
            };
            self.reduce_to(&out, x, axes, kind, keep);
            return Ok(());
        }
        let (dims, cl) = (self.values[x].dims.clone(), self.values[x].channels_last);
        let output = self.define(&out, dims, cl);
        self.map(match norm {
            Norm::L1 | Norm::L2 => MapStep {
                unary: Unary::Abs,
                ..MapStep::copy(x, output)
            },
            Norm::SumSquare => MapStep {
                b: Some(Operand::Value(x)),
                binary: Binary::Mul,
                ..MapStep::copy(x, output)
            },
        });
        Ok(())
    }

    pub(super) fn reduce(
        &mut self,
        i: usize,
        x: usize,
        axes: Vec<usize>,
        kind: ReduceKind,
        keep: bool,
    ) -> R<()> {
        let out = self.out(i)?;
        self.reduce_to(&out, x, axes, kind, keep);
        Ok(())
    }

    /// A Reduce step of `x` over full-dims `axes` defining `out` (`keep`: the axes stay as 1);
    /// returns `out`'s value.
    pub(super) fn reduce_to(
        &mut self,
        out: &str,
        x: usize,
        axes: Vec<usize>,
        kind: ReduceKind,
        keep: bool,
    ) -> usize {
        let xd = self.values[x].dims.clone();
        let kept: Dims = (1..=xd.len())
            .map(|a| if axes.contains(&a) { 1 } else { xd[a - 1] })
            .collect();
        let cl = self.values[x].channels_last;
        let keep_name = if keep {
            out.to_string()
        } else {
            format!("{out}#kept")
        };
        let output = self.define(&keep_name, kept.clone(), cl);
        // In increasing order, once each: the dynamo exporter writes a global average pool as
        // ReduceMean over axes [-1, -2], and the engine runs `[2, 3]` on cuDNN's pooling (the
        // axes in any other order went to the generic reduce kernel: efficientnet_b0's dynamo
        // export at batch 32, H200, 4.79 ms against its TorchScript export's 1.57 ms).
        let mut axes = axes;
        axes.sort_unstable();
        axes.dedup();
        let reduced_axes = axes.clone();
        self.steps.push(Step::Reduce(ReduceStep {
            input: x,
            output,
            axes,
            kind,
        }));
        if keep {
            return output;
        }
        let output = self.row_major(output);
        let squeezed: Dims = kept
            .iter()
            .enumerate()
            .filter(|(k, _)| !reduced_axes.contains(&(k + 1)))
            .map(|(_, d)| *d)
            .collect();
        self.alias(out, output, squeezed, false)
    }
}
