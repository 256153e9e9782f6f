//! Resize and Upsample (nearest and linear, as PyTorch's `interpolate` exports them).

use super::*;

pub(super) const OPS: &[(&str, Lower)] = &[
    ("Resize", |b, i| b.resize(i)),
    ("Upsample", |b, i| b.resize(i)),
];

impl Builder<'_> {
    /// Resize (and the older Upsample) in nearest mode by whole factors, as `interpolate(…,
    /// scale_factor = 2, mode = "nearest")` exports for HRNet's fusion layers: with a whole
    /// factor every coordinate mode reads input pixel `⌊i / f⌋`, so the output is the input
    /// broadcast over a factor axis after each of H and W: one copy.
    fn resize(&mut self, i: usize) -> R<()> {
        let x = self.value(i, 0)?;
        let dims = self.values[x].dims.clone();
        let form = |b: &Self, why: String| b.err(i, NodeError::ResizeForm(why));
        let mode = attr(&self.nodes[i], "mode")
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
            .unwrap_or_else(|| "nearest".into());
        if mode != "nearest" {
            return Err(form(self, format!("mode \"{mode}\"")));
        }
        let &[c, h, w] = dims.as_slice() else {
            return Err(form(self, format!("an input of item dims {dims:?}")));
        };
        // Upsample: [X, scales]; Resize 11+: [X, roi, scales, sizes]; Resize 10: [X, scales].
        let inputs = &self.nodes[i].input;
        let given = |k: usize| inputs.get(k).filter(|s| !s.is_empty()).is_some();
        let (scales_at, sizes_at) = if self.nodes[i].op_type == "Upsample" || inputs.len() == 2 {
            (Some(1), None)
        } else {
            (given(2).then_some(2), given(3).then_some(3))
        };
        let factors: Vec<f64> = match (scales_at, sizes_at) {
            (_, Some(k)) => {
                let sizes = self.folded(i, k)?.ints();
                let item: Vec<i64> = sizes.iter().skip(1).filter_map(|s| s.value()).collect();
                if sizes.len() != 4 || item.len() != 3 {
                    return Err(form(self, format!("sizes {sizes:?}")));
                }
                let mut f = vec![1.0];
                f.extend(item.iter().zip(&dims).map(|(&o, &d)| o as f64 / d as f64));
                f
            }
            (Some(k), None) => {
                let s = self.folded(i, k)?.floats().map_err(|e| self.err(i, e))?;
                s.iter().map(|&v| v as f64).collect()
            }
            (None, None) => return Err(form(self, "neither scales nor sizes".into())),
        };
        let whole = |f: f64| (f >= 1.0 && f.fract() == 0.0).then_some(f as usize);
        let (Some(1), Some(1), Some(fh), Some(fw)) = (
            factors.first().copied().and_then(whole),
            factors.get(1).copied().and_then(whole),
            factors.get(2).copied().and_then(whole),
            factors.get(3).copied().and_then(whole),
        ) else {
            return Err(form(self, format!("scales {factors:?}")));
        };
        let out = self.out(i)?;
        let xr = self.row_major(x);
        let spread = self.alias(&format!("{out}#spread"), xr, vec![c, h, 1, w, 1], false);
        let up = self.define(&format!("{out}#up"), vec![c, h, fh, w, fw], false);
        self.map(MapStep::copy(spread, up));
        self.alias(&out, up, vec![c, h * fh, w * fw], false);
        Ok(())
    }
}
