#!/usr/bin/env bash
# The single-GPU check of `device_id`: configs/resnet50_gpu.toml as shipped, then with
# `device_id = 0` in its globals, each served and classified by client_qps (20 clients × 1,
# the same requests); then `device_id = 1`, which must fail at start-up naming the node, the
# key, the value and the GPUs found. Binaries as for zoo.sh (dist/dist.tgz).
#   COMMIT=<sha> bash benches/gpu/device_id.sh   → $OUT/device_id.txt
set -uo pipefail
source "$(dirname "$0")/env.sh"
ensure_models || exit 1
R=$OUT/device_id.txt
report_header > "$R"
serve() {  # $1 label, $2 toml
  dist/server --toml "$2" --port 8897 --metrics-port 9897 > "/tmp/dev-$1.log" 2>&1 &
  local pid=$!
  if wait_ready 9897 $pid; then
    echo "== $1: serving" >> "$R"
    dist/client_qps --img_dir benches/imgs --port 8897 --request_client 20 --request_batch 1 \
      --total_number 20000 2>&1 | tail -n 12 >> "$R"
    kill -INT $pid; wait $pid
    echo "server exit $?" >> "$R"
  else
    kill $pid 2>/dev/null  # not ready in time, if it is still running
    wait $pid
    echo "== $1: server exit $? (did not start)" >> "$R"
    grep -iE "error|device_id" "/tmp/dev-$1.log" | head -5 >> "$R"
  fi
}
serve shipped configs/resnet50_gpu.toml
{ echo "device_id = 0"; cat configs/resnet50_gpu.toml; } > /tmp/dev0.toml
serve device0 /tmp/dev0.toml
{ echo "device_id = 1"; cat configs/resnet50_gpu.toml; } > /tmp/dev1.toml
serve device1 /tmp/dev1.toml
cat "$R"
