#!/usr/bin/env bash
# The device run of benches/compare.py on the seed TOML (or $TOML, with the baseline from
# $BASELINE_TOML) with the GPU model engine, on release binaries built on the development
# machine and carried in dist/:
#   cargo build --release -p server -p tools --features cuda --bins && cargo build --release -p client_qps
#   strip -o dist/server target/release/server; strip -o dist/client_qps target/release/client_qps
set -uo pipefail
source "$(dirname "$0")/env.sh"
ensure_models || exit 1
python3 benches/compare.py --toml "${TOML:-configs/resnet50.toml}" \
  ${BASELINE_TOML:+--baseline-toml "$BASELINE_TOML"} --server dist/server \
  --client dist/client_qps --request_client "${CLIENTS:-20,10}" --request_batch "${BATCHES:-1,4}" \
  --duration "${DURATION:-8}" --warmup 200 --machine h100 --out-dir "$OUT"
