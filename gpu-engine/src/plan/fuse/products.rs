//! Steps folded into the matrix products that read them: a scale by one constant becomes the
//! product's `alpha`, a transpose of the right operand's last two axes becomes cuBLAS's
//! transposed read. PyTorch's attention export writes `q · s`, `kᵀ`, `kᵀ · s` before `q · kᵀ`:
//! three copies of the operands each layer that the product can do without.

use super::super::{Binary, MapStep, Operand, Plan, Step, Unary};
use super::sole_producer;

/// Folds, until none is left, every foldable step whose only reader is a product.
pub(super) fn fold_into_products(plan: &mut Plan) {
    while let Some((producer, product, fold)) = find(plan) {
        if let Step::MatMul(mm) = &mut plan.steps[product] {
            match fold {
                Fold::Scale { of, by, left } => {
                    mm.alpha *= by;
                    if left {
                        mm.a = of;
                    } else {
                        mm.b = Operand::Value(of);
                    }
                }
                Fold::Transpose { of } => {
                    mm.b = Operand::Value(of);
                    mm.b_trans = !mm.b_trans;
                }
            }
        }
        plan.steps.remove(producer);
    }
}

enum Fold {
    /// The operand is `of · by`.
    Scale { of: usize, by: f32, left: bool },
    /// The right operand is `of` with its last two axes swapped.
    Transpose { of: usize },
}

/// The first (producer step, product step, fold) the plan offers.
fn find(plan: &Plan) -> Option<(usize, usize, Fold)> {
    for (j, step) in plan.steps.iter().enumerate() {
        let Step::MatMul(mm) = step else { continue };
        // A product of a value with itself reads it twice: folding its producer into one
        // operand would leave the other without a writer.
        if mm.b == Operand::Value(mm.a) {
            continue;
        }
        let operands = [(mm.a, true)].into_iter().chain(match mm.b {
            Operand::Value(v) => Some((v, false)),
            Operand::Const(_) => None,
        });
        for (v, left) in operands {
            let Some(p) = sole_producer(plan, v, j) else {
                continue;
            };
            let Step::Map(m) = &plan.steps[p] else {
                continue;
            };
            if let Some((of, by)) = scale(plan, m, v) {
                return Some((p, j, Fold::Scale { of, by, left }));
            }
            if !left {
                if let Some(of) = transpose(plan, m, v) {
                    return Some((p, j, Fold::Transpose { of }));
                }
            }
        }
    }
    None
}

/// A plain elementwise step over the whole of `v`: no permutation, slice or region, no
/// function after the binary part.
fn plain(m: &MapStep) -> bool {
    m.unary == Unary::Identity && m.a_slice.is_none() && m.shuffle.is_none() && m.region.is_empty()
}

/// A source that can stand for `v` in a product: stored row-major in its logical order.
fn row_major_source(plan: &Plan, src: usize) -> bool {
    plan.values[src].is_row_major()
}

/// `v = src · c` (either order) with `c` one constant value and `src` of `v`'s shape.
fn scale(plan: &Plan, m: &MapStep, v: usize) -> Option<(usize, f32)> {
    if !plain(m) || m.perm_a.is_some() || m.binary != Binary::Mul {
        return None;
    }
    let (src, c) = match (m.a, m.b?) {
        (Operand::Value(s), Operand::Const(c)) | (Operand::Const(c), Operand::Value(s)) => (s, c),
        _ => return None,
    };
    let by = match plan.consts[c].data.as_slice() {
        [by] => *by,
        _ => return None,
    };
    (plan.values[src].dims == plan.values[v].dims && row_major_source(plan, src))
        .then_some((src, by))
}

