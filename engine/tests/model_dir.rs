//! The GPU importer and both CPU engines on models exported elsewhere
//! (`benches/gpu/export_models.py`), without a GPU: every `*.onnx` in `$ONNX_MODELS_DIR` read
//! through the ONNX front-end, loaded by the CPU engines (tract, and ONNX Runtime where its
//! library loads) and planned in both layouts, the plan run by the reference executor; the plan
//! and ONNX Runtime compared with tract. Ignored by default (it needs the exported files):
//! `ONNX_MODELS_DIR=/tmp/onnx/dynamo cargo test -p engine --release --test model_dir -- --ignored`.
//! Prints one line per model and fails if any model does not load, plan or match.
//!
//! With `$ONNX_MODELS_OUT` set it also leaves there, per model, the input and each engine's
//! output (`<model>.<input|cpu|ort|plan>.f32`, little-endian) and `<model>.json` (shapes, errors),
//! for `benches/coverage_cpu.py` to compare against onnxruntime.

use std::path::Path;

use std::sync::Arc;

use engine::backends::model::{
    onnxruntime_runtime, CpuModel, InstanceSpec, ModelEngine, ModelOutput, OrtModel,
};
use engine::Tensor;
use gpu_engine::plan::reference::{self, rel_l2};
use gpu_engine::plan::{build, Plan};
use onnx_front::modelgen::noise;

/// fp32 everywhere: the plan's reference executor against tract.
const TOLERANCE: f64 = 1e-4;
/// Two items: a batch of one would not show a batch dimension planned wrong.
const BATCH: usize = 2;

#[derive(Default)]
struct Row {
    input_shape: Vec<usize>,
    input: Vec<f32>,
    cpu: Option<Vec<f32>>,
    cpu_error: Option<String>,
    /// The ONNX Runtime engine's output.
    ort: Option<Vec<f32>>,
    ort_error: Option<String>,
    /// Against the CPU engine (tract).
    ort_vs_cpu: Option<f64>,
    /// The NHWC plan's output (the fp16 engine's layout), when both layouts planned.
    plan: Option<Vec<f32>>,
    plan_error: Option<String>,
    /// Against the CPU engine: NHWC, row-major.
    plan_vs_cpu: Option<[f64; 2]>,
}

fn check(path: &Path) -> Row {
    let mut row = Row::default();
    let cpu = CpuModel::load(path).map_err(|e| e.to_string());
    let item_shape = match &cpu {
        Ok(m) => Some(m.item_shape().to_vec()),
        Err(e) => {
            row.cpu_error = Some(e.clone());
            None
        }
    };
    let plans = onnx_front::read(path, &mut |_| {})
        .map_err(|e| e.to_string())
        .and_then(|proto| {
            [true, false]
                .map(|channels_last| build(&proto, channels_last).map_err(|e| e.to_string()))
                .into_iter()
                .collect::<Result<Vec<Plan>, String>>()
        });
    let plans = match plans {
        Ok(p) => Some(p),
        Err(e) => {
            row.plan_error = Some(e);
            None
        }
    };
    let item_shape = item_shape.or_else(|| plans.as_ref().map(|p| p[0].input.to_vec()));
    let Some(item_shape) = item_shape else {
        return row;
    };
    row.input_shape = std::iter::once(BATCH).chain(item_shape).collect();
    row.input = noise(row.input_shape.iter().product(), 7);
    if let Ok(m) = &cpu {
        match m.run(Tensor::new(row.input_shape.clone(), row.input.clone())) {
            Ok(t) => row.cpu = Some(t.data),
            Err(e) => row.cpu_error = Some(e.to_string()),
        }
    }
    match run_ort(path, &row.input_shape, &row.input) {
        Ok(v) => {
            row.ort_vs_cpu = row.cpu.as_ref().map(|want| rel_l2(&v, want));
            row.ort = Some(v);
        }
        Err(e) => row.ort_error = Some(e),
    }
    if let Some(plans) = plans {
        let outs: Vec<Vec<f32>> = plans
            .iter()
            .map(|p| reference::run(p, &row.input, BATCH))
            .collect();
        if let Some(want) = &row.cpu {
            row.plan_vs_cpu = Some([rel_l2(&outs[0], want), rel_l2(&outs[1], want)]);
        }
        row.plan = outs.into_iter().next();
    }
    row
}

