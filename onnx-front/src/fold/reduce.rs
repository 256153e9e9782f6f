//! Reductions and BatchNormalization on constants: NFNet's scaled weight standardisation
//! (timm's `ScaledStdConv2d`) normalises each convolution's weights with them at run time,
//! which the dynamo exporter writes as nodes over the initializers.

use super::{attr_float, attr_int, axis, strides, Const, FoldError, Folded};

/// ReduceMean, ReduceSum, ReduceMax, ReduceMin over `axes` (every axis when empty, unless
/// `noop_with_empty_axes`).
pub(super) fn reduce(
    node: &super::pb::NodeProto,
    x: &Folded,
    axes: Option<Vec<i64>>,
) -> Result<Folded, FoldError> {
    let dims = x.dims().to_vec();
    let data = x.floats()?;
    let mut axes: Vec<usize> = axes
        .unwrap_or_default()
        .iter()
        .map(|&a| axis(a, dims.len()))
        .collect::<Result<_, _>>()?;
    if axes.is_empty() {
        if attr_int(node, "noop_with_empty_axes", 0) != 0 {
            return Ok(x.clone());
        }
        axes = (0..dims.len()).collect();
    }
    let kept: Vec<usize> = dims
        .iter()
        .enumerate()
        .map(|(a, &d)| if axes.contains(&a) { 1 } else { d })
        .collect();
    let (xs, ks) = (strides(&dims), strides(&kept));
    let n: usize = kept.iter().product();
    let op = node.op_type.as_str();
    let init = match op {
        "ReduceMax" => f32::NEG_INFINITY,
        "ReduceMin" => f32::INFINITY,
        _ => 0.0,
    };
    let mut acc = vec![init; n];
    for (i, &v) in data.iter().enumerate() {
        // The kept index of element i: its coordinates with the reduced axes at 0.
        let mut rem = i;
        let mut k = 0;
        for (a, &s) in xs.iter().enumerate() {
            let c = rem / s;
            rem %= s;
            if !axes.contains(&a) {
                k += c * ks[a];
            }
        }
        acc[k] = match op {
            "ReduceMax" => acc[k].max(v),
            "ReduceMin" => acc[k].min(v),
            _ => acc[k] + v,
        };
    }
    if op == "ReduceMean" {
        let count = (data.len() / n.max(1)).max(1) as f32;
        acc.iter_mut().for_each(|v| *v /= count);
    }
    let out_dims = if attr_int(node, "keepdims", 1) != 0 {
        kept
    } else {
        dims.iter()
            .enumerate()
            .filter(|(a, _)| !axes.contains(a))
            .map(|(_, &d)| d)
            .collect()
    };
    Ok(Folded::Float(Const {
        dims: out_dims,
        data: acc,
    }))
}

/// BatchNormalization (inference form) over axis 1 of a constant.
pub(super) fn batch_norm(
    node: &super::pb::NodeProto,
    known: &[&Folded],
) -> Result<Folded, FoldError> {
    let [x, scale, bias, mean, var] = known else {
        return Err(FoldError::NotFoldable(
            "BatchNormalization without its 5 inputs".into(),
        ));
    };
    let dims = x.dims().to_vec();
    let c = dims.get(1).copied().unwrap_or(1);
    let inner: usize = dims.get(2..).map_or(1, |d| d.iter().product());
    let p = |f: &Folded| -> Result<Vec<f32>, FoldError> {
        let v = f.floats()?;
        if v.len() == c {
            Ok(v)
        } else {
            Err(FoldError::NotFoldable(format!(
                "BatchNormalization parameters of {} values for {c} channels",
                v.len()
            )))
        }
    };
    let (scale, bias, mean, var) = (p(scale)?, p(bias)?, p(mean)?, p(var)?);
    let eps = attr_float(node, "epsilon", 1e-5);
    let data = x
        .floats()?
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let ch = (i / inner.max(1)) % c.max(1);
            (v - mean[ch]) / (var[ch] + eps).sqrt() * scale[ch] + bias[ch]
        })
        .collect();
    Ok(Folded::Float(Const { dims, data }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str, keepdims: i64) -> super::super::pb::NodeProto {
        super::super::pb::NodeProto {
            op_type: op.into(),
            attribute: vec![crate::modelgen::attr_int("keepdims", keepdims)],
            ..Default::default()
        }
    }

    #[test]
    fn reductions_and_batch_norm_on_constants() {
        let x = Folded::Float(Const {
            dims: vec![2, 3],
            data: vec![1., 2., 3., 4., 5., 9.],
        });
        let get = |f: Folded| match f {
            Folded::Float(c) => (c.dims, c.data),
            Folded::Int { .. } => panic!("ints"),
        };
        let mean = reduce(&node("ReduceMean", 1), &x, Some(vec![1])).unwrap();
        assert_eq!(get(mean), (vec![2, 1], vec![2., 6.]));
        let max = reduce(&node("ReduceMax", 0), &x, Some(vec![0])).unwrap();
        assert_eq!(get(max), (vec![3], vec![4., 5., 9.]));
        let sum = reduce(&node("ReduceSum", 0), &x, None).unwrap();
        assert_eq!(get(sum), (vec![], vec![24.]));

        let c = |v: Vec<f32>| {
            Folded::Float(Const {
                dims: vec![3],
                data: v,
            })
        };
        let (scale, bias) = (c(vec![1., 2., 1.]), c(vec![0., 1., 0.]));
        let (m, var) = (c(vec![1., 2., 3.]), c(vec![4., 1., 0.25]));
        let mut bn = node("BatchNormalization", 1);
        bn.attribute = vec![crate::modelgen::attr_float("epsilon", 0.0)];
        let y = batch_norm(&bn, &[&x, &scale, &bias, &m, &var]).unwrap();
        assert_eq!(get(y), (vec![2, 3], vec![0., 1., 0., 1.5, 7., 12.]));
    }
}
