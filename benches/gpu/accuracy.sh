#!/usr/bin/env bash
# Issue 13's fp16 accuracy probe: does the tuner's per-convolution bar (an algorithm is refused
# when its output is further than the bar, in relative L2, from the implicit GEMM's) let through
# algorithms that lose precision inside, so that deep fp16 nets end 2–3× further from fp32 than
# PyTorch's own fp16? For each model in MODELS: exported by zoo.py (seeded weights, BatchNorm
# calibrated on the CPU, the zoo's export), then model-check fp16 at BATCHES once per bar in
# TOLS (TORCHPIPE_FP16_TUNE_TOLERANCE), each candidate's error and time logged
# (RUST_LOG=engine::gpu::conv=debug). Binaries as for zoo.sh (dist/dist.tgz). Output:
# $OUT/accuracy-$PART.tgz; the summary lines are printed.
#   COMMIT=<sha> [MODELS=".."] [TOLS="1e-3 4e-4 2e-4"] bash benches/gpu/accuracy.sh
set -uo pipefail
source "$(dirname "$0")/env.sh"
PART=${PART:-a}
BATCHES=${BATCHES:-1,32}
MODELS=${MODELS:-"mobilenet_v3_large mobilenet_v2 efficientnet_b0 mnasnet1_0 resnet18"}
TOLS=${TOLS:-"1e-3 4e-4 2e-4"}
W=/tmp/accuracy-$PART
rm -rf "$W"
mkdir -p "$W" /tmp/onnx
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; echo "commit $COMMIT"; date -u +%F; } > "$W/device.txt"
cat "$W/device.txt"

echo "== export (zoo.py, PyTorch timed at batch 1 only)"
PYTHONUNBUFFERED=1 python3 benches/gpu/zoo.py /tmp/onnx 1 $MODELS 2>&1 | tee "$W/torch.log" | cut -c1-200
cp /tmp/onnx/*.torch.json "$W/" 2>/dev/null

echo "== model-check fp16 per bar"
for m in $MODELS; do
  f=/tmp/onnx/$m.onnx
  [ -f "$f" ] || { echo "$m: not exported"; continue; }
  for t in $TOLS; do
    [ "$SECONDS" -lt "${DEADLINE:-300}" ] || { echo "$m $t: skipped (deadline)"; continue; }
    TORCHPIPE_FP16_TUNE_TOLERANCE=$t RUST_LOG=info,engine::gpu::conv=debug timeout 120 \
      dist/model-check --model "$f" --precision fp16 --batches "$BATCHES" \
      --concurrent-batches 0 --rounds 5 --json "$W/$m.tol$t.json" > "$W/$m.tol$t.log" 2>&1
    echo "$m tol $t rc=$? $(grep -E '^ +[0-9]+ ' "$W/$m.tol$t.log" | tr -s ' ' | tr '\n' '|')"
  done
done
tar czf "$OUT/accuracy-$PART.tgz" -C /tmp "accuracy-$PART"
