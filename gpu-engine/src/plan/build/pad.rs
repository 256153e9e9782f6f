//! Pad (constant, reflect, edge) as a copy into a larger value.

use super::*;

pub(super) const OPS: &[(&str, Lower)] = &[("Pad", |b, i| b.pad(i))];

impl Builder<'_> {
    /// Pad in constant mode (a zero width moves nothing: timm's Swin and MaxViT export such
    /// Pads where their windows already divide the map).
    fn pad(&mut self, i: usize) -> R<()> {
        let form = |b: &Self, why: String| b.err(i, NodeError::PadForm(why));
        let mode = attr(&self.nodes[i], "mode")
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
            .unwrap_or_else(|| "constant".into());
        let pads = self.ints_arg(i, 1, "pads")?.unwrap_or_default();
        if pads.iter().all(|&p| p == 0) {
            return self.pass_through(i);
        }
        if mode != "constant" {
            return Err(form(self, format!("mode \"{mode}\"")));
        }
        let x = self.value(i, 0)?;
        let rank = self.values[x].dims.len() + 1;
        // Opset 18's `axes` input names the padded axes; before, pads cover every axis.
        let axes: Vec<usize> = match self.ints_arg(i, 3, "axes")? {
            Some(a) => a
                .iter()
                .map(|&a| fold::axis(a, rank))
                .collect::<Result<_, _>>()
                .map_err(|e| self.err(i, e))?,
            None => (0..rank).collect(),
        };
        if pads.len() != 2 * axes.len() || pads.iter().any(|&p| p < 0) {
            return Err(form(self, format!("pads {pads:?}")));
        }
        let (mut begin, mut end) = (vec![0; rank], vec![0; rank]);
        for (k, &a) in axes.iter().enumerate() {
            begin[a] = pads[k] as usize;
            end[a] = pads[k + axes.len()] as usize;
        }
        if begin[0] + end[0] > 0 {
            return Err(form(self, format!("pads {pads:?} on the batch")));
        }
        let value = match self.nodes[i].input.get(2).filter(|s| !s.is_empty()) {
            Some(_) => self.floats(i, 2)?.first().copied().unwrap_or(0.0),
            None => attr_float(&self.nodes[i], "value", 0.0),
        };
        let out = self.out(i)?;
        let padded = self.pad_copy(&out, x, &begin[1..], &end[1..], value);
        self.value_of.insert(out, padded);
        Ok(())
    }

    /// `x` with `begin[k]` and `end[k]` values of `value` around item axis `k`, in `x`'s
    /// layout: the border written slab by slab (each padded side, full across the other
    /// axes), then `x` copied into the middle, every padded axis at once. Each output element
    /// is written once (corners twice) and `x` read once: TF-style "same" padding before each
    /// stride-2 convolution of tf_efficientnet_b0 was two fills and two copies of the whole
    /// map per padded axis.
    pub(super) fn pad_copy(
        &mut self,
        name: &str,
        x: usize,
        begin: &[usize],
        end: &[usize],
        value: f32,
    ) -> usize {
        if begin.iter().chain(end).all(|&p| p == 0) {
            return x;
        }
        let cl = self.values[x].channels_last;
        let xd = self.values[x].dims.clone();
        let dims: Dims = (0..xd.len()).map(|k| xd[k] + begin[k] + end[k]).collect();
        let padded = self.define(name, dims, cl);
        let fill = self.new_const(vec![1], vec![value]);
        let mut middle = Vec::new();
        for k in 0..xd.len() {
            if begin[k] + end[k] == 0 {
                continue;
            }
            for (at, len) in [(0, begin[k]), (begin[k] + xd[k], end[k])] {
                if len > 0 {
                    self.map(MapStep {
                        a: Operand::Const(fill),
                        region: vec![(k + 1, at, len)],
                        ..MapStep::copy(x, padded)
                    });
                }
            }
            middle.push((k + 1, begin[k], xd[k]));
        }
        self.map(MapStep {
            region: middle,
            ..MapStep::copy(x, padded)
        });
        padded
    }
}
