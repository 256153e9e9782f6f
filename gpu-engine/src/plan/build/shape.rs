//! Ops that rename or reorder a tensor: Flatten, Reshape, Squeeze/Unsqueeze, Transpose, Expand,
//! Gather, and Identity/Dropout. Most move no data: the value is an alias of its input's memory.

use super::*;

pub(super) const OPS: &[(&str, Lower)] = &[
    ("Flatten", |b, i| b.flatten(i)),
    ("Reshape", |b, i| b.reshape(i)),
    ("Squeeze", |b, i| b.squeeze(i)),
    ("Unsqueeze", |b, i| b.squeeze(i)),
    ("Transpose", |b, i| b.transpose(i)),
    ("Expand", |b, i| b.expand(i)),
    ("Gather", |b, i| b.gather(i)),
    ("Identity", |b, i| b.pass_through(i)),
    ("Dropout", |b, i| b.pass_through(i)),
];

impl Builder<'_> {
    /// The output is the input's value itself (Identity, Dropout at inference).
    pub(super) fn pass_through(&mut self, i: usize) -> R<()> {
        let x = self.value(i, 0)?;
        let out = self.out(i)?;
        self.value_of.insert(out, x);
        Ok(())
    }

    fn flatten(&mut self, i: usize) -> R<()> {
        let x = self.value(i, 0)?;
        let dims = self.values[x].dims.clone();
        let rank = dims.len() + 1;
        let a = fold::axis(attr_int(&self.nodes[i], "axis", 1), rank + 1)
            .map_err(|e| self.err(i, e))?;
        if a != 1 {
            // `[N·d1…, rest]` or `[1, N·…]`: the batch merges with other dims (see `moved`).
            let inner: usize = dims[a.max(1) - 1..].iter().product();
            let outer: usize = dims[..a.max(1) - 1].iter().product();
            let target = if a == 0 {
                [
                    Sym::known(1),
                    Sym {
                        n: inner as i64,
                        c: 0,
                    },
                ]
            } else {
                [
                    Sym {
                        n: outer as i64,
                        c: 0,
                    },
                    Sym::known(inner as i64),
                ]
            };
            let x = self.materialise(x);
            let m = self.leave_batch_first(x);
            let r = self.regroup(i, m, &target, false)?;
            let out = self.out(i)?;
            self.bind(&out, r);
            return Ok(());
        }
        let out = self.out(i)?;
        let len = dims.iter().product();
        if dims.len() == 3
            && self.consumers.get(out.as_str()).is_some_and(|c| {
                c.iter()
                    .all(|&k| matches!(self.nodes[k].op_type.as_str(), "Gemm" | "MatMul"))
            })
        {
            // Flatten + dense layer: one convolution over the map, nothing moved.
            let id = self.define(&out, vec![len], false);
            self.flat_of.insert(id, x);
            return Ok(());
        }
        let x = self.row_major(x);
        self.alias(&out, x, vec![len], false);
        Ok(())
    }

    fn reshape(&mut self, i: usize) -> R<()> {
        if let Some(start) = self.shuffle_start.remove(self.input(i, 0)?) {
            if self.shuffle_end(i, start)? {
                return Ok(());
            }
        }
        let x = self.value(i, 0)?;
        if let Some(&map) = self.whole_of.get(&x) {
            // A normalised map's pending row (`whole_pending`): the map itself where the
            // reshape gives it its shape back.
            if self.reshape_target(i, &self.values[x].dims)? == Some(self.values[map].dims.clone())
            {
                let out = self.out(i)?;
                self.value_of.insert(out, map);
                return Ok(());
            }
        }
        let x = self.unpend(x);
        let x = self.materialise(x);
        let dims = self.values[x].dims.clone();
        let Some(new) = self.reshape_target(i, &dims)? else {
            // The batch merged or moved: regrouped over the same storage (see `moved`).
            let target = self.folded(i, 1)?.ints();
            let allowzero = attr_int(&self.nodes[i], "allowzero", 0) != 0;
            let m = self.leave_batch_first(x);
            let r = self.regroup(i, m, &target, allowzero)?;
            let out = self.out(i)?;
            self.bind(&out, r);
            return Ok(());
        };
        if self.channel_shuffle(i, x, &new)? {
            return Ok(());
        }
        self.reshape_to(i, x, new)
    }

    /// Reshape `i`'s item dims for an input of item dims `dims`, or None where it merges or
    /// moves the batch.
    pub(super) fn reshape_target(&self, i: usize, dims: &[usize]) -> R<Option<Dims>> {
        let target = self.folded(i, 1)?.ints();
        let allowzero = attr_int(&self.nodes[i], "allowzero", 0) != 0;
        let item: usize = dims.iter().product();
        let Some((&first, rest)) = target.split_first() else {
            return Err(self.err(i, NodeError::ReshapeToScalar));
        };
        let keeps_batch = first == Sym::BATCH
            || (first == Sym::known(0) && !allowzero)
            || (first == Sym::known(-1)
                && rest.iter().all(|s| s.value().is_some_and(|v| v > 0))
                && rest.iter().map(|s| s.c as usize).product::<usize>() == item);
        let rest: Option<Vec<i64>> = rest
            .iter()
            .enumerate()
            .map(|(k, s)| match s.value() {
                Some(0) if !allowzero => dims.get(k).map(|&d| d as i64),
                v => v,
            })
            .collect();
        let (true, Some(rest)) = (keeps_batch, rest) else {
            return Ok(None);
        };
        fold::reshape_dims(dims, &rest, allowzero)
            .map(Some)
            .map_err(|e| self.err(i, e))
    }

    pub(super) fn reshape_to(&mut self, i: usize, x: usize, dims: Dims) -> R<()> {
        let out = self.out(i)?;
        if dims == self.values[x].dims {
            self.value_of.insert(out, x);
            return Ok(());
        }
        if self.tokens_pending(x, &dims, &out) || self.whole_pending(x, &dims, &out) {
            return Ok(());
        }
        let x = self.row_major(x);
        self.alias(&out, x, dims, false);
        Ok(())
    }

    /// GroupNorm with one group as PyTorch exports it (PoolFormer's): a channels-last map
    /// `[C, H, W]` reshaped to one row per item `[1, C·H·W]` for an InstanceNormalization and
    /// reshaped back. Its statistics are over the whole item, in any order, so the
    /// normalisation runs on the map where it is (`norm_whole_map`): the reshape stays pending
    /// (an alias no step reads) when the InstanceNormalization is its only reader. Otherwise
    /// each reshape was a copy of the whole map, three per PoolFormer block.
    fn whole_pending(&mut self, x: usize, dims: &[usize], out: &str) -> bool {
        let v = &self.values[x];
        let Some([c, h, w]) = v.chw().filter(|_| v.channels_last) else {
            return false;
        };
        if dims != [1, c * h * w] || self.sole_consumer(out, "InstanceNormalization").is_none() {
            return false;
        }
        let id = self.alias(out, x, dims.to_vec(), false);
        self.whole_of.insert(id, x);
        true
    }

    /// `x` as a real value: a pending row of a map (`whole_pending`) becomes the map's
    /// row-major copy under `x`'s dims, for a reader that needs it in row order.
    pub(super) fn unpend(&mut self, x: usize) -> usize {
        let Some(map) = self.whole_of.remove(&x) else {
            return x;
        };
        let rows = self.row_major(map);
        self.values[x].storage = self.values[rows].storage;
        x
    }

    /// A vision transformer's patch embedding: the convolution's map `[C, H, W]`, stored
    /// channels-last, reshaped to `[C, H·W]` and transposed to tokens `[H·W, C]`. Stored
    /// channels-last, the map already is the tokens, row-major: where every reader of the
    /// reshape is that transpose, the reshape stays pending (an alias no step reads) and the
    /// transpose aliases the map (`transpose`). Otherwise both were copies of the whole map
    /// (DeiT, ViT, MLP-Mixer, Swin at the start of their plans).
    fn tokens_pending(&mut self, x: usize, dims: &[usize], out: &str) -> bool {
        let v = &self.values[x];
        let Some([c, h, w]) = v.chw().filter(|_| v.channels_last) else {
            return false;
        };
        let to_tokens = |k: usize| {
            self.nodes[k].op_type == "Transpose" && self.perm(k, 3).is_ok_and(|p| p == [0, 2, 1])
        };
        if dims != [c, h * w] || !self.read_only_by(out, to_tokens) {
            return false;
        }
        let id = self.alias(out, x, dims.to_vec(), false);
        self.tokens_of.insert(id, x);
        true
    }

    fn squeeze(&mut self, i: usize) -> R<()> {
        let x = self.value(i, 0)?;
        let x = self.materialise(x);
        let full: Vec<usize> = std::iter::once(BATCH)
            .chain(self.values[x].dims.iter().copied())
            .collect();
        let (squeeze, ax) = self.squeeze_axes(i, full.len())?;
        if ax.contains(&0) {
            return Err(self.err(i, NodeError::SqueezeBatch));
        }
        let dims: Vec<usize> = if squeeze {
            full.iter()
                .enumerate()
                .filter(|(k, d)| {
                    *k > 0
                        && if ax.is_empty() {
                            **d != 1
                        } else {
                            !ax.contains(k)
                        }
                })
                .map(|(_, d)| *d)
                .collect()
        } else {
            let mut d = full.clone();
            for a in ax {
                d.insert(a, 1);
            }
            d[1..].to_vec()
        };
        self.reshape_to(i, x, dims)
    }

    /// Transpose `i`'s `perm` for a rank-`rank` input (reversed when absent), checked.
    pub(super) fn perm(&self, i: usize, rank: usize) -> R<Vec<usize>> {
        let perm: Vec<usize> = match attr_ints(&self.nodes[i], "perm") {
            Some(p) => p
                .iter()
                .map(|&a| fold::axis(a, rank))
                .collect::<Result<_, _>>()
                .map_err(|e| self.err(i, e))?,
            None => (0..rank).rev().collect(),
        };
        let mut seen = perm.clone();
        seen.sort_unstable();
        if seen != (0..rank).collect::<Vec<_>>() {
            return Err(self.err(i, NodeError::Perm { perm, rank }));
        }
        Ok(perm)
    }

    /// Whether Squeeze/Unsqueeze `i` squeezes, and its axes (sorted, resolved against the
    /// output's rank for Unsqueeze) for an input of rank `rank_in`.
    pub(super) fn squeeze_axes(&self, i: usize, rank_in: usize) -> R<(bool, Vec<usize>)> {
        let axes = self.ints_arg(i, 1, "axes")?.unwrap_or_default();
        let squeeze = self.nodes[i].op_type == "Squeeze";
        let rank = if squeeze {
            rank_in
        } else {
            rank_in + axes.len()
        };
        let mut ax = axes
            .iter()
            .map(|&a| fold::axis(a, rank))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(i, e))?;
        ax.sort_unstable();
        Ok((squeeze, ax))
    }

    pub(super) fn transpose(&mut self, i: usize) -> R<()> {
        let x = self.value(i, 0)?;
        if let Some(&map) = self.tokens_of.get(&x) {
            // `tokens_pending`: the channels-last map's storage is the tokens.
            let [c, hw] = self.values[x].dims[..] else {
                unreachable!("tokens_pending defines [C, H·W]")
            };
            let out = self.out(i)?;
            self.alias(&out, map, vec![hw, c], false);
            return Ok(());
        }
        let x = self.materialise(x);
        let dims = self.values[x].dims.clone();
        let rank = dims.len() + 1;
        let perm = self.perm(i, rank)?;
        if perm[0] != 0 {
            let m = self.leave_batch_first(x);
            let groups = perm.iter().map(|&p| m.groups[p].clone()).collect();
            let out = self.out(i)?;
            self.bind(&out, Moved { groups, ..m });
            return Ok(());
        }
        let full: Vec<usize> = std::iter::once(0).chain(dims.iter().copied()).collect();
        let out_dims: Dims = perm[1..].iter().map(|&p| full[p]).collect();
        let out = self.out(i)?;
        let v = &self.values[x];
        // NCHW ↔ NHWC between a channels-last value and a row-major one: the same bytes.
        if self.channels_last && rank == 4 {
            if perm == [0, 2, 3, 1] && v.channels_last {
                self.alias(&out, x, out_dims, false);
                return Ok(());
            }
            if perm == [0, 3, 1, 2] && !v.channels_last {
                self.alias(&out, x, out_dims, true);
                return Ok(());
            }
        }
        let output = self.define(&out, out_dims, false);
        self.map(MapStep {
            perm_a: Some(perm),
            ..MapStep::copy(x, output)
        });
        Ok(())
    }

    /// `x[:, k]` (ViT's class token read back): one index along an axis other than the batch.
    fn gather(&mut self, i: usize) -> R<()> {
        let x = self.value(i, 0)?;
        let x = self.materialise(x);
        let rank = self.values[x].dims.len() + 1;
        let a =
            fold::axis(attr_int(&self.nodes[i], "axis", 0), rank).map_err(|e| self.err(i, e))?;
        let idx = self.folded(i, 1)?.clone();
        let ids = idx.known_ints().map_err(|e| self.err(i, e))?;
        let (&[k], true) = (ids.as_slice(), a > 0 && idx.dims().len() <= 1) else {
            return Err(self.err(i, NodeError::GatherForm));
        };
        let len = self.values[x].dims[a - 1] as i64;
        let k = if k < 0 { k + len } else { k };
        if !(0..len).contains(&k) {
            return Err(self.err(i, NodeError::GatherIndex { index: k, len }));
        }
        let out = self.out(i)?;
        if !idx.dims().is_empty() {
            self.slice_to(&out, x, (a, k as usize, 1), 1, None);
            return Ok(());
        }
        let name = format!("{out}#gathered");
        let g = self.slice_to(&name, x, (a, k as usize, 1), 1, None);
        let g = self.row_major(g);
        let mut dims = self.values[g].dims.clone();
        dims.remove(a - 1);
        self.alias(&out, g, dims, false);
        Ok(())
    }

    /// Expand to a batch-sized shape (ViT's class token, `expand(N, -1, -1)`): a broadcast copy.
    fn expand(&mut self, i: usize) -> R<()> {
        let x = self.operand(i, 0)?;
        let target = self.folded(i, 1)?.ints();
        let Some((first, rest)) = target.split_first() else {
            return Err(self.err(i, NodeError::ExpandToScalar));
        };
        let rest: Option<Vec<usize>> = rest
            .iter()
            .map(|s| s.value().map(|v| v.max(0) as usize))
            .collect();
        let (true, Some(rest)) = (*first == Sym::BATCH || *first == Sym::known(1), rest) else {
            return Err(self.err(i, NodeError::ExpandForm));
        };
        let mut target_full = vec![BATCH];
        target_full.extend(rest);
        let full = fold::broadcast(&self.full_dims(x), &target_full).map_err(|e| self.err(i, e))?;
        if full.first() != Some(&BATCH) {
            return Err(self.err(i, NodeError::ExpandForm));
        }
        let out = self.out(i)?;
        if let Operand::Value(v) = x {
            if self.read_broadcast(&out, &full) {
                self.value_of.insert(out, v);
                return Ok(());
            }
        }
        let output = self.define(&out, full[1..].to_vec(), false);
        self.map(MapStep {
            a: x,
            ..MapStep::copy(0, output)
        });
        Ok(())
    }

    /// Whether every reader of `name` is a broadcasting binary (Add, Sub, Mul, Div) whose other
    /// operand, already defined, has the full dims `full`: then the binary broadcasts the
    /// unexpanded value itself to the same result, and an Expand to `full` need not copy it
    /// (ECA's gate, `x · y.expand_as(x)`: a copy of the whole map per block of eca_nfnet_l0).
    fn read_broadcast(&self, name: &str, full: &[usize]) -> bool {
        let other_dims = |k: usize, j: usize| -> Option<Vec<usize>> {
            let other = self.nodes[k].input.get(j)?;
            match self.value_of.get(other) {
                Some(&v) => Some(
                    std::iter::once(BATCH)
                        .chain(self.values[v].dims.clone())
                        .collect(),
                ),
                None => self.folded.get(other).map(|f| f.dims().to_vec()),
            }
        };
        let reads = |k: usize| {
            let node = &self.nodes[k];
            let binary = matches!(node.op_type.as_str(), "Add" | "Sub" | "Mul" | "Div");
            let at: Vec<usize> = (0..node.input.len())
                .filter(|&j| node.input[j] == name)
                .collect();
            binary && at.len() == 1 && other_dims(k, 1 - at[0]).as_deref() == Some(full)
        };
        self.read_only_by(name, reads)
    }
}
