//! Scheduler overhead: items through a chain of Identity nodes, per item per node.
//! Target: ≤ 5 µs per item per node on the 2-core development machine.

use std::path::Path;
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use engine::{Config, Item, Pipeline, PipelineOptions, Registry, Value};

const NODES: usize = 3;
const ITEMS: usize = 2000;

fn chain(max: usize) -> Pipeline {
    let mut toml = String::from("batching_timeout = 0\n");
    for i in 0..NODES {
        toml += &format!("[n{i}]\nbackend = \"Identity\"\nmax = {max}\n");
        if i + 1 < NODES {
            toml += &format!("next = \"n{}\"\n", i + 1);
        }
    }
    let config = Config::parse(&toml, Path::new("bench.toml")).unwrap();
    Pipeline::build(
        config,
        Registry::with_defaults(),
        PipelineOptions::default(),
    )
    .unwrap()
}

/// Submits ITEMS one-item requests as fast as admission allows and waits for all of them.
fn push_through(p: &Pipeline) -> Duration {
    let (tx, rx) = channel();
    let started = Instant::now();
    for i in 0..ITEMS {
        let tx = tx.clone();
        p.submit(vec![Item::new(Value::Text(i.to_string()))], move |o| {
            let _ = tx.send(o);
        })
        .unwrap();
    }
    for _ in 0..ITEMS {
        rx.recv().unwrap();
    }
    started.elapsed()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("scheduler_per_item_per_node");
    for max in [1, 8] {
        let p = chain(max);
        g.bench_function(format!("identity_x{NODES}_max{max}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    // Per item per node: the chain's time divided by both.
                    total += push_through(&p) / (ITEMS * NODES) as u32;
                }
                total
            })
        });
    }
    // One request at a time: every hand-off wakes a sleeping thread, the latency floor.
    let p = chain(1);
    g.bench_function(format!("identity_x{NODES}_one_request_at_a_time"), |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            for i in 0..iters {
                p.run(vec![Item::new(Value::Text(i.to_string()))]).unwrap();
            }
            started.elapsed() / NODES as u32
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
