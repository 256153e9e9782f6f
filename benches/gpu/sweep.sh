#!/usr/bin/env bash
# The device run of benches/sweep.py on the H200 box, one call: `server --baseline` and the
# pipeline on the seed TOML, and the pipeline on the GPU-decode TOML, each at 1, 4, 10, 20, 40,
# 64, 128 clients × batch 1 and 10 × 4, with 20 × 1 and 128 × 1 three times for the spread, then
# one open-loop run at 80% of its best closed-loop QPS; writes $OUT/sweep-<date>-h200.{json,md}
# (copy them to benches/results/). Binaries built on the development machine:
#   cargo build --release -p server -p client_qps --features server/cuda --bins
#   strip into dist/ (model-check, server, client_qps), tar czf dist.tgz, carry it
# then: COMMIT=<sha> [DURATION=5] bash benches/gpu/sweep.sh
# The first server start tunes the GPU engine and writes models/resnet50.trt (model::cache);
# the later ones read it.
set -uo pipefail
source "$(dirname "$0")/env.sh"
ensure_models || exit 1
python3 benches/sweep.py --server dist/server --client dist/client_qps \
  --setting baseline=configs/resnet50.toml --setting seed=configs/resnet50.toml \
  --setting gpu=configs/resnet50_gpu.toml --duration "${DURATION:-5}" --machine h200 \
  --out-dir "$OUT"
