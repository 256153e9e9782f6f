#!/usr/bin/env bash
# A short form of sweep.sh for the low-load rows (where the pipeline must not be slower than the baseline):
# `server --baseline` and the seed TOML at 1, 4, 10, 20 and 40 clients × batch 1, DURATION
# (default 3) s each, no repeats, no open loop; writes $OUT/sweep-<date>-h200-low.{json,md}.
# Binaries as sweep.sh says; COMMIT=<sha> bash benches/gpu/sweep_low.sh
set -uo pipefail
source "$(dirname "$0")/env.sh"
ensure_models || exit 1
python3 benches/sweep.py --server dist/server --client dist/client_qps \
  --setting baseline=configs/resnet50.toml --setting seed=configs/resnet50.toml \
  --clients 1,4,10,20,40 --extra "" --repeat "" --open-share 0 \
  --duration "${DURATION:-3}" --machine h200-low --out-dir "$OUT"
