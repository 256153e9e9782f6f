//! Ops on constants that move or pick elements: Unsqueeze, Squeeze, Reshape, Flatten,
//! Transpose, Gather, Concat, Slice, Expand.

use super::*;

pub(super) fn unsqueeze(node: &pb::NodeProto, known: &[&Folded]) -> Result<Folded, FoldError> {
    let x = known[0];
    let axes = axes_arg(node, known)?;
    let r = x.dims().len() + axes.len();
    let mut ax = axes
        .iter()
        .map(|&a| axis(a, r))
        .collect::<Result<Vec<_>, _>>()?;
    ax.sort_unstable();
    let mut dims = x.dims().to_vec();
    for a in ax {
        dims.insert(a, 1);
    }
    Ok(x.with(dims, |i| i, x.len()))
}

pub(super) fn squeeze(node: &pb::NodeProto, known: &[&Folded]) -> Result<Folded, FoldError> {
    let x = known[0];
    let r = x.dims().len();
    let axes = axes_arg(node, known)?;
    let ax = axes
        .iter()
        .map(|&a| axis(a, r))
        .collect::<Result<Vec<_>, _>>()?;
    let dims = x
        .dims()
        .iter()
        .enumerate()
        .filter(|(i, d)| {
            if ax.is_empty() {
                **d != 1
            } else {
                !ax.contains(i)
            }
        })
        .map(|(_, d)| *d)
        .collect();
    Ok(x.with(dims, |i| i, x.len()))
}

/// Reshape (target from input 1) or Flatten (`axis`).
pub(super) fn reshape(node: &pb::NodeProto, known: &[&Folded]) -> Result<Folded, FoldError> {
    let (op, x) = (node.op_type.as_str(), known[0]);
    let dims = if op == "Flatten" {
        let a = axis(attr_int(node, "axis", 1), x.dims().len() + 1)?;
        let (l, r) = x.dims().split_at(a.min(x.dims().len()));
        vec![l.iter().product(), r.iter().product()]
    } else {
        let target = known
            .get(1)
            .ok_or(FoldError::ReshapeWithoutShape)?
            .known_ints()?;
        reshape_dims(x.dims(), &target, attr_int(node, "allowzero", 0) != 0)?
    };
    Ok(x.with(dims, |i| i, x.len()))
}

pub(super) fn transpose(node: &pb::NodeProto, x: &Folded) -> Result<Folded, FoldError> {
    let d = x.dims().to_vec();
    let perm: Vec<usize> = match attr_ints(node, "perm") {
        Some(p) => p
            .iter()
            .map(|&a| axis(a, d.len()))
            .collect::<Result<_, _>>()?,
        None => (0..d.len()).rev().collect(),
    };
    let out: Vec<usize> = perm.iter().map(|&p| d[p]).collect();
    let (is, os) = (strides(&d), strides(&out));
    Ok(x.with(
        out.clone(),
        |i| {
            let mut rem = i;
            let mut src = 0;
            for (k, s) in os.iter().enumerate() {
                src += (rem / s) * is[perm[k]];
                rem %= s;
            }
            src
        },
        x.len(),
    ))
}

/// Gather along one axis, indices from input 1 (negative ones from the end).
pub(super) fn gather(node: &pb::NodeProto, known: &[&Folded]) -> Result<Folded, FoldError> {
    let x = known[0];
    let idx = known.get(1).ok_or(FoldError::GatherWithoutIndices)?;
    let d = x.dims().to_vec();
    let a = axis(attr_int(node, "axis", 0), d.len())?;
    let ids: Vec<usize> = idx
        .known_ints()?
        .iter()
        .map(|&v| {
            let v = if v < 0 { v + d[a] as i64 } else { v };
            if (0..d[a] as i64).contains(&v) {
                Ok(v as usize)
            } else {
                Err(FoldError::GatherIndex {
                    index: v,
                    len: d[a],
                })
            }
        })
        .collect::<Result<_, _>>()?;
    let mut out: Vec<usize> = d[..a].to_vec();
    out.extend(idx.dims());
    out.extend(&d[a + 1..]);
    let inner: usize = d[a + 1..].iter().product();
    let n: usize = out.iter().product();
    let per = ids.len() * inner;
    Ok(x.with(
        out,
        |i| {
            let (o, rest) = (i / per.max(1), i % per.max(1));
            let (j, k) = (rest / inner.max(1), rest % inner.max(1));
            (o * d[a] + ids[j]) * inner + k
        },
        n,
    ))
}

