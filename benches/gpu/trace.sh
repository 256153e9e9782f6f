#!/usr/bin/env bash
# Where a precision goes wrong: model-check --trace runs the first image step by step in fp16
# and in fp32 and prints each step's relative L2 difference (exported torchvision models).
# usage: COMMIT=<sha> MODELS="regnet_y_400mf" bash benches/gpu/trace.sh   (dist/ as for zoo.sh)
set -uo pipefail
source "$(dirname "$0")/env.sh"
MODELS=${MODELS:-regnet_y_400mf}
mkdir -p /tmp/onnx
PYTHONUNBUFFERED=1 python3 benches/gpu/zoo.py /tmp/onnx 1 $MODELS > /dev/null 2>&1
for m in $MODELS; do
  dist/model-check --model /tmp/onnx/$m.onnx --precision fp16 --batches 1 --trace \
    --concurrent-batches 0 --rounds 3 > "$OUT/$m.trace" 2>&1
  echo "$m rc=$?"
  grep -E '^ +[0-9]+ ' "$OUT/$m.trace" | awk '{print $NF, $0}' | sort -g | tail -n 12 | cut -d' ' -f2- | cut -c1-160
done
