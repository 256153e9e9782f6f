#!/usr/bin/env bash
# How the server's threads wait for the GPU (`server --gpu-wait spin|yield|block`), measured on
# the GPU TOML in one call: benches/sweep.py with one setting per strategy, at 1, 20 and 128
# clients × 1 (128 three times), then the open loop at 80% of the best closed-loop rate; QPS,
# latency and the server's CPU per 1,000 QPS side by side. Writes
# $OUT/sweep-<date>-<machine>-wait.{json,md} and the servers' logs.
# Binaries built on the development machine:
#   cargo build --release -p server -p client_qps -p tools --features server/cuda,tools/cuda --bins
#   strip into dist/ (model-check, server, client_qps), tar czf dist/dist.tgz, carry it
# then: COMMIT=<sha> [MACHINE=h100] bash benches/gpu/gpu_wait.sh
# The first server tunes the GPU engine and writes models/resnet50.trt (model::cache); the others
# read it.
set -uo pipefail
source "$(dirname "$0")/env.sh"
ensure_models || exit 1
settings=()
for how in ${WAITS:-spin yield block}; do
  settings+=(--setting "$how=configs/resnet50_gpu.toml --gpu-wait $how")
done
python3 benches/sweep.py --server dist/server --client dist/client_qps "${settings[@]}" \
  --clients "${CLIENTS:-1,20,128}" --extra "" --repeat 128x1 --duration "${DURATION:-4}" \
  --machine "${MACHINE:-h100}-wait" --out-dir "$OUT"
# Where the server's CPU goes by thread, spin against block, at 128 clients: one server each
# (reading the cache the sweep wrote), the client for 8 s, the threads sampled over its middle.
for how in ${THREAD_WAITS:-spin block}; do
  thread_cpu configs/resnet50_gpu.toml "$OUT/threads-$how" 128 --gpu-wait "$how"
done
