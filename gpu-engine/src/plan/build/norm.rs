//! Functions of rows: Softmax and LogSoftmax, and the normalisations (Layer, Instance, Group).

use super::*;

/// Rows at least this long are normalised by `normalize_long_rows` rather than one warp each.
const LONG_ROW: usize = 8192;

pub(super) const OPS: &[(&str, Lower)] = &[
    ("Softmax", |b, i| b.softmax(i, RowKind::Softmax)),
    ("LogSoftmax", |b, i| b.softmax(i, RowKind::LogSoftmax)),
    ("LayerNormalization", |b, i| b.layer_norm(i)),
    ("InstanceNormalization", |b, i| b.norm_rows(i, None)),
    ("GroupNormalization", |b, i| {
        let groups = attr_int(&b.nodes[i], "num_groups", 0).max(0) as usize;
        b.norm_rows(i, Some(groups))
    }),
];

impl Builder<'_> {
    fn softmax(&mut self, i: usize, kind: RowKind) -> R<()> {
        let x = self.value(i, 0)?;
        let rank = self.values[x].dims.len() + 1;
        let axis =
            fold::axis(attr_int(&self.nodes[i], "axis", -1), rank).map_err(|e| self.err(i, e))?;
        if axis == 0 {
            return Err(self.err(i, NodeError::SoftmaxOverBatch));
        }
        self.row(i, x, axis, kind)
    }

    fn row(&mut self, i: usize, x: usize, axis: usize, kind: RowKind) -> R<()> {
        let dims = self.values[x].dims.clone();
        let cl = self.values[x].channels_last;
        let out = self.out(i)?;
        let output = self.define(&out, dims, cl);
        self.steps.push(Step::Row(RowStep {
            input: x,
            output,
            axis,
            kind,
        }));
        Ok(())
    }

    fn layer_norm(&mut self, i: usize) -> R<()> {
        let x = self.value(i, 0)?;
        let rank = self.values[x].dims.len() + 1;
        let axis =
            fold::axis(attr_int(&self.nodes[i], "axis", -1), rank).map_err(|e| self.err(i, e))?;
        if axis != rank - 1 {
            return Err(self.err(i, NodeError::LayerNormAxis));
        }
        if self.nodes[i].output.iter().skip(1).any(|o| !o.is_empty()) {
            return Err(self.err(i, NodeError::LayerNormOutputs));
        }
        let len = self.values[x].dims[axis - 1];
        let name = self.input(i, 1)?.to_string();
        let f = self.folded(i, 1)?.clone();
        let scale = self.add_const(&name, &f).map_err(|e| self.err(i, e))?;
        let bias = match self.nodes[i].input.get(2).filter(|s| !s.is_empty()) {
            Some(n) => {
                let n = n.clone();
                let f = self.folded(i, 2)?.clone();
                Some(self.add_const(&n, &f).map_err(|e| self.err(i, e))?)
            }
            None => None,
        };
        if self.consts[scale].data.len() != len
            || bias.is_some_and(|b| self.consts[b].data.len() != len)
        {
            return Err(self.err(i, NodeError::LayerNormParameters(len)));
        }
        let eps = attr_float(&self.nodes[i], "epsilon", 1e-5);
        self.row(i, x, axis, RowKind::LayerNorm { scale, bias, eps })
    }

    /// InstanceNormalization (`groups` = channels) and GroupNormalization: each item's
    /// `[C, …]` normalized over rows of `C / groups` channels (a LayerNorm over the rows of
    /// its row-major storage), then scaled and shifted per channel (opset 21) or per group
    /// (opset 18).
    fn norm_rows(&mut self, i: usize, groups: Option<usize>) -> R<()> {
        let x = self.value(i, 0)?;
        if let Some(&map) = self.whole_of.get(&x) {
            if let Some(chunk) = chunk_of(self.values[map].len()) {
                return self.norm_whole_map(i, map, chunk);
            }
        }
        let x = self.unpend(x);
        let dims = self.values[x].dims.clone();
        let Some(&channels) = dims.first().filter(|_| dims.len() >= 2) else {
            return Err(self.err(i, NodeError::NormRank(dims.first().copied().unwrap_or(0))));
        };
        let groups = groups.unwrap_or(channels);
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(self.err(i, NodeError::NormGroups { channels, groups }));
        }
        let out = self.out(i)?;
        let spatial: usize = dims[1..].iter().product();
        let row = channels / groups * spatial;
        let xr = self.row_major(x);
        let eps = attr_float(&self.nodes[i], "epsilon", 1e-5);
        let chunk = chunk_of(row);
        let normalized = if let Some(chunk) = chunk {
            self.normalize_long_rows(&out, xr, [groups, row / chunk, chunk], eps)
        } else {
            let rows = self.alias(&format!("{out}#rows"), xr, vec![groups, row], false);
            let ones = self.new_const(vec![row], vec![1.0; row]);
            let normalized = self.define(&format!("{out}#normalized"), vec![groups, row], false);
            self.steps.push(Step::Row(RowStep {
                input: rows,
                output: normalized,
                axis: 2,
                kind: RowKind::LayerNorm {
                    scale: ones,
                    bias: None,
                    eps,
                },
            }));
            normalized
        };
        // Scale and shift per channel, over the `[C, spatial]` view.
        let per_channel = |b: &Self, k: usize| -> R<Vec<f32>> {
            let v = b.folded(i, k)?.floats().map_err(|e| b.err(i, e))?;
            match v.len() {
                n if n == channels => Ok(v),
                n if n == groups => Ok((0..channels).map(|c| v[c / (channels / groups)]).collect()),
                _ => Err(b.err(i, NodeError::NormParameters { channels, groups })),
            }
        };
        let (scale, bias) = (per_channel(self, 1)?, per_channel(self, 2)?);
        let by_channel = self.alias(
            &format!("{out}#by-channel"),
            normalized,
            vec![channels, spatial],
            false,
        );
        if scale.iter().all(|&s| s == 1.0) && bias.iter().all(|&b| b == 0.0) {
            self.alias(&out, by_channel, dims, false);
            return Ok(());
        }
        let scale = self.new_const(vec![channels, 1], scale);
        let bias = self.new_const(vec![channels, 1], bias);
        let affine = self.define(&format!("{out}#affine"), vec![channels, spatial], false);
        self.map(MapStep {
            b: Some(Operand::Const(scale)),
            binary: Binary::Mul,
            c: Some(Operand::Const(bias)),
            ..MapStep::copy(by_channel, affine)
        });
        self.alias(&out, affine, dims, false);
        Ok(())
    }

    /// An InstanceNormalization of one channel over a channels-last map's pending row
    /// (`whole_pending`: GroupNorm with one group): the same statistics as
    /// `normalize_long_rows`, taken over the map's storage read as `[1, chunks, chunk]` (a
    /// sum over the whole item, in any order), and the normalisation applied to the map in its
    /// own layout. Dividing by the deviation is a product with its reciprocal, so that the
    /// per-channel scale and shift after it fold into that product (`fuse::scales`). The
    /// output is again a pending row where only reshapes read it, so that the reshape back
    /// is the normalised map.
    fn norm_whole_map(&mut self, i: usize, map: usize, chunk: usize) -> R<()> {
        let out = self.out(i)?;
        let eps = attr_float(&self.nodes[i], "epsilon", 1e-5);
        let (dims, len) = (self.values[map].dims.clone(), self.values[map].len());
        let mut normalized = self.normalized(&out, map, [1, len / chunk, chunk], eps);
        // The InstanceNormalization's own scale and shift: one value each (one channel).
        let one = |b: &Self, k: usize| -> R<f32> {
            match b.folded(i, k)?.floats().map_err(|e| b.err(i, e))?[..] {
                [v] => Ok(v),
                _ => Err(b.err(
                    i,
                    NodeError::NormParameters {
                        channels: 1,
                        groups: 1,
                    },
                )),
            }
        };
        let (scale, bias) = (one(self, 1)?, one(self, 2)?);
        if scale != 1.0 || bias != 0.0 {
            let (s, b) = (
                self.new_const(vec![1], vec![scale]),
                self.new_const(vec![1], vec![bias]),
            );
            let affine = self.define(&format!("{out}#affine"), dims.clone(), true);
            self.map(MapStep {
                b: Some(Operand::Const(s)),
                binary: Binary::Mul,
                c: Some(Operand::Const(b)),
                ..MapStep::copy(normalized, affine)
            });
            normalized = affine;
        }
        let row = vec![1, len];
        if self.read_only_by(&out, |k| self.nodes[k].op_type == "Reshape") {
            let id = self.alias(&out, normalized, row, false);
            self.whole_of.insert(id, normalized);
        } else {
            let rows = self.row_major(normalized);
            self.alias(&out, rows, row, false);
        }
        Ok(())
    }

    /// Rows of `LONG_ROW` values or more, normalised in steps that spread each row over many
    /// warps: the row step gives one warp to a row, and GroupNormalization with one group (as
    /// PoolFormer has, exported as an InstanceNormalization of `[N, 1, C·H·W]`) makes one row
    /// of each item's whole map (64·56·56 values). `parts`: `[rows, chunks, chunk]`, `x`
    /// row-major. The result is `(x − mean) / √(var + eps)`, defined as `[rows, chunks · chunk]`.
    fn normalize_long_rows(&mut self, out: &str, x: usize, parts: [usize; 3], eps: f32) -> usize {
        let [rows, chunks, chunk] = parts;
        let x = self.alias(&format!("{out}#parts"), x, parts.to_vec(), false);
        let normalized = self.normalized(out, x, parts, eps);
        self.alias(
            &format!("{out}#normalized-rows"),
            normalized,
            vec![rows, chunks * chunk],
            false,
        )
    }

    /// Rows of `parts = [rows, chunks, chunk]` values of `x`'s storage (read as that row-major
    /// shape, whatever `x`'s own dims and layout) normalised: `(x − mean) · 1/√(var + eps)`
    /// per row, defined as `x` is. Each row reduced over its chunks, then over the chunks:
    /// every chunk the same length, so the mean of the chunks' means is the mean, and the root
    /// mean square of their root mean squares is the row's. Dividing by the deviation is a
    /// product with its reciprocal, so that a scale after it folds into that product.
    fn normalized(&mut self, out: &str, x: usize, parts: [usize; 3], eps: f32) -> usize {
        let twice = |b: &mut Self, v: usize, kind: ReduceKind, what: &str| {
            let rows = b.alias(&format!("{out}#{what}-parts"), v, parts.to_vec(), false);
            let partial = b.reduce_to(&format!("{out}#{what}-chunks"), rows, vec![3], kind, true);
            b.reduce_to(&format!("{out}#{what}"), partial, vec![2], kind, true)
        };
        let mean = twice(self, x, ReduceKind::Mean, "mean");
        let (dims, cl) = (self.values[x].dims.clone(), self.values[x].channels_last);
        let centred = self.define(&format!("{out}#centred"), dims.clone(), cl);
        self.map(MapStep {
            b: Some(Operand::Value(mean)),
            binary: Binary::Sub,
            ..MapStep::copy(x, centred)
        });
        // The deviation from root mean squares, not from a variance: an fp16 plan stores
        // every step's output in fp16, where squares of values above 256 overflow.
        let rms = twice(self, centred, ReduceKind::Rms, "rms");
        let eps = self.new_const(vec![1], vec![eps]);
        let inv = self.define(&format!("{out}#inverse-std"), vec![parts[0], 1, 1], false);
        self.map(MapStep {
            b: Some(Operand::Value(rms)),
            binary: Binary::Mul,
            c: Some(Operand::Const(eps)),
            unary: Unary::Rsqrt,
            ..MapStep::copy(rms, inv)
        });
        let normalized = self.define(&format!("{out}#normalized"), dims, cl);
        self.map(MapStep {
            b: Some(Operand::Value(inv)),
            binary: Binary::Mul,
            ..MapStep::copy(centred, normalized)
        });
        normalized
    }
}

/// The chunk length a row of `row` values is read in by `normalize_long_rows` and
/// `norm_whole_map`: the largest of 256 to 4096 values that divides it; None for a row shorter
/// than `LONG_ROW` (one warp normalises it) or one no such length divides.
fn chunk_of(row: usize) -> Option<usize> {
    if row < LONG_ROW {
        return None;
    }
    (256..=4096).rev().find(|&c| row.is_multiple_of(c))
}
