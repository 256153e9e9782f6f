#!/usr/bin/env bash
# ResNet50 on an earlier GPU engine ("old") against this commit's ("new"), in one call, on the
# file the old binary writes (make-models' resnet50).
# Binaries: dist/model-check (this commit, as for zoo.sh) and dist/old/model-check (the earlier
# commit's, built the same way: cargo build --release -p tools --features cuda --bins).
# ROUNDS (default 3) alternations of old and new, so that clock drift falls on both; each run is
# model-check's check and timing at batch 1 and 32 (median of 31 rounds of 20 CUDA-graph
# replays), its tuning done once per binary through its own model::cache file.
#   COMMIT=<sha> bash benches/gpu/resnet50_ab.sh   → $OUT/resnet50_ab/ and a summary on stdout
#   CACHE=models/resnet50.trt: both binaries on models/resnet50.onnx and that model::cache (the
#   two must share the cache format and kernels), tuned once, e.g. by a sweep before it.
set -uo pipefail
source "$(dirname "$0")/env.sh"
# The binaries travel packed (dist/dist.tgz, with old/ inside): unpack them where they are used.
if [ -f dist/dist.tgz ]; then
  mkdir -p dist && tar xzf dist/dist.tgz -C dist
fi
W=$OUT/resnet50_ab
rm -rf "$W" /tmp/ab-models /tmp/ab-old.cache /tmp/ab-new.cache
mkdir -p "$W" /tmp/ab-models
MODEL=/tmp/ab-models/resnet50.onnx
if [ -n "${CACHE:-}" ]; then
  # One tuning for both binaries (same kernels and cache format): the comparison is then of
  # the same algorithms, and no time goes to tuning twice.
  MODEL=models/resnet50.onnx
  ensure_models || exit 1
else
  dist/old/model-check --write-models /tmp/ab-models >/dev/null || exit 1
fi
for r in $(seq 1 "${ROUNDS:-3}"); do
  for b in old new; do
    bin=dist/model-check
    [ "$b" = old ] && bin=dist/old/model-check
    timeout 150 "$bin" --model "$MODEL" --precision fp16 --batches 1,32 \
      --concurrent-batches 0 --cache "${CACHE:-/tmp/ab-$b.cache}" --json "$W/$b-$r.json" \
      > "$W/$b-$r.log" 2>&1
    echo "$b round $r rc=$? $(grep -E '^ +[0-9]+ ' "$W/$b-$r.log" | tr -s ' ' | tr '\n' '|')"
  done
done
python3 - "$W" <<'PY' | tee "$W/summary.txt"
import glob, json, statistics, sys
w = sys.argv[1]
ms = {}
for f in sorted(glob.glob(f"{w}/*-*.json")):
    b = f.rsplit("/", 1)[1].split("-")[0]
    for row in json.load(open(f))["batches"]:
        ms.setdefault((b, row["batch"]), []).append(row["ours_ms"])
for n in sorted({k[1] for k in ms}):
    old, new = ms.get(("old", n), []), ms.get(("new", n), [])
    if old and new:
        o, m = statistics.median(old), statistics.median(new)
        print(f"batch {n}: old {o:.4f} ms {old}, new {m:.4f} ms {new}; new / old = {m / o:.3f}")
PY
