#!/usr/bin/env bash
# ResNet50 (and any zoo model) on an earlier GPU engine ("old") against this commit's ("new"), in
# one call.
# Binaries: dist/model-check (this commit, as for zoo.sh) and dist/old/model-check (the earlier
# commit's, built the same way: cargo build --release -p tools --features cuda --bins).
# MODELS (default "resnet50"): resnet50 is the file the old binary writes (make-models'); any
# other name is a torchvision model exported by zoo.py (seeded weights, opset 17).
# ROUNDS (default 3) alternations of old and new, so that clock drift falls on both; each run is
# model-check's check and timing at BATCHES (default 1,32; median of 31 rounds of 20 CUDA-graph
# replays), its tuning done once per binary and model through its own model::cache file. The
# tuner's per-convolution report (every candidate's library/algorithm, time and error against
# the reference) is logged at debug level; the summary says, per model, whether both binaries
# offered each convolution the same candidates with the same errors, and chose alike.
#   COMMIT=<sha> [MODELS="resnet50 mobilenet_v2"] bash benches/gpu/resnet50_ab.sh
#     → $OUT/resnet50_ab/ and a summary on stdout
#   CACHE=models/resnet50.trt: both binaries on models/resnet50.onnx and that model::cache (the
#   two must share the cache format and kernels), tuned once, e.g. by a sweep before it.
#   SHARED=1: each model's cache shared by both binaries (the old one tunes it): the same
#   algorithms run in both, so their errors against the reference must be equal.
set -uo pipefail
source "$(dirname "$0")/env.sh"
# The binaries travel packed (dist/dist.tgz, with old/ inside): unpack them where they are used.
if [ -f dist/dist.tgz ]; then
  mkdir -p dist && tar xzf dist/dist.tgz -C dist
fi
W=$OUT/resnet50_ab
MODELS=${MODELS:-resnet50}
BATCHES=${BATCHES:-1,32}
rm -rf "$W" /tmp/ab-models /tmp/ab-*.cache
mkdir -p "$W" /tmp/ab-models
if [ -n "${CACHE:-}" ]; then
  # One tuning for both binaries (same kernels and cache format): the comparison is then of
  # the same algorithms, and no time goes to tuning twice.
  MODELS=resnet50
  ensure_models || exit 1
  cp models/resnet50.onnx /tmp/ab-models/resnet50.onnx
else
  dist/old/model-check --write-models /tmp/ab-models >/dev/null || exit 1
  zoo=$(echo " $MODELS " | sed 's/ resnet50 / /')
  if [ -n "${zoo// /}" ]; then
    PYTHONUNBUFFERED=1 python3 benches/gpu/zoo.py /tmp/ab-models 1 $zoo 2>&1 | cut -c1-200
  fi
fi
echo "== models ready at ${SECONDS}s"
for r in $(seq 1 "${ROUNDS:-3}"); do
  for m in $MODELS; do
    for b in old new; do
      bin=dist/model-check
      [ "$b" = old ] && bin=dist/old/model-check
      cache=/tmp/ab-$b-$m.cache
      [ -n "${SHARED:-}" ] && cache=/tmp/ab-shared-$m.cache
      # The tuner's report is a debug line of the convolution module (conv.rs before the
      # libraries were split, conv/tune.rs after: a target filter covers its submodules).
      RUST_LOG=info,gpu_engine::conv=debug \
        timeout 200 "$bin" --model "/tmp/ab-models/$m.onnx" --precision fp16 \
        --batches "$BATCHES" --concurrent-batches 0 --cache "${CACHE:-$cache}" \
        --json "$W/$b-$m-$r.json" > "$W/$b-$m-$r.log" 2>&1
      echo "$b $m round $r rc=$? at ${SECONDS}s $(grep -E '^ +[0-9]+ ' "$W/$b-$m-$r.log" | tr -s ' ' | tr '\n' '|')"
    done
  done
done
python3 - "$W" <<'PY' | tee "$W/summary.txt"
import glob, json, re, statistics, sys
w = sys.argv[1]
ms, err, tuning = {}, {}, {}
for f in sorted(glob.glob(f"{w}/*-*-*.json")):
    b, m, _ = f.rsplit("/", 1)[1][:-5].rsplit("-", 2)
    for row in json.load(open(f))["batches"]:
        ms.setdefault((m, b, row["batch"]), []).append(row["ours_ms"])
        err.setdefault((m, b, row["batch"]), set()).add((round(row["rel_l2"], 9), row["argmax_agree"]))
# The tuning runs in the first round only (later rounds read the cache).
ansi = re.compile(r"\x1b\[[0-9;]*m")
line = re.compile(r"tuning \(ms\): (.*) -> (Some\(\(.*?\)\)|None) batch=(\d+) conv=(.*)$")
for f in sorted(glob.glob(f"{w}/*-*-1.log")):
    b, m, _ = f.rsplit("/", 1)[1][:-4].rsplit("-", 2)
    for l in open(f, errors="replace"):
        g = line.search(ansi.sub("", l))
        if g:
            report, best, n, conv = g.groups()
            # Each candidate: "Mode/algo ms (err)" or "Mode/algo refused: why"; the times
            # differ between runs, the candidates and their errors should not.
            cands = tuple(re.sub(r" [0-9.]+ \(", " (", re.sub(r"plan built in [0-9.]+ ms", "", c))
                          for c in report.split(", "))
            chosen = re.sub(r", [0-9.e-]+\)\)$", "))", best)
            tuning.setdefault(m, {}).setdefault(b, {})[(int(n), conv.strip())] = (cands, chosen)
for m in sorted({k[0] for k in ms}):
    for n in sorted({k[2] for k in ms if k[0] == m}):
        old, new = ms.get((m, "old", n), []), ms.get((m, "new", n), [])
        if old and new:
            o, v = statistics.median(old), statistics.median(new)
            print(f"{m} batch {n}: old {o:.4f} ms {[round(x, 4) for x in old]}, new {v:.4f} ms "
                  f"{[round(x, 4) for x in new]}; new / old = {v / o:.3f}; "
                  f"(rel_l2, argmax) old {sorted(err[(m, 'old', n)])} new {sorted(err[(m, 'new', n)])}")
    t = tuning.get(m, {})
    if "old" in t and "new" in t:
        o, v = t["old"], t["new"]
        keys = sorted(set(o) | set(v))
        same_c = sum(1 for k in keys if k in o and k in v and o[k][0] == v[k][0])
        same_b = sum(1 for k in keys if k in o and k in v and o[k][1] == v[k][1])
        print(f"{m} tuning: {len(keys)} convolution×batch; same candidates and errors {same_c}, "
              f"same choice {same_b}")
        for k in keys[:200]:
            if k not in o or k not in v or o[k][0] != v[k][0]:
                print(f"  differs {k}: old {o.get(k)} new {v.get(k)}")
    else:
        print(f"{m} tuning: no debug report found (old {'old' in t}, new {'new' in t})")
PY