/// The ONNX Runtime engine on `input`, as a node instance runs it (no normalisation).
fn run_ort(path: &Path, shape: &[usize], input: &[f32]) -> Result<Vec<f32>, String> {
    let runtime = onnxruntime_runtime(None)?;
    let model = Arc::new(OrtModel::load(path, runtime, 2).map_err(|e| e.to_string())?);
    let spec = InstanceSpec {
        min: 1,
        max: BATCH,
        mean: vec![0.0],
        std: vec![1.0],
        stage: Default::default(),
        output: ModelOutput::Host,
    };
    let mut inst = model.instance(&spec).map_err(|e| e.to_string())?;
    inst.run(Tensor::new(shape.to_vec(), input.to_vec()))
        .map(|t| t.data)
        .map_err(|e| e.to_string())
}

fn write_f32(path: &Path, v: &[f32]) {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

fn json_str(s: &Option<String>) -> String {
    s.as_ref()
        .map(|s| serde_json::Value::String(s.clone()).to_string())
        .unwrap_or_else(|| "null".into())
}

fn save(out: &Path, name: &str, row: &Row) {
    write_f32(&out.join(format!("{name}.input.f32")), &row.input);
    for (kind, v) in [("cpu", &row.cpu), ("ort", &row.ort), ("plan", &row.plan)] {
        if let Some(v) = v {
            write_f32(&out.join(format!("{name}.{kind}.f32")), v);
        }
    }
    let json = format!(
        "{{\"input_shape\": {:?}, \"cpu_error\": {}, \"ort_error\": {}, \"plan_error\": {}, \
         \"plan_vs_cpu\": {}}}",
        row.input_shape,
        json_str(&row.cpu_error),
        json_str(&row.ort_error),
        json_str(&row.plan_error),
        row.plan_vs_cpu
            .map(|e| format!("[{:e}, {:e}]", e[0], e[1]))
            .unwrap_or_else(|| "null".into())
    );
    std::fs::write(out.join(format!("{name}.json")), json).unwrap();
}

#[test]
#[ignore = "needs exported models: ONNX_MODELS_DIR"]
fn model_dir_plans_match_the_cpu_engine() {
    let dir = std::env::var("ONNX_MODELS_DIR").expect("set ONNX_MODELS_DIR to a folder of .onnx");
    let out = std::env::var_os("ONNX_MODELS_OUT").map(std::path::PathBuf::from);
    if let Some(out) = &out {
        std::fs::create_dir_all(out).unwrap();
    }
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no .onnx in {dir}");
    let mut failed = Vec::new();
    for p in &paths {
        let started = std::time::Instant::now();
        let row = check(p);
        let name = p.file_stem().unwrap_or_default().to_string_lossy();
        let secs = started.elapsed().as_secs_f64();
        if let Some(out) = &out {
            save(out, &name, &row);
        }
        let flat = row
            .cpu
            .as_ref()
            .is_some_and(|v| v.iter().all(|x| x.abs() <= 1e-6));
        let ort = match (&row.ort_error, row.ort_vs_cpu) {
            (Some(e), _) => Err(format!("ONNX Runtime engine: {e}")),
            (None, Some(e)) if e <= TOLERANCE => Ok(format!("ONNX Runtime {e:.2e}")),
            (None, Some(e)) => Err(format!("ONNX Runtime against tract: relative L2 {e:.2e}")),
            (None, None) => Err("ONNX Runtime: nothing to compare".into()),
        };
        let verdict = match (&row.cpu_error, &row.plan_error, row.plan_vs_cpu) {
            _ if flat => Err("the output is all but zero: the comparison proves nothing".into()),
            (None, None, Some(e)) if e.iter().all(|e| *e <= TOLERANCE) => match &ort {
                Ok(o) => Ok(format!(
                    "relative L2 {:.2e} (NHWC), {:.2e} (row-major); {o}",
                    e[0], e[1]
                )),
                Err(o) => Err(o.clone()),
            },
            (None, None, Some(e)) => Err(format!(
                "plan against the CPU engine: relative L2 {:.2e} (NHWC), {:.2e} (row-major)",
                e[0], e[1]
            )),
            (cpu, plan, _) => Err(format!(
                "CPU engine: {}; GPU importer: {}",
                cpu.as_deref().unwrap_or("ok"),
                plan.as_deref().unwrap_or("ok")
            )),
        };
        match verdict {
            Ok(s) => println!("ok   {name}: {s} ({secs:.1} s)"),
            Err(e) => {
                println!("FAIL {name}: {e} ({secs:.1} s)");
                failed.push(name.to_string());
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {}: {failed:?}",
        failed.len(),
        paths.len()
    );
}
