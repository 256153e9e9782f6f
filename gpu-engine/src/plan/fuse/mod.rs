//! Passes over a built plan that merge steps the node-by-node build could not see together:
//! scales and transposes into the matrix products that read them (`products`), elementwise
//! tails into the convolution that computes their operand (`residuals`), Adds into the
//! elementwise step computing an operand (`adds`), scalings of a whole map onto the small
//! value that scales it (`scales`), and attention into one step (`attention`).

mod adds;
mod attention;
mod products;
mod residuals;
mod scales;

pub use attention::HEAD_DIMS;

use super::Plan;

/// Runs the passes in the order each needs: the products' folds first (attention looks for
/// products already reading their operands in place), attention last.
pub(super) fn fuse(plan: &mut Plan) {
    products::fold_into_products(plan);
    residuals::fold_conv_tails(plan);
    // After the Adds: a shift folded into its product is a `+ c` the scalings carry along.
    adds::fold_adds(plan);
    scales::fold_scales(plan);
    attention::fuse_attention(plan);
}

/// The steps writing memory `root` (under any of its names: a value and its aliases).
fn writers(plan: &Plan, root: usize) -> Vec<usize> {
    (0..plan.steps.len())
        .filter(|&i| plan.values[plan.steps[i].output()].storage == root)
        .collect()
}

/// The step writing `v` when step `reader` is its only reader, `v` owns its memory, no other
/// value sharing it is read or written (an alias the builder left pending and nothing reads
/// does not count) and it is not the plan's output or input: a step the plan's later folds
/// (into products, into Adds) may merge into its reader.
fn sole_producer(plan: &Plan, v: usize, reader: usize) -> Option<usize> {
    if v == plan.output || v == 0 || plan.values[v].storage != v {
        return None;
    }
    let used = |w: usize| {
        w == plan.output
            || plan
                .steps
                .iter()
                .any(|s| s.output() == w || s.inputs().contains(&w))
    };
    if plan
        .values
        .iter()
        .enumerate()
        .any(|(w, val)| w != v && val.storage == v && used(w))
    {
        return None;
    }
    let readers = plan
        .steps
        .iter()
        .filter(|s| s.inputs().contains(&v))
        .count();
    let writers: Vec<usize> = (0..plan.steps.len())
        .filter(|&i| plan.steps[i].output() == v)
        .collect();
    match (readers, writers.as_slice()) {
        (1, &[p]) if p < reader => Some(p),
        _ => None,
    }
}
