#!/usr/bin/env bash
# The zoo after the graph-edge fix (capture.rs) and the channel-shuffle copy, in two
# device calls (binaries as for zoo.sh, dist/dist.tgz, which here also carries
# preprocess-check and dist/damaged/, the damaged-JPEG corpus as
# engine/tests/decode_damaged.rs makes it, with dist/damaged_outcomes.txt: OpenCV's outcome
# per file, `<file>.decoded` or `<file>.refused`).
#   PART=b: zoo.sh on ten models (resnet18 first), then resnet18 at batch 32 twice with
#           --replay-check (graph replays must now agree with the synchronised eager run),
#           shufflenet_v2_x1_0's per-step profile at batch 32, and the damaged corpus through
#           the GPU decoder (preprocess-check --extra).
#   PART=c: zoo.sh on shufflenet_v2_x1_0 again and the models not measured by part b
#           with the seed flow, device_id.sh, then PyTorch's fp16 error inside
#           mobilenet_v3_large's blocks 12-15 beside our trace (layer_ref.py).
#   COMMIT=<sha> PART=b|c bash benches/gpu/zoo_check.sh   → $OUT/zoo-<PART>.tgz, $OUT/check-<PART>.tgz
set -uo pipefail
source "$(dirname "$0")/env.sh"
PART=${PART:?PART=b or PART=c}
W=/tmp/check-$PART
rm -rf "$W"
mkdir -p "$W"
dbg=info,engine::gpu::conv=debug
if [ "$PART" = b ]; then
  RUST_LOG=$dbg PART=b DEADLINE=380 MODELS="resnet18 shufflenet_v2_x1_0 resnet101 mobilenet_v2 \
    efficientnet_b0 mnasnet1_0 regnet_y_400mf densenet121 googlenet squeezenet1_1" \
    bash benches/gpu/zoo.sh 2>&1 | grep -v '^-r'
  echo "== zoo done at ${SECONDS}s"
  for i in 1 2; do
    timeout 90 dist/model-check --model /tmp/onnx/resnet18.onnx --precision fp16 --batches 32 \
      --concurrent-batches 0 --rounds 3 --replay-check 4 > "$W/resnet18.replay$i.log" 2>&1
    echo "resnet18 replay $i rc=$?"
    grep -E "replay-check|programmatic|^ +32 " "$W/resnet18.replay$i.log" | cut -c1-300
  done
  timeout 90 dist/model-check --model /tmp/onnx/shufflenet_v2_x1_0.onnx --precision fp16 \
    --batches 32 --concurrent-batches 0 --rounds 15 --profile > "$W/shufflenet.b32.profile.log" 2>&1
  echo "shufflenet profile rc=$?"; grep -E "^ +32 |programmatic|by kind|^ *[a-z]+ +[0-9.]+ ms" \
    "$W/shufflenet.b32.profile.log" | head -12
  ensure_models
  timeout 120 dist/preprocess-check --images benches/imgs --extra dist/damaged --batches 1 \
    --rounds 1 --round-secs 0.2 --json "$W/damaged.json" > "$W/damaged.log" 2>&1
  echo "damaged corpus rc=$?"
  cp dist/damaged_outcomes.txt "$W/"
else
  # MODELS_C / SEED_FLOW_C / END: fewer models and an earlier end when less device time is left.
  END=${END:-560}
  RUST_LOG=$dbg PART=c DEADLINE=${ZOO_DEADLINE:-230} SEED_FLOW=${SEED_FLOW_C-1} \
    TRACE="mobilenet_v3_large" TRACE_BATCH=11 MODELS="${MODELS_C:-shufflenet_v2_x1_0 \
    resnext50_32x4d wide_resnet50_2 vgg16 alexnet mobilenet_v3_large resnet50}" \
    bash benches/gpu/zoo.sh 2>&1 | grep -v '^-r'
  echo "== zoo done at ${SECONDS}s"
  [ "$SECONDS" -lt $((END - 120)) ] && timeout $((END - 40 - SECONDS)) bash benches/gpu/device_id.sh
  echo "== device_id done at ${SECONDS}s"
  if [ "$SECONDS" -lt $((END - 30)) ]; then
    (cd benches/gpu && timeout 40 python3 layer_ref.py /tmp/onnx mobilenet_v3_large \
      /tmp/zoo-c/mobilenet_v3_large.trace.log 12,13,14,15 > "$W/mv3.layers.txt" 2>&1)
    head -n 20 "$W/mv3.layers.txt"
  fi
fi
tar czf "$OUT/check-$PART.tgz" -C "$W" .
ls -la "$OUT"
