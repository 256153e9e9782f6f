# Sourced by the device scripts. COMMIT must name the commit dist/ was built from (the device's
# copy of .git can be stale); results go to $OUT. Puts the CUDA 13 / cuDNN 9 libraries the engine
# loads at run time (driver, cuDNN, NVRTC, nvJPEG, cuBLAS) on LD_LIBRARY_PATH, wherever this image keeps
# them.
: "${COMMIT:?set COMMIT to the commit dist/ was built from}"
export COMMIT RUST_BACKTRACE=0
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
dirs=""
for lib in 'libcudnn.so.9*' 'libnvrtc.so.13*' 'libnvjpeg.so.13*' 'libcublas.so.13*'; do
  d=$(find /usr/local/cuda*/ /opt /usr/lib /usr/local/lib -name "$lib" -not -path '*/stubs/*' 2>/dev/null | head -1)
  [ -n "$d" ] && dirs="$dirs:$(dirname "$d")"
done
export LD_LIBRARY_PATH="${dirs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# The generated ONNX models, written by whichever of the check binaries was carried.
ensure_models() {
  [ -f models/resnet50.onnx ] && return 0
  for b in dist/model-check dist/preprocess-check; do
    [ -x "$b" ] && { "$b" --write-models models >/dev/null; return; }
  done
  echo "no dist/model-check or dist/preprocess-check to write models/ with" >&2
  return 1
}

# A URL's body on stdout (the box has python3; curl is not promised).
get() { python3 -c "import sys,urllib.request;sys.stdout.write(urllib.request.urlopen(sys.argv[1],timeout=5).read().decode())" "$1"; }

# Waits until the server with metrics port $1 and process $2 is ready (up to 240 s); fails when
# it exits first. The Thrift port opens before the instances are built (and tuned, the first
# time): readiness, not the port, says it can answer.
wait_ready() {
  for _ in $(seq 1 240); do
    get "http://127.0.0.1:$1/health/ready" >/dev/null 2>&1 && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 1
  done
  return 1
}

# A report's first lines: the GPU and driver, the commit, the date.
report_header() {
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; echo "commit $COMMIT"; date -u +%F
}

# The server's CPU by thread (benches/thread_cpu.py, 4 s) under one load: TOML $1, output prefix
# $2, the client's load $3 ("128": 128 clients × 1, closed loop; "128@4000": 128 connections,
# open loop at 4,000 requests/s), then the server's own flags. Writes $2-server.log,
# $2-client.txt, $2-threads.{txt,json}.
thread_cpu() {
  local toml=$1 prefix=$2 load=$3
  shift 3
  local clients=${load%@*} rate=()
  [ "$load" != "$clients" ] && rate=(--request-rate "${load#*@}")
  dist/server --toml "$toml" --port 8896 --metrics-port 8897 "$@" > "$prefix-server.log" 2>&1 &
  local spid=$!
  if wait_ready 8897 $spid; then
    dist/client_qps --img_dir benches/imgs --port 8896 --request_client "$clients" \
      --request_batch 1 --duration 8 "${rate[@]}" > "$prefix-client.txt" 2>&1 &
    local cpid=$!
    sleep 3
    python3 benches/thread_cpu.py $spid 4 --json "$prefix-threads.json" | tee "$prefix-threads.txt"
    wait $cpid
    tail -n 4 "$prefix-client.txt"
  fi
  kill -INT $spid 2>/dev/null
  wait $spid 2>/dev/null
}

# The GPU TOML's parts alone: preprocess-check (GPU decode + resize + cvtColor against the CPU
# path, then timed at node batches $1 with one instance and 4 at once; $2 timing rounds) and
# model-check (ResNet50 at batch 16, 4 instances, inputs on the GPU). Writes
# $OUT/preprocess.json, $OUT/model.json and $OUT/parts.txt, and prints the rates.
ceilings() {
  dist/preprocess-check --images benches/imgs --extra engine/tests/fixtures/jpeg \
    --batches "$1" --rounds "$2" --instances 4 --gpu-toml configs/resnet50_gpu.toml \
    --cpu-toml configs/resnet50.toml --json "$OUT/preprocess.json" > "$OUT/parts.txt" 2>&1
  model_ceiling 4 "$OUT/model.json"
  grep -E "images/s|differ|concurrency|max abs|error" "$OUT/parts.txt" | tail -n 20
}

# The model's own rate with $1 instances at once (ResNet50, batch $3 or 16, inputs on the GPU),
# checked against one instance: model-check's JSON into $2, its output appended to parts.txt.
model_ceiling() {
  dist/model-check --model models/resnet50.onnx --batches "${3:-16}" --instances "$1" \
    --concurrent-batches 4000 --cache models/resnet50.trt --json "$2" >> "$OUT/parts.txt" 2>&1
}
