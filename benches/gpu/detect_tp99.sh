#!/usr/bin/env bash
# Latency of configs/detect_classify_gpu.toml's pipeline at 20 clients × 1 (the TP99 goal) under
# instance counts, batch sizes, batching_timeout and `server --gpu-priority`, one call: the goal
# run's gpu16 server (YOLOv8n and ResNet-18 in fp16, images on the GPU; benches/gpu/detect_goal.py
# prepare) with each VARIANTS entry's edits, then PyTorch's own fp16 boxes against themselves
# (detect_goal.py fp16self). First, detect-preprocess-check: every GPU detection backend against
# its CPU twin, value for value (as benches/gpu/detect_backends.sh). Every server shares one model::cache per model: the first tunes
# every batch size the others use (it must have the largest `max` of each model).
#   build and carry as detect_goal.sh says, then
#   COMMIT=<sha> bash benches/gpu/detect_tp99.sh   → $OUT/detect-tp99.tgz and the rows
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site YOLO_OFFLINE=1 YOLO_CONFIG_DIR=/tmp/ultralytics-config
source "$(dirname "$0")/env.sh"
report_header | tee "$OUT/device.txt"
mkdir -p dist && tar xzf dist/dist.tgz -C dist
W=/tmp/goal
IMGS=/tmp/goal-imgs
rm -rf "$W" "$IMGS"
mkdir -p "$W" "$IMGS"
find benches/imgs -maxdepth 1 -type f ! -name 'odd_*' -exec cp {} "$IMGS" \;
log() { echo "== $* (${SECONDS}s)"; }
G=benches/gpu/detect_goal.py

log "detect-preprocess-check"
dist/detect-preprocess-check --images benches/imgs --json "$W/detect-preprocess.json" \
  2>&1 | grep -v " INFO " | tail -n 12

log prepare
PYTHONUNBUFFERED=1 python3 $G prepare "$W" "$IMGS" || exit 1

CACHE="detector.\"model::cache\"=\"$W/yolov8n.cache\" classifier.\"model::cache\"=\"$W/resnet18.cache\""
# NAME|server flags|edits. The goal run's TOML: detector 6 × max 8, crop and classifier 4 × 32.
VARIANTS=${VARIANTS:-"
d2x16|--gpu-priority equal|detector.instance_num=2 detector.max=16
base|--gpu-priority equal|
base-down|--gpu-priority downstream|
d2x16-down|--gpu-priority downstream|detector.instance_num=2 detector.max=16
d3x8-down|--gpu-priority downstream|detector.instance_num=3
d1x16-down|--gpu-priority downstream|detector.instance_num=1 detector.max=16
d2x16-c2-down|--gpu-priority downstream|detector.instance_num=2 detector.max=16 crop.instance_num=2 classifier.instance_num=2
d2x16-t1-down|--gpu-priority downstream|detector.instance_num=2 detector.max=16 .batching_timeout=1
d2x16-t5-down|--gpu-priority downstream|detector.instance_num=2 detector.max=16 .batching_timeout=5
"}
SECS=${SECS:-8}
echo "$VARIANTS" | while IFS='|' read -r name flags edits; do
  [ -z "$name" ] && continue
  # shellcheck disable=SC2086
  python3 $G variant "$W" "$name" $CACHE $edits || continue
  log "server $name ($flags; $edits)"
  # shellcheck disable=SC2086
  dist/server --toml "$W/detect_classify_$name.toml" --port 8890 --metrics-port 8891 $flags \
    < /dev/null > "$W/server-$name.log" 2>&1 &
  spid=$!
  if wait_ready 8891 $spid; then
    log "ready $name"
    for clients in 20; do
      dist/client_qps --img_dir "$IMGS" --port 8890 --request_client $clients --request_batch 1 \
        --duration 2 --method infer_detect > /dev/null 2>&1
      get http://127.0.0.1:8891/metrics > "$W/metrics-$name-$clients-before.txt"
      dist/client_qps --img_dir "$IMGS" --port 8890 --request_client $clients --request_batch 1 \
        --duration "$SECS" --method infer_detect --server-pid $spid \
        --json "$W/ours-$name-$clients.json" 2>&1 | tail -n 4
      get http://127.0.0.1:8891/metrics > "$W/metrics-$name-$clients-after.txt"
      python3 $G nodes "$W/metrics-$name-$clients-before.txt" "$W/metrics-$name-$clients-after.txt" \
        > "$W/nodes-$name-$clients.txt"
      head -n -1 "$W/nodes-$name-$clients.txt" | grep -v -E "^(boxes|cpu_decoder|gpu_decoder|letterbox) "
    done
  else
    echo "the $name server did not become ready"
    tail -n 5 "$W/server-$name.log"
  fi
  kill -INT $spid 2>/dev/null
  wait $spid 2>/dev/null
  grep -E "WARN|ERROR" "$W/server-$name.log" | head -n 4
done

log "PyTorch fp16 against itself"
PYTHONUNBUFFERED=1 python3 $G fp16self "$W" "$IMGS" 2>&1 | grep -v "is deprecated" | tail -n 4

python3 - "$W" "$OUT/detect-tp99.json" <<'PY'
import glob, json, os, sys
w, out = sys.argv[1], sys.argv[2]
rec = {}
for p in sorted(glob.glob(os.path.join(w, "ours-*-20.json"))):
    name = os.path.basename(p)[5:-8]
    r = json.load(open(p))
    r = r[0] if isinstance(r, list) else r
    nodes = open(os.path.join(w, f"nodes-{name}-20.txt")).read().splitlines()[-1]
    rec[name] = {"client": r, "nodes": json.loads(nodes)}
    print(f"{name:16} {r['images_per_s']:8.1f} photos/s  TP50 {r['tp50_ms']:6.2f}  TP90 "
          f"{r['tp90_ms']:6.2f}  TP99 {r['tp99_ms']:6.2f} ms  GPU {r.get('gpu_util_pct', 0):4.0f}%  "
          f"server cores {r.get('server_cpu_pct', 0) / 100:4.1f}  errors {r['errors']}")
f = os.path.join(w, "fp16self.json")
rec["pytorch_fp16_self"] = json.load(open(f)) if os.path.exists(f) else None
json.dump(rec, open(out, "w"), indent=1)
PY
(cd "$W" && tar czf "$OUT/detect-tp99.tgz" ./*.json ./*.toml ./nodes-*.txt ./server-*.log 2>/dev/null)
ls -la "$OUT"
