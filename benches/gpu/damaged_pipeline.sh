#!/usr/bin/env bash
# The damaged-JPEG corpus through the served GPU pipeline: configs/resnet50_gpu.toml as
# shipped (nvJPEG's hardware decoder) and with `nvjpeg_hardware = false` in [gpu_decoder] (the
# hybrid decoder), one request per file of dist/damaged (as engine/tests/decode_damaged.rs
# makes them), each outcome (answered or failed) against OpenCV's in dist/damaged_outcomes.txt
# (`<file>.decoded` / `<file>.refused`). A file [gpu_decoder] refuses goes to [cpu_decoder]
# (`filter = "or"`), so the pipeline must answer exactly the files OpenCV decodes; the
# decoders' item counts from /metrics say which node decoded how many.
# Binaries as for zoo.sh (dist/dist.tgz with dist/damaged/ and dist/damaged_outcomes.txt).
#   COMMIT=<sha> bash benches/gpu/damaged_pipeline.sh   → $OUT/damaged_pipeline.txt
set -uo pipefail
source "$(dirname "$0")/env.sh"
ensure_models || exit 1
R=$OUT/damaged_pipeline.txt
report_header > "$R"
run() {  # $1 label, $2 toml
  dist/server --toml "$2" --port 8896 --metrics-port 9896 > "/tmp/damaged-$1.log" 2>&1 &
  local pid=$! agree=0 differ=0
  if ! wait_ready 9896 $pid; then
    kill $pid 2>/dev/null; wait $pid
    echo "== $1: server did not start" >> "$R"; tail -n 5 "/tmp/damaged-$1.log" >> "$R"; return
  fi
  echo "== $1" >> "$R"
  for f in dist/damaged/*.jpg; do
    b=$(basename "$f")
    rm -rf /tmp/one && mkdir -p /tmp/one && cp "$f" /tmp/one/
    dist/client_qps --img_dir /tmp/one --port 8896 --request_client 1 --request_batch 1 \
      --total_number 1 --warmup 0 --json /tmp/one.json > /tmp/one.txt 2>&1
    read -r got why < <(python3 -c "
import json
r = json.load(open('/tmp/one.json'))
r = r[0] if isinstance(r, list) else r
print('refused' if r.get('errors', 0) else 'decoded', (r.get('first_errors') or [''])[0][:160])
" 2>/dev/null || echo "client-failed")
    want=$(grep -E "^$b\.(decoded|refused)$" dist/damaged_outcomes.txt | sed "s/^$b\.//")
    if [ "$got" = "$want" ]; then agree=$((agree + 1)); else differ=$((differ + 1)); fi
    echo "$b opencv=$want pipeline=$got $why" >> "$R"
  done
  echo "$1: $agree agree with OpenCV, $differ differ" >> "$R"
  get http://127.0.0.1:9896/metrics | grep -E '^torchpipe_(node_)?items_total|^torchpipe_.*(failed|errors)_total' \
    | grep -E 'gpu_decoder|cpu_decoder' >> "$R"
  kill -INT $pid; wait $pid
  echo "server exit $?" >> "$R"
  grep -iE "did not stop|panicked" "/tmp/damaged-$1.log" >> "$R"
}
run hardware configs/resnet50_gpu.toml
sed -e '/^\[gpu_decoder\]/a nvjpeg_hardware = false' configs/resnet50_gpu.toml > /tmp/hybrid.toml
run hybrid /tmp/hybrid.toml
cat "$R"
