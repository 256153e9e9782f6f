//! An Add folded into the elementwise step that computes one of its operands: `y = unary(p + x)`
//! where `p = binary(a, b)` is read by that Add alone becomes one step `y = unary(binary(a, b) +
//! x)`, one pass over memory instead of two. PyTorch's exports have it in every pre-activation
//! BatchNorm (`x · s`, then `+ t` and ReLU: densenet) and after every transformer product (the
//! bias, then the residual: ViT).

use super::super::{Binary, MapStep, Operand, Plan, Step, Unary};
use super::{sole_producer, writers};

pub(super) fn fold_adds(plan: &mut Plan) {
    while let Some((p, q, x)) = find(plan) {
        // p < q: removing the Add leaves p where it is.
        if let (Step::Map(add), Step::Map(m)) = (plan.steps.remove(q), &mut plan.steps[p]) {
            m.c = Some(x);
            m.unary = add.unary;
            m.p0 = add.p0;
            m.p1 = add.p1;
            m.output = add.output;
        }
    }
}

/// The first (step p, its Add q, the Add's other operand) that can merge.
fn find(plan: &Plan) -> Option<(usize, usize, Operand)> {
    for (q, step) in plan.steps.iter().enumerate() {
        let Step::Map(add) = step else { continue };
        if !whole_add(add) {
            continue;
        }
        let Some(other) = add.b else { continue };
        for (v, x) in [(add.a, other), (other, add.a)] {
            let Operand::Value(v) = v else { continue };
            if x == Operand::Value(v) || plan.values[add.output].dims != plan.values[v].dims {
                continue;
            }
            let Some(p) = sole_producer(plan, v, q) else {
                continue;
            };
            let Step::Map(m) = &plan.steps[p] else {
                continue;
            };
            if m.c.is_none()
                && m.unary == Unary::Identity
                && m.region.is_empty()
                && ready(plan, x, p)
            {
                return Some((p, q, x));
            }
        }
    }
    None
}

/// An Add of two operands over its whole output, nothing moved.
fn whole_add(m: &MapStep) -> bool {
    m.binary == Binary::Add
        && m.c.is_none()
        && m.perm_a.is_none()
        && m.a_slice.is_none()
        && m.shuffle.is_none()
        && m.region.is_empty()
}

/// Whether operand `x` holds its value already when step `p` runs: no step from `p` on
/// writes its memory (under any of its names).
pub(super) fn ready(plan: &Plan, x: Operand, p: usize) -> bool {
    match x {
        Operand::Const(_) => true,
        Operand::Value(x) => writers(plan, plan.values[x].storage).iter().all(|&i| i < p),
    }
}
