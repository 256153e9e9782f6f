//! `Einsum` on constants: timm's MaxViT computes its relative-position tables with it, from
//! weights only, so the exporter leaves an Einsum of two initializers.

use super::{attr, Const, FoldError, Folded};

/// Evaluates `equation` (`"nixw,jyw->nijxy"`: one letter per axis, no ellipsis) on float
/// operands, summing over the letters the output leaves out.
pub(super) fn einsum(node: &super::pb::NodeProto, known: &[&Folded]) -> Result<Folded, FoldError> {
    let equation = attr(node, "equation")
        .map(|a| String::from_utf8_lossy(&a.s).replace(' ', ""))
        .unwrap_or_default();
    let bad = || FoldError::NotFoldable(format!("Einsum \"{equation}\""));
    let (inputs, output) = equation.split_once("->").ok_or_else(bad)?;
    let terms: Vec<&str> = inputs.split(',').collect();
    if terms.len() != known.len() || equation.contains('.') {
        return Err(bad());
    }
    // Each letter's size, checked across the operands.
    let mut size: Vec<(char, usize)> = Vec::new();
    for (term, x) in terms.iter().zip(known) {
        if term.chars().count() != x.dims().len() {
            return Err(bad());
        }
        for (ch, &d) in term.chars().zip(x.dims()) {
            match size.iter().find(|(c, _)| *c == ch) {
                Some(&(_, s)) if s != d => return Err(bad()),
                Some(_) => {}
                None => size.push((ch, d)),
            }
        }
    }
    let out_letters: Vec<char> = output.chars().collect();
    let summed: Vec<char> = size
        .iter()
        .map(|(c, _)| *c)
        .filter(|c| !out_letters.contains(c))
        .collect();
    let size_of = |c: char| size.iter().find(|(l, _)| *l == c).map(|(_, s)| *s);
    let out_dims: Vec<usize> = out_letters
        .iter()
        .map(|&c| size_of(c).ok_or_else(bad))
        .collect::<Result<_, _>>()?;
    let sum_dims: Vec<usize> = summed.iter().filter_map(|&c| size_of(c)).collect();
    let values: Vec<Vec<f32>> = known.iter().map(|x| x.floats()).collect::<Result<_, _>>()?;
    // Per operand, the stride of each letter (0 where it does not index the operand).
    let strides: Vec<Vec<(char, usize)>> = terms
        .iter()
        .zip(known)
        .map(|(term, x)| {
            let d = x.dims();
            term.chars()
                .enumerate()
                .map(|(k, c)| (c, d[k + 1..].iter().product()))
                .collect()
        })
        .collect();
    let offset = |op: usize, letter: &[(char, usize)]| -> usize {
        strides[op]
            .iter()
            .map(|(c, s)| {
                letter
                    .iter()
                    .find(|(l, _)| l == c)
                    .map_or(0, |(_, v)| v * s)
            })
            .sum()
    };
    let n: usize = out_dims.iter().product();
    let m: usize = sum_dims.iter().product();
    let coords = |mut i: usize, letters: &[char], dims: &[usize]| -> Vec<(char, usize)> {
        let mut v = vec![(' ', 0); letters.len()];
        for k in (0..letters.len()).rev() {
            v[k] = (letters[k], i % dims[k]);
            i /= dims[k];
        }
        v
    };
    let mut data = Vec::with_capacity(n);
    for o in 0..n {
        let mut at = coords(o, &out_letters, &out_dims);
        let base = at.len();
        let mut acc = 0.0f64;
        for s in 0..m {
            at.truncate(base);
            at.extend(coords(s, &summed, &sum_dims));
            acc += (0..values.len())
                .map(|op| values[op][offset(op, &at)] as f64)
                .product::<f64>();
        }
        data.push(acc as f32);
    }
    Ok(Folded::Float(Const {
        dims: out_dims,
        data,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(dims: &[usize], data: Vec<f32>) -> Folded {
        Folded::Float(Const {
            dims: dims.to_vec(),
            data,
        })
    }

    fn node(equation: &str) -> super::super::pb::NodeProto {
        super::super::pb::NodeProto {
            op_type: "Einsum".into(),
            attribute: vec![super::super::pb::AttributeProto {
                name: "equation".into(),
                s: equation.as_bytes().to_vec(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_matrix_product_and_maxvits_relative_position_form() {
        let a = floats(&[2, 3], vec![1., 2., 3., 4., 5., 6.]);
        let b = floats(&[3, 2], vec![1., 0., 0., 1., 1., 1.]);
        let Folded::Float(y) = einsum(&node("ij,jk->ik"), &[&a, &b]).unwrap() else {
            panic!()
        };
        assert_eq!((y.dims, y.data), (vec![2, 2], vec![4., 5., 10., 11.]));

        // y[n,i,j,x,y] = Σ_w a[n,i,x,w] · b[j,y,w], against the sum written out.
        let (n, i, x, w, j, yy) = (2, 3, 2, 4, 3, 2);
        let av: Vec<f32> = (0..n * i * x * w).map(|v| (v % 7) as f32 - 3.0).collect();
        let bv: Vec<f32> = (0..j * yy * w).map(|v| (v % 5) as f32 * 0.5).collect();
        let a = floats(&[n, i, x, w], av.clone());
        let b = floats(&[j, yy, w], bv.clone());
        let Folded::Float(got) = einsum(&node("nixw, jyw -> nijxy"), &[&a, &b]).unwrap() else {
            panic!()
        };
        assert_eq!(got.dims, vec![n, i, j, x, yy]);
        let mut k = 0;
        for a0 in 0..n {
            for a1 in 0..i {
                for a2 in 0..j {
                    for a3 in 0..x {
                        for a4 in 0..yy {
                            let want: f32 = (0..w)
                                .map(|q| {
                                    av[((a0 * i + a1) * x + a3) * w + q]
                                        * bv[(a2 * yy + a4) * w + q]
                                })
                                .sum();
                            assert_eq!(got.data[k], want);
                            k += 1;
                        }
                    }
                }
            }
        }
        assert!(einsum(&node("...i,i->"), &[&a, &b]).is_err());
    }
}
