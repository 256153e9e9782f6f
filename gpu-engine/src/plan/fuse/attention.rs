//! Attention in one step (fp16 plans): the builder makes `softmax(alpha · q · kᵀ) · v` three
//! steps (the scores' product, the Softmax, the product with v) between copies that put q, k
//! and v in the batch-first head layout cuBLAS reads and the output back in token order. ViT
//! spends more than half of each layer there (H200, batch 32: 0.30 of 0.53 ms). Fused, the
//! scores stay in registers, q, k and v are read where the copies read them (the packed
//! projection's output) and the result is written where the copy back wrote it.
//!
//! A copy is looked through when its element order maps onto the memory it reads as strides:
//! every dim of the operand is one dim of the copy's output scaled, within its bounds. The
//! copies that nothing reads any more are then dropped.

use super::super::view;
use super::super::{
    AttentionStep, Binary, HeadView, MapStep, MatMulStep, Operand, Plan, RowKind, Step, Unary,
};
use super::adds::ready;
use super::{sole_producer, writers};

/// Head sizes `attention.cu` is instantiated for.
pub const HEAD_DIMS: [usize; 4] = [16, 32, 64, 128];

pub(super) fn fuse_attention(plan: &mut Plan) {
    if !plan.channels_last {
        // fp32 plans are the reference mode: cuBLAS's products and the row kernel stay.
        return;
    }
    while let Some(f) = find(plan) {
        let at = f.pv;
        plan.steps[at] = Step::Attention(f.step);
        // Later indices first, so that the earlier ones stay valid.
        let mut gone = vec![f.scores, f.softmax];
        gone.extend(f.copy_back);
        gone.sort_unstable_by(|a, b| b.cmp(a));
        for i in gone {
            plan.steps.remove(i);
        }
        drop_dead_copies(plan);
    }
}

struct Found {
    scores: usize,
    softmax: usize,
    pv: usize,
    copy_back: Option<usize>,
    step: AttentionStep,
}

fn find(plan: &Plan) -> Option<Found> {
    for (r, step) in plan.steps.iter().enumerate() {
        let Step::Row(row) = step else { continue };
        if row.kind != RowKind::Softmax || row.axis != plan.values[row.input].dims.len() {
            continue;
        }
        let Some(s) = sole_producer(plan, row.input, r) else {
            continue;
        };
        let Step::MatMul(qk) = &plan.steps[s] else {
            continue;
        };
        let Some(pv) =
            (r + 1..plan.steps.len()).find(|&i| plan.steps[i].inputs().contains(&row.output))
        else {
            continue;
        };
        let Step::MatMul(pvm) = &plan.steps[pv] else {
            continue;
        };
        if sole_producer(plan, row.output, pv) != Some(r) {
            continue;
        }
        if let Some(f) = fused(plan, qk, s, r, pvm, pv) {
            return Some(f);
        }
    }
    None
}

fn fused(
    plan: &Plan,
    qk: &MatMulStep,
    s: usize,
    r: usize,
    pvm: &MatMulStep,
    pv: usize,
) -> Option<Found> {
    let (Operand::Value(k), Operand::Value(v)) = (qk.b, pvm.b) else {
        return None;
    };
    if !qk.b_trans || pvm.b_trans || pvm.alpha != 1.0 || pvm.a != plan.steps[r].output() {
        return None;
    }
    // [heads, rows, d] per item (or [rows, d]: one head).
    let heads_rows_d = |x: usize| -> Option<[usize; 3]> {
        match *plan.values[x].dims.as_slice() {
            [h, l, d] => Some([h, l, d]),
            [l, d] => Some([1, l, d]),
            _ => None,
        }
    };
    let [h, lq, d] = heads_rows_d(qk.a)?;
    let [hk, lk, dk] = heads_rows_d(k)?;
    let [hv, lv, dv] = heads_rows_d(v)?;
    if (hk, dk, hv, lv, dv) != (h, d, h, lk, d) || !HEAD_DIMS.contains(&d) {
        return None;
    }
    let q = look_through(plan, head_view(plan, qk.a)?, [h, lq, d], s);
    let kv = look_through(plan, head_view(plan, k)?, [h, lk, d], s);
    let vv = look_through(plan, head_view(plan, v)?, [h, lk, d], s);
    let (o, copy_back) = match copied_back(plan, pvm.output, [h, lq, d]) {
        Some((o, c)) => (o, Some(c)),
        None => (head_view(plan, pvm.output)?, None),
    };
    // 16-byte loads and stores of rows.
    let aligned = |x: &HeadView| {
        [x.offset, x.batch, x.head, x.row]
            .iter()
            .all(|s| s % 8 == 0)
    };
    if ![q, kv, vv, o].iter().all(aligned) {
        return None;
    }
    Some(Found {
        scores: s,
        softmax: r,
        pv,
        copy_back,
        step: AttentionStep {
            q,
            k: kv,
            v: vv,
            o,
            heads: h,
            lq,
            lk,
            d,
            alpha: qk.alpha,
        },
    })
}

