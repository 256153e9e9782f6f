#!/usr/bin/env bash
# The model-coverage check on the device: every model of coverage_models.txt (or MODELS), both
# of PyTorch's exporters, the GPU engine in fp16 and fp32 and the CPU engine, all judged
# against onnxruntime on the same file and photos, beside PyTorch's own fp16 error and time.
#
# Binaries built on the development machine:
#   cargo build --release -p server -p client_qps -p tools --features server/cuda,tools/cuda --bins
#   strip into dist/ (model-check, server, client_qps), tar czf dist/dist.tgz, carry it; then
#   COMMIT=<sha> PART=<name> [MODELS="resnet18 timm:resnet50d ..."] [SEED_FLOW=1] \
#     [REVERSE=1] [SKIP_DONE_IN=/tmp/coverage-<earlier PART>] \
#     bash benches/gpu/coverage.sh                                → $OUT/coverage-<PART>.tgz
# Here: unpack each call's tarball into a folder and run
#   python3 benches/gpu/summarise_coverage.py benches/results/coverage-<date>.json \
#     docs/model-coverage.md DIR [DIR ...]
#
# How one call runs (the 10-minute limit; MODELS splits the list between calls):
# - `coverage.py prepare` in PREPARE (default 6) processes on the CPU: seeded, calibrated
#   weights, both exports, the photos as model inputs, onnxruntime's outputs;
# - `coverage.py torch`, one process on the GPU, and model-check take turns model by model (the
#   GPU is never shared while anything is timed): PyTorch's fp16/fp32 outputs and its CUDA-graph
#   times at batch 1 and 32; then per exported file model-check in fp16 (batch 1 and 32, its
#   outputs and graph times) and in fp32 (batch 1, and the CPU engine's outputs), with
#   onnxruntime's outputs as the reference. The CPU-side preparation of later models runs
#   meanwhile: it shares the host's cores with the launches, not the GPU.
# - SEED_FLOW=1: after the models, the dynamo export of resnet50 as written (external data
#   included) served by `server --toml` on configs/resnet50.toml (the model path changed only)
#   and classified by client_qps.
# PROFILE=1: the fp16 checks also print each step's device time at each batch size
#   (model-check --profile, in <exporter>/<name>.fp16.log): where a slow model's time goes.
# DEADLINE (default 510 s into the call) skips the models not reached, leaving time to pack.
set -uo pipefail
source "$(dirname "$0")/env.sh"
PART=${PART:-1}
DEADLINE=${DEADLINE:-510}
if [ -z "${MODELS:-}" ]; then
  MODELS=$(grep -v '^#' "$(dirname "$0")/coverage_models.txt" | grep -v '^$' | tr '\n' ' ')
