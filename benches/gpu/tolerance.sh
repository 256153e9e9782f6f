#!/usr/bin/env bash
# How much the tuner's choice of convolution algorithms adds to the fp16 error: the
# models of TOL_MODELS (exported by zoo.sh into /tmp/onnx in the same call) checked and timed by
# model-check at batch 1 and 32 under each bound of TOLS on a candidate's relative L2 against
# cuDNN's implicit GEMM ("default" is the engine's 1e-3). For the first model, the default run's
# tuning log at debug level (every candidate's time and error) is kept, gzipped.
#   COMMIT=<sha> TOL_MODELS="resnet101 ..." [TOLS="default 4e-4 2e-4"] [DEADLINE=s] \
#     bash benches/gpu/tolerance.sh   → $OUT/tolerance/ and a table on stdout
set -uo pipefail
source "$(dirname "$0")/env.sh"
W=$OUT/tolerance
mkdir -p "$W"
first=1
for m in ${TOL_MODELS:?}; do
  f=/tmp/onnx/$m.onnx
  [ -f "$f" ] || { echo "$m: not exported"; continue; }
  for t in ${TOLS:-default 4e-4 2e-4}; do
    [ "$SECONDS" -lt "${DEADLINE:-500}" ] || { echo "$m $t: skipped (deadline)"; continue; }
    flag=()
    [ "$t" = default ] || flag=(--tune-tolerance "$t")
    # Debug logging only for the run whose log is kept.
    log=/dev/null level=${RUST_LOG:-}
    [ "$t" = default ] && [ -n "$first" ] && log="$W/$m.tune-debug.log" level=engine::gpu::conv=debug
    RUST_LOG=$level timeout 150 dist/model-check --model "$f" \
      --precision fp16 --batches 1,32 --concurrent-batches 0 --rounds 15 "${flag[@]}" \
      --json "$W/$m.$t.json" > "$W/$m.$t.log" 2> "$log"
    echo "$m tolerance $t rc=$? $(grep -E '^ +[0-9]+ ' "$W/$m.$t.log" | tr -s ' ' | tr '\n' '|')"
  done
  [ -f "$W/$m.tune-debug.log" ] && gzip -f "$W/$m.tune-debug.log"
  first=
done
