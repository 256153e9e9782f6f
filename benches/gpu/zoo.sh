#!/usr/bin/env bash
# The device run of torchvision's zoo on the GPU engine, in as few calls as the 10-minute
# limit allows (MODELS splits the zoo between calls). Binaries built on the development machine:
#   cargo build --release -p server -p client_qps -p tools --features server/cuda,tools/cuda --bins
#   strip into dist/ (model-check, server, client_qps), tar czf dist.tgz, carry it
# then: COMMIT=<sha> MODELS="resnet18 ..." [SEED_FLOW=1] [PROFILE=1] [FP32="vit_b_16"] \
#   bash benches/gpu/zoo.sh
# For each model: exported by PyTorch (benches/gpu/zoo.py: seeded weights, opset 17, dynamic
# batch) and timed by PyTorch (fp16 channels_last CUDA graph); model-check fp16 at BATCHES
# (GPU vs CPU engine on benches/imgs, CUDA-graph time) and fp32 at batch 1. SEED_FLOW=1 also
# serves the exported resnet50 with the seed's TOML (model path changed only) and classifies
# benches/imgs with client_qps. PROFILE=1 adds model-check's per-step device times (--profile)
# to each fp16 log and JSON. TRACE="m ..." adds model-check --trace (per-step fp16 error) for
# those. zoo_ref.py then runs PyTorch fp16 on the photos model-check used (from the fp32 run's
# --dump-reference) against the CPU engine's logits: the reference for our fp16 error. Everything lands in $OUT/zoo-$PART.tgz (few files come back);
# here, unpack each call's tarball into a folder and run
#   python3 benches/gpu/summarise_zoo.py benches/results/gpu-zoo-<date>.json DIR [DIR ...]
# for the JSON and the zoo table of docs/benchmarks.md.
set -uo pipefail
source "$(dirname "$0")/env.sh"
BATCHES=${BATCHES:-1,8,32}
PART=${PART:-1}
MODELS=${MODELS:-"resnet18 resnet50 resnet101 resnext50_32x4d wide_resnet50_2 mobilenet_v2 mobilenet_v3_large efficientnet_b0 regnet_y_400mf mnasnet1_0 densenet121 squeezenet1_1 shufflenet_v2_x1_0 googlenet vgg16 alexnet convnext_tiny vit_b_16"}
W=/tmp/zoo-$PART
# A fresh folder: the box can keep /tmp between calls, and a stale model's files would be
# taken for this call's.
rm -rf "$W"
mkdir -p "$W" /tmp/onnx
log() { echo "== $*"; }
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; echo "commit $COMMIT"; date -u +%F; } > "$W/device.txt"
cat "$W/device.txt"

log "export and PyTorch timing"
PYTHONUNBUFFERED=1 python3 benches/gpu/zoo.py /tmp/onnx "$BATCHES" $MODELS 2>&1 | tee "$W/torch.log" | cut -c1-300
cp /tmp/onnx/*.torch.json "$W/" 2>/dev/null

log "model-check"
for m in $MODELS; do
  # Leave time for the tarball inside the call's 10 minutes.
  [ "$SECONDS" -lt "${DEADLINE:-520}" ] || { echo "$m: skipped (deadline)"; continue; }
  f=/tmp/onnx/$m.onnx
  [ -f "$f" ] || { echo "$m: not exported"; continue; }
  timeout 200 dist/model-check --model "$f" --precision fp16 --batches "$BATCHES" \
    --concurrent-batches 0 --rounds 15 ${PROFILE:+--profile} --json "$W/$m.fp16.json" \
    > "$W/$m.fp16.log" 2>&1
  echo "$m fp16 rc=$? $(grep -E '^ +[0-9]+ ' "$W/$m.fp16.log" | tr -s ' ' | tr '\n' '|')"
  grep -m1 -iE "error|panicked" "$W/$m.fp16.log" | cut -c1-400
  # FP32="m1 m2": the fp32 check only for those (the rest were checked by an earlier call).
  case " ${FP32:-$m} " in *" $m "*) ;; *) continue ;; esac
  timeout 100 dist/model-check --model "$f" --precision fp32 --batches 1 \
    --concurrent-batches 0 --rounds 3 --json "$W/$m.fp32.json" \
    --dump-reference "/tmp/onnx/$m.ref.bin" > "$W/$m.fp32.log" 2>&1
  echo "$m fp32 rc=$? $(grep -E '^ +[0-9]+ ' "$W/$m.fp32.log" | tr -s ' ' | tr '\n' '|')"
  # TRACE="m1 m2": each step's fp16 error against fp32 on the first TRACE_BATCH (default 1)
  # photos: where it goes wrong.
  case " ${TRACE:-} " in *" $m "*) ;; *) continue ;; esac
  timeout 100 dist/model-check --model "$f" --precision fp16 --batches "${TRACE_BATCH:-1}" \
    --concurrent-batches 0 --rounds 1 --trace > "$W/$m.trace.log" 2>&1
  echo "$m trace rc=$? worst steps:"; grep 'rel_l2' "$W/$m.trace.log" | \
    awk '{print $NF, $0}' | sort -g | tail -n 5 | cut -c1-200
done

log "PyTorch's fp16 on the same photos (zoo_ref.py)"
(cd benches/gpu && PYTHONUNBUFFERED=1 python3 zoo_ref.py /tmp/onnx "$W" $MODELS 2>&1 | cut -c1-400)

if [ -n "${SEED_FLOW:-}" ] && [ -f /tmp/onnx/resnet50.onnx ]; then
  log "seed flow: exported resnet50 behind the seed TOML"
  sed -e 's#^model = .*#model = "/tmp/onnx/resnet50.onnx"#' \
      -e 's#^"model::cache".*#"model::cache" = "/tmp/onnx/resnet50.cache"#' configs/resnet50.toml > /tmp/seed.toml
  grep -E '^(model|"model::cache")' /tmp/seed.toml
  dist/server --toml /tmp/seed.toml --port 8898 > "$W/seed-server.log" 2>&1 &
  spid=$!
  for _ in $(seq 1 120); do
    (exec 3<>/dev/tcp/127.0.0.1/8898) 2>/dev/null && break
    kill -0 $spid 2>/dev/null || break
    sleep 1
  done
  dist/client_qps --img_dir benches/imgs --port 8898 --request_client 20 --request_batch 1 \
    --total_number 5000 --json "$W/seed-client.json" 2>&1 | tail -n 14 | tee "$W/seed-client.txt"
  kill -INT $spid; wait $spid
  tail -n 3 "$W/seed-server.log"
fi
tar czf "$OUT/zoo-$PART.tgz" -C "$W" .
ls -la "$OUT"