fi
read -ra specs <<< "$MODELS"
# A second call on a warm machine: REVERSE=1 takes the list from its end and SKIP_DONE_IN (the
# first call's folder) drops the models that call finished, so that the two calls meet
# whether or not the first one's files are still there.
if [ -n "${REVERSE:-}" ]; then
  for ((i = ${#specs[@]} - 1; i >= 0; i--)); do rev+=("${specs[i]}"); done
  specs=("${rev[@]}")
fi
if [ -n "${SKIP_DONE_IN:-}" ]; then
  left=()
  for spec in "${specs[@]}"; do
    [ -f "$SKIP_DONE_IN/${spec##*:}.checked" ] && continue
    left+=("$spec")
  done
  echo "skipping $((${#specs[@]} - ${#left[@]})) models done in $SKIP_DONE_IN"
  specs=("${left[@]}")
fi
W=/tmp/coverage-$PART
# A fresh folder: the box can keep /tmp between calls, and stale files would be taken for this
# call's.
rm -rf "$W"
mkdir -p "$W/torchscript" "$W/dynamo"
report_header > "$W/device.txt"
cat "$W/device.txt"
log() { echo "== $* (${SECONDS}s)"; }

# Round-robin slices of the list, so that the first models are ready first.
n=${PREPARE:-6}
for ((i = 0; i < n; i++)); do
  slice=()
  for ((j = i; j < ${#specs[@]}; j += n)); do slice+=("${specs[j]}"); done
  [ ${#slice[@]} -gt 0 ] || continue
  PYTHONUNBUFFERED=1 python3 benches/gpu/coverage.py prepare "$W" benches/imgs "${slice[@]}" \
    > "$W/prepare-$i.log" 2>&1 &
done
PYTHONUNBUFFERED=1 python3 benches/gpu/coverage.py torch "$W" "${specs[@]}" > "$W/torch.log" 2>&1 &
tpid=$!

check() {  # check EXPORTER NAME PRECISION: one model-check run, its outputs kept in $W
  local f=$W/$1/$2.onnx base=$W/$1/$2.$3 batches=1,32 extra=()
  if [ "$3" = fp32 ]; then batches=1; extra=(--cpu-outputs "$W/$1/$2.cpu.f32"); fi
  if [ "$3" = fp16 ] && [ -n "${PROFILE:-}" ]; then extra=(--profile); fi
  timeout 150 dist/model-check --model "$f" --precision "$3" --batches "$batches" \
    --inputs "$W/$2.inputs.f32" --reference "$W/$1/$2.ort.f32" "${extra[@]}" \
    --concurrent-batches 0 --rounds 15 --reps 10 --warmup 20 \
    --dump-outputs "$base" --json "$base.json" > "$base.log" 2>&1
  local rc=$?
  echo "$2 $1 $3 rc=$rc $(grep -E '^ +[0-9]+ +[0-9.]+ +[0-9.]+ +[0-9.e+-]+ +[0-9]+/[0-9]+$' "$base.log" \
    | tr -s ' ' | tr '\n' '|')"
  [ $rc -eq 0 ] || grep -m1 -E "Error|error:|panicked" "$base.log" | cut -c1-300
}

for spec in "${specs[@]}"; do
  name=${spec##*:}
  if [ "$SECONDS" -ge "$DEADLINE" ]; then echo "$name: skipped (deadline)"; continue; fi
  # PyTorch's turn on the GPU first (it waits for the model's preparation).
  while [ ! -f "$W/$name.torch.json" ] && kill -0 $tpid 2>/dev/null; do sleep 0.2; done
  log "$name: $(head -c 300 "$W/$name.torch.json" 2>/dev/null | tr -d '\n ')"
  for exporter in torchscript dynamo; do
    [ -f "$W/$exporter/$name.ort.f32" ] || { echo "$name $exporter: no export or no reference"; continue; }
    check "$exporter" "$name" fp16
    check "$exporter" "$name" fp32
  done
  touch "$W/$name.checked"
done
log "models done"
kill $tpid 2>/dev/null
# What comes back: the small files (no models, weights or inputs). Packed now and again after
# the seed flow, so that a call stopped at its limit still returns the models' rows.
pack() {
  (cd "$W" && find . -type f ! -name '*.onnx' ! -name '*.onnx.data' ! -name '*.pt' \
    ! -name '*.inputs.f32' ! -name '*.checked' | tar czf "$OUT/coverage-$PART.tgz" -T -)
}
pack

if [ -n "${SEED_FLOW:-}" ] && [ -f "$W/dynamo/resnet50.onnx" ]; then
  log "seed flow: resnet50 as the dynamo exporter wrote it, behind the seed's TOML"
  ls -la "$W/dynamo/" | grep resnet50 > "$W/seed-files.txt"
  sed -e "s#^model = .*#model = \"$W/dynamo/resnet50.onnx\"#" \
      -e 's#^"model::cache".*##' configs/resnet50.toml > /tmp/seed.toml
  grep -E '^model' /tmp/seed.toml
  dist/server --toml /tmp/seed.toml --port 8898 --metrics-port 8899 > "$W/seed-server.log" 2>&1 &
  spid=$!
  if wait_ready 8899 $spid; then
    dist/client_qps --img_dir benches/imgs --port 8898 --request_client 20 --request_batch 1 \
      --total_number 5000 --json "$W/seed-client.json" 2>&1 | tail -n 14 | tee "$W/seed-client.txt"
  else
    echo "the server did not become ready"; tail -n 5 "$W/seed-server.log"
  fi
  kill -INT $spid 2>/dev/null; wait $spid
  tail -n 3 "$W/seed-server.log"
fi
pack
ls -la "$OUT"
