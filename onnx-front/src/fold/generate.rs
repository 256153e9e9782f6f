//! Ops on constants that make tensors: ConstantOfShape, Range.

use super::*;

pub(super) fn constant_of_shape(node: &pb::NodeProto, x: &Folded) -> Result<Folded, FoldError> {
    let dims: Vec<usize> = x.known_ints()?.iter().map(|&v| v.max(0) as usize).collect();
    let n = dims.iter().product();
    let fill = match attr(node, "value").and_then(|a| a.t.as_ref()) {
        Some(t) => tensor(t)?,
        None => Folded::Float(Const {
            dims: vec![1],
            data: vec![0.0],
        }),
    };
    Ok(fill.with(dims, |_| 0, n))
}

pub(super) fn range(known: &[&Folded]) -> Result<Folded, FoldError> {
    let (s, l, d) = (known[0].floats()?, known[1].floats()?, known[2].floats()?);
    let (s, l, d) = (s[0], l[0], d[0]);
    let n = ((l - s) / d).ceil().max(0.0) as usize;
    let data: Vec<f32> = (0..n).map(|i| s + i as f32 * d).collect();
    Ok(match known[0] {
        Folded::Int { .. } => Folded::Int {
            dims: vec![n],
            data: data.iter().map(|v| Sym::known(*v as i64)).collect(),
        },
        _ => Folded::Float(Const {
            dims: vec![n],
            data,
        }),
    })
}
