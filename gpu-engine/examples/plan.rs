//! Prints the plan the GPU engine would build for an ONNX file, without a GPU: one line per step
//! (index, kind, what it computes, output dims), then the count of each kind. Used to see where a
//! model's steps go before timing it on the device (`model-check --profile` times them).
//!
//!   cargo run --release -p gpu-engine --example plan -- model.onnx [fp32]
use gpu_engine::plan::{self, Step};
use std::collections::BTreeMap;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: plan MODEL.onnx [fp32]")?;
    let channels_last = args.next().as_deref() != Some("fp32");
    let proto = onnx_front::read(std::path::Path::new(&path), &mut |_| {})?;
    let plan = plan::build(&proto, channels_last)?;
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for (i, step) in plan.steps.iter().enumerate() {
        let what = match step {
            Step::Conv(c) => format!("{} k{:?} g{} {:?}", c.name, c.kernel, c.groups, c.act),
            Step::Map(m) if m.b.is_none() && m.unary == plan::Unary::Identity => {
                let how = if m.shuffle.is_some() {
                    "shuffle"
                } else if m.perm_a.is_some() {
                    "permute"
                } else if m.a_slice.is_some() {
                    "slice"
                } else if !m.region.is_empty() {
                    "region"
                } else {
                    "copy"
                };
                *kinds.entry(format!("map-{how}")).or_default() += 1;
                format!("{how} {:?}", m.a)
            }
            Step::Map(m) => format!(
                "{:?}/{:?} a={:?} b={:?} c={:?}",
                m.binary, m.unary, m.a, m.b, m.c
            ),
            Step::Reduce(r) => format!("{:?} axes {:?}", r.kind, r.axes),
            Step::Row(r) => format!("{r:?}").chars().take(90).collect(),
            _ => String::new(),
        };
        *kinds.entry(step.kind().to_string()).or_default() += 1;
        println!(
            "{i:>4} {:<10} {what:<70} {:?}",
            step.kind(),
            plan.values[step.output()].dims
        );
    }
    println!("{} steps", plan.steps.len());
    for (k, n) in kinds {
        println!("{n:>5} {k}");
    }
    Ok(())
}
