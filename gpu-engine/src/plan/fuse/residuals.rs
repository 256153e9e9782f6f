//! Elementwise tails folded into the convolution that computes their operand, where the build
//! could not see them there (other nodes stand between, moving no data):
//! - a residual Add: ViT's attention output projection is a Gemm on rows the exporter moved
//!   (sequence first); its Add comes once the rows are regrouped batch first again;
//! - a per-channel scale, with or without a residual Add after it: ConvNeXt's layer scale
//!   `γ · block(x) + x`, behind the permute back to NCHW. The scale goes into the weights and
//!   bias, the Add into the epilogue.
//!
//! The convolution then writes where the step wrote: one pass over memory fewer each.

use super::super::{Binary, Operand, Plan, Step, Unary, Value};
use super::adds::ready;
use super::writers;

pub(super) fn fold_conv_tails(plan: &mut Plan) {
    while let Some(t) = find(plan) {
        let Step::Map(m) = plan.steps.remove(t.q) else {
            return;
        };
        let residual = t.x.map(|x| {
            let y = plan.steps[t.p].output();
            plan.values.push(Value {
                dims: plan.values[y].dims.clone(),
                channels_last: plan.values[y].channels_last,
                storage: plan.values[x].storage,
            });
            plan.values.len() - 1
        });
        let Step::Conv(conv) = &mut plan.steps[t.p] else {
            return;
        };
        if let Some(s) = t.scale {
            let per = conv.weight.len() / conv.cout.max(1);
            for (o, s) in s.iter().enumerate() {
                conv.weight[o * per..(o + 1) * per]
                    .iter_mut()
                    .for_each(|w| *w *= s);
                conv.bias[o] *= s;
            }
        }
        conv.residual = residual;
        // The step's output (and whatever aliases it) is now the convolution's memory.
        let y = conv.output;
        for v in plan.values.iter_mut() {
            if v.storage == m.output {
                v.storage = y;
            }
        }
    }
}

struct Tail {
    /// The convolution and the step folded into it.
    p: usize,
    q: usize,
    /// Per output channel.
    scale: Option<Vec<f32>>,
    /// The residual operand.
    x: Option<usize>,
}

fn find(plan: &Plan) -> Option<Tail> {
    for (q, step) in plan.steps.iter().enumerate() {
        let Step::Map(m) = step else { continue };
        // Over the whole output, nothing moved (an Add with a third operand is refused below).
        if !matches!(m.binary, Binary::Add | Binary::Mul)
            || m.unary != Unary::Identity
            || m.perm_a.is_some()
            || m.a_slice.is_some()
            || m.shuffle.is_some()
            || !m.region.is_empty()
        {
            continue;
        }
        let found = match (m.binary, m.a, m.b, m.c) {
            // a + b
            (Binary::Add, Operand::Value(a), Some(Operand::Value(b)), None) => [(a, b), (b, a)]
                .into_iter()
                .find_map(|(v, x)| Some((conv_of(plan, q, m.output, v, Some(x))?, v, x)))
                .map(|(p, _, x)| Tail {
                    p,
                    q,
                    scale: None,
                    x: Some(x),
                }),
            // γ · v [+ x]
            (Binary::Mul, Operand::Value(v), Some(Operand::Const(k)), c)
            | (Binary::Mul, Operand::Const(k), Some(Operand::Value(v)), c) => {
                let x = match c {
                    None => None,
                    Some(Operand::Value(x)) => Some(x),
                    Some(Operand::Const(_)) => continue,
                };
                conv_of(plan, q, m.output, v, x).and_then(|p| {
                    Some(Tail {
                        p,
                        q,
                        scale: Some(channel_scale(plan, v, k)?),
                        x,
                    })
                })
            }
            _ => None,
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

/// The convolution writing `v`'s memory, if the step at `q` (reading `v` and `x`, writing
/// `out`) can become its epilogue: the same dims and element order for all three (an alias of
/// the convolution's memory keeps its order), no broadcasting, the step the only reader of
/// that memory, and `x` ready before the convolution runs.
fn conv_of(plan: &Plan, q: usize, out: usize, v: usize, x: Option<usize>) -> Option<usize> {
    let vals = &plan.values;
    let root = vals[v].storage;
    let same =
        |w: usize| vals[w].dims == vals[v].dims && vals[w].channels_last == vals[v].channels_last;
    if vals[out].storage != out || root == 0 || !same(out) {
        return None;
    }
    if x.is_some_and(|x| vals[x].storage == root || !same(x)) {
        return None;
    }
    // The model's output must stay where the plan put it.
    if vals[plan.output].storage == root {
        return None;
    }
    let &[p] = writers(plan, root).as_slice() else {
        return None;
    };
    let Step::Conv(c) = &plan.steps[p] else {
        return None;
    };
    if p >= q || c.residual.is_some() || c.act != Unary::Identity || c.output != root {
        return None;
    }
    let readers = plan
        .steps
        .iter()
        .filter(|s| s.inputs().iter().any(|&w| vals[w].storage == root))
        .count();
    let x_ready = x.is_none_or(|x| ready(plan, Operand::Value(x), p));
    (readers == 1 && x_ready).then_some(p)
}

/// Constant `k` as one factor per output channel of the convolution whose memory `v` is, if it
/// varies along that channel alone (ONNX broadcasting against `v`'s dims).
fn channel_scale(plan: &Plan, v: usize, k: usize) -> Option<Vec<f32>> {
    let vals = &plan.values;
    let root = &vals[vals[v].storage];
    let cout = root.dims.first().copied()?;
    let rank = vals[v].dims.len();
    let konst = &plan.consts[k];
    let mut d: Vec<usize> = konst.dims.clone();
    while d.len() > rank && d.first() == Some(&1) {
        d.remove(0);
    }
    if d.len() > rank {
        return None;
    }
    let mut full = vec![1; rank - d.len()];
    full.extend(d);
    if full.iter().all(|&e| e == 1) {
        return Some(vec![*konst.data.first()?; cout]);
    }
    // The channel is the innermost stored axis of an NHWC map: dim 0 of an NHWC alias, the
    // last dim of a row-major one. Of an NCHW map, dim 0 of the map itself.
    let axis = match (root.channels_last, vals[v].channels_last) {
        (true, true) => 0,
        (true, false) => rank - 1,
        (false, _) if vals[v].storage == v => 0,
        _ => return None,
    };
    let only_channel = full
        .iter()
        .enumerate()
        .all(|(i, &e)| if i == axis { e == cout } else { e == 1 });
    (only_channel && vals[v].dims.get(axis) == Some(&cout)).then(|| konst.data.clone())
}
