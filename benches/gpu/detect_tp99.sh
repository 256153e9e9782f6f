#!/usr/bin/env bash
# Latency of configs/detect_classify_gpu.toml's pipeline at 20 clients × 1 (the TP99 goal) under
# instance counts, batch sizes, batching_timeout and `server --gpu-priority`, one call: the goal
# run's gpu16 server (YOLOv8n and ResNet-18 in fp16, images on the GPU; benches/gpu/detect_goal.py
# prepare) with each VARIANTS entry's edits, then PyTorch's own fp16 boxes against themselves
# (detect_goal.py fp16self), after detect-preprocess-check: every GPU detection backend against
# its CPU twin, value for value (as benches/gpu/detect_backends.sh). Every server shares one
# model::cache per model: the first tunes every batch size the others use (it must have the
# largest `max` of each model). Each variant's boxes and crop classes, one photo at a time
# (detect_goal.py served), must equal those of the variant named BASE (default: the first):
# the variants change where and how work runs, not what is computed.
# CHECKS (default "preprocess fp16self"; empty: none) names the checks after the variants.
#   build and carry as detect_goal.sh says, then
#   COMMIT=<sha> bash benches/gpu/detect_tp99.sh   → $OUT/detect-tp99.json and the rows
set -uo pipefail
source "$(dirname "$0")/goal_env.sh"
G=benches/gpu/detect_goal.py

log prepare
PYTHONUNBUFFERED=1 python3 $G prepare "$W" "$IMGS" || exit 1

