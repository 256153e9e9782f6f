//! `GatherND` on constants: timm's LeViT indexes its attention-bias table with it, both the
//! table and the indices being weights.

use super::{attr_int, FoldError, Folded};

/// `batch_dims = 0`: `indices` `[…, k]` picks `data[i0, …, ik−1]` slices.
pub(super) fn gather_nd(
    node: &super::pb::NodeProto,
    data: &Folded,
    indices: &Folded,
) -> Result<Folded, FoldError> {
    if attr_int(node, "batch_dims", 0) != 0 {
        return Err(FoldError::NotFoldable("GatherND with batch_dims".into()));
    }
    let d = data.dims().to_vec();
    let (&k, outer) = indices
        .dims()
        .split_last()
        .ok_or_else(|| FoldError::NotFoldable("GatherND of scalar indices".into()))?;
    if k > d.len() {
        return Err(FoldError::NotFoldable(format!(
            "GatherND of {k}-tuples into rank {}",
            d.len()
        )));
    }
    let ids = indices.known_ints()?;
    let inner: usize = d[k..].iter().product();
    // The flat start of each picked slice.
    let starts: Vec<usize> = ids
        .chunks(k.max(1))
        .map(|tuple| {
            tuple
                .iter()
                .zip(&d)
                .enumerate()
                .try_fold(0usize, |acc, (a, (&v, &len))| {
                    let v = if v < 0 { v + len as i64 } else { v };
                    if !(0..len as i64).contains(&v) {
                        return Err(FoldError::GatherIndex { index: v, len });
                    }
                    let stride: usize = d[a + 1..].iter().product();
                    Ok(acc + v as usize * stride)
                })
        })
        .collect::<Result<_, _>>()?;
    let mut out = outer.to_vec();
    out.extend(&d[k..]);
    let n: usize = out.iter().product();
    Ok(data.with(out, |i| starts[i / inner.max(1)] + i % inner.max(1), n))
}

#[cfg(test)]
mod tests {
    use super::super::{Const, Sym};
    use super::*;

    #[test]
    fn picks_rows_and_elements() {
        let data = Folded::Float(Const {
            dims: vec![3, 2],
            data: vec![0., 1., 10., 11., 20., 21.],
        });
        let idx = |dims: Vec<usize>, v: &[i64]| Folded::Int {
            dims,
            data: v.iter().map(|&x| Sym::known(x)).collect(),
        };
        let node = super::super::pb::NodeProto::default();
        let Folded::Float(rows) = gather_nd(&node, &data, &idx(vec![2, 1], &[2, -3])).unwrap()
        else {
            panic!()
        };
        assert_eq!((rows.dims, rows.data), (vec![2, 2], vec![20., 21., 0., 1.]));
        let Folded::Float(one) = gather_nd(&node, &data, &idx(vec![2, 2], &[1, 1, 2, 0])).unwrap()
        else {
            panic!()
        };
        assert_eq!((one.dims, one.data), (vec![2], vec![11., 20.]));
        assert!(gather_nd(&node, &data, &idx(vec![1, 1], &[3])).is_err());
    }
}
