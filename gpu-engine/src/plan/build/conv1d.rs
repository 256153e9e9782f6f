//! 1-D convolutions (the ECA channel attention of timm's NFNets and ECA-ResNets: a `Conv1d`
//! over `[N, 1, C]`) as 2-D ones of height 1: the input read as `[C, 1, L]`, the weights as
//! `[O, I, 1, K]`, the output named back as `[O, L']`. No fusion: the ops after it see ONNX's
//! rank-3 shape, which a fused epilogue would not keep.

use super::*;

impl<'a> Builder<'a> {
    pub(super) fn conv1d(&mut self, i: usize, x: usize) -> R<()> {
        let nodes = self.nodes;
        let node = &nodes[i];
        let &[c, l] = self.values[x].dims.as_slice() else {
            return Err(self.err(i, NodeError::ConvRank(self.values[x].dims.clone())));
        };
        let w = self.folded(i, 1)?;
        let w_dims = w.dims().to_vec();
        let weight = w.floats().map_err(|e| self.err(i, e))?;
        let [cout, _, k] = w_dims[..] else {
            return Err(self.err(i, NodeError::ConvWeightRank(w_dims)));
        };
        let (groups, bias) = self.conv_groups_and_bias(i, &w_dims, c)?;
        self.check_auto_pad(i)?;
        let one = |attribute: &'static str| -> R<usize> {
            match attr_ints(node, attribute).as_deref() {
                None => Ok(1),
                Some([v]) if *v > 0 => Ok(*v as usize),
                Some(v) => Err(self.err(
                    i,
                    NodeError::Pair {
                        attribute,
                        values: v.to_vec(),
                    },
                )),
            }
        };
        let (stride, dilation) = (one("strides")?, one("dilations")?);
        let (begin, end) = match attr_ints(node, "pads").as_deref() {
            None | Some([]) => (0, 0),
            Some([b, e]) if *b >= 0 && *e >= 0 => (*b as usize, *e as usize),
            Some(p) => return Err(self.err(i, NodeError::Pads(p.to_vec()))),
        };
        let out = self.out(i)?;
        let xr = self.row_major(x);
        let x2 = self.alias(&format!("{out}#2d-input"), xr, vec![c, 1, l], false);
        let x2 = self.with_layout(x2, true);
        let sym = begin.min(end);
        let x2 = if begin != end {
            let name = format!("{out}#padded");
            self.pad_copy(&name, x2, &[0, 0, begin - sym], &[0, 0, end - sym], 0.0)
        } else {
            x2
        };
        let mut conv = ConvStep {
            name: self.label(i),
            input: x2,
            residual: None,
            output: 0,
            cin: c,
            cout,
            kernel: [1, k],
            stride: [1, stride],
            pad: [0, sym],
            dilation: [1, dilation],
            groups,
            act: Unary::Identity,
            act_p: [0.0, 0.0],
            weight,
            bias,
        };
        let shape = self.conv_shape(&conv).map_err(|e| self.err(i, e))?;
        let len = shape[2];
        conv.output = self.define(&format!("{out}#2d"), shape, true);
        let y = conv.output;
        self.steps.push(Step::Conv(conv));
        let y = self.row_major(y);
        self.alias(&out, y, vec![cout, len], false);
        Ok(())
    }
}