CACHE="detector.\"model::cache\"=\"$W/yolov8n.cache\" classifier.\"model::cache\"=\"$W/resnet18.cache\""
# NAME|server flags|edits. The goal run's TOML: detector 6 × max 8, crop and classifier 4 × 32.
VARIANTS=${VARIANTS:-"
d2x16|--gpu-priority equal|detector.instance_num=2 detector.max=16
base|--gpu-priority equal|
base-down|--gpu-priority downstream|
d2x16-down|--gpu-priority downstream|detector.instance_num=2 detector.max=16
d2x16-c2-down|--gpu-priority downstream|detector.instance_num=2 detector.max=16 crop.instance_num=2 classifier.instance_num=2
d3x8-down|--gpu-priority downstream|detector.instance_num=3
"}
SECS=${SECS:-7}
# One variant's server at CLIENTS × 1 for SECS (after a warm-up), its per-node figures from
# /metrics read before and after; every file goes to $OUT at once (a call cut short keeps them).
measure() {
  local name=$1 clients=$2 tag=$3
  dist/client_qps --img_dir "$IMGS" --port 8890 --request_client "$clients" --request_batch 1 \
    --duration 2 --method infer_detect > /dev/null 2>&1
  get http://127.0.0.1:8891/metrics > "$W/metrics-$tag-before.txt"
  dist/client_qps --img_dir "$IMGS" --port 8890 --request_client "$clients" --request_batch 1 \
    --duration "$SECS" --method infer_detect --server-pid "$spid" \
    --json "$W/ours-$tag.json" 2>&1 | tail -n 3
  get http://127.0.0.1:8891/metrics > "$W/metrics-$tag-after.txt"
  python3 $G nodes "$W/metrics-$tag-before.txt" "$W/metrics-$tag-after.txt" > "$W/nodes-$tag.txt"
  head -n -1 "$W/nodes-$tag.txt" | grep -E "^(detector|postproc|crop|classifier) "
  cp "$W/ours-$tag.json" "$W/nodes-$tag.txt" "$OUT/" 2>/dev/null
}
start() {
  local name=$1 flags=$2
  # shellcheck disable=SC2086
  dist/server --toml "$W/detect_classify_$name.toml" --port 8890 --metrics-port 8891 $flags \
    < /dev/null > "$W/server-$name.log" 2>&1 &
  spid=$!
  wait_ready 8891 $spid
}
stop() {
  kill -INT "$spid" 2>/dev/null
  wait "$spid" 2>/dev/null
  grep -E "WARN|ERROR" "$W/server-$1.log" | head -n 4
}
echo "$VARIANTS" | while IFS='|' read -r name flags edits; do
  [ -z "$name" ] && continue
  # shellcheck disable=SC2086
  python3 $G variant "$W" "$name" $CACHE $edits || continue
  log "server $name ($flags; $edits)"
  cp "$W/detect_classify_$name.toml" "$OUT/"
  echo "$name|$flags" >> "$W/flags.txt"
  if start "$name" "$flags"; then
    log "ready $name"
    PYTHONUNBUFFERED=1 python3 $G served "$W" "$IMGS" 8890 "$name" 2>&1 | tail -n 2
    cp "$W/served-$name.json" "$OUT/" 2>/dev/null
    measure "$name" 20 "$name-20"
  else
    echo "the $name server did not become ready"
    tail -n 5 "$W/server-$name.log"
  fi
  stop "$name"
done

first=$(echo "$VARIANTS" | grep -m1 '|' | cut -d'|' -f1)
log "every variant's boxes against ${BASE:-$first}'s"
python3 $G same "$W" "${BASE:-$first}"
cp "$W/same.json" "$OUT/" 2>/dev/null

CHECKS=${CHECKS-preprocess fp16self}
if [[ " $CHECKS " == *" preprocess "* ]]; then
  log "detect-preprocess-check"
  dist/detect-preprocess-check --images benches/imgs --json "$W/detect-preprocess.json" \
    2>&1 | grep -v " INFO " | tail -n 12
  cp "$W/detect-preprocess.json" "$OUT/" 2>/dev/null
fi
if [[ " $CHECKS " == *" fp16self "* ]]; then
  log "PyTorch fp16 against itself"
  PYTHONUNBUFFERED=1 python3 $G fp16self "$W" "$IMGS" 2>&1 | grep -v "is deprecated" | tail -n 4
  cp "$W/fp16self.json" "$OUT/" 2>/dev/null
fi

# The lowest TP99 at 20 × 1 again, then at 64 × 1, and the reference loop of detect_goal.sh.
best=$(python3 -c "
import glob, json, os, sys
rows = []
for p in glob.glob(os.path.join(sys.argv[1], 'ours-*-20.json')):
    r = json.load(open(p)); r = r[0] if isinstance(r, list) else r
    if r['errors'] == 0:
        rows.append((r['tp99_ms'], os.path.basename(p)[5:-8]))
print(min(rows)[1] if rows else '')" "$W")
if [ -n "$best" ]; then
  flags=$(grep "^$best|" "$W/flags.txt" | head -n 1 | cut -d'|' -f2)
  log "best at 20 × 1: $best ($flags), again, then 64 × 1"
  if start "$best" "$flags"; then
    measure "$best" 20 "$best-20-again"
    measure "$best" 64 "$best-64"
  fi
  stop "$best"
fi
log "reference: ultralytics fp16 predict + ResNet-18 fp16"
PYTHONUNBUFFERED=1 python3 $G reference "$W" "$IMGS" 10 2>&1 | grep -v "is deprecated" | tail -n 1
cp "$W/reference.json" "$OUT/" 2>/dev/null

python3 - "$W" "$OUT/detect-tp99.json" <<'PY'
import glob, json, os, sys
w, out = sys.argv[1], sys.argv[2]
rec = {}
for p in sorted(glob.glob(os.path.join(w, "ours-*.json"))):
    name = os.path.basename(p)[5:-5]
    r = json.load(open(p))
    r = r[0] if isinstance(r, list) else r
    nodes = open(os.path.join(w, f"nodes-{name}.txt")).read().splitlines()[-1]
    rec[name] = {"client": r, "nodes": json.loads(nodes)}
    print(f"{name:16} {r['images_per_s']:8.1f} photos/s  TP50 {r['tp50_ms']:6.2f}  TP90 "
          f"{r['tp90_ms']:6.2f}  TP99 {r['tp99_ms']:6.2f} ms  GPU {r.get('gpu_util_pct', 0):4.0f}%  "
          f"server cores {r.get('server_cpu_pct', 0) / 100:4.1f}  errors {r['errors']}")
for key, f in (("pytorch_fp16_self", "fp16self.json"), ("reference", "reference.json"),
               ("same_boxes", "same.json")):
    f = os.path.join(w, f)
    rec[key] = json.load(open(f)) if os.path.exists(f) else None
if rec["reference"]:
    for name, r in rec.items():
        if name.endswith("-64"):
            print(f"{name}: {r['client']['images_per_s'] / rec['reference']['photos_per_s']:.1f}x "
                  f"the reference's {rec['reference']['photos_per_s']:.1f} photos/s")
json.dump(rec, open(out, "w"), indent=1)
PY
(cd "$W" && tar czf "$OUT/detect-tp99.tgz" ./*.json ./*.toml ./nodes-*.txt ./server-*.log \
  ./detect-preprocess.json 2>/dev/null)
ls -la "$OUT"