/// A value of per-item dims `[heads, rows, d]` (or `[rows, d]`) as its own layout gives it, if
/// that is row-major (as the products read it).
fn head_view(plan: &Plan, x: usize) -> Option<HeadView> {
    let (full, strides) = view::value_layout(plan, x, 2);
    if strides != view::row_major(&full) {
        return None;
    }
    let item = plan.values[x].len() as i64;
    let (head, row) = match strides.as_slice() {
        [_, h, r, 1] => (*h, *r),
        [_, r, 1] => (0, *r),
        _ => return None,
    };
    Some(HeadView {
        value: x,
        offset: 0,
        batch: item,
        head,
        row,
    })
}

/// `x` (of `sizes`: heads, rows, d) followed back through pure copies (each written once, by a
/// copy that reads a value no step from it to `before` rewrites) as far as its element order
/// maps onto the copied memory.
fn look_through(plan: &Plan, mut x: HeadView, sizes: [usize; 3], before: usize) -> HeadView {
    loop {
        let root = plan.values[x.value].storage;
        let &[w] = writers(plan, root).as_slice() else {
            return x;
        };
        let Step::Map(m) = &plan.steps[w] else {
            return x;
        };
        let Operand::Value(src) = m.a else { return x };
        // The fused step reads `src` later than the copy did: nothing may rewrite it between.
        let src_fixed = ready(plan, Operand::Value(src), w);
        if !pure_copy(m) || m.output != root || w >= before || !src_fixed {
            return x;
        }
        match through(plan, m, &x, sizes) {
            Some(y) => x = HeadView { value: src, ..y },
            None => return x,
        }
    }
}

fn pure_copy(m: &MapStep) -> bool {
    m.binary == Binary::First
        && m.unary == Unary::Identity
        && m.b.is_none()
        && m.c.is_none()
        && m.region.is_empty()
        && m.shuffle.is_none()
}

/// One dim of a copy at batch 2: its size, the output's stride, the input's stride.
#[derive(Clone, Copy)]
struct Dim {
    size: i64,
    y: i64,
    a: i64,
}

/// A copy's dims larger than 1 at batch 2, outermost first in its output's memory, the index
/// of the batch among them, and the input's offset.
fn copy_dims(plan: &Plan, m: &MapStep) -> Option<(Vec<Dim>, usize, i64)> {
    let l = view::map(plan, m, 2, 2).ok()?;
    if l.y.offset != 0 {
        return None;
    }
    let dims: Vec<Dim> = (0..view::RANK)
        .filter(|&k| l.y.dims[k] > 1)
        .map(|k| Dim {
            size: l.y.dims[k] as i64,
            y: l.y.strides[k],
            a: l.a.strides[k],
        })
        .collect();
    // The output is dense: the batch is the one dim whose stride is the item's length.
    let item = plan.values[m.output].len() as i64;
    let batch = dims.iter().position(|d| d.y == item)?;
    Some((dims, batch, l.a.offset))
}

/// (stride, size) of an operand's batch (at 2), head, row and element dims.
fn extents(x: &HeadView, [h, l, d]: [usize; 3]) -> [(i64, i64); 4] {
    [
        (x.batch, 2),
        (x.head, h as i64),
        (x.row, l as i64),
        (1, d as i64),
    ]
}

