//! Concat, Split and Slice: parts of a value along one axis, read and written through views.

use super::*;

/// ONNX Slice's `start`, `end` (negative: from the end; clamped) and positive `step` along a
/// dim of `n`: the first element taken and how many.
pub(super) fn slice_range(n: usize, start: i64, end: i64, step: i64) -> (usize, usize) {
    let n = n as i64;
    let fix = |v: i64| (if v < 0 { v.saturating_add(n) } else { v }).clamp(0, n);
    let (s, e) = (fix(start), fix(end));
    let len = if e > s { (e - s + step - 1) / step } else { 0 };
    (s as usize, len as usize)
}

pub(super) const OPS: &[(&str, Lower)] = &[
    ("Concat", |b, i| b.concat(i)),
    ("Split", |b, i| b.split(i)),
    ("Slice", |b, i| b.slice(i)),
];

impl Builder<'_> {
    fn concat(&mut self, i: usize) -> R<()> {
        let n = self.nodes[i].input.len();
        let mut parts = Vec::with_capacity(n);
        for k in 0..n {
            let v = self.value(i, k)?;
            parts.push(self.materialise(v));
        }
        let first = self.values[parts[0]].dims.clone();
        let rank = first.len() + 1;
        let axis =
            fold::axis(attr_int(&self.nodes[i], "axis", 0), rank).map_err(|e| self.err(i, e))?;
        if axis == 0 {
            return Err(self.err(i, NodeError::ConcatBatch));
        }
        let mut dims = first.clone();
        dims[axis - 1] = 0;
        for &p in &parts {
            let d = &self.values[p].dims;
            let same = d.len() == first.len()
                && d.iter()
                    .zip(&first)
                    .enumerate()
                    .all(|(k, (a, b))| k == axis - 1 || a == b);
            if !same {
                return Err(self.err(
                    i,
                    NodeError::ConcatShapes {
                        a: first,
                        b: d.clone(),
                    },
                ));
            }
            dims[axis - 1] += d[axis - 1];
        }
        let cl = self.values[parts[0]].channels_last;
        let out = self.out(i)?;
        let output = self.define(&out, dims, cl || rank == 4);
        let out_cl = self.values[output].channels_last;
        // One storage order (and an axis longer than 1, so that it has its own place in it):
        // each launch copies up to CONCAT_MAX_PARTS parts.
        if self.values[output].dims[axis - 1] > 1
            && parts
                .iter()
                .all(|&p| self.values[p].channels_last == out_cl)
        {
            let mut at = 0;
            for group in parts.chunks(CONCAT_MAX_PARTS) {
                self.steps.push(Step::Concat(ConcatStep {
                    parts: group.to_vec(),
                    output,
                    axis,
                    at,
                }));
                at += group
                    .iter()
                    .map(|&p| self.values[p].dims[axis - 1])
                    .sum::<usize>();
            }
            return Ok(());
        }
        let mut at = 0;
        for p in parts {
            let len = self.values[p].dims[axis - 1];
            self.map(MapStep {
                region: vec![(axis, at, len)],
                ..MapStep::copy(p, output)
            });
            at += len;
        }
        Ok(())
    }

    /// Copies `len` elements of `x` along a full axis, from `start` every `step`-th
    /// (`a_slice`: `(axis, start, step)`), into a new value `name` (of `x` channel-shuffled,
    /// `MapStep::shuffle`, when `shuffle` is given).
    pub(super) fn slice_to(
        &mut self,
        name: &str,
        x: usize,
        a_slice: (usize, usize, usize),
        len: usize,
        shuffle: Option<(usize, usize)>,
    ) -> usize {
        let mut dims = self.values[x].dims.clone();
        dims[a_slice.0 - 1] = len;
        let cl = self.values[x].channels_last;
        let output = self.define(name, dims, cl);
        self.map(MapStep {
            a_slice: Some(a_slice),
            shuffle,
            ..MapStep::copy(x, output)
        });
        output
    }

    /// A Split's part sizes along an axis of `total`: given (input 1 or the `split`
    /// attribute), else equal parts for the outputs.
    pub(super) fn split_sizes(&self, i: usize, total: usize) -> R<Vec<usize>> {
        let outs = self.nodes[i].output.len();
        let sizes: Vec<usize> = match self.ints_arg(i, 1, "split")? {
            Some(s) => s.iter().map(|&v| v.max(0) as usize).collect(),
            None => fold::equal_parts(total, outs),
        };
        if sizes.len() != outs || sizes.iter().sum::<usize>() != total {
            return Err(self.err(i, NodeError::SplitSizes { sizes, total }));
        }
        Ok(sizes)
    }

    fn split(&mut self, i: usize) -> R<()> {
        let input = self.input(i, 0)?;
        let shuffled = self.shuffled.get(input).copied();
        let x = match shuffled {
            Some((src, _)) => src,
            None => {
                let x = self.value(i, 0)?;
                self.materialise(x)
            }
        };
        let dims = self.values[x].dims.clone();
        let rank = dims.len() + 1;
        let axis =
            fold::axis(attr_int(&self.nodes[i], "axis", 0), rank).map_err(|e| self.err(i, e))?;
        if axis == 0 {
            return Err(self.err(i, NodeError::SplitBatch));
        }
        let outs: Vec<String> = self.nodes[i].output.clone();
        let total = dims[axis - 1];
        let sizes = self.split_sizes(i, total)?;
        // Parts of a channel shuffle are copied from the value shuffled when they fall on whole
        // groups; otherwise the shuffle is copied first, once.
        let (x, shuffle) = match shuffled {
            Some((src, g)) if axis == 1 && sizes.iter().all(|s| s.is_multiple_of(g)) => {
                (src, Some(g))
            }
            Some((src, g)) => {
                self.shuffled.remove(input);
                (self.shuffle_copy(input, src, g), None)
            }
            None => (x, None),
        };
        let mut at = 0;
        for (name, len) in outs.iter().zip(sizes) {
            if !name.is_empty() {
                self.slice_to(name, x, (axis, at, 1), len, shuffle.map(|g| (axis, g)));
            }
            at += len;
        }
        Ok(())
    }

    /// A Slice's `(full axis, start, end, step)` per sliced axis, for a tensor of `rank`
    /// (batch included); starts and ends as written (negative, past the end).
    pub(super) fn slice_args(&self, i: usize, rank: usize) -> R<Vec<(usize, i64, i64, i64)>> {
        let ints = |k: usize| -> R<Option<Vec<i64>>> {
            match self.nodes[i].input.get(k).filter(|s| !s.is_empty()) {
                Some(_) => Ok(Some(
                    self.folded(i, k)?
                        .known_ints()
                        .map_err(|e| self.err(i, e))?,
                )),
                None => Ok(None),
            }
        };
        let (starts, ends) = (ints(1)?.unwrap_or_default(), ints(2)?.unwrap_or_default());
        let axes = ints(3)?.unwrap_or_else(|| (0..starts.len() as i64).collect());
        let steps = ints(4)?.unwrap_or_else(|| vec![1; starts.len()]);
        axes.iter()
            .enumerate()
            .map(|(k, &a)| {
                let a = fold::axis(a, rank).map_err(|e| self.err(i, e))?;
                match (starts.get(k), ends.get(k)) {
                    (Some(&s), Some(&e)) => Ok((a, s, e, steps.get(k).copied().unwrap_or(1))),
                    _ => Err(self.err(i, NodeError::SliceForm)),
                }
            })
            .collect()
    }

    fn slice(&mut self, i: usize) -> R<()> {
        let x = self.value(i, 0)?;
        let x = self.materialise(x);
        let rank = self.values[x].dims.len() + 1;
        let args = self.slice_args(i, rank)?;
        let mut cur = x;
        let out = self.out(i)?;
        for (k, &(a, start, end, step)) in args.iter().enumerate() {
            if a == 0 || step < 1 {
                return Err(self.err(i, NodeError::SliceForm));
            }
            let (s, len) = slice_range(self.values[cur].dims[a - 1], start, end, step);
            let name = if k + 1 == args.len() {
                out.clone()
            } else {
                format!("{out}#slice{k}")
            };
            cur = self.slice_to(&name, cur, (a, s, step as usize), len, None);
        }
        if args.is_empty() {
            self.value_of.insert(out, x);
        }
        Ok(())
    }
}
