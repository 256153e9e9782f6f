#!/usr/bin/env bash
# The zoo's fp16 diagnostics in one device call (binaries as for zoo.sh, dist/dist.tgz):
# - resnet18 at batch 32, traced step by step against fp32 (model-check --trace) with every
#   tuning candidate logged, twice (the bad pick is tuning-dependent): which convolution's
#   algorithm loses precision on photos that the tuner's synthetic data does not show;
# - mobilenet_v3_large traced over all 11 photos, and its folded fp16 weights' range (how many
#   fall subnormal or overflow in fp16);
# - vit_b_16 at batch 1 and 32 with per-step times and every tuning candidate logged (which
#   algorithm fc1's product + bias + GELU gets, and what the others cost).
#   COMMIT=<sha> bash benches/gpu/diag.sh   → $OUT/diag-$PART.tgz
set -uo pipefail
source "$(dirname "$0")/env.sh"
PART=${PART:-a}
W=/tmp/diag-$PART
rm -rf "$W"
mkdir -p "$W" /tmp/onnx
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; echo "commit $COMMIT"; date -u +%F; } > "$W/device.txt"
cat "$W/device.txt"
PYTHONUNBUFFERED=1 python3 benches/gpu/zoo.py /tmp/onnx 1 resnet18 mobilenet_v3_large vit_b_16 2>&1 | cut -c1-200
dbg=info,engine::gpu::conv=debug
for i in 1 2; do
  RUST_LOG=$dbg timeout 120 dist/model-check --model /tmp/onnx/resnet18.onnx --precision fp16 \
    --batches 32 --concurrent-batches 0 --rounds 3 --trace > "$W/resnet18.b32.trace$i.log" 2>&1
  echo "resnet18 trace $i rc=$? $(grep -E '^ +[0-9]+ ' "$W/resnet18.b32.trace$i.log" | tail -n 1 | tr -s ' ')"
  grep 'rel_l2' "$W/resnet18.b32.trace$i.log" | awk '{print $NF}' | tr '\n' ' ' | cut -c1-400; echo
done
RUST_LOG=$dbg timeout 120 dist/model-check --model /tmp/onnx/mobilenet_v3_large.onnx --precision fp16 \
  --batches 11 --concurrent-batches 0 --rounds 3 --trace > "$W/mv3.b11.trace.log" 2>&1
echo "mv3 trace rc=$? $(grep -E '^ +[0-9]+ ' "$W/mv3.b11.trace.log" | tail -n 1 | tr -s ' ')"
python3 - /tmp/onnx/mobilenet_v3_large.onnx /tmp/onnx/resnet18.onnx > "$W/weights.txt" <<'EOF'
import sys, numpy as np, onnx
from onnx import numpy_helper
for path in sys.argv[1:]:
    m = onnx.load(path)
    tiny = big = total = 0
    worst = []
    for t in m.graph.initializer:
        a = numpy_helper.to_array(t)
        if a.dtype != np.float32 or a.size < 16:
            continue
        nz = np.abs(a[a != 0])
        total += a.size
        n_tiny = int((nz < 6.1e-5).sum()); n_big = int((nz > 65504).sum())
        tiny += n_tiny; big += n_big
        worst.append((n_tiny / a.size, t.name, a.shape, float(nz.min()) if nz.size else 0.0, float(nz.max()) if nz.size else 0.0))
    worst.sort(reverse=True)
    print(path, "values", total, "subnormal in fp16", tiny, "overflow", big)
    for w in worst[:8]:
        print("  %.4f %s %s min %.3e max %.3e" % w)
EOF
cat "$W/weights.txt"
RUST_LOG=$dbg timeout 150 dist/model-check --model /tmp/onnx/vit_b_16.onnx --precision fp16 \
  --batches 1,32 --concurrent-batches 0 --rounds 15 --profile --json "$W/vit.fp16.json" > "$W/vit.fp16.log" 2>&1
echo "vit rc=$? $(grep -E '^ +[0-9]+ ' "$W/vit.fp16.log" | tr -s ' ' | tr '\n' '|' | cut -c1-300)"
tar czf "$OUT/diag-$PART.tgz" -C /tmp "diag-$PART"
