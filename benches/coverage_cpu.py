"""The model-coverage check's CPU half: both engines' fp32 outputs against onnxruntime.

usage: coverage_cpu.py OUT.json OUT.md EXPORTS_DIR [EXPORTS_DIR ...]

Writes OUT.json (the rows) and OUT.md (a table per exporter: one row per model, both engines).

Each EXPORTS_DIR is one exporter's folder written by benches/gpu/export_models.py (its name,
`torchscript` or `dynamo`, is the rows' exporter) after the engine's model-dir check left its
outputs there in `outputs/` (benches/coverage_cpu.sh runs both). For each model: onnxruntime on
the same file and the same input (2 items), and the relative L2 error of both CPU engines
(tract, and ONNX Runtime through our binding: the same library, so what it checks is that the
file loads and the batch goes in and out right) and of the GPU engine's plan (its importer and planner, run by the reference executor on the
CPU: the fp32 semantics the CUDA kernels implement, not the kernels themselves) against it.
onnxruntime is also run at batch 1, so that a file whose exporter fixed the batch (onnxruntime
fails at 2 but not at 1) is told apart from a file our engines misread.
"""
import datetime
import json
import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        return None
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def load_f32(path):
    return np.fromfile(path, dtype="<f4") if os.path.exists(path) else None


def onnxruntime_rows(path, x):
    """onnxruntime's output on x, or its error; and whether it runs one item."""
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        s = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        name = s.get_inputs()[0].name
    except Exception as e:
        return None, f"does not load: {e}"[:600], False
    one = True
    try:
        s.run(None, {name: x[:1]})
    except Exception:
        one = False
    try:
        return s.run(None, {name: x})[0], None, one
    except Exception as e:
        return None, f"batch of {len(x)}: {e}"[:600], one


def main():
    out, md, dirs = sys.argv[1], sys.argv[2], sys.argv[3:]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    rows = []
    for d in dirs:
        exporter = os.path.basename(os.path.normpath(d))
        exports = {}
        for line in open(os.path.join(d, "exports.jsonl")):
            rec = json.loads(line)
            exports[rec["model"]] = rec
        for model, rec in sorted(exports.items()):
            base = {"model": model, "family": rec["family"], "exporter": exporter,
                    "export_error": rec.get("export_error")}
            if rec.get("export_error"):
                for engine in ENGINES:
                    rows.append(dict(base, engine=engine, loads=False, error=None,
                                     onnxruntime_error=None, rel_l2=None))
                continue
            outputs = os.path.join(d, "outputs")
            meta_path = os.path.join(outputs, model + ".json")
            if not os.path.exists(meta_path):
                sys.exit(f"{meta_path} is missing: run the engine's model-dir check on {d}")
            meta = json.load(open(meta_path))
            shape = meta["input_shape"]
            x = load_f32(os.path.join(outputs, model + ".input.f32"))
            ref, ort_error, one = None, "no input: neither engine read the file", False
            if x is not None and shape:
                ref, ort_error, one = onnxruntime_rows(rec["file"], x.reshape(shape))
            if ort_error and one:
                ort_error += " (runs at batch 1: the exporter fixed the batch)"
            for engine, key, err_key in (("cpu", "cpu", "cpu_error"), ("ort", "ort", "ort_error"),
                                         ("gpu-plan", "plan", "plan_error")):
                got = load_f32(os.path.join(outputs, f"{model}.{key}.f32"))
                error = meta.get(err_key, "not run by this version of the check")
                if engine == "ort" and error is None and not shape:
                    # The check runs ONNX Runtime on the input the other engines read the
                    # shape of: with neither, it did not run.
                    error = "not run: neither tract nor the GPU importer read the input shape"
                rows.append(dict(base, engine=engine, loads=error is None, error=error,
                                 onnxruntime_error=ort_error,
                                 rel_l2=rel_l2(got, ref) if got is not None and ref is not None
                                 else None))
    doc = {"device": "CPU (2 cores, no GPU)", "date": datetime.date.today().isoformat(),
           "commit": commit, "onnxruntime": ort.__version__,
           "note": "gpu-plan rows: the GPU engine's importer and planner run by the reference "
                   "executor in fp32 on the CPU, not the CUDA kernels",
           "rows": rows}
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
    with open(md, "w") as f:
        f.write(markdown(doc, os.path.relpath(out, os.path.dirname(md) or ".")))
    for r in rows:
        print(f"{r['exporter']:11} {r['model']:28} {r['engine']:8} {cell(r)}")


ENGINES = ("cpu", "ort", "gpu-plan")


def cell(r):
    """One engine's outcome on one file, for a table."""
    if r["export_error"]:
        return "export failed: " + r["export_error"].splitlines()[0][:120]
    if not r["loads"]:
        why = "refused: " + (r["error"] or "")[:160].replace("|", "/").replace("\n", " ")
        if "fixed the batch" in (r["onnxruntime_error"] or ""):
            why += " (onnxruntime too fails at batch 2: the file runs at batch 1 only)"
        return why
    if r["rel_l2"] is None:
        return "loads; onnxruntime: " + (r["onnxruntime_error"] or "no reference")[:120]
    return f"{r['rel_l2']:.1e}"


def markdown(doc, json_path):
    lines = [f"# Model coverage: {doc['date']}, commit {doc['commit']}", "",
             f"Device: {doc['device']}; onnxruntime {doc['onnxruntime']}. Relative L2 error of "
             "each engine's fp32 output against onnxruntime on the same file and input "
             "(2 items): the CPU engines (tract, and ONNX Runtime through our binding, the "
             "same library as the reference: its column shows that the file loads and the "
             "batch goes in and out right) and the GPU engine, whose column is its importer "
             "and planner run by the reference executor on the CPU, not the CUDA kernels. "
             "Produced by "
             f"benches/coverage_cpu.sh; the rows: [{os.path.basename(json_path)}]({json_path}).",
             ""]
    for exporter in sorted({r["exporter"] for r in doc["rows"]}, reverse=True):
        lines += [f"## {exporter}", "",
                  "| model | family | CPU engine: tract | CPU engine: ONNX Runtime | "
                  "GPU engine (plan) |", "|---|---|---|---|---|"]
        by_model = {}
        for r in doc["rows"]:
            if r["exporter"] == exporter:
                by_model.setdefault((r["family"], r["model"]), {})[r["engine"]] = r
        for (family, model), engines in sorted(by_model.items()):
            lines.append(f"| {model} | {family} | {cell(engines['cpu'])} | "
                         f"{cell(engines['ort'])} | {cell(engines['gpu-plan'])} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