/// `v = src` with the last two full axes swapped and nothing else moved.
fn transpose(plan: &Plan, m: &MapStep, v: usize) -> Option<usize> {
    if !plain(m) || m.binary != Binary::First || m.b.is_some() {
        return None;
    }
    let Operand::Value(src) = m.a else {
        return None;
    };
    let perm = m.perm_a.as_ref()?;
    let r = perm.len();
    let swapped = r >= 3
        && perm[r - 2] == r - 1
        && perm[r - 1] == r - 2
        && perm[..r - 2].iter().enumerate().all(|(i, &p)| i == p);
    let (sd, vd) = (&plan.values[src].dims, &plan.values[v].dims);
    let dims_swapped = sd.len() == vd.len()
        && sd.len() >= 2
        && sd[..sd.len() - 2] == vd[..vd.len() - 2]
        && sd[sd.len() - 1] == vd[vd.len() - 2]
        && sd[sd.len() - 2] == vd[vd.len() - 1];
    (swapped && dims_swapped && row_major_source(plan, src)).then_some(src)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Const, MatMulStep, Value};

    fn value(dims: &[usize], id: usize) -> Value {
        Value {
            dims: dims.to_vec(),
            channels_last: false,
            storage: id,
        }
    }

    fn copy(a: Operand, b: Option<Operand>, binary: Binary, output: usize) -> Step {
        Step::Map(MapStep {
            a,
            b,
            binary,
            ..MapStep::copy(0, output)
        })
    }

    /// q [4, 3] and k [4, 3] per item → q·s · (kᵀ·s), as the attention export writes it.
    fn attention_scores(k_read_twice: bool) -> Plan {
        let values = vec![
            value(&[4, 3], 0),
            value(&[4, 3], 1), // q·s
            value(&[3, 4], 2), // kᵀ
            value(&[3, 4], 3), // kᵀ·s
            value(&[4, 4], 4), // scores
            value(&[3, 4], 5), // kᵀ + 1 (another reader of kᵀ)
        ];
        let consts = vec![Const {
            dims: vec![],
            data: vec![0.5],
        }];
        let mut transpose = copy(Operand::Value(0), None, Binary::First, 2);
        if let Step::Map(m) = &mut transpose {
            m.perm_a = Some(vec![0, 2, 1]);
        }
        let mut steps = vec![
            copy(Operand::Value(0), Some(Operand::Const(0)), Binary::Mul, 1),
            transpose,
            copy(Operand::Value(2), Some(Operand::Const(0)), Binary::Mul, 3),
            Step::MatMul(MatMulStep::new(1, Operand::Value(3), 4)),
        ];
        if k_read_twice {
            steps.push(copy(
                Operand::Value(2),
                Some(Operand::Const(0)),
                Binary::Add,
                5,
            ));
        }
        Plan {
            input: [1, 4, 3],
            input_padded_c: 1,
            channels_last: false,
            values,
            consts,
            steps,
            output: 4,
        }
    }

    #[test]
    fn scales_and_the_right_transpose_fold_into_the_product() {
        let mut plan = attention_scores(false);
        fold_into_products(&mut plan);
        // q·s, kᵀ·s and kᵀ all fold: one product of the input with itself, transposed.
        assert_eq!(plan.steps.len(), 1, "{:?}", plan.steps);
        let Step::MatMul(mm) = &plan.steps[0] else {
            panic!("{:?}", plan.steps)
        };
        assert_eq!(
            (mm.a, mm.b, mm.alpha, mm.b_trans),
            (0, Operand::Value(0), 0.25, true)
        );
    }

    #[test]
    fn a_product_of_a_value_with_itself_keeps_its_producer() {
        // (x·s) · (x·s) on square [4, 4] items: the scale cannot fold into one operand only.
        let mut plan = attention_scores(false);
        for v in [0, 1, 4] {
            plan.values[v].dims = vec![4, 4];
        }
        plan.steps = vec![
            copy(Operand::Value(0), Some(Operand::Const(0)), Binary::Mul, 1),
            Step::MatMul(MatMulStep::new(1, Operand::Value(1), 4)),
        ];
        let before = plan.steps.clone();
        fold_into_products(&mut plan);
        assert_eq!(plan.steps, before);
    }

    #[test]
    fn a_step_with_another_reader_stays() {
        let mut plan = attention_scores(true);
        fold_into_products(&mut plan);
        // kᵀ·s folds (its only reader is the product); kᵀ itself is read by the Add too.
        let Some(Step::MatMul(mm)) = plan.steps.iter().find(|s| matches!(s, Step::MatMul(_)))
        else {
            panic!("{:?}", plan.steps)
        };
        assert_eq!(
            (mm.a, mm.b, mm.alpha, mm.b_trans),
            (0, Operand::Value(2), 0.25, false)
        );
        assert_eq!(plan.steps.len(), 3);
    }
}
