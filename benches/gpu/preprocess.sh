#!/usr/bin/env bash
# The device run of the GPU image path: against the CPU path and torchvision, then the GPU
# pipeline's classes against the CPU-preprocessing pipeline's. Binaries from dist/ (see
# compare.sh); results in $OUT.
set -uo pipefail
source "$(dirname "$0")/env.sh"
ensure_models || exit 1
dist/preprocess-check --images benches/imgs --extra engine/tests/fixtures/jpeg \
  --gpu-toml configs/resnet50_gpu.toml --cpu-toml configs/resnet50.toml \
  --json "$OUT/preprocess-check.json" || exit 1
python3 benches/gpu/torchvision_decode.py --check-json "$OUT/preprocess-check.json" \
  --images benches/imgs --extra engine/tests/fixtures/jpeg --json "$OUT/torchvision.json" || exit 1
python3 benches/gpu/summarise_preprocess.py "$OUT/preprocess-check.json" "$OUT/torchvision.json" \
  "$OUT/gpu-preprocess-$(date +%F).json"
