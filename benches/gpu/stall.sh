#!/usr/bin/env bash
# Where the GPU-decode TOML's stalls sit, on the device. Serves
# configs/resnet50_gpu.toml, runs client_qps at CLIENTS (default 20) for SECONDS (SECONDS_RUN, default 8),
# and keeps /metrics before and after (per-node queue-wait and run-time histograms) and the
# client's report in $OUT/stall-<clients>.{before,after}.prom/.txt. Binaries as zoo.sh says.
set -uo pipefail
source "$(dirname "$0")/env.sh"
ensure_models || exit 1
C=${CLIENTS:-20}
get() { python3 -c "import sys,urllib.request;sys.stdout.write(urllib.request.urlopen(sys.argv[1],timeout=5).read().decode())" "$1"; }
dist/server --toml configs/resnet50_gpu.toml --port 8899 --metrics-port 9899 > "$OUT/stall-server.log" 2>&1 &
spid=$!
for _ in $(seq 1 120); do
  get http://127.0.0.1:9899/health/ready >/dev/null 2>&1 && break
  kill -0 $spid 2>/dev/null || break
  sleep 1
done
dist/client_qps --img_dir benches/imgs --port 8899 --request_client "$C" --request_batch 1 \
  --total_number 2000 > /dev/null 2>&1
get http://127.0.0.1:9899/metrics > "$OUT/stall-$C.before.prom"
dist/client_qps --img_dir benches/imgs --port 8899 --request_client "$C" --request_batch 1 \
  --duration "${SECONDS_RUN:-8}" 2>&1 | tail -n 6 | tee "$OUT/stall-$C.txt"
get http://127.0.0.1:9899/metrics > "$OUT/stall-$C.after.prom"
kill -INT $spid; wait $spid
grep -E "torchpipe_node_(queue_wait|run)_duration_seconds_(sum|count)" "$OUT/stall-$C.after.prom"
