//! Index tensors built from the item number. PyTorch's dynamo exporter decomposes `as_strided`
//! (torchvision's ConvNeXt reaches it through `adaptive_avg_pool2d`) into
//! `Gather(Reshape(x, [-1]), Range(0, N, 1) · stride + offsets)`: a Gather over the flattened
//! batch whose indices are an affine function of the item. Such a tensor is a `BatchIndex`
//! (`[N, dims…]`, item `b` holding `base + b · step`), followed through the integer arithmetic
//! the exporter writes, and the Gather becomes what it means per item: here, a reshape that
//! moves nothing. Any other use of the item number stays a start-up error.

use super::*;

#[derive(Clone, Debug, PartialEq)]
pub(super) struct BatchIndex {
    /// Per-item dims (the batch excluded).
    dims: Vec<usize>,
    /// Item 0's values, row-major over `dims`.
    base: Vec<i64>,
    /// What each further item adds to every value.
    step: i64,
}

impl<'a> Builder<'a> {
    /// Builds node `i` when it makes or reads a batch index; false when it does neither.
    pub(super) fn batch_index_step(&mut self, i: usize) -> R<bool> {
        let nodes = self.nodes;
        let node = &nodes[i];
        let reads = node.input.iter().any(|n| self.batch_index.contains_key(n));
        if !reads {
            return if node.op_type == "Range" && self.is_item_range(i)? {
                self.define_index(
                    i,
                    BatchIndex {
                        dims: Vec::new(),
                        base: vec![0],
                        step: 1,
                    },
                )
            } else {
                Ok(false)
            };
        }
        let indices = node.input.get(1);
        if node.op_type == "Gather" && indices.is_some_and(|n| self.batch_index.contains_key(n)) {
            return self.gather_by_item(i).map(|()| true);
        }
        let Some(x) = node
            .input
            .iter()
            .find_map(|n| self.batch_index.get(n))
            .cloned()
        else {
            return Err(self.err(i, NodeError::ItemIndexUse));
        };
        match node.op_type.as_str() {
            "Cast" | "Identity" => self.define_index(i, x),
            "Unsqueeze" => {
                let rank = x.dims.len() + 1;
                let axes = self.ints_arg(i, 1, "axes")?.unwrap_or_default();
                let mut dims = x.dims.clone();
                let mut axes: Vec<usize> = axes
                    .iter()
                    .map(|&a| fold::axis(a, rank + axes.len()))
                    .collect::<Result<_, _>>()
                    .map_err(|e| self.err(i, e))?;
                axes.sort_unstable();
                for a in axes {
                    if a == 0 || a > dims.len() + 1 {
                        return Err(self.err(i, NodeError::ItemIndexUse));
                    }
                    dims.insert(a - 1, 1);
                }
                self.define_index(i, BatchIndex { dims, ..x })
            }
            "Add" | "Mul" => {
                let other = if self.batch_index.contains_key(&node.input[0]) {
                    1
                } else {
                    0
                };
                if self.batch_index.contains_key(&node.input[other]) {
                    return Err(self.err(i, NodeError::ItemIndexUse));
                }
                let c = self.folded(i, other)?.clone();
                let c_ints = c.known_ints().map_err(|e| self.err(i, e))?;
                // The constant broadcasts against `[N, dims…]` without a batch of its own.
                let cd = c.dims().to_vec();
                if cd.len() > x.dims.len() && cd[0] != 1 {
                    return Err(self.err(i, NodeError::ItemIndexUse));
                }
                let cd_item: Vec<usize> = if cd.len() > x.dims.len() {
                    cd[1..].to_vec()
                } else {
                    cd.clone()
                };
                let dims = fold::broadcast(&x.dims, &cd_item).map_err(|e| self.err(i, e))?;
                let n: usize = dims.iter().product();
                let xs = fold::broadcast_values(&x.base, &x.dims, &dims, n);
                let cs = fold::broadcast_values(&c_ints, &cd_item, &dims, n);
                let (base, step) = if node.op_type == "Add" {
                    (xs.iter().zip(&cs).map(|(a, b)| a + b).collect(), x.step)
                } else {
                    // An item-dependent step would need a scale per value: one scalar only.
                    let [k] = c_ints[..] else {
                        return Err(self.err(i, NodeError::ItemIndexUse));
                    };
                    (xs.iter().map(|a| a * k).collect(), x.step * k)
                };
                self.define_index(i, BatchIndex { dims, base, step })
            }
            _ => Err(self.err(i, NodeError::ItemIndexUse)),
        }
    }

    /// `Range(0, N, 1)`: the item numbers.
    fn is_item_range(&self, i: usize) -> R<bool> {
        let arg = |k: usize| -> Option<Sym> {
            let f = self.folded.get(self.nodes[i].input.get(k)?)?;
            match f.ints().as_slice() {
                [s] => Some(*s),
                _ => None,
            }
        };
        Ok(arg(0) == Some(Sym::known(0))
            && arg(1) == Some(Sym::BATCH)
            && arg(2) == Some(Sym::known(1)))
    }

    fn define_index(&mut self, i: usize, x: BatchIndex) -> R<bool> {
        let out = self.out(i)?;
        self.batch_index.insert(out, x);
        Ok(true)
    }

    /// `Gather(data, index, axis = 0)` with `data` the flattened batch of a value: item `b`
    /// reads `data[b · step + base]`. With `step` the item's size, each item reads only its
    /// own values; where `base` is those values in order, the Gather moves nothing.
    fn gather_by_item(&mut self, i: usize) -> R<()> {
        let idx = self.batch_index[&self.nodes[i].input[1]].clone();
        let unsupported = |b: &Self| b.err(i, NodeError::ItemGather);
        if attr_int(&self.nodes[i], "axis", 0) != 0 {
            return Err(unsupported(self));
        }
        let Some(m) = self.moved_input(i, 0) else {
            return Err(unsupported(self));
        };
        // The whole storage, batch first, merged into one dim in its own order.
        let rank = self.values[m.value].dims.len() + 1;
        let merged: Vec<usize> = (0..rank).collect();
        if m.groups != [merged] {
            return Err(unsupported(self));
        }
        let v = self.row_major(m.value);
        let len = self.values[v].len();
        let in_order = idx.base.iter().enumerate().all(|(k, &b)| b == k as i64);
        if idx.step != len as i64 || idx.base.len() != len || !in_order {
            return Err(unsupported(self));
        }
        let out = self.out(i)?;
        self.alias(&out, v, idx.dims, false);
        Ok(())
    }
}
