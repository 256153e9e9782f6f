//! Elementwise ops on constants: casts, binary and unary arithmetic (integer shape arithmetic
//! keeps the batch symbol), Clip, Where.

use super::*;

/// Cast: FLOAT, FLOAT16, DOUBLE and BFLOAT16 give floats, every other type integers.
pub(super) fn cast(node: &pb::NodeProto, x: &Folded) -> Result<Folded, FoldError> {
    let to = attr_int(node, "to", 1);
    // FLOAT, FLOAT16, DOUBLE, BFLOAT16 become floats; everything else integers.
    Ok(if matches!(to, 1 | 10 | 11 | 16) {
        match x {
            Folded::Float(_) => x.clone(),
            Folded::Int { dims, .. } => Folded::Float(Const {
                dims: dims.clone(),
                data: x.floats()?,
            }),
        }
    } else {
        Folded::Int {
            dims: x.dims().to_vec(),
            data: x.ints(),
        }
    })
}

/// A binary op, ONNX broadcasting: on integers (shape arithmetic, the batch symbol kept) or
/// floats.
pub(super) fn binary(op: &str, a: &Folded, b: &Folded) -> Result<Folded, FoldError> {
    let out = broadcast(a.dims(), b.dims())?;
    let n: usize = out.iter().product();
    Ok(match (a, b) {
        (Folded::Int { data: da, dims: ad }, Folded::Int { data: db, dims: bd }) if op != "Pow" => {
            let data = (0..n)
                .map(|i| {
                    sym_bin(
                        op,
                        da[broadcast_index(i, &out, ad)],
                        db[broadcast_index(i, &out, bd)],
                    )
                })
                .collect::<Result<Vec<_>, _>>()?;
            Folded::Int { dims: out, data }
        }
        _ => {
            let (fa, fb) = (a.floats()?, b.floats()?);
            let data = (0..n)
                .map(|i| {
                    float_bin(
                        op,
                        fa[broadcast_index(i, &out, a.dims())],
                        fb[broadcast_index(i, &out, b.dims())],
                    )
                })
                .collect::<Result<Vec<_>, _>>()?;
            Folded::Float(Const { dims: out, data })
        }
    })
}

/// A unary op: integer Neg, Floor, Ceil, Abs and Relu stay integers.
pub(super) fn unary(op: &str, x: &Folded) -> Result<Folded, FoldError> {
    Ok(match x {
        Folded::Int { dims, data } if op == "Neg" => Folded::Int {
            dims: dims.clone(),
            data: data.iter().map(|s| Sym { n: -s.n, c: -s.c }).collect(),
        },
        Folded::Int { .. } if matches!(op, "Floor" | "Ceil") => x.clone(),
        Folded::Int { dims, .. } if matches!(op, "Abs" | "Relu") => Folded::Int {
            dims: dims.clone(),
            data: x
                .known_ints()?
                .into_iter()
                .map(|v| Sym::known(if op == "Abs" { v.abs() } else { v.max(0) }))
                .collect(),
        },
        _ => Folded::Float(Const {
            dims: x.dims().to_vec(),
            data: x
                .floats()?
                .into_iter()
                .map(|v| float_unary(op, v).unwrap_or(f32::NAN))
                .collect(),
        }),
    })
}

/// Clip, bounds from inputs 1 and 2 or (opset < 11) attributes. On constants: timm's
/// TF-style "same" padding computes its pads with it.
pub(super) fn clip(
    node: &pb::NodeProto,
    inputs: &[Option<&Folded>],
    x: &Folded,
) -> Result<Folded, FoldError> {
    let bound = |k: usize, name: &str, default: f32| -> Result<f32, FoldError> {
        match inputs.get(k).copied().flatten() {
            Some(b) => b.floats()?.first().copied().ok_or(FoldError::ClipBound),
            None => Ok(attr_float(node, name, default)),
        }
    };
    let (lo, hi) = (bound(1, "min", f32::MIN)?, bound(2, "max", f32::MAX)?);
    Ok(match x {
        Folded::Int { dims, .. } => Folded::Int {
            dims: dims.clone(),
            data: x
                .known_ints()?
                .into_iter()
                // max then min, as for floats: no panic where min > max.
                .map(|v| Sym::known(v.max(lo as i64).min(hi as i64)))
                .collect(),
        },
        Folded::Float(c) => Folded::Float(Const {
            dims: c.dims.clone(),
            data: c.data.iter().map(|v| v.max(lo).min(hi)).collect(),
        }),
    })
}

/// Where over broadcast condition and branches.
pub(super) fn select_where(c: &Folded, a: &Folded, b: &Folded) -> Result<Folded, FoldError> {
    let out = broadcast(&broadcast(c.dims(), a.dims())?, b.dims())?;
    let cv = c.ints();
    let pick = |i: usize| cv[broadcast_index(i, &out, c.dims())].c != 0;
    Ok(match (a, b) {
        (Folded::Int { .. }, Folded::Int { .. }) => Folded::Int {
            data: select(&out, pick, (&a.ints(), a.dims()), (&b.ints(), b.dims())),
            dims: out,
        },
        _ => Folded::Float(Const {
            data: select(
                &out,
                pick,
                (&a.floats()?, a.dims()),
                (&b.floats()?, b.dims()),
            ),
            dims: out,
        }),
    })
}
