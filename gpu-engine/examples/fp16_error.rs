//! The fp16 engine's error on a model, emulated on the host (no GPU): the NHWC plan run in f32
//! and again with fp16 storage (`reference::run_fp16`: weights, constants and every step's
//! output rounded), both on the same inputs. Prints the relative L2 of the fp16 output against
//! the f32 one, over all items and per item; with `trace`, every step's error beside the step,
//! and where it grows the most. Which steps a model's fp16 error comes from, before a device
//! call measures it.
//!
//!   cargo run --release -p gpu-engine --example fp16_error -- MODEL.onnx INPUTS.f32 [trace]
//!
//! INPUTS.f32: little-endian f32, `[k, C, H, W]` already normalised (C, H, W from the model).
use gpu_engine::plan::{self, reference};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: fp16_error MODEL.onnx INPUTS.f32 [trace]";
    let path = args.next().ok_or(usage)?;
    let inputs = args.next().ok_or(usage)?;
    let trace = args.next().as_deref() == Some("trace");
    let proto = onnx_front::read(std::path::Path::new(&path), &mut |_| {})?;
    let plan = plan::build(&proto, true)?;
    let raw = std::fs::read(&inputs)?;
    let x: Vec<f32> = raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let item: usize = plan.input.iter().product();
    if x.is_empty() || !x.len().is_multiple_of(item) {
        return Err(format!("{inputs}: {} values, not a whole number of {item}", x.len()).into());
    }
    let n = x.len() / item;
    // Every step's f32 output is kept only when tracing: the comparison needs them all.
    let mut want = Vec::new();
    let y32 = if trace {
        reference::run_traced(&plan, &x, n, &mut |_, v| want.push(v))
    } else {
        reference::run(&plan, &x, n)
    };
    let mut steps = Vec::new();
    let mut compare = |i: usize, v: Vec<f32>| steps.push((i, reference::rel_l2(&v, &want[i])));
    let y16 = reference::run_fp16(&plan, &x, n, trace.then_some(&mut compare as _));
    let out = y32.len() / n;
    let per: Vec<String> = (0..n)
        .map(|b| {
            let r = b * out..(b + 1) * out;
            format!("{:.1e}", reference::rel_l2(&y16[r.clone()], &y32[r]))
        })
        .collect();
    println!(
        "{path}: fp16 storage against f32, {n} items: {:.2e} (per item {})",
        reference::rel_l2(&y16, &y32),
        per.join(" ")
    );
    if trace {
        let mut last = 0.0;
        let mut growth = Vec::new();
        for &(i, e) in &steps {
            let step = &plan.steps[i];
            println!("{i:>4} {:<10} {:<60} {e:.2e}", step.kind(), step.name());
            growth.push((e / f64::max(last, 1e-6), i));
            last = e;
        }
        growth.sort_by(|a, b| b.0.total_cmp(&a.0));
        println!("largest growth (error after / before):");
        for (g, i) in growth.iter().take(10) {
            println!("  step {i}: ×{g:.2}");
        }
    }
    Ok(())
}
