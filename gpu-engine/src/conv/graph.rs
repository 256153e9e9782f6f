//! cuDNN's graph API: the whole conv + bias + add + activation graph on one engine
//! configuration of the heuristics' list (`Mode::Graph`), or the graph without the activation,
//! then our epilogue (`Mode::GraphAct`), for activations no graph engine fuses.

use std::time::Instant;

use super::tune::{Choice, Tuning};
use super::{Algo, ConvCall, ConvLibrary, Exec, GraphExec, Mode, WORKSPACE_LIMIT};
use crate::cuda::{GpuError, Result};
use crate::graph_api;
use crate::plan::{ConvStep, Unary};
use crate::precision::Precision;

/// How many of the heuristics' engine configurations the tuner times per convolution, out of
/// the first GRAPH_SCAN it looks at.
const GRAPH_CONFIGS: usize = 3;
const GRAPH_SCAN: usize = 12;

pub(super) struct GraphApi;

impl ConvLibrary for GraphApi {
    /// fp16 plans only: the fused graph, then, where the convolution has an activation and the
    /// fused graph did not win, the graph without it and our epilogue.
    fn tune(&self, t: &Tuning<'_>, choice: &mut Choice) -> Result<()> {
        if t.input.precision != Precision::Fp16 {
            return Ok(());
        }
        if let Err(e) = tune_graph(t, Mode::Graph, choice) {
            choice.report.push(format!("graph API unavailable: {e}"));
        }
        let fused = choice.best.is_some_and(|(_, a)| a.mode == Mode::Graph);
        if t.call.step.act != Unary::Identity && !fused {
            if let Err(e) = tune_graph(t, Mode::GraphAct, choice) {
                choice
                    .report
                    .push(format!("graph API without the activation: {e}"));
            }
        }
        Ok(())
    }

    fn run(&self, call: &ConvCall<'_>, algo: Algo, exec: Option<&Exec>) -> Result<()> {
        call.run_graph(algo, exec)
    }
}

/// Times the graph API's precompiled engine configurations (the heuristics' first
/// GRAPH_CONFIGS of them; runtime-compiled ones cost tens of ms per plan and start, and are
/// tried only when no precompiled one exists).
fn tune_graph(t: &Tuning<'_>, mode: Mode, choice: &mut Choice) -> Result<()> {
    let (call, n, (xs, ys)) = (t.call, t.n, t.shapes);
    let g = graph_api::conv_graph(call.h, &call.graph_step(mode), n, xs, ys)?;
    let cfgs = graph_api::engine_configs(&g, GRAPH_SCAN)?;
    let offered = cfgs.len();
    let mut picks: Vec<usize> = cfgs
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            // Unknown notes count against a config: determinism is a promise we test.
            graph_api::notes(c)
                .is_ok_and(|n| !n.runtime_compiled && !n.nondeterministic && !n.reduced_precision)
        })
        .map(|(i, _)| i)
        .take(GRAPH_CONFIGS)
        .collect();
    if picks.is_empty() {
        // Compile one at plan time rather than give up on the graph API, if deterministic.
        picks.extend(cfgs.iter().position(|c| {
            graph_api::notes(c).is_ok_and(|n| !n.nondeterministic && !n.reduced_precision)
        }));
    }
    drop(cfgs);
    if picks.is_empty() {
        choice.report.push(format!(
            "{mode:?}: none of the {offered} engine configurations offered is usable"
        ));
    }
    for i in picks {
        let built = Instant::now();
        let exec = match call.graph_exec(mode, i, n, xs, ys, None) {
            Ok(e) => Exec::Graph(e),
            Err(e) => {
                choice.report.push(format!("{mode:?}/{i} plan failed: {e}"));
                continue;
            }
        };
        if exec.workspace() > WORKSPACE_LIMIT {
            continue;
        }
        let algo = Algo {
            mode,
            algo: i as u32,
            workspace: exec.workspace(),
        };
        match t.time(algo, Some(&exec)) {
            Ok((ms, err)) => {
                let line = format!(
                    "{mode:?}/{i} {ms:.4} (rel L2 {err:.1e}, plan built in {:.1} ms)",
                    built.elapsed().as_secs_f64() * 1e3
                );
                if let (true, Exec::Graph(g)) = (choice.offer(ms, algo, line), &exec) {
                    choice.json = graph_api::plan_json(&g.plan).ok();
                }
            }
            Err(e) => choice.report.push(format!("{mode:?}/{i} failed: {e}")),
        }
    }
    Ok(())
}

impl ConvCall<'_> {
    /// The plan for engine configuration `cfg_index`: from its saved JSON when there is one
    /// (no heuristics, no operation graph), else through the heuristics.
    pub(crate) fn graph_exec(
        &self,
        mode: Mode,
        cfg_index: usize,
        n: usize,
        x_shape: [usize; 3],
        y_shape: [usize; 3],
        json: Option<&str>,
    ) -> Result<GraphExec> {
        let pack = || {
            graph_api::variant_pack(
                self.x,
                self.weights.w.ptr,
                self.weights.bias.ptr,
                self.z,
                self.y,
                self.ws,
            )
        };
        if let Some(json) = json {
            match graph_api::plan_from_json(self.h, json) {
                Ok(plan) => {
                    return Ok(GraphExec {
                        _graph: None,
                        plan,
                        pack: pack()?,
                    })
                }
                Err(e) => tracing::warn!(
                    "{}: cannot load the saved cuDNN plan ({e}); asking the heuristics again",
                    self.step.name
                ),
            }
        }
        let g = graph_api::conv_graph(self.h, &self.graph_step(mode), n, x_shape, y_shape)?;
        let cfgs = graph_api::engine_configs(&g, cfg_index + 1)?;
        let cfg = cfgs.get(cfg_index).ok_or_else(|| {
            GpuError::Plan(format!(
                "heuristics offer no engine configuration #{cfg_index}"
            ))
        })?;
        let plan = graph_api::plan(self.h, cfg)?;
        Ok(GraphExec {
            _graph: Some(g),
            plan,
            pack: pack()?,
        })
    }

    /// The convolution the graph API computes in `mode`: all of it, or all but the activation.
    fn graph_step(&self, mode: Mode) -> ConvStep {
        let mut c = ConvStep {
            weight: Vec::new(),
            bias: Vec::new(),
            ..self.step.clone()
        };
        if mode == Mode::GraphAct {
            c.act = Unary::Identity;
        }
        c
    }

    fn run_graph(&self, algo: Algo, exec: Option<&Exec>) -> Result<()> {
        let Some(Exec::Graph(g)) = exec else {
            return Err(GpuError::Plan(
                "graph-API convolution without its plan".into(),
            ));
        };
        graph_api::execute(self.h, &g.plan, &g.pack)?;
        if algo.mode == Mode::GraphAct {
            // The graph added the bias and the residual.
            self.epilogue(false, None)?;
        }
        Ok(())
    }
}
