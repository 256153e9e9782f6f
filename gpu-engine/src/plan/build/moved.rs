//! Tensors whose batch is not their first dimension. PyTorch exports ViT's
//! `nn.MultiheadAttention` (batch first) through the sequence-first kernel: `[N, L, E]` is
//! transposed to `[L, N, E]`, the packed projection reshaped to `[3, L, N, E]`, each head
//! reshaped to `[L, N·H, d]` and transposed to `[N·H, L, d]`, the attention's output permuted
//! to `[L, N, H, d]` and flattened to `[L·N, E]` for the output projection, then everything is
//! transposed back. Plan values keep the batch first, so such a tensor is a `Moved`: a
//! batch-first value (its storage, row-major) read through a grouping of the storage's axes.
//! Transposes, reshapes and squeezes regroup axes and move no data; elementwise ops and
//! products whose rows are contiguous run on the storage; a copy is made only where a product
//! needs its rows contiguous, or where the tensor becomes batch-first again in another order.

use super::concat::slice_range;
use super::elementwise::activation_of;
use super::matmul::GemmOperands;
use super::*;
use crate::plan::view;

/// Logical dim `i` of the ONNX tensor is the product of the storage's full axes `groups[i]`
/// (axis 0 is the batch), the first listed outermost; an empty group is a dim of 1. After
/// `squeezed`, every storage axis but the batch is larger than 1 and appears exactly once.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Moved {
    pub value: usize,
    pub groups: Vec<Vec<usize>>,
}

impl Moved {
    /// `x` itself: each full axis its own group.
    fn of(x: usize, rank: usize) -> Moved {
        Moved {
            value: x,
            groups: (0..rank).map(|a| vec![a]).collect(),
        }
    }
}

