#!/usr/bin/env bash
# The seed's TOML against `server --baseline` on it at 1 client × 1, three runs each, with the
# server's own view of each run (benches/sweep.py reads /metrics around it: the time from reading
# a call to writing its answer, and per node the queue wait and the forward), so that the
# pipeline's extra time at 1 client splits into the nodes' work and the hand-offs between them.
# Writes $OUT/sweep-<date>-<machine>.{json,md} and $OUT/logs.tgz.
#   COMMIT=<sha> [MACHINE=h100] [DURATION=2] bash benches/gpu/seed_one_client.sh
set -uo pipefail
source "$(dirname "$0")/env.sh"
ensure_models || exit 1
report_header
python3 benches/sweep.py --server dist/server --client dist/client_qps \
  --setting baseline=configs/resnet50.toml --setting seed=configs/resnet50.toml \
  --clients 1 --repeat 1x1 --open-share 0 --duration "${DURATION:-2}" \
  --machine "${MACHINE:-h100}" --out-dir "$OUT"
mkdir -p "$OUT/logs" && mv "$OUT"/*.log "$OUT/logs/" 2>/dev/null
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$OUT/logs"
sed -n '/^| setting/,$p' "$OUT"/sweep-*.md
