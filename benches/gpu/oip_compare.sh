#!/usr/bin/env bash
# One pipeline, three protocols, one call: TOML (default configs/resnet50_gpu.toml) served with
# --http-port and --grpc-port; at each concurrency of CONCURRENCY (default "1 20 128"):
# client_qps on the Thrift port, perf_analyzer -i http and perf_analyzer -i grpc (Triton's load
# tester, from the tritonclient 2.40.0 wheel), SECS seconds each on the same photo
# (benches/imgs/chelsea.jpg; perf_analyzer sends one image a request, as client_qps does).
# Carried: dist/dist.tgz (server, client_qps) and .oip/ (made by the lines below: the
# tritonclient wheel's perf_analyzer, Debian's libb64 and PyPI's libcudart.so.12, which it
# links; the device has neither, and no network).
#   mkdir -p .oip && cp target/oip-tools/venv/bin/perf_analyzer .oip/ \
#     && cp /usr/lib/x86_64-linux-gnu/libb64.so.0d \
#        target/oip-tools/venv/lib/python3.*/site-packages/nvidia/cuda_runtime/lib/libcudart.so.12 .oip/
#   COMMIT=<sha> bash benches/gpu/oip_compare.sh   → $OUT/oip-compare.json and the rows
# Without a GPU (a check of the script): TOML=configs/resnet50.toml CONCURRENCY=2 SECS=3.
set -uo pipefail
source "$(dirname "$0")/env.sh"
report_header | tee "$OUT/device.txt"
if [ -f dist/dist.tgz ]; then
  mkdir -p dist && tar xzf dist/dist.tgz -C dist
  BIN=dist
else
  BIN=target/release
fi
PA=${PA:-.oip}
TOML=${TOML:-configs/resnet50_gpu.toml}
# The model perf_analyzer asks for: the TOML's first node (its entry, in the shipped configs).
MODEL=${MODEL:-$(grep -m1 -oE '^\[[^]]+\]' "$TOML" | tr -d '[]')}
SECS=${SECS:-10}
W=$(mktemp -d)
ensure_models || exit 1
python3 - benches/imgs/chelsea.jpg "$W/input.json" <<'PY'
import base64, json, struct, sys
d = open(sys.argv[1], "rb").read()
e = base64.b64encode(struct.pack("<I", len(d)) + d).decode()
json.dump({"data": [{"INPUT": {"content": {"b64": e}, "shape": [1]}}]}, open(sys.argv[2], "w"))
PY
mkdir -p "$W/one" && cp benches/imgs/chelsea.jpg "$W/one/"

"$BIN/server" --toml "$TOML" --port 8890 --http-port 8000 --grpc-port 8001 \
  --metrics-port 8891 < /dev/null > "$W/server.log" 2>&1 &
spid=$!
if ! wait_ready 8891 $spid; then
  echo "the server did not become ready"; tail -n 20 "$W/server.log"; exit 1
fi
for c in ${CONCURRENCY:-1 20 128}; do
  echo "== $c clients (${SECONDS}s)"
  "$BIN/client_qps" --img_dir "$W/one" --port 8890 --request_client "$c" --request_batch 1 \
    --duration "$SECS" --warmup 100 --json "$OUT/thrift-$c.json" 2>&1 | grep -E "QPS|TP" | head -n 3
  for proto in http grpc; do
    port=8000; [ $proto = grpc ] && port=8001
    LD_LIBRARY_PATH="$PA:${LD_LIBRARY_PATH:-}" "$PA/perf_analyzer" -m "$MODEL" -i $proto \
      -u 127.0.0.1:$port --input-data "$W/input.json" --concurrency-range "$c" \
      --measurement-interval $((SECS * 1000)) --max-trials 3 --stability-percentage 100 \
      --percentile 99 -f "$OUT/$proto-$c.csv" > "$OUT/$proto-$c.txt" 2>&1
    echo "$proto rc=$?: $(grep -E 'Throughput|p99 latency' "$OUT/$proto-$c.txt" | head -n 2 | tr -s ' ' | tr '\n' ' ')"
  done
done
kill -INT $spid 2>/dev/null
wait $spid 2>/dev/null
cp "$W/server.log" "$OUT/"
python3 - "$OUT" ${CONCURRENCY:-1 20 128} <<'PY'
import csv, json, os, sys
out, conc = sys.argv[1], sys.argv[2:]
rec = {}
for c in conc:
    row = {}
    t = os.path.join(out, f"thrift-{c}.json")
    if os.path.exists(t):
        r = json.load(open(t)); r = r[0] if isinstance(r, list) else r
        row["thrift"] = {"qps": r["qps"], "p50_ms": r["tp50_ms"], "p99_ms": r["tp99_ms"]}
    for proto in ("http", "grpc"):
        f = os.path.join(out, f"{proto}-{c}.csv")
        if os.path.exists(f):
            lines = [l for l in open(f) if l.strip()]
            r = next(csv.DictReader(lines))
            row[proto] = {"qps": float(r["Inferences/Second"]),
                          "p50_ms": float(r["p50 latency"]) / 1e3,
                          "p99_ms": float(r["p99 latency"]) / 1e3}
    rec[c] = row
    print(c, json.dumps(row))
json.dump(rec, open(os.path.join(out, "oip-compare.json"), "w"), indent=1)
PY
