//! Gemm and MatMul: products with constant weights on a flat or rank-3 value become 1×1
//! convolutions (one cuDNN call with the fused epilogue); products of two values, batched
//! cuBLAS products.

use super::*;

/// A product's `[K, P]` right operand (row-major) as the OIHW weights `[P, K, 1, 1]` of the
/// 1×1 convolution computing it.
fn oihw_of_kp(b: &[f32], k: usize, p: usize) -> Vec<f32> {
    let mut weight = vec![0.0; p * k];
    for r in 0..k {
        for o in 0..p {
            weight[o * k + r] = b[r * p + o];
        }
    }
    weight
}

/// A Gemm's constants: `B` as a row-major `[k, p]` matrix with `alpha` applied, `C` as `p`
/// values with `beta` applied (`None` when absent).
pub(super) struct GemmOperands {
    pub(super) k: usize,
    pub(super) p: usize,
    pub(super) b: Vec<f32>,
    pub(super) bias: Option<Vec<f32>>,
}

pub(super) const OPS: &[(&str, Lower)] =
    &[("Gemm", |b, i| b.gemm(i)), ("MatMul", |b, i| b.matmul(i))];

impl Builder<'_> {
    /// A dense layer `[cout][cin]` on `x`: a 1×1 convolution on a flat value, or a convolution
    /// over the whole map when `x` is a rank-3 value flattened (NCHW order = OIHW weights).
    fn dense(
        &mut self,
        i: usize,
        x: usize,
        weight: Vec<f32>,
        bias: Vec<f32>,
        cout: usize,
    ) -> R<()> {
        // Flatten + dense: the map's own memory read as one flat vector, in its storage order
        // (NHWC: the weights are permuted to match), so the product is a 1×1 convolution,
        // a GEMM for cuDNN. (As a convolution over the whole map it took 3.8 ms for vgg16's
        // first classifier layer at batch 32 on the H200.)
        let (input, weight) = match self.flat_of.get(&x).copied() {
            Some(src) => {
                let Some([c, h, w]) = self.values[src].chw() else {
                    return Err(self.err(i, NodeError::NotFlat));
                };
                let k = c * h * w;
                let weight = if self.values[src].channels_last && weight.len() == cout * k {
                    let mut p = vec![0.0; weight.len()];
                    for o in 0..cout {
                        for ch in 0..c {
                            for yx in 0..h * w {
                                p[o * k + yx * c + ch] = weight[o * k + ch * h * w + yx];
                            }
                        }
                    }
                    p
                } else {
                    weight
                };
                let name = format!("{}#flat", self.values.len());
                (self.alias(&name, src, vec![k], false), weight)
            }
            None => (x, weight),
        };
        let Some([c, _, _]) = self.values[input].chw() else {
            return Err(self.err(i, NodeError::NotFlat));
        };
        let cin = c;
        if weight.len() != cout * cin {
            return Err(self.err(
                i,
                NodeError::DenseWeights {
                    values: weight.len(),
                    input: self.values[x].dims.clone(),
                },
            ));
        }
        let conv = ConvStep::pointwise(self.label(i), input, cin, cout, weight, bias);
        // A dense layer's output is flat `[cout]`.
        let mut out = self.out(i)?;
        let mut conv = conv;
        if self.nodes[i].op_type == "MatMul" {
            out = self.absorb_bias(out, &mut conv)?;
        }
        let out = self.fuse_act(out, &mut conv)?;
        conv.output = self.define(&out, vec![cout], false);
        self.steps.push(Step::Conv(conv));
        Ok(())
    }

    /// A product of row-major rows `x` (`[..., K]`) by a constant `[K, P]` (`b`, row-major)
    /// as a 1×1 convolution: in a channels-last plan the rows' memory is an NHWC map
    /// `[K, rows, 1]` byte for byte, so cuDNN runs the product and its epilogue takes the
    /// bias, a residual Add and the activation that follow (ViT's and ConvNeXt's linear
    /// layers; after a cuBLAS product each of those was a pass over the output of its own).
    /// Row-major plans (fp32) keep the cuBLAS product: an NCHW map puts the channels
    /// outermost. The step is finished by `push_rows_conv`.
    pub(super) fn rows_conv(
        &mut self,
        i: usize,
        x: usize,
        b: &[f32],
        k: usize,
        p: usize,
    ) -> (ConvStep, usize) {
        let rows = self.values[x].len() / k.max(1);
        let name = format!("{}#rows", self.values.len());
        let input = self.alias(&name, x, vec![k, rows, 1], true);
        let weight = oihw_of_kp(b, k, p);
        let conv = ConvStep::pointwise(self.label(i), input, k, p, weight, vec![0.0; p]);
        (conv, rows)
    }

    /// Whether products of rows by a constant run as `rows_conv`.
    pub(super) fn rows_as_conv(&self) -> bool {
        self.channels_last
    }

    /// Defines `conv`'s output (`[P, rows, 1]` NHWC), pushes the step, and returns its memory
    /// as the row-major value of `dims`.
    pub(super) fn push_rows_conv(&mut self, mut conv: ConvStep, rows: usize, dims: Dims) -> usize {
        let name = format!("{}#rows", self.values.len());
        let y = self.define(&name, vec![conv.cout, rows, 1], true);
        conv.output = y;
        self.steps.push(Step::Conv(conv));
        let name = format!("{}#rows", self.values.len());
        self.alias(&name, y, dims, false)
    }

    /// MatMul of batch-first rows `[..., K]` by a constant (see `rows_conv`), with the bias
    /// Add, residual Add and activation that follow folded in.
    fn dense_rows(&mut self, i: usize, x: usize, b: Vec<f32>, k: usize, p: usize) -> R<()> {
        let x = self.materialise(x);
        let x = self.row_major(x);
        let (mut conv, rows) = self.rows_conv(i, x, &b, k, p);
        let out = self.out(i)?;
        let mut out = self.absorb_bias(out, &mut conv)?;
        let mut out_dims = self.values[x].dims.clone();
        if let Some(last) = out_dims.last_mut() {
            *last = p;
        }
        if let Some((add, id)) = self.residual_add(&out, &out_dims) {
            let id = self.materialise(id);
            let id = self.row_major(id);
            let name = format!("{}#rows", self.values.len());
            conv.residual = Some(self.alias(&name, id, vec![p, rows, 1], true));
            self.done[add] = true;
            out = self.out(add)?;
        }
        let out = self.fuse_act(out, &mut conv)?;
        let y = self.push_rows_conv(conv, rows, out_dims);
        self.value_of.insert(out, y);
        Ok(())
    }

    fn is_flat(&self, x: usize) -> bool {
        self.flat_of.contains_key(&x) || self.values[x].dims.len() == 1
    }

    /// Gemm's `B` and `C` as `GemmOperands` says. `transA` is the caller's to check.
    pub(super) fn gemm_operands(&self, i: usize) -> R<GemmOperands> {
        let node = &self.nodes[i];
        let tb = attr_int(node, "transB", 0);
        let (alpha, beta) = (
            attr_float(node, "alpha", 1.0),
            attr_float(node, "beta", 1.0),
        );
        let w = self.folded(i, 1)?;
        let [d0, d1] = w.dims()[..] else {
            return Err(self.err(i, NodeError::GemmWeightRank(w.dims().to_vec())));
        };
        let wv = w.floats().map_err(|e| self.err(i, e))?;
        let (k, p) = if tb != 0 { (d1, d0) } else { (d0, d1) };
        let mut b = vec![0.0; k * p];
        for r in 0..k {
            for c in 0..p {
                let v = if tb != 0 {
                    wv[c * k + r]
                } else {
                    wv[r * p + c]
                };
                b[r * p + c] = alpha * v;
            }
        }
        let bias = match node.input.get(2).filter(|b| !b.is_empty()) {
            Some(_) => Some(match self.floats(i, 2)? {
                v if v.len() == p => v.iter().map(|x| beta * x).collect(),
                v if v.len() == 1 => vec![beta * v[0]; p],
                v => {
                    return Err(self.err(
                        i,
                        NodeError::GemmBias {
                            values: v.len(),
                            outputs: p,
                        },
                    ))
                }
            }),
            None => None,
        };
        Ok(GemmOperands { k, p, b, bias })
    }

    fn gemm(&mut self, i: usize) -> R<()> {
        let x = self.value(i, 0)?;
        if attr_int(&self.nodes[i], "transA", 0) != 0 || !self.is_flat(x) {
            return Err(self.err(i, NodeError::GemmInput));
        }
        let GemmOperands {
            k: cin,
            p: cout,
            b,
            bias,
        } = self.gemm_operands(i)?;
        let weight = oihw_of_kp(&b, cin, cout);
        self.dense(i, x, weight, bias.unwrap_or_else(|| vec![0.0; cout]), cout)
    }

    fn matmul(&mut self, i: usize) -> R<()> {
        let x = self.value(i, 0)?;
        let b = self.operand(i, 1)?;
        if let Operand::Const(c) = b {
            if let (&[cin, cout], true) = (self.consts[c].dims.as_slice(), self.is_flat(x)) {
                let weight = oihw_of_kp(&self.consts[c].data, cin, cout);
                return self.dense(i, x, weight, vec![0.0; cout], cout);
            }
            let rows_of_k = self.values[x].dims.len() >= 2
                && self.consts[c].dims.len() == 2
                && self.values[x].dims.last() == self.consts[c].dims.first();
            if self.rows_as_conv() && rows_of_k && !self.is_flat(x) {
                let (k, p) = (self.consts[c].dims[0], self.consts[c].dims[1]);
                let b = self.consts[c].data.clone();
                return self.dense_rows(i, x, b, k, p);
            }
        }
        let x = self.materialise(x);
        let x = self.row_major(x);
        let xd = self.values[x].dims.clone();
        let b = match b {
            Operand::Value(v) => Operand::Value(self.row_major(v)),
            c => c,
        };
        let bd = self.full_dims(b);
        let ok = match b {
            Operand::Const(_) => bd.len() == 2,
            Operand::Value(_) => {
                bd.len() == xd.len() + 1 && bd[1..bd.len() - 2] == xd[..xd.len() - 2]
            }
        };
        if xd.is_empty() || bd.len() < 2 || !ok || bd[bd.len() - 2] != xd[xd.len() - 1] {
            return Err(self.err(i, NodeError::MatMulShapes { a: xd, b: bd }));
        }
        let mut dims = xd.clone();
        let last = dims.len() - 1;
        dims[last] = bd[bd.len() - 1];
        let out = self.out(i)?;
        let output = self.define(&out, dims, false);
        self.steps.push(Step::MatMul(MatMulStep::new(x, b, output)));
        Ok(())
    }
}
