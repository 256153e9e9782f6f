#!/usr/bin/env bash
# The load sweep on the GPU box, one call: first the parts' own ceilings (preprocess-check: GPU
# decode + resize + cvtColor checked against the CPU path, then timed at the decoder node's
# batch sizes, one instance and the TOML's 4 at once; model-check: ResNet50 at batch 16 with the
# TOML's 4 instances, inputs on the GPU), then benches/sweep.py: `server --baseline` and the
# pipeline on the seed TOML and on the GPU TOML, at 1, 4, 20, 64, 128 and 256 clients × 1, 20
# and 128 three times, the open loop at 80% of the best closed-loop rate and at a fixed
# 4,000/s (server CPU at a fixed rate); the GPU rows also as a share of the slower part. Then the
# GPU TOML's server CPU by thread at 128 clients and in the open loop at 4,000/s.
# More settings, to read a change against what it replaced in the same call:
#   GPU_VARIANTS="cpu2"  the GPU TOML with [cpu_decoder]'s instance_num = 2 (gpu-cpu2)
#   MODEL_VARIANTS="2 2x32"  the GPU TOML with [resnet50]'s instance_num = 2 (gpu-m2), or 2 and
#                        max = 32 (gpu-m2x32), and the model's ceiling with that many instances
#                        at that batch (model-m2.json, model-m2x32.json)
#   IO_VARIANTS="4"      the GPU TOML with `server --io-threads 4` (gpu-io4)
#   BEFORE=1             dist/old/server on that TOML as it was (gpu-before; instance_num 2)
# Shorter: ROUNDS=3 (preprocess-check's timing rounds, 5), THREADS=0 (no per-thread samples),
# CLIENTS=1,128 (closed-loop client counts), REPEAT= (no repeats; default 20x1,128x1).
# Writes to $OUT: preprocess.json, model.json, parts.txt, sweep-<date>-<machine>.{json,md},
# logs.tgz (the servers' logs and the per-thread sample).
# Binaries built on the development machine:
#   cargo build --release -p server -p client_qps -p tools --features server/cuda,tools/cuda --bins
#   strip server, client_qps, model-check, preprocess-check into dist/ (the older server into
#   dist/old/ for BEFORE=1), tar czf dist/dist.tgz, carry it; then:
#   COMMIT=<sha> [MACHINE=h100] [DURATION=4] bash benches/gpu/sweep.sh
# The first server start tunes the GPU engine and writes models/resnet50.trt (model::cache);
# the later ones read it.
set -uo pipefail
source "$(dirname "$0")/env.sh"
ensure_models || exit 1
report_header
ceilings 8,16 "${ROUNDS:-5}"
mkdir -p "$OUT/logs"
settings=(--setting baseline=configs/resnet50.toml --setting seed=configs/resnet50.toml
  --setting gpu=configs/resnet50_gpu.toml)
instances() {
  # The GPU TOML as it is but for node [$1]'s instance_num (and its max, if $3 is given).
  local max=()
  [ -n "${3:-}" ] && max=(-e "/^\[$1\]/,/^\[/ s/^max = .*/max = $3/")
  sed -e "/^\[$1\]/,/^\[/ s/^instance_num = .*/instance_num = $2/" "${max[@]}" \
    configs/resnet50_gpu.toml
}
for v in ${GPU_VARIANTS:-}; do
  instances cpu_decoder "${v#cpu}" > "configs/resnet50_gpu_$v.toml"
  settings+=(--setting "gpu-$v=configs/resnet50_gpu_$v.toml")
done
for v in ${MODEL_VARIANTS:-}; do
  n=${v%x*} b=16
  [ "$v" != "$n" ] && b=${v#*x}
  instances resnet50 "$n" "$b" > "configs/resnet50_gpu_m$v.toml"
  settings+=(--setting "gpu-m$v=configs/resnet50_gpu_m$v.toml")
  model_ceiling "$n" "$OUT/model-m$v.json" "$b"
  grep -E "^concurrency" "$OUT/parts.txt" | tail -n 1
done
for n in ${IO_VARIANTS:-}; do
  settings+=(--setting "gpu-io$n=configs/resnet50_gpu.toml --io-threads $n")
done
before=()
if [ "${BEFORE:-0}" = 1 ]; then
  instances cpu_decoder 2 > configs/resnet50_gpu_before.toml
  settings+=(--setting gpu-before=configs/resnet50_gpu_before.toml)
  before=(--server-of gpu-before=dist/old/server)
fi
python3 benches/sweep.py --server dist/server --client dist/client_qps "${before[@]}" \
  "${settings[@]}" --clients "${CLIENTS:-1,4,20,64,128,256}" --repeat "${REPEAT-20x1,128x1}" \
  --open-rates 4000 \
  --duration "${DURATION:-4}" --ceilings "$OUT/preprocess.json,$OUT/model.json" \
  --machine "${MACHINE:-h100}" --out-dir "$OUT"
mv "$OUT"/*.log "$OUT/logs/" 2>/dev/null
if [ "${THREADS:-1}" = 1 ]; then
  thread_cpu configs/resnet50_gpu.toml "$OUT/logs/gpu-128" 128
  thread_cpu configs/resnet50_gpu.toml "$OUT/logs/gpu-open4000" 128@4000
fi
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$OUT/logs"
