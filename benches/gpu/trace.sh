#!/usr/bin/env bash
# Step-by-step statistics of the GPU engine on exported torchvision models (model-check
# --trace), fp16 and fp32 side by side: finds the first step where a precision goes wrong.
# usage: COMMIT=<sha> MODELS="mnasnet1_0" bash benches/gpu/trace.sh   (dist/ as for zoo.sh)
set -uo pipefail
source "$(dirname "$0")/env.sh"
MODELS=${MODELS:-mnasnet1_0}
mkdir -p /tmp/onnx
PYTHONUNBUFFERED=1 python3 benches/gpu/zoo.py /tmp/onnx 1 $MODELS > /dev/null 2>&1
for m in $MODELS; do
  for p in fp16 fp32; do
    dist/model-check --model /tmp/onnx/$m.onnx --precision $p --batches 1 --trace \
      --concurrent-batches 0 --rounds 3 > "$OUT/$m.$p.trace" 2>&1
    echo "$m $p rc=$?"
  done
  paste -d'\n' <(grep -E '^ +[0-9]+ ' "$OUT/$m.fp16.trace" | head -60) \
               <(grep -E '^ +[0-9]+ ' "$OUT/$m.fp32.trace" | head -60) | cut -c1-170 | head -70
done
