#!/usr/bin/env bash
# The detection goals in one call: configs/detect_classify.toml's pipeline (images on the CPU)
# and configs/detect_classify_gpu.toml's (images on the GPU) with ultralytics' YOLOv8n
# (640×640) and torchvision's ResNet-18 on each box, both exported by PyTorch with seeded
# weights (benches/gpu/detect_goal.py prepare), served by our server:
# - boxes: on every photo, our server's detections (models in fp16 and fp32 with either
#   pipeline, and the CPU engine) against ultralytics' own predict on the same weights (fp16
#   against fp16, fp32 against fp32);
# - speed (the fp16 and gpu16 servers): client_qps --method infer_detect, 64 clients × 1
#   (images/s) and 20 clients × 1 (TP99), against ultralytics' fp16 predict loop followed by
#   the same ResNet-18 in PyTorch fp16, one photo at a time, measured in the same call on the
#   same photos.
# The photos: benches/imgs without the odd_* sizes (ultralytics' letterbox cannot resize a
# 1-pixel-high photo to 640 wide). ultralytics travels as a wheel (yolo_coverage.sh says how).
#   cargo build --release -p server -p client_qps -p tools --features server/cuda,tools/cuda --bins
#   strip server and client_qps into dist/, tar czf dist/dist.tgz; carry dist/dist.tgz and .whl
#   COMMIT=<sha> bash benches/gpu/detect_goal.sh        → $OUT/detect-goal.json and the rows
set -uo pipefail
source "$(dirname "$0")/goal_env.sh"

log prepare
PYTHONUNBUFFERED=1 python3 benches/gpu/detect_goal.py prepare "$W" "$IMGS" || exit 1

# RUNS: which servers (default all five): cpu, fp32, fp16 run configs/detect_classify.toml's
# pipeline; gpu32, gpu16 configs/detect_classify_gpu.toml's. fp16 and gpu16 are timed.
# A run named NAME+malloc is NAME's server (timed, its boxes not checked again) with glibc's
# malloc told to keep the memory it frees (GLIBC_TUNABLES: no mmap for large blocks, no
# trimming), against the page faults of megabyte buffers made afresh for every item.
for run in ${RUNS:-cpu fp32 gpu32 fp16 gpu16}; do
  base=${run%+malloc}
  tunables=""
  [ "$base" != "$run" ] && tunables="glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=17179869184"
  log "server $run"
  GLIBC_TUNABLES=$tunables dist/server --toml "$W/detect_classify_$base.toml" --port 8890 \
    --metrics-port 8891 > "$W/server-$run.log" 2>&1 &
  spid=$!
  if wait_ready 8891 $spid; then
    log "ready $run"
    [ "$base" = "$run" ] && PYTHONUNBUFFERED=1 python3 benches/gpu/detect_goal.py boxes "$W" \
      "$IMGS" 8890 "$run" 2>&1 | grep -v "is deprecated" \
      | grep -E "every photo|\"same\": false|Error|error" | tail -n 20
    if [ "$base" = fp16 ] || [ "$base" = gpu16 ]; then
      for clients in 64 20; do
        log "client_qps $clients × 1"
        dist/client_qps --img_dir "$IMGS" --port 8890 --request_client $clients \
          --request_batch 1 --duration 15 --warmup 300 --method infer_detect \
          --server-pid $spid --json "$W/ours-$run-$clients.json" 2>&1 | tail -n 6
        # Per node: items, batches, busy seconds (instances × wall at most), queue wait.
        get http://127.0.0.1:8891/metrics | grep -E '^torchpipe_node_(items_total|batches_total|busy_seconds_total|queue_wait_seconds_total|instances)' \
          > "$W/nodes-$run-$clients.txt"
        python3 - "$W/nodes-$run-$clients.txt" <<'PY'
import re, sys
v = {}
for line in open(sys.argv[1]):
    m = re.match(r'(\w+)\{node="([^"]+)"\} ([0-9.e+-]+)', line)
    if m:
        v.setdefault(m[2], {})[m[1].replace("torchpipe_node_", "")] = float(m[3])
for node, x in v.items():
    items = x.get("items_total", 0) or 1
    busy = x.get("busy_seconds_total", 0)
    print(f"{node:11} items {int(x.get('items_total', 0)):7} batch {items / max(x.get('batches_total', 1), 1):5.1f} "
          f"busy ms/item {1e3 * busy / items:7.3f} wait ms/item {1e3 * x.get('queue_wait_seconds_total', 0) / items:8.3f} "
          f"instances {int(x.get('instances', 0))} ceiling/s {x.get('instances', 0) * items / max(busy, 1e-9):9.0f}")
PY
      done
    fi
  else
    echo "the $run server did not become ready"
    tail -n 20 "$W/server-$run.log"
  fi
  kill -INT $spid 2>/dev/null
  wait $spid 2>/dev/null
  grep -E "tuned|WARN|ERROR" "$W/server-$run.log" | head -n 8
done

log "reference: ultralytics fp16 predict + ResNet-18 fp16"
PYTHONUNBUFFERED=1 python3 benches/gpu/detect_goal.py reference "$W" "$IMGS" 15 2>&1 \
  | grep -v "is deprecated"

python3 - "$W" "$OUT/detect-goal.json" <<'PY'
import json, os, sys
w, out = sys.argv[1], sys.argv[2]
def load(f):
    p = os.path.join(w, f)
    return json.load(open(p)) if os.path.exists(p) else None
def first(r):
    return r[0] if isinstance(r, list) else r
ref = load("reference.json")
rec = {"goal": load("goal.json"), "reference": ref,
       "boxes": {n: load(f"boxes-{n}.json") for n in ("cpu", "fp32", "gpu32", "fp16", "gpu16")}}
for run in ("fp16", "gpu16", "fp16+malloc", "gpu16+malloc"):
    o64, o20 = load(f"ours-{run}-64.json"), load(f"ours-{run}-20.json")
    if not (o64 or o20):
        continue
    rec[f"ours_{run}_64"], rec[f"ours_{run}_20"] = first(o64), first(o20)
    if o64 and ref:
        rec[f"ratio_{run}_64"] = first(o64)["images_per_s"] / ref["photos_per_s"]
    print(run, "ratio 64×1:", rec.get(f"ratio_{run}_64") and round(rec[f"ratio_{run}_64"], 2),
          "ours 64×1:", o64 and round(first(o64)["images_per_s"], 1),
          "TP99 20×1:", o20 and first(o20)["tp99_ms"])
print("reference:", ref and round(ref["photos_per_s"], 1))
for n, b in rec["boxes"].items():
    print(n, "all boxes equal:", b and b["all_same"],
          "(on nvJPEG's decode: %s)" % b["all_same_nvjpeg"] if b and "all_same_nvjpeg" in b else "")
json.dump(rec, open(out, "w"), indent=1)
PY
# What comes back (a few files): one tarball of the small files, and the summary.
(cd "$W" && tar czf "$OUT/detect-goal.tgz" ./*.json ./*.toml ./*.txt ./*.log 2>/dev/null)
ls -la "$OUT"
