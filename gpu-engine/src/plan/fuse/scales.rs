//! Scalings of a whole map moved onto the small operand that scales it, so that a chain of
//! elementwise passes over the map becomes one:
//! - `(x · s) · k + c` (`s` a value far smaller than `x`, broadcast over it; `k` a constant
//!   that fits `s`'s shape) is `x · (s · k) + c`: `s · k` is a step over `s` alone;
//! - `x · s + c + x` (the same `x`) is `x · (s + 1) + c`.
//!
//! ConvNeXt V2's global response norm is `x + (w · (x · n) · 1 + b)` as TorchScript exports it
//! (`x + (w · (x · n) + b)` from the dynamo exporter): four passes over its largest maps
//! (160 × 56 × 56 at its first stage), now one, and two over the 160 values of `n`.

use super::super::{Binary, Const, MapStep, Operand, Plan, Step, Unary, Value};
use super::adds::ready;
use super::sole_producer;

pub(super) fn fold_scales(plan: &mut Plan) {
    while let Some((p, q, how)) = find(plan) {
        let Step::Map(m) = &plan.steps[p] else { break };
        let Some(Operand::Value(s)) = m.b else { break };
        // The new step over `s` alone, in `s`'s shape and layout.
        let small = plan.values.len();
        plan.values.push(Value {
            storage: small,
            ..plan.values[s].clone()
        });
        let (scale, c) = match how {
            How::Scale { k, c } => (
                MapStep {
                    b: Some(k),
                    binary: Binary::Mul,
                    ..MapStep::copy(s, small)
                },
                c,
            ),
            How::PlusOne => {
                plan.consts.push(Const {
                    dims: vec![1],
                    data: vec![1.0],
                });
                let one = Operand::Const(plan.consts.len() - 1);
                (
                    MapStep {
                        b: Some(one),
                        binary: Binary::Add,
                        ..MapStep::copy(s, small)
                    },
                    m.c,
                )
            }
        };
        // q > p: removing q first leaves p where it is; the new step goes before p.
        let Step::Map(outer) = plan.steps.remove(q) else {
            break;
        };
        if let Step::Map(m) = &mut plan.steps[p] {
            m.b = Some(Operand::Value(small));
            m.c = c;
            m.unary = outer.unary;
            m.p0 = outer.p0;
            m.p1 = outer.p1;
            m.output = outer.output;
        }
        plan.steps.insert(p, Step::Map(scale));
    }
}

/// How step q folds into step p (`x · s`).
enum How {
    /// q is `p · k + c`.
    Scale { k: Operand, c: Option<Operand> },
    /// q is `p + x` (p's own `x`).
    PlusOne,
}

/// The first (p, q, how) that can fold: p is `x · s (+ c)`, read by q alone.
fn find(plan: &Plan) -> Option<(usize, usize, How)> {
    for (q, step) in plan.steps.iter().enumerate() {
        let Step::Map(outer) = step else { continue };
        if !plain(outer) || outer.c.is_some() && outer.binary != Binary::Mul {
            continue;
        }
        let Some(ob) = outer.b else { continue };
        for (v, other) in [(outer.a, ob), (ob, outer.a)] {
            let Operand::Value(v) = v else { continue };
            let Some(p) = sole_producer(plan, v, q) else {
                continue;
            };
            let Step::Map(m) = &plan.steps[p] else {
                continue;
            };
            let Some((x, s)) = scaled(plan, m) else {
                continue;
            };
            if plan.values[outer.output].dims != plan.values[m.output].dims {
                continue;
            }
            match (outer.binary, other) {
                (Binary::Mul, Operand::Const(k))
                    if m.c.is_none()
                        && fits(&plan.consts[k].dims, &plan.values[s].dims)
                        && outer.c.is_none_or(|c| ready(plan, c, p)) =>
                {
                    let (k, c) = (Operand::Const(k), outer.c);
                    return Some((p, q, How::Scale { k, c }));
                }
                (Binary::Add, Operand::Value(o)) if o == x && outer.c.is_none() => {
                    return Some((p, q, How::PlusOne));
                }
                _ => {}
            }
        }
    }
    None
}

/// `x · s (+ c)` over the whole of `x`, `s` a value at most a quarter of `x`'s size: (x, s).
fn scaled(plan: &Plan, m: &MapStep) -> Option<(usize, usize)> {
    let (Operand::Value(x), Some(Operand::Value(s))) = (m.a, m.b) else {
        return None;
    };
    let (xv, sv, out) = (&plan.values[x], &plan.values[s], &plan.values[m.output]);
    let whole = xv.dims == out.dims && xv.channels_last == out.channels_last;
    (plain(m)
        && m.binary == Binary::Mul
        && m.unary == Unary::Identity
        && whole
        && sv.dims.len() == xv.dims.len()
        && 4 * sv.len() <= xv.len())
    .then_some((x, s))
}

/// Nothing moved, sliced or written in part.
fn plain(m: &MapStep) -> bool {
    m.perm_a.is_none() && m.a_slice.is_none() && m.shuffle.is_none() && m.region.is_empty()
}

/// Whether a constant of full dims `k` (batch axis first) broadcasts onto item dims `s`
/// without growing them.
fn fits(k: &[usize], s: &[usize]) -> bool {
    let full: Vec<usize> = std::iter::once(1).chain(s.iter().copied()).collect();
    k.len() <= full.len()
        && k.iter()
            .rev()
            .zip(full.iter().rev())
            .all(|(&kd, &sd)| kd == 1 || kd == sd)
}