/// `data` of row-major `dims`, permuted so that axis `i` of the result is axis `perm[i]`.
fn permute(data: &[f32], dims: &[usize], perm: &[usize]) -> Vec<f32> {
    let src = view::row_major(dims);
    let out_dims: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
    let mut out = Vec::with_capacity(data.len());
    let mut idx = vec![0usize; out_dims.len()];
    for _ in 0..data.len() {
        let at: i64 = idx.iter().zip(perm).map(|(&i, &p)| i as i64 * src[p]).sum();
        out.push(data[at as usize]);
        for k in (0..idx.len()).rev() {
            idx[k] += 1;
            if idx[k] < out_dims[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    out
}

impl<'a> Builder<'a> {
    /// The moved tensor behind input `k` of node `i`, if it is one.
    pub(super) fn moved_input(&self, i: usize, k: usize) -> Option<Moved> {
        let name = self.nodes[i].input.get(k)?;
        self.moved.get(name).cloned()
    }

    /// ONNX's shape of a moved tensor.
    pub(super) fn moved_shape(&self, m: &Moved) -> Vec<Sym> {
        let full = self.full_dims(Operand::Value(m.value));
        m.groups
            .iter()
            .map(|g| {
                let known: usize = g.iter().filter(|&&a| a != 0).map(|&a| full[a]).product();
                if g.contains(&0) {
                    Sym {
                        n: known as i64,
                        c: 0,
                    }
                } else {
                    Sym::known(known as i64)
                }
            })
            .collect()
    }

    /// The same tensor over a storage without its axes of size 1 (an alias: nothing moves).
    pub(super) fn squeezed(&mut self, m: Moved) -> Moved {
        let v = self.row_major(m.value);
        let full = self.full_dims(Operand::Value(v));
        let mut new_of = vec![usize::MAX; full.len()];
        let mut kept = Vec::new();
        for (a, &d) in full.iter().enumerate() {
            if a == 0 || d != 1 {
                new_of[a] = kept.len();
                kept.push(d);
            }
        }
        let groups = m
            .groups
            .iter()
            .map(|g| {
                g.iter()
                    .filter(|&&a| new_of[a] != usize::MAX)
                    .map(|&a| new_of[a])
                    .collect()
            })
            .collect();
        let value = if kept.len() == full.len() {
            v
        } else {
            let name = format!("{}#squeezed", self.values.len());
            self.alias(&name, v, kept[1..].to_vec(), false)
        };
        Moved { value, groups }
    }

    /// A copy of `m`'s (squeezed) storage with its axes in `order` (a permutation of them,
    /// the batch first); the groups follow.
    pub(super) fn reorder(&mut self, m: &Moved, order: Vec<usize>) -> Moved {
        let full = self.full_dims(Operand::Value(m.value));
        let dims: Dims = order[1..].iter().map(|&a| full[a]).collect();
        let name = format!("{}#reordered", self.values.len());
        let output = self.define(&name, dims, false);
        self.map(MapStep {
            perm_a: Some(order.clone()),
            ..MapStep::copy(m.value, output)
        });
        let mut pos = vec![0; order.len()];
        for (to, &from) in order.iter().enumerate() {
            pos[from] = to;
        }
        Moved {
            value: output,
            groups: m
                .groups
                .iter()
                .map(|g| g.iter().map(|&a| pos[a]).collect())
                .collect(),
        }
    }

    /// Names the result of node `i`: a plain value when the batch is first and alone in its
    /// dim (a copy when the storage holds the other dims in another order), else a moved one.
    pub(super) fn bind(&mut self, name: &str, m: Moved) {
        let m = self.squeezed(m);
        let order: Vec<usize> = m.groups.concat();
        let in_order = order.windows(2).all(|w| w[0] < w[1]);
        // Batch first and alone; the other dims either single storage axes (a copy puts them
        // in order) or runs of them already in order (a row-major alias merges them).
        let plain = m.groups.first().is_some_and(|g| g == &[0])
            && (in_order || m.groups[1..].iter().all(|g| g.len() <= 1));
        if !plain {
            self.value_of.remove(name);
            self.moved.insert(name.to_string(), m);
            return;
        }
        let shape = self.moved_shape(&m);
        let logical: Dims = shape[1..].iter().map(|s| s.c as usize).collect();
        let v = if in_order {
            m.value
        } else {
            self.reorder(&m, order).value
        };
        if self.values[v].dims == logical {
            self.value_of.insert(name.to_string(), v);
        } else {
            self.alias(name, v, logical, false);
        }
    }

    /// Transpose or Reshape of a plain value that moves or merges the batch.
    pub(super) fn leave_batch_first(&mut self, x: usize) -> Moved {
        let x = self.row_major(x);
        Moved::of(x, self.values[x].dims.len() + 1)
    }

    /// A node reading a moved tensor.
    pub(super) fn moved_step(&mut self, i: usize) -> R<()> {
        let op = self.nodes[i].op_type.clone();
        let Some(m) = self.moved_input(i, 0).or_else(|| self.moved_input(i, 1)) else {
            return Err(self.err(i, NodeError::NoMovedInput));
        };
        let shape = self.moved_shape(&m);
        let unsupported = |b: &Self| b.err(i, NodeError::MovedUnsupported(shape.clone()));
        let out = self.out(i)?;
        if let Some(activation) = activation_of(&self.nodes[i]) {
            let (unary, p0, p1) = activation.map_err(|e| self.err(i, e))?;
            let m = self.moved_input(i, 0).ok_or_else(|| unsupported(self))?;
            let m = self.squeezed(m);
            let name = format!("{out}#storage");
            let output = self.define(&name, self.values[m.value].dims.clone(), false);
            self.map(MapStep {
                unary,
                p0,
                p1,
                ..MapStep::copy(m.value, output)
            });
            self.bind(&out, Moved { value: output, ..m });
            return Ok(());
        }
        match op.as_str() {
            "Identity" | "Dropout" => {
                let m = self.moved_input(i, 0).ok_or_else(|| unsupported(self))?;
                self.moved.insert(out, m);
                Ok(())
            }
            "Transpose" => {
                let m = self.moved_input(i, 0).ok_or_else(|| unsupported(self))?;
                let perm = self.perm(i, m.groups.len())?;
                let groups = perm.iter().map(|&p| m.groups[p].clone()).collect();
                self.bind(&out, Moved { groups, ..m });
                Ok(())
            }
            "Reshape" => {
                let m = self.moved_input(i, 0).ok_or_else(|| unsupported(self))?;
                let target = self.folded(i, 1)?.ints();
                let allowzero = attr_int(&self.nodes[i], "allowzero", 0) != 0;
                let r = self.regroup(i, m, &target, allowzero)?;
                self.bind(&out, r);
                Ok(())
            }
            "Squeeze" | "Unsqueeze" => {
                let m = self.moved_input(i, 0).ok_or_else(|| unsupported(self))?;
                let (squeeze, ax) = self.squeeze_axes(i, m.groups.len())?;
                let rank = m.groups.len();
                let mut groups = m.groups.clone();
                if squeeze {
                    let drop: Vec<usize> = if ax.is_empty() {
                        (0..rank).filter(|&k| shape[k] == Sym::known(1)).collect()
                    } else {
                        ax
                    };
                    for &k in drop.iter().rev() {
                        if shape[k] != Sym::known(1) {
                            return Err(self.err(
                                i,
                                NodeError::MovedSqueeze {
                                    axis: k,
                                    shape: shape.clone(),
                                },
                            ));
                        }
                        // Only size-1 storage axes (if any) live there: they may go anywhere.
                        groups.remove(k);
                    }
                } else {
                    for a in ax {
                        groups.insert(a, Vec::new());
                    }
                }
                self.bind(&out, Moved { groups, ..m });
                Ok(())
            }
            "Gather" => {
                let m = self.moved_input(i, 0).ok_or_else(|| unsupported(self))?;
                self.moved_gather(i, m, &shape)
            }
            "Slice" => {
                let m = self.moved_input(i, 0).ok_or_else(|| unsupported(self))?;
                self.moved_slice(i, m, &shape)
            }
            "Split" => {
                let m = self.moved_input(i, 0).ok_or_else(|| unsupported(self))?;
                self.moved_split(i, m, &shape)
            }
            "BatchNormalization" => {
                let m = self.moved_input(i, 0).ok_or_else(|| unsupported(self))?;
                self.moved_batch_norm(i, m, &shape)
                    .map_err(|e| e.unwrap_or_else(|| unsupported(self)))
            }
            "MatMul" if self.moved_input(i, 1).is_some() || self.value(i, 1).is_ok() => {
                self.moved_matmul(i)
            }
            "Softmax" | "LogSoftmax" => {
                let m = self.moved_input(i, 0).ok_or_else(|| unsupported(self))?;
                let kind = match op.as_str() {
                    "Softmax" => RowKind::Softmax,
                    _ => RowKind::LogSoftmax,
                };
                self.moved_softmax(i, m, kind)
            }
            "MatMul" => {
                let m = self.moved_input(i, 0).ok_or_else(|| unsupported(self))?;
                let Operand::Const(b) = self.operand(i, 1)? else {
                    return Err(unsupported(self));
                };
                let &[k, p] = self.consts[b].dims.as_slice() else {
                    return Err(unsupported(self));
                };
                let data = self.consts[b].data.clone();
                // The bias Add after the product, into the convolution when it is one.
                let bias = self.bias_add(&out, p).filter(|_| self.rows_as_conv());
                let y = self.moved_product(i, m, k, p, data, bias.as_ref().map(|b| b.1.clone()))?;
                match bias {
                    Some((add, _)) => {
                        self.done[add] = true;
                        let out = self.out(add)?;
                        self.bind(&out, y);
                    }
                    None => self.bind(&out, y),
                }
                Ok(())
            }
            "Gemm" => {
                let m = self.moved_input(i, 0).ok_or_else(|| unsupported(self))?;
                self.moved_gemm(i, m, &shape)
            }
            "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" | "PRelu" => {
                let binary = match op.as_str() {
                    "Add" => Binary::Add,
                    "Sub" => Binary::Sub,
                    "Mul" => Binary::Mul,
                    "Div" => Binary::Div,
                    "Pow" => Binary::Pow,
                    "Max" => Binary::Max,
                    "PRelu" => Binary::PRelu,
                    _ => Binary::Min,
                };
                self.moved_binary(i, binary).map_err(|e| match e {
                    Some(e) => e,
                    None => unsupported(self),
                })
            }
            _ => Err(unsupported(self)),
        }
    }

    /// ONNX Reshape of a moved tensor: the target's dims are runs of the groups' axes in
    /// order, a storage axis split where a dim needs part of it (never the batch).
    pub(super) fn regroup(
        &mut self,
        i: usize,
        m: Moved,
        target: &[Sym],
        allowzero: bool,
    ) -> R<Moved> {
        let m = self.squeezed(m);
        let shape = self.moved_shape(&m);
        let full = self.full_dims(Operand::Value(m.value));
        let fail = |b: &Self, why: Regroup| {
            b.err(
                i,
                NodeError::MovedReshape {
                    shape: shape.clone(),
                    target: target.to_vec(),
                    why,
                },
            )
        };
        // (coefficient, has the batch) of each target dim, 0 and −1 resolved.
        let total: usize = full[1..].iter().product();
        let mut dims: Vec<Option<(usize, bool)>> = Vec::with_capacity(target.len());
        for (k, t) in target.iter().enumerate() {
            let d = match (t.n, t.c) {
                (0, 0) if !allowzero => {
                    let s = shape
                        .get(k)
                        .ok_or_else(|| fail(self, Regroup::ZeroPastRank))?;
                    Some((s.n.max(s.c) as usize, s.n != 0))
                }
                (0, -1) => None,
                (0, c) if c >= 0 => Some((c as usize, false)),
                (n, 0) if n > 0 => Some((n as usize, true)),
                _ => return Err(fail(self, Regroup::Unplaceable)),
            };
            dims.push(d);
        }
        let known: usize = dims.iter().flatten().map(|d| d.0).product();
        let batched = dims.iter().flatten().filter(|d| d.1).count();
        if batched > 1 {
            return Err(fail(self, Regroup::BatchTwice));
        }
        if batched == 0 && dims.iter().all(Option::is_some) && known == total {
            return Err(fail(self, Regroup::FixedBatch));
        }
        let dims: Vec<(usize, bool)> = dims
            .iter()
            .map(|d| match d {
                Some(d) => Ok(*d),
                None if known > 0 && total.is_multiple_of(known) => {
                    Ok((total / known, batched == 0))
                }
                None => Err(fail(self, Regroup::Sizes)),
            })
            .collect::<R<_>>()?;
        // Pieces of storage axes, in the tensor's order: (axis, part, size).
        let mut work: std::collections::VecDeque<(usize, usize, usize)> = m
            .groups
            .iter()
            .flatten()
            .map(|&a| (a, 0, if a == 0 { 0 } else { full[a] }))
            .collect();
        let mut pieces: Vec<Vec<(usize, usize, usize)>> = Vec::new();
        for &(coef, batch) in &dims {
            let mut group = Vec::new();
            let (mut prod, mut has_batch) = (1usize, false);
            while prod != coef || has_batch != batch {
                let Some(p) = work.pop_front() else {
                    return Err(fail(self, Regroup::Sizes));
                };
                if p.0 == 0 {
                    if !batch || has_batch {
                        return Err(fail(self, Regroup::MovesBatch));
                    }
                    has_batch = true;
                    group.push(p);
                } else if coef.is_multiple_of(prod * p.2) {
                    prod *= p.2;
                    group.push(p);
                } else if coef.is_multiple_of(prod) && p.2.is_multiple_of(coef / prod) {
                    let f = coef / prod;
                    group.push((p.0, p.1, f));
                    work.push_front((p.0, p.1 + 1, p.2 / f));
                    prod = coef;
                } else {
                    return Err(fail(self, Regroup::Split));
                }
            }
            pieces.push(group);
        }
        if !work.is_empty() {
            return Err(fail(self, Regroup::Sizes));
        }
        // The storage with split axes: pieces in storage order (a row-major alias).
        let mut all: Vec<(usize, usize, usize)> = pieces.iter().flatten().copied().collect();
        all.sort_unstable();
        let value = if all.len() == full.len() {
            m.value
        } else {
            let name = format!("{}#split", self.values.len());
            let dims: Dims = all[1..].iter().map(|p| p.2).collect();
            self.alias(&name, m.value, dims, false)
        };
        let at = |p: &(usize, usize, usize)| all.iter().position(|q| q == p).unwrap_or(0);
        Ok(Moved {
            value,
            groups: pieces.iter().map(|g| g.iter().map(at).collect()).collect(),
        })
    }

    /// `x[..., k, ...]` along one logical axis of a moved tensor: a copy of one slice of the
    /// storage axis behind it.
    fn moved_gather(&mut self, i: usize, m: Moved, shape: &[Sym]) -> R<()> {
        let out = self.out(i)?;
        let a = fold::axis(attr_int(&self.nodes[i], "axis", 0), shape.len())
            .map_err(|e| self.err(i, e))?;
        let idx = self.folded(i, 1)?.clone();
        let ids = idx.known_ints().map_err(|e| self.err(i, e))?;
        let m = self.squeezed(m);
        let (&[k], [s]) = (ids.as_slice(), m.groups[a].as_slice()) else {
            return Err(self.err(i, NodeError::MovedGatherForm(shape.to_vec())));
        };
        let s = *s;
        if s == 0 {
            return Err(self.err(i, NodeError::MovedGatherBatch));
        }
        let len = self.values[m.value].dims[s - 1] as i64;
        let k = if k < 0 { k + len } else { k };
        if !(0..len).contains(&k) {
            return Err(self.err(i, NodeError::GatherIndex { index: k, len }));
        }
        let name = format!("{out}#gathered");
        let value = self.slice_to(&name, m.value, (s, k as usize, 1), 1, None);
        let mut groups = m.groups.clone();
        if idx.dims().is_empty() {
            groups.remove(a);
        }
        self.bind(&out, Moved { value, groups });
        Ok(())
    }

    /// A Slice (positive steps) along dims that are single storage axes other than the batch
    /// (timm's attention unbinds q, k and v from `[3, N, H, L, d]` this way): the storage
    /// sliced along that axis, the grouping kept.
    fn moved_slice(&mut self, i: usize, m: Moved, shape: &[Sym]) -> R<()> {
        let out = self.out(i)?;
        let mut cur = self.squeezed(m);
        for (a, start, end, step) in self.slice_args(i, shape.len())? {
            let s = match cur.groups[a].as_slice() {
                [s] if *s != 0 && step >= 1 => *s,
                _ => return Err(self.err(i, NodeError::MovedUnsupported(shape.to_vec()))),
            };
            let (from, len) = slice_range(self.values[cur.value].dims[s - 1], start, end, step);
            let name = format!("{out}#slice{a}");
            let value = self.slice_to(&name, cur.value, (s, from, step as usize), len, None);
            cur = self.squeezed(Moved { value, ..cur });
        }
        self.bind(&out, cur);
        Ok(())
    }

    /// A Split along a dim that is a single storage axis other than the batch (timm's
    /// attention as the TorchScript exporter writes its unbind): each part the storage sliced
    /// along that axis, the grouping kept.
    fn moved_split(&mut self, i: usize, m: Moved, shape: &[Sym]) -> R<()> {
        let a = fold::axis(attr_int(&self.nodes[i], "axis", 0), shape.len())
            .map_err(|e| self.err(i, e))?;
        let m = self.squeezed(m);
        let s = match m.groups[a].as_slice() {
            [s] if *s != 0 => *s,
            _ => return Err(self.err(i, NodeError::MovedUnsupported(shape.to_vec()))),
        };
        let total = self.values[m.value].dims[s - 1];
        let sizes = self.split_sizes(i, total)?;
        let mut at = 0;
        for (name, len) in self.nodes[i].output.clone().iter().zip(sizes) {
            let value = self.slice_to(&format!("{name}#part"), m.value, (s, at, 1), len, None);
            self.bind(name, Moved { value, ..m.clone() });
            at += len;
        }
        Ok(())
    }

    /// BatchNormalization (inference) of a tensor whose batch has moved, channels on its dim
    /// 1 (LeViT's BatchNorm1d over `[N·L, C]` tokens): one scale and shift on the storage.
    fn moved_batch_norm(
        &mut self,
        i: usize,
        m: Moved,
        shape: &[Sym],
    ) -> Result<(), Option<BuildError>> {
        let Some(c) = shape.get(1).and_then(|s| s.value()) else {
            return Err(None);
        };
        let c = c as usize;
        let (scale, shift) = self.bn_params(i, c).map_err(Some)?;
        let mut cd = vec![c];
        cd.extend(std::iter::repeat_n(1, shape.len() - 2));
        let m = self.squeezed(m);
        let column = |data: Vec<f32>| {
            Folded::Float(Const {
                dims: cd.clone(),
                data,
            })
        };
        let sc = self.storage_const_of(i, &column(scale), &m)?;
        let sh = self.storage_const_of(i, &column(shift), &m)?;
        let out = self.out(i).map_err(Some)?;
        let output = self.define(
            &format!("{out}#storage"),
            self.values[m.value].dims.clone(),
            false,
        );
        self.map(MapStep {
            b: Some(Operand::Const(sc)),
            binary: Binary::Mul,
            c: Some(Operand::Const(sh)),
            ..MapStep::copy(m.value, output)
        });
        self.bind(&out, Moved { value: output, ..m });
        Ok(())
    }

    /// `m · b (+ bias)` with `b` a `[k, p]` constant (row-major data): the storage's rows
    /// must be the last dim's axes, trailing and in order, else the storage is reordered
    /// first. A 1×1 convolution where `rows_as_conv` (the bias in its epilogue), else a
    /// cuBLAS product and the bias as a step of its own.
    fn moved_product(
        &mut self,
        i: usize,
        m: Moved,
        k: usize,
        p: usize,
        b: Vec<f32>,
        bias: Option<Vec<f32>>,
    ) -> R<Moved> {
        let m = self.squeezed(m);
        let shape = self.moved_shape(&m);
        let last = m.groups.last().cloned().unwrap_or_default();
        if last.contains(&0) || shape.last() != Some(&Sym::known(k as i64)) {
            return Err(self.err(i, NodeError::MovedProduct { shape, k, p }));
        }
        let rank = self.values[m.value].dims.len() + 1;
        let trailing: Vec<usize> = (rank - last.len()..rank).collect();
        let m = if last == trailing {
            m
        } else {
            let mut order: Vec<usize> = (0..rank).filter(|a| !last.contains(a)).collect();
            order.extend(&last);
            self.reorder(&m, order)
        };
        // The last dim's axes merged into one (an alias), then one product over its rows.
        let lead = rank - last.len();
        let mut rows: Dims = self.values[m.value].dims[..lead - 1].to_vec();
        rows.push(k);
        let name = format!("{}#rows", self.values.len());
        let a = if rows == self.values[m.value].dims {
            m.value
        } else {
            self.alias(&name, m.value, rows.clone(), false)
        };
        let mut dims = rows;
        if let Some(d) = dims.last_mut() {
            *d = p;
        }
        let output = if self.rows_as_conv() {
            let (mut conv, rows) = self.rows_conv(i, a, &b, k, p);
            if let Some(bias) = bias {
                conv.bias = bias;
            }
            self.push_rows_conv(conv, rows, dims)
        } else {
            let c = self.new_const(vec![k, p], b);
            let name = format!("{}#product", self.values.len());
            let product = self.define(&name, dims.clone(), false);
            self.steps
                .push(Step::MatMul(MatMulStep::new(a, Operand::Const(c), product)));
            match bias {
                Some(bias) => {
                    let c = self.new_const(vec![p], bias);
                    let name = format!("{}#biased", self.values.len());
                    let output = self.define(&name, dims, false);
                    self.map(MapStep {
                        a: Operand::Value(product),
                        b: Some(Operand::Const(c)),
                        binary: Binary::Add,
                        ..MapStep::copy(0, output)
                    });
                    output
                }
                None => product,
            }
        };
        let mut groups = m.groups.clone();
        if let Some(g) = groups.last_mut() {
            *g = vec![lead];
        }
        groups
            .iter_mut()
            .take(m.groups.len() - 1)
            .for_each(|g| g.retain(|&a| a < lead));
        Ok(Moved {
            value: output,
            groups,
        })
    }

    /// Gemm (`transA = 0`) of a moved `[rows, K]` tensor and a constant: a product, then the
    /// bias.
    fn moved_gemm(&mut self, i: usize, m: Moved, shape: &[Sym]) -> R<()> {
        if attr_int(&self.nodes[i], "transA", 0) != 0 || shape.len() != 2 {
            return Err(self.err(i, NodeError::MovedGemmInput));
        }
        let GemmOperands { k, p, b, bias } = self.gemm_operands(i)?;
        let y = self.moved_product(i, m, k, p, b, bias)?;
        let out = self.out(i)?;
        self.bind(&out, y);
        Ok(())
    }

    /// An elementwise op with a moved operand: the other one a constant (laid out like the
    /// storage) or a moved tensor over the same storage layout. `Err(None)`: not supported.
    fn moved_binary(&mut self, i: usize, binary: Binary) -> Result<(), Option<BuildError>> {
        let out = self.out(i).map_err(Some)?;
        let (ma, mb) = (self.moved_input(i, 0), self.moved_input(i, 1));
        let (a, b, m) = match (ma, mb) {
            (Some(x), Some(y)) => {
                let (x, y) = (self.squeezed(x), self.squeezed(y));
                if x.groups != y.groups || self.values[x.value].dims != self.values[y.value].dims {
                    return Err(None);
                }
                (Operand::Value(x.value), Operand::Value(y.value), x)
            }
            (Some(x), None) => {
                let x = self.squeezed(x);
                let c = self.storage_const(i, 1, &x)?;
                (Operand::Value(x.value), Operand::Const(c), x)
            }
            (None, Some(y)) => {
                let y = self.squeezed(y);
                let c = self.storage_const(i, 0, &y)?;
                (Operand::Const(c), Operand::Value(y.value), y)
            }
            (None, None) => return Err(None),
        };
        let name = format!("{out}#storage");
        let output = self.define(&name, self.values[m.value].dims.clone(), false);
        self.map(MapStep {
            a,
            b: Some(b),
            binary,
            ..MapStep::copy(0, output)
        });
        self.bind(&out, Moved { value: output, ..m });
        Ok(())
    }

    /// Constant input `k` of node `i`, broadcast (ONNX's rules) against the moved `m`,
    /// rewritten in `m`'s storage order with 1 where it broadcasts.
    fn storage_const(
        &mut self,
        i: usize,
        k: usize,
        m: &Moved,
    ) -> Result<usize, Option<BuildError>> {
        let f = match self.folded(i, k) {
            Ok(f) => f.clone(),
            Err(_) => return Err(None),
        };
        self.storage_const_of(i, &f, m)
    }

    /// `f` broadcast (ONNX's rules) against the moved `m`, in `m`'s storage order (node `i`
    /// for errors).
    fn storage_const_of(
        &mut self,
        i: usize,
        f: &Folded,
        m: &Moved,
    ) -> Result<usize, Option<BuildError>> {
        let data = f.floats().map_err(|e| Some(self.err(i, e)))?;
        let shape = self.moved_shape(m);
        let cd = f.dims().to_vec();
        if cd.len() > shape.len() {
            return Err(None);
        }
        let full = self.full_dims(Operand::Value(m.value));
        let pad = shape.len() - cd.len();
        // The constant with each broadcast dim split into its group's axes: (axis, size).
        let mut split: Vec<(usize, usize)> = Vec::new();
        let mut cdims = vec![1usize; full.len()];
        for (j, &d) in cd.iter().enumerate() {
            let g = &m.groups[pad + j];
            if d == 1 {
                continue;
            }
            if g.contains(&0) || shape[pad + j] != Sym::known(d as i64) {
                return Err(Some(self.err(
                    i,
                    NodeError::MovedConstant {
                        dims: cd.clone(),
                        shape: shape.clone(),
                    },
                )));
            }
            for &a in g {
                split.push((a, full[a]));
                cdims[a] = full[a];
            }
        }
        let sdims: Vec<usize> = split.iter().map(|s| s.1).collect();
        let mut perm: Vec<usize> = (0..split.len()).collect();
        perm.sort_by_key(|&p| split[p].0);
        let permuted = permute(&data, &sdims, &perm);
        cdims[0] = 1;
        Ok(self.new_const(cdims, permuted))
    }
}

#[cfg(test)]
mod tests {
    use super::permute;

    #[test]
    fn permute_moves_each_element_to_its_new_place() {
        // [2, 3] → [3, 2]
        let d: Vec<f32> = (0..6).map(|v| v as f32).collect();
        assert_eq!(permute(&d, &[2, 3], &[1, 0]), vec![0., 3., 1., 4., 2., 5.]);
        // [2, 1, 3] with perm [2, 0, 1] → [3, 2, 1]
        assert_eq!(
            permute(&d, &[2, 1, 3], &[2, 0, 1]),
            vec![0., 3., 1., 4., 2., 5.]
        );
        assert_eq!(permute(&d, &[6], &[0]), d);
    }
}
