//! Products of two tensors and row functions (Softmax) where the batch has moved into the
//! first dimension: window attention. Swin partitions `[N, H, W, C]` into windows,
//! `[N·nW, 49, C]`, and takes `q · kᵀ`, the Softmax of the scores and their product with `v`
//! per window and head (`[N·nW, heads, 49, d]`); MaxViT does the same over blocks and grids.
//! Each operand is made a row-major value in its logical order (a copy only where the storage
//! holds its axes in another order), the first dimension's axes besides the batch merged into
//! one: the batch is then first and alone, and the plain batched product or row step runs.

use super::*;

impl<'a> Builder<'a> {
    /// `m` as a row-major value in its logical order, one axis per logical dim (the first
    /// dim's axes besides the batch merged into one), and the groups that read it as `m`.
    /// The batch must be the outermost axis of the first dim: plan values keep it first.
    fn logical(&mut self, i: usize, m: Moved) -> R<Moved> {
        let m = self.squeezed(m);
        let order = m.groups.concat();
        if order.first() != Some(&0) {
            return Err(self.err(i, NodeError::MovedUnsupported(self.moved_shape(&m))));
        }
        let m = if order.windows(2).all(|w| w[0] < w[1]) {
            m
        } else {
            self.reorder(&m, order)
        };
        let full = self.full_dims(Operand::Value(m.value));
        let size =
            |g: &[usize]| -> usize { g.iter().filter(|&&a| a != 0).map(|&a| full[a]).product() };
        let mut dims = Vec::new();
        let mut groups = Vec::new();
        if m.groups[0].len() > 1 {
            dims.push(size(&m.groups[0]));
            groups.push(vec![0, 1]);
        } else {
            groups.push(vec![0]);
        }
        for g in &m.groups[1..] {
            dims.push(size(g));
            groups.push(vec![dims.len()]);
        }
        let value = if dims == self.values[m.value].dims {
            m.value
        } else {
            let name = format!("{}#logical", self.values.len());
            self.alias(&name, m.value, dims, false)
        };
        Ok(Moved { value, groups })
    }

    /// Input `k` of node `i` as a moved tensor (a plain value is one with nothing moved).
    fn moved_or_plain(&mut self, i: usize, k: usize) -> R<Moved> {
        match self.moved_input(i, k) {
            Some(m) => Ok(m),
            None => {
                let v = self.value(i, k)?;
                let v = self.materialise(v);
                Ok(self.leave_batch_first(v))
            }
        }
    }

    /// MatMul of two tensors, at least one of them moved: one batched product over their
    /// logical forms, whose leading dims must be equal.
    pub(super) fn moved_matmul(&mut self, i: usize) -> R<()> {
        let a = self.moved_or_plain(i, 0)?;
        let a = self.logical(i, a)?;
        let b = self.moved_or_plain(i, 1)?;
        let b = self.logical(i, b)?;
        let (ad, bd) = (&self.values[a.value].dims, &self.values[b.value].dims);
        let r = ad.len();
        if r < 2
            || bd.len() != r
            || ad[..r - 2] != bd[..r - 2]
            || ad[r - 1] != bd[r - 2]
            || a.groups != b.groups
        {
            return Err(self.err(
                i,
                NodeError::MatMulShapes {
                    a: ad.clone(),
                    b: self.full_dims(Operand::Value(b.value)),
                },
            ));
        }
        let mut dims = ad.clone();
        dims[r - 1] = bd[r - 1];
        let out = self.out(i)?;
        let name = format!("{out}#storage");
        let output = self.define(&name, dims, false);
        self.steps.push(Step::MatMul(MatMulStep::new(
            a.value,
            Operand::Value(b.value),
            output,
        )));
        self.bind(&out, Moved { value: output, ..a });
        Ok(())
    }

    /// Softmax (or LogSoftmax) over the last dim of a moved tensor: one row step over its
    /// logical form.
    pub(super) fn moved_softmax(&mut self, i: usize, m: Moved, kind: RowKind) -> R<()> {
        let rank = m.groups.len();
        let axis =
            fold::axis(attr_int(&self.nodes[i], "axis", -1), rank).map_err(|e| self.err(i, e))?;
        if axis + 1 != rank {
            return Err(self.err(i, NodeError::MovedUnsupported(self.moved_shape(&m))));
        }
        let m = self.logical(i, m)?;
        let dims = self.values[m.value].dims.clone();
        let out = self.out(i)?;
        let name = format!("{out}#storage");
        let output = self.define(&name, dims.clone(), false);
        self.steps.push(Step::Row(RowStep {
            input: m.value,
            output,
            axis: dims.len(),
            kind,
        }));
        self.bind(&out, Moved { value: output, ..m });
        Ok(())
    }
}
