#!/usr/bin/env bash
# The generated YOLO-shaped detector (models/tiny_yolo.onnx: reshape, split, sigmoids, concat
# after two convolutions) on the GPU engine against the CPU engine, fp32 and fp16, at batch 1
# and 4, in one short call. Binary built on the development machine:
#   cargo build --release -p tools --features tools/cuda --bin model-check
#   strip into dist/, tar czf dist/dist.tgz, carry it; then:
#   COMMIT=<sha> bash benches/gpu/yolo_check.sh   → $OUT/yolo-fp32.json, $OUT/yolo-fp16.json
set -uo pipefail
source "$(dirname "$0")/env.sh"
report_header
ensure_models || exit 1
for p in fp32 fp16; do
  echo "== $p"
  dist/model-check --model models/tiny_yolo.onnx --precision "$p" --batches 1,4 \
    --concurrent-batches 0 --rounds 3 --json "$OUT/yolo-$p.json" 2>&1 | tail -8
done
