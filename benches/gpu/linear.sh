#!/usr/bin/env bash
# One device call for linear layers on cuBLASLt (conv::Mode::Lt), two fp16 accuracy
# leads and the single-GPU device_id check (binaries as for zoo.sh, dist/dist.tgz):
# 1. zoo.sh on vit_b_16, convnext_tiny, resnet50, resnet18 and mobilenet_v3_large (fp16 at
#    1/8/32 with per-step profiles, fp32 at batch 1, PyTorch's CUDA-graph times in the same
#    call) with every tuning candidate logged, so each linear layer shows what Lt/i cost
#    against cuDNN and cuBLAS + our pass; mobilenet_v3_large also traced over all 11 photos;
# 2. resnet18 at batch 32, twice (the tuning-dependent loss): model-check --replay-check, the
#    same batch as graph replays, eager runs and synchronised eager runs;
# 3. benches/gpu/layer_ref.py: PyTorch's fp16 error block by block on mobilenet_v3_large,
#    beside our trace of the same photos;
# 4. benches/gpu/device_id.sh.
#   COMMIT=<sha> bash benches/gpu/linear.sh   → $OUT/zoo-lt.tgz, $OUT/linear.tgz, $OUT/device_id.txt
set -uo pipefail
source "$(dirname "$0")/env.sh"
W=/tmp/linear
rm -rf "$W"
mkdir -p "$W"
dbg=info,engine::gpu::conv=debug

RUST_LOG=$dbg PART=lt PROFILE=1 DEADLINE=${ZOO_DEADLINE:-330} \
  MODELS="vit_b_16 convnext_tiny resnet50 resnet18 mobilenet_v3_large" \
  TRACE="mobilenet_v3_large" TRACE_BATCH=11 bash benches/gpu/zoo.sh 2>&1 | grep -v '^-r'
echo "== zoo done at ${SECONDS}s"

for i in 1 2; do
  [ "$SECONDS" -lt 430 ] || { echo "replay $i: skipped (deadline)"; continue; }
  RUST_LOG=$dbg timeout 90 dist/model-check --model /tmp/onnx/resnet18.onnx --precision fp16 \
    --batches 32 --concurrent-batches 0 --rounds 3 --replay-check 3 > "$W/resnet18.replay$i.log" 2>&1
  echo "resnet18 replay $i rc=$?"; grep -E "replay-check|^ +32 " "$W/resnet18.replay$i.log" | cut -c1-300
done

(cd benches/gpu && timeout 60 python3 layer_ref.py /tmp/onnx mobilenet_v3_large \
  /tmp/zoo-lt/mobilenet_v3_large.trace.log 2>&1 | tee "$W/mv3.layers.txt" | cut -c1-200)
tar czf "$OUT/linear.tgz" -C "$W" .
echo "== extras done at ${SECONDS}s"

[ "$SECONDS" -lt 480 ] && timeout $((590 - SECONDS)) bash benches/gpu/device_id.sh
ls -la "$OUT"
