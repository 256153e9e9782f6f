#!/usr/bin/env bash
# A change to the GPU pipeline against the binary before it, in one call: the parts' ceilings
# (preprocess-check: GPU decode + resize + cvtColor checked against the CPU path and timed, one
# instance and the TOML's 4 at once; model-check: the model at the TOML's 4 instances, inputs on
# the GPU), then benches/sweep.py on the GPU TOML with one setting per binary (old =
# dist/old/server, new = dist/server), and the new binary on the TOML with [cpu_decoder]'s
# instance_num set to each of $CPU_DECODERS, at $CLIENTS clients × 1 (128 three times) and the
# open loop at 80% of the best rate and at a fixed 4,000/s; then the last setting's server CPU
# by thread at 128 clients. The servers log at debug the GPU buffers they make (`GPU value
# buffers made`, with the time the allocation took): per second, against the sweep's run
# times, they show when the pool grows. Writes to $OUT: preprocess.json, model.json,
# parts.txt, the sweep's JSON and Markdown, logs.tgz (the servers' logs).
# Binaries built on the development machine (dist/: server, client_qps, model-check,
# preprocess-check; dist/old/server), packed into dist/dist.tgz and carried; then:
#   COMMIT=<sha> [MACHINE=h100] bash benches/gpu/pipeline_ab.sh
set -uo pipefail
source "$(dirname "$0")/env.sh"
ensure_models || exit 1
report_header
ceilings "${PRE_BATCHES:-8,16}" 5
mkdir -p "$OUT/logs"
export RUST_LOG="info,engine::gpu::pool=debug"
settings=(--setting "old=configs/resnet50_gpu.toml" --setting "new=configs/resnet50_gpu.toml")
last=configs/resnet50_gpu.toml
for n in ${CPU_DECODERS:-}; do
  # The TOML as it is but for [cpu_decoder]'s instance_num (the line after its `filter`).
  sed "/^\[cpu_decoder\]/,/^\[/ s/^instance_num = .*/instance_num = $n/" \
    configs/resnet50_gpu.toml > "configs/resnet50_gpu_cpu$n.toml"
  grep -A4 '^\[cpu_decoder\]' "configs/resnet50_gpu_cpu$n.toml" | grep instance_num
  settings+=(--setting "new-cpu$n=configs/resnet50_gpu_cpu$n.toml")
  last="configs/resnet50_gpu_cpu$n.toml"
done
python3 benches/sweep.py --client dist/client_qps --server dist/server \
  --server-of old=dist/old/server "${settings[@]}" \
  --clients "${CLIENTS:-1,20,128,256}" --repeat 128x1 --open-rates 4000 \
  --duration "${DURATION:-4}" --ceilings "$OUT/preprocess.json,$OUT/model.json" \
  --machine "${MACHINE:-h100}-ab" --out-dir "$OUT"
mv "$OUT"/*.log "$OUT/logs/" 2>/dev/null
for log in "$OUT"/logs/*.log; do
  echo "$(basename "$log"): GPU value buffers made (time, class, how long):"
  sed -E 's/\x1b\[[0-9;]*m//g' "$log" | grep -E 'buffers made' | sed -E 's/^[^T]*T([0-9:]{8}).*class=([0-9]+).*us=([0-9]+).*/\1 class \2 \3 us/' | tail -n 40
done
unset RUST_LOG
thread_cpu "$last" "$OUT/logs/last-128" 128
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$OUT/logs"
