//! Scalings of a whole map moved onto the small operand that scales it, so that a chain of
//! elementwise passes over the map becomes one:
//! - `(x · s) · k + c` (`s` a value far smaller than `x`, broadcast over it; `k` a constant
//!   broadcast over it too, `s · k` still far smaller than `x`) is `x · (s · k) + c`: `s · k`
//!   is a step over `s · k`'s few values alone;
//! - `x · s + c + x` (the same `x`) is `x · (s + 1) + c`.
//!
//! ConvNeXt V2's global response norm is `x + (w · (x · n) · 1 + b)` as TorchScript exports it
//! (`x + (w · (x · n) + b)` from the dynamo exporter): four passes over its largest maps
//! (160 × 56 × 56 at its first stage), now one, and two over the 160 values of `n`. A
//! normalisation over the whole item followed by a per-channel scale (PoolFormer's GroupNorm:
//! `(x − mean) · (1/σ)` then `· w + b`) is one pass, `(x − mean) · (w/σ) + b`.

use super::super::{Binary, Const, MapStep, Operand, Plan, Step, Unary, Value};
use super::adds::ready;
use super::sole_producer;

pub(super) fn fold_scales(plan: &mut Plan) {
    while let Some((p, q, how)) = find(plan) {
        let Step::Map(m) = &plan.steps[p] else { break };
        let Some(Operand::Value(s)) = m.b else { break };
        // The new step over `s` alone, in `s`'s shape and layout.
        let small = plan.values.len();
        let mut value = Value {
            storage: small,
            ..plan.values[s].clone()
        };
        if let How::Scale { dims, .. } = &how {
            value.channels_last &= dims.len() == 3;
            value.dims = dims.clone();
        }
        plan.values.push(value);
        let (scale, c) = match how {
            How::Scale { k, c, .. } => (
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
    /// q is `p · k + c`; `dims`: the item dims of `s · k`.
    Scale {
        k: Operand,
        c: Option<Operand>,
        dims: Vec<usize>,
    },
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
            let small = |d: &[usize]| 4 * d.iter().product::<usize>() <= plan.values[x].len();
            if plan.values[outer.output].dims != plan.values[m.output].dims {
                continue;
            }
            match (outer.binary, other) {
                (Binary::Mul, Operand::Const(k)) if m.c.is_none() => {
                    let grown = grown(&plan.consts[k].dims, &plan.values[s].dims)
                        .filter(|d| small(d) && d.len() == plan.values[x].dims.len());
                    if let Some(dims) = grown.filter(|_| outer.c.is_none_or(|c| ready(plan, c, p)))
                    {
                        let (k, c) = (Operand::Const(k), outer.c);
                        return Some((p, q, How::Scale { k, c, dims }));
                    }
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

/// The item dims of `s · k`: a constant of full dims `k` (batch axis first, 1) broadcast with
/// a value of item dims `s`; None where they do not broadcast or `k` has a batch of its own.
fn grown(k: &[usize], s: &[usize]) -> Option<Vec<usize>> {
    if k.len() > s.len() + 1 || (k.len() == s.len() + 1 && k[0] != 1) {
        return None;
    }
    let mut dims = s.to_vec();
    for (d, &kd) in dims.iter_mut().rev().zip(k.iter().rev()) {
        match (*d, kd) {
            (a, b) if a == b || b == 1 => {}
            (1, b) => *d = b,
            _ => return None,
        }
    }
    Some(dims)
}
