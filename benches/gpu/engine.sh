#!/usr/bin/env bash
# The GPU engine's device run, in one call, on binaries built on the development machine:
#   cargo build --release -p server -p tools --features cuda --bins
#   mkdir -p dist && strip -o dist/model-check target/release/model-check
# then (device tool) run: benches/gpu/engine.sh, carrying dist.
# Checks the GPU engine against the CPU engine (fp32 and fp16), times it per batch size, times
# PyTorch's CUDA-graph ResNet50 on the same weights in the same call, runs 4 instances
# concurrently, measures the start with and without model::cache. Results go to $OUT.
set -uo pipefail
source "$(dirname "$0")/env.sh"
BATCHES=${BATCHES:-1,4,8,16,32}
log() { echo "== $*"; }

log "device"; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,power.limit --format=csv
log "libraries"; echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
dist/model-check --write-models models >/dev/null || exit 1
ls -la models

if [ -z "${SKIP_FP32:-}" ]; then
log "fp32 check (tolerance 1e-4)"
dist/model-check --model models/resnet50.onnx --precision fp32 --batches 1,4 \
  --concurrent-batches 0 --rounds 5 --json "$OUT/fp32.json" 2>&1 | tail -8 || exit 1
fi

log "fp16: first start (no cache), check, timing, concurrency"
rm -f /tmp/resnet50.cache
RUST_LOG=info,engine::gpu::engine=debug timeout 480 dist/model-check --model models/resnet50.onnx \
  --precision fp16 --batches "$BATCHES" --cache /tmp/resnet50.cache --dump-reference /tmp/ref.bin \
  --json "$OUT/fp16.json" 2>"$OUT/tune.log" | tail -16 || { tail -5 "$OUT/tune.log"; exit 1; }
grep -E "convolutions sum|tuned|wrote" "$OUT/tune.log" | sed 's/^.*engine: //' | grep -E "batch (1|4|8|16|32):|tuned|wrote"
log "fp16: second start (cache present)"
dist/model-check --model models/resnet50.onnx --precision fp16 --batches "$BATCHES" \
  --cache /tmp/resnet50.cache --ready-only --json "$OUT/fp16_cached.json" 2>&1 | tail -3

log "PyTorch on the same weights"
python3 benches/gpu/torch_resnet50.py models/resnet50.onnx /tmp/ref.bin "$OUT/torch.json" \
  ${BATCHES//,/ } 2>&1 | tail -8

log "summary"
python3 benches/gpu/summarise_engine.py "$OUT" | tee "$OUT/summary.txt"