/// Concat: integers when every part is, floats otherwise.
pub(super) fn concat(node: &pb::NodeProto, known: &[&Folded]) -> Result<Folded, FoldError> {
    let x = known[0];
    let r = x.dims().len();
    let a = axis(attr_int(node, "axis", 0), r)?;
    let mut dims = x.dims().to_vec();
    dims[a] = known
        .iter()
        .map(|k| k.dims().get(a).copied().unwrap_or(0))
        .sum();
    let outer: usize = dims[..a].iter().product();
    let ints = known.iter().all(|k| matches!(k, Folded::Int { .. }));
    let mut fl = Vec::new();
    let mut is = Vec::new();
    for o in 0..outer {
        for k in known {
            let chunk: usize = k.dims()[a..].iter().product();
            if ints {
                is.extend_from_slice(&k.ints()[o * chunk..(o + 1) * chunk]);
            } else {
                fl.extend_from_slice(&k.floats()?[o * chunk..(o + 1) * chunk]);
            }
        }
    }
    Ok(if ints {
        Folded::Int { dims, data: is }
    } else {
        Folded::Float(Const { dims, data: fl })
    })
}

/// Slice, any step (starts/ends from inputs, or attributes before opset 10).
pub(super) fn slice(node: &pb::NodeProto, known: &[&Folded]) -> Result<Folded, FoldError> {
    let x = known[0];
    let d = x.dims().to_vec();
    let get = |k: usize| -> Result<Option<Vec<i64>>, FoldError> {
        match known.get(k) {
            Some(v) => v.known_ints().map(Some),
            None => Ok(None),
        }
    };
    let (starts, ends) = match (get(1)?, get(2)?) {
        (Some(s), Some(e)) => (s, e),
        _ => (
            attr_ints(node, "starts").unwrap_or_default(),
            attr_ints(node, "ends").unwrap_or_default(),
        ),
    };
    let axes = get(3)?
        .or_else(|| attr_ints(node, "axes"))
        .unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = get(4)?.unwrap_or_else(|| vec![1; starts.len()]);
    let mut ranges: Vec<Vec<usize>> = d.iter().map(|&n| (0..n).collect()).collect();
    for (k, &ax) in axes.iter().enumerate() {
        let a = axis(ax, d.len())?;
        let n = d[a] as i64;
        let step = steps.get(k).copied().unwrap_or(1);
        if step == 0 {
            return Err(FoldError::SliceStepZero);
        }
        let fix = |v: i64, lo: i64, hi: i64| (if v < 0 { v + n } else { v }).clamp(lo, hi);
        let mut idx = Vec::new();
        if step > 0 {
            let (s, e) = (fix(starts[k], 0, n), fix(ends[k], 0, n));
            let mut i = s;
            while i < e {
                idx.push(i as usize);
                i += step;
            }
        } else {
            let (s, e) = (fix(starts[k], -1, n - 1), fix(ends[k], -1, n - 1));
            let mut i = s;
            while i > e {
                idx.push(i as usize);
                i += step;
            }
        }
        ranges[a] = idx;
    }
    let out: Vec<usize> = ranges.iter().map(Vec::len).collect();
    let (is, os) = (strides(&d), strides(&out));
    let n = out.iter().product();
    Ok(x.with(
        out,
        |i| {
            let mut rem = i;
            let mut src = 0;
            for (k, s) in os.iter().enumerate() {
                src += ranges[k][rem / s] * is[k];
                rem %= s;
            }
            src
        },
        n,
    ))
}

/// Expand to a known target; `None` where the target holds the batch (an activation: the
/// builder's broadcast copy).
pub(super) fn expand(x: &Folded, shape: &Folded) -> Result<Option<Folded>, FoldError> {
    // A batch-sized target makes an activation: the builder's broadcast copy.
    let Ok(shape) = shape.known_ints() else {
        return Ok(None);
    };
    let target: Vec<usize> = shape.iter().map(|&v| v.max(0) as usize).collect();
    let out = broadcast(x.dims(), &target)?;
    let n = out.iter().product();
    let xd = x.dims().to_vec();
    let o2 = out.clone();
    Ok(Some(x.with(out, move |i| broadcast_index(i, &o2, &xd), n)))
}
