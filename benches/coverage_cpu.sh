#!/usr/bin/env bash
# The model-coverage check on a machine without a GPU: every model of
# benches/gpu/coverage_models.txt exported with both of PyTorch's exporters
# (benches/gpu/export_models.py), then read by both engines (the CPU engine, and the GPU
# engine's importer and planner run by the reference executor), and compared with onnxruntime
# on the same files (benches/coverage_cpu.py). Writes benches/results/coverage-cpu-<date>.json
# and the table docs/model-coverage-cpu.md.
#
# usage: PYTHON=/path/to/python benches/coverage_cpu.sh WORKDIR
# PYTHON needs torch, torchvision, timm, onnx, onnxscript and onnxruntime (the CPU wheels
# from PyPI do); the exports are kept in WORKDIR and reused by a second run.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:?usage: benches/coverage_cpu.sh WORKDIR}
py=${PYTHON:-python3}
mapfile -t models < <(grep -v '^#' benches/gpu/coverage_models.txt | grep -v '^$')
for exporter in torchscript dynamo; do
  if [ ! -f "$work/$exporter/exports.jsonl" ]; then
    "$py" benches/gpu/export_models.py "$work" "$exporter" "${models[@]}" >/dev/null
  fi
  # The check fails when any model is refused or differs; the rows say which, so go on.
  ONNX_MODELS_DIR="$work/$exporter" ONNX_MODELS_OUT="$work/$exporter/outputs" \
    cargo test --release -p engine --test model_dir -- --ignored --nocapture \
    | grep -E '^(ok|FAIL) ' || true
done
"$py" benches/coverage_cpu.py "benches/results/coverage-cpu-$(date +%F).json" \
  docs/model-coverage-cpu.md "$work/torchscript" "$work/dynamo"