/// `x`, an operand in copy `m`'s output memory, as an operand in the memory `m` reads: each of
/// its dims one dim of the copy's output, scaled, and within that dim's bounds.
fn through(plan: &Plan, m: &MapStep, x: &HeadView, sizes: [usize; 3]) -> Option<HeadView> {
    let (dims, batch, a_offset) = copy_dims(plan, m)?;
    // The offset's digit in each dim (the output is dense: mixed radix).
    let mut digits = vec![0i64; dims.len()];
    let mut rest = x.offset;
    for (i, d) in dims.iter().enumerate() {
        digits[i] = rest / d.y;
        rest %= d.y;
    }
    if rest != 0 {
        return None;
    }
    let mut reach = digits.clone();
    let mut new = [0i64; 4];
    for (j, (stride, size)) in extents(x, sizes).into_iter().enumerate() {
        if size <= 1 {
            continue;
        }
        // Outermost first: a one-digit stride has exactly one such dim.
        let k = dims
            .iter()
            .position(|d| stride % d.y == 0 && stride / d.y < d.size)?;
        let c = stride / dims[k].y;
        // The batch stays the batch, one for one, so the bounds checked at 2 hold at any size.
        if (j == 0) != (k == batch) || (j == 0 && c != 1) {
            return None;
        }
        reach[k] += (size - 1) * c;
        new[j] = c * dims[k].a;
    }
    if dims.iter().zip(&reach).any(|(d, &r)| r >= d.size) || new[3] != 1 {
        return None;
    }
    let offset = a_offset + digits.iter().zip(&dims).map(|(g, d)| g * d.a).sum::<i64>();
    Some(HeadView {
        value: x.value,
        offset,
        batch: new[0],
        head: new[1],
        row: new[2],
    })
}

/// If the product's output `w` (dense, of `sizes`) is read by one step only, a copy that
/// permutes it into memory of its own (every element once, nothing broadcast or dropped): the
/// output as an operand in that memory, and the copy's index.
fn copied_back(plan: &Plan, w: usize, sizes: [usize; 3]) -> Option<(HeadView, usize)> {
    let vals = &plan.values;
    if vals[plan.output].storage == w || vals[w].storage != w {
        return None;
    }
    let readers: Vec<usize> = (0..plan.steps.len())
        .filter(|&i| plan.steps[i].inputs().iter().any(|&v| vals[v].storage == w))
        .collect();
    let &[c] = readers.as_slice() else {
        return None;
    };
    let Step::Map(m) = &plan.steps[c] else {
        return None;
    };
    let Operand::Value(a) = m.a else { return None };
    if !pure_copy(m)
        || m.a_slice.is_some()
        || vals[a].storage != w
        || vals[m.output].storage != m.output
        || writers(plan, m.output) != [c]
    {
        return None;
    }
    let (dims, batch, a_offset) = copy_dims(plan, m)?;
    let wv = head_view(plan, w)?;
    if a_offset != 0 {
        return None;
    }
    let mut used = vec![false; dims.len()];
    let mut out = [0i64; 4];
    for (j, (stride, size)) in extents(&wv, sizes).into_iter().enumerate() {
        if size <= 1 {
            continue;
        }
        let k =
            (0..dims.len()).find(|&k| !used[k] && dims[k].a == stride && dims[k].size == size)?;
        if (j == 0) != (k == batch) {
            return None;
        }
        used[k] = true;
        out[j] = dims[k].y;
    }
    if used.iter().any(|u| !u) || out[3] != 1 {
        return None;
    }
    Some((
        HeadView {
            value: m.output,
            offset: 0,
            batch: out[0],
            head: out[1],
            row: out[2],
        },
        c,
    ))
}

/// Copies whose output no step reads and that are not the model's output.
fn drop_dead_copies(plan: &mut Plan) {
    loop {
        let vals = &plan.values;
        let read: std::collections::HashSet<usize> = plan
            .steps
            .iter()
            .flat_map(|s| s.inputs())
            .map(|v| vals[v].storage)
            .collect();
        let out = vals[plan.output].storage;
        let dead = plan.steps.iter().position(|s| {
            let root = vals[s.output()].storage;
            matches!(s, Step::Map(m) if pure_copy(m)) && root != out && !read.contains(&root)
        });
        match dead {
            Some(i) => {
                plan.steps.remove(i);
            }
            None => return,
        }
    }
}
