//! Convolutions and BatchNormalization: a Conv becomes one cuDNN convolution step that absorbs
//! the BatchNormalization, bias, residual Add and activation after it; a BatchNormalization
//! nobody absorbed is a per-channel scale and shift.

use super::elementwise::activation_of;
use super::*;

pub(super) const OPS: &[(&str, Lower)] = &[
    ("Conv", |b, i| b.conv(i)),
    ("BatchNormalization", |b, i| b.batch_norm(i)),
];

impl Builder<'_> {
    fn conv(&mut self, i: usize) -> R<()> {
        let node = &self.nodes[i];
        let x = self.value(i, 0)?;
        if self.values[x].dims.len() == 2 {
            return self.conv1d(i, x);
        }
        let Some([mut cin, _, _]) = self.values[x].chw() else {
            return Err(self.err(i, NodeError::ConvRank(self.values[x].dims.clone())));
        };
        if x == 0 {
            // The padding channels get zero weights once the plan is built.
            cin = self.input_c;
        }
        let x = self.with_layout(x, true);
        let w = self.folded(i, 1)?;
        let w_dims = w.dims().to_vec();
        let weight = w.floats().map_err(|e| self.err(i, e))?;
        let [cout, _, kh, kw] = w_dims[..] else {
            return Err(self.err(i, NodeError::ConvWeightRank(w_dims)));
        };
        let (groups, bias) = self.conv_groups_and_bias(i, &w_dims, cin)?;
        if let Some(k) = attr_ints(node, "kernel_shape") {
            if k != [kh as i64, kw as i64] {
                return Err(self.err(
                    i,
                    NodeError::KernelShape {
                        kernel: k,
                        weights: w_dims,
                    },
                ));
            }
        }
        let (pb, pe) = self.pads(i)?;
        let stride = self.pair(i, "strides", 1)?;
        let dilation = self.pair(i, "dilations", 1)?;
        if groups == 1 && stride == [kh, kw] && pb == [0, 0] && pe == [0, 0] && dilation == [1, 1] {
            let c = w_dims[1];
            if let Some(patches) = self.patches(i, x, [kh, kw], c) {
                let k = kh * kw * c;
                // Weights in the patches' order (ky, kx, c).
                let mut w = vec![0.0; cout * k];
                for o in 0..cout {
                    for ci in 0..c {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                w[o * k + (ky * kw + kx) * c + ci] =
                                    weight[((o * w_dims[1] + ci) * kh + ky) * kw + kx];
                            }
                        }
                    }
                }
                let conv = ConvStep::pointwise(self.label(i), patches, k, cout, w, bias);
                return self.finish_conv(i, conv);
            }
        }
        // cuDNN pads symmetrically: what TF-style "same" padding adds on one side only is a
        // padded copy of the input first.
        let sym = [pb[0].min(pe[0]), pb[1].min(pe[1])];
        let x = if pb != pe {
            let name = format!("{}#padded", self.out(i)?);
            let begin = [0, pb[0] - sym[0], pb[1] - sym[1]];
            let end = [0, pe[0] - sym[0], pe[1] - sym[1]];
            self.pad_copy(&name, x, &begin, &end, 0.0)
        } else {
            x
        };
        let conv = ConvStep {
            name: self.label(i),
            input: x,
            residual: None,
            output: 0,
            cin,
            cout,
            kernel: [kh, kw],
            stride,
            pad: sym,
            dilation,
            groups,
            act: Unary::Identity,
            act_p: [0.0, 0.0],
            weight,
            bias,
        };
        self.finish_conv(i, conv)
    }

    /// A patch embedding (a vision transformer's or MLP-Mixer's first layer: a kernel of at
    /// least 8 × 8 as its own stride, no padding) over a channels-last map that its patches
    /// tile exactly: the patches copied out as a channels-last map `[kh·kw·c, H/kh, W/kw]`,
    /// each position's values in (ky, kx, c) order, for a 1×1 convolution (a GEMM) to read;
    /// `c`: the channels the weights read (the model input's padding channels stay behind).
    /// cuDNN's own algorithms for the 16 × 16 kernel took 59 µs at batch 1 (DeiT-Tiny, H100,
    /// eager; 8% of the model) for a product the copy and the GEMM do in a fraction of that.
    fn patches(&mut self, i: usize, x: usize, k: [usize; 2], c: usize) -> Option<usize> {
        let [kh, kw] = k;
        let v = &self.values[x];
        let [stored, h, w] = v.chw()?;
        if !v.channels_last || kh * kw < 64 || h % kh != 0 || w % kw != 0 || c > stored {
            return None;
        }
        let (ph, pw) = (h / kh, w / kw);
        let out = self.out(i).ok()?;
        let patches = self.define(&format!("{out}#patches"), vec![kh * kw * c, ph, pw], true);
        // Both channels-last, so row-major over their storage: x as [ph, kh, pw, kw, c], the
        // patches as [ph, pw, kh, kw, c].
        let tiles = self.alias(
            &format!("{out}#tiles"),
            x,
            vec![ph, kh, pw, kw, stored],
            false,
        );
        let order = self.alias(
            &format!("{out}#patch-order"),
            patches,
            vec![ph, pw, kh, kw, c],
            false,
        );
        self.map(MapStep {
            perm_a: Some(vec![0, 1, 3, 2, 4, 5]),
            a_slice: (c < stored).then_some((5, 0, 1)),
            ..MapStep::copy(tiles, order)
        });
        Some(patches)
    }

    /// A convolution's `group` checked against its weights `[O, I/group, …]` and `cin`, and
    /// its bias (zeros where it has none).
    pub(super) fn conv_groups_and_bias(
        &self,
        i: usize,
        w_dims: &[usize],
        cin: usize,
    ) -> R<(usize, Vec<f32>)> {
        let node = &self.nodes[i];
        let groups = attr_int(node, "group", 1).max(1) as usize;
        let (cout, cin_g) = (w_dims[0], w_dims[1]);
        if cin_g * groups != cin || !cout.is_multiple_of(groups) {
            return Err(self.err(
                i,
                NodeError::ConvGroups {
                    weights: w_dims.to_vec(),
                    groups,
                    cin,
                },
            ));
        }
        let bias = match node.input.get(2).filter(|b| !b.is_empty()) {
            Some(_) => self.floats(i, 2)?,
            None => vec![0.0; cout],
        };
        Ok((groups, bias))
    }

    /// `auto_pad` other than NOTSET or VALID (explicit pads only) is refused.
    pub(super) fn check_auto_pad(&self, i: usize) -> R<()> {
        if let Some(p) = attr(&self.nodes[i], "auto_pad") {
            let mode = String::from_utf8_lossy(&p.s);
            if mode != "NOTSET" && !mode.is_empty() && mode != "VALID" {
                return Err(self.err(i, NodeError::AutoPad(mode.into_owned())));
            }
        }
        Ok(())
    }

    /// Absorbs BatchNormalization, Add(residual) and Relu after a conv, defines its output.
    fn finish_conv(&mut self, i: usize, mut conv: ConvStep) -> R<()> {
        let mut out = self.out(i)?;
        if self.nodes[i].op_type == "Conv" {
            if let Some(bn) = self.sole_consumer(&out, "BatchNormalization") {
                self.fold_bn(bn, &mut conv)?;
                self.done[bn] = true;
                out = self.out(bn)?;
            }
        }
        let shape = self.conv_shape(&conv).map_err(|e| self.err(i, e))?;
        if let Some((add, id)) = self.residual_add(&out, &shape) {
            let id = self.with_layout(id, true);
            conv.residual = Some(id);
            self.done[add] = true;
            out = self.out(add)?;
        }
        let out = self.fuse_act(out, &mut conv)?;
        conv.output = self.define(&out, shape, true);
        self.steps.push(Step::Conv(conv));
        Ok(())
    }

    /// The activation that alone reads a convolution's output, absorbed into its epilogue:
    /// Relu, Clip (ReLU6), Sigmoid, Sigmoid times its own input (SiLU), or the exporter's
    /// GELU chain.
    pub(super) fn fuse_act(&mut self, out: String, conv: &mut ConvStep) -> R<String> {
        if self.graph_outputs.contains(out.as_str()) {
            return Ok(out);
        }
        if let Some((nodes, y)) = self.gelu_chain(&out) {
            for k in nodes {
                self.done[k] = true;
            }
            conv.act = Unary::Gelu;
            return Ok(y);
        }
        let readers = self
            .consumers
            .get(out.as_str())
            .cloned()
            .unwrap_or_default();
        // SiLU as the exporter writes it: x read by a Sigmoid and by the Mul of both.
        if let [a, b] = readers[..] {
            for (sig, mul) in [(a, b), (b, a)] {
                let (ns, nm) = (&self.nodes[sig], &self.nodes[mul]);
                if ns.op_type == "Sigmoid"
                    && nm.op_type == "Mul"
                    && !self.done[sig]
                    && !self.done[mul]
                    && ns.output.first().is_some_and(|so| {
                        self.sole_consumer(so, "Mul") == Some(mul) && nm.input.contains(&out)
                    })
                {
                    conv.act = Unary::Swish;
                    self.done[sig] = true;
                    self.done[mul] = true;
                    return self.out(mul);
                }
            }
        }
        let [next] = readers[..] else {
            return Ok(out);
        };
        if self.done[next] {
            return Ok(out);
        }
        let (act, p) = match self.nodes[next].op_type.as_str() {
            "Relu" => (Unary::Relu, [0.0, 0.0]),
            "Clip" => {
                let (lo, hi) = self.clip_bounds(next)?;
                (Unary::Clip, [lo, hi])
            }
            // HardSwish and HardSigmoid stay separate steps: cuDNN's graph API cannot fuse them,
            // and on the H200 a split convolution cost more than the extra launch saved.
            "Sigmoid" => (Unary::Sigmoid, [0.0, 0.0]),
            // The exact GELU as one node (opset 20; the dynamo exporter writes it so), the same
            // epilogue as the erf chain the TorchScript exporter writes (`gelu_chain` above).
            "Gelu" => match activation_of(&self.nodes[next]) {
                Some(Ok((Unary::Gelu, ..))) => (Unary::Gelu, [0.0, 0.0]),
                _ => return Ok(out),
            },
            // A depthwise convolution runs on our kernel (or a split cuDNN call with our
            // epilogue), which applies any activation: one launch and one fp16 rounding less.
            _ if conv.is_depthwise() => match activation_of(&self.nodes[next]) {
                Some(Ok((u, p0, p1))) if u != Unary::Identity => (u, [p0, p1]),
                _ => return Ok(out),
            },
            _ => return Ok(out),
        };
        conv.act = act;
        conv.act_p = p;
        self.done[next] = true;
        self.out(next)
    }

    pub(super) fn conv_shape(&self, c: &ConvStep) -> Result<Dims, NodeError> {
        let Some([_, h, w]) = self.values[c.input].chw() else {
            return Err(NodeError::ConvInput);
        };
        let dim = |size: usize, k: usize, s: usize, p: usize, d: usize| {
            let span = d * (k - 1) + 1;
            (size + 2 * p)
                .checked_sub(span)
                .map(|v| v / s.max(1) + 1)
                .ok_or(NodeError::KernelLargerThanInput)
        };
        Ok(vec![
            c.cout,
            dim(h, c.kernel[0], c.stride[0], c.pad[0], c.dilation[0])?,
            dim(w, c.kernel[1], c.stride[1], c.pad[1], c.dilation[1])?,
        ])
    }

    /// y = γ (x − μ) / √(σ² + ε) + β per channel: `(scale, shift)`.
    pub(super) fn bn_params(&self, i: usize, channels: usize) -> R<(Vec<f32>, Vec<f32>)> {
        if self.nodes[i].input.len() != 5 {
            return Err(self.err(i, NodeError::BatchNormInputs));
        }
        let eps = attr_float(&self.nodes[i], "epsilon", 1e-5);
        let (gamma, beta, mean, var) = (
            self.floats(i, 1)?,
            self.floats(i, 2)?,
            self.floats(i, 3)?,
            self.floats(i, 4)?,
        );
        if [&gamma, &beta, &mean, &var]
            .iter()
            .any(|v| v.len() != channels)
        {
            return Err(self.err(i, NodeError::BatchNormParameters(channels)));
        }
        let scale: Vec<f32> = (0..channels)
            .map(|o| gamma[o] / (var[o] + eps).sqrt())
            .collect();
        let shift = (0..channels)
            .map(|o| beta[o] - mean[o] * scale[o])
            .collect();
        Ok((scale, shift))
    }

    fn fold_bn(&self, i: usize, conv: &mut ConvStep) -> R<()> {
        let (scale, shift) = self.bn_params(i, conv.cout)?;
        let per_out = conv.weight.len() / conv.cout;
        for o in 0..conv.cout {
            for w in &mut conv.weight[o * per_out..(o + 1) * per_out] {
                *w *= scale[o];
            }
            conv.bias[o] = conv.bias[o] * scale[o] + shift[o];
        }
        Ok(())
    }

    /// A BatchNormalization that follows no conv (DenseNet's pre-activation): x·scale + shift
    /// per channel, then the Relu after it if any.
    fn batch_norm(&mut self, i: usize) -> R<()> {
        let x = self.value(i, 0)?;
        let dims = self.values[x].dims.clone();
        let c = *dims
            .first()
            .ok_or_else(|| self.err(i, NodeError::ScalarInput))?;
        let (scale, shift) = self.bn_params(i, c)?;
        let mut cd = vec![c];
        cd.extend(std::iter::repeat_n(1, dims.len() - 1));
        let (sc, sh) = (self.new_const(cd.clone(), scale), self.new_const(cd, shift));
        let cl = self.values[x].channels_last;
        let out = self.out(i)?;
        let tmp = self.define(&format!("{out}#scaled"), dims.clone(), cl);
        self.map(MapStep {
            b: Some(Operand::Const(sc)),
            binary: Binary::Mul,
            ..MapStep::copy(x, tmp)
        });
        let (out, unary) = self.absorb_relu(out)?;
        let y = self.define(&out, dims, cl);
        self.map(MapStep {
            b: Some(Operand::Const(sh)),
            binary: Binary::Add,
            unary,
            ..MapStep::copy(tmp, y)
        });
        Ok(())
    }

    /// `bias_add`, taken into `conv`: the name its output now defines.
    pub(super) fn absorb_bias(&mut self, out: String, conv: &mut ConvStep) -> R<String> {
        match self.bias_add(&out, conv.cout) {
            Some((add, b)) => {
                conv.bias = b;
                self.done[add] = true;
                self.out(add)
            }
            None => Ok(out),
        }
    }
}
