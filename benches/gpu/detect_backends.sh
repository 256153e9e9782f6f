#!/usr/bin/env bash
# The GPU detection preprocessing on the device, then the committed GPU detection configs as a
# user runs them, then the CPU engines on the box's cores:
# 1. detect-preprocess-check: UploadMat, LetterBoxTensor, ResizePadTensor, CropTensor (alone
#    and before ResizeTensor) and WarpAffineTensor against their CPU twins on the same decoded
#    photos, value for value; and nvJPEG + LetterBoxTensor against the CPU decode + LetterBoxMat.
# 2. configs/yolo_gpu.toml and configs/detect_classify_gpu.toml (generated models) served beside
#    their CPU twins: every photo's detections compared (detect_configs.py), then client_qps
#    --method infer_detect on the GPU config, 20 clients × 1 for 5 s: no errors.
# 3. benches/cpu_engines.py on the seed TOML (configs/resnet50.toml, the model node given
#    device = "cpu"), both CPU engines, 20 clients, against onnxruntime in Python on all cores.
# Binaries built on the development machine:
#   cargo build --release -p server -p client_qps -p tools --features server/cuda,tools/cuda --bins
#   strip server, client_qps, model-check, detect-preprocess-check into dist/, tar czf
#   dist/dist.tgz, carry it; then COMMIT=<sha> bash benches/gpu/detect_backends.sh
set -uo pipefail
source "$(dirname "$0")/env.sh"
report_header | tee "$OUT/device.txt"
mkdir -p dist && tar xzf dist/dist.tgz -C dist
ensure_models || exit 1
log() { echo "== $* (${SECONDS}s)"; }
W=/tmp/detect-backends
rm -rf "$W"
mkdir -p "$W"

log "detect-preprocess-check"
dist/detect-preprocess-check --images benches/imgs --json "$W/detect-preprocess.json" \
  2>&1 | grep -v " INFO " | tail -n 40

for name in yolo detect_classify; do
  log "configs/${name}_gpu.toml against configs/$name.toml"
  dist/server --toml "configs/$name.toml" --port 8890 --metrics-port 8891 \
    > "$W/server-$name-cpu.log" 2>&1 &
  cpu_pid=$!
  dist/server --toml "configs/${name}_gpu.toml" --port 8892 --metrics-port 8893 \
    > "$W/server-$name-gpu.log" 2>&1 &
  gpu_pid=$!
  if wait_ready 8891 $cpu_pid && wait_ready 8893 $gpu_pid; then
    (cd benches/gpu && PYTHONUNBUFFERED=1 python3 detect_configs.py "$name" ../imgs 8890 8892 \
      "$W/configs-$name.json" 2>&1 | grep -v "is deprecated" | tail -n 12)
    dist/client_qps --img_dir benches/imgs --port 8892 --request_client 20 --request_batch 1 \
      --duration 5 --warmup 50 --method infer_detect --json "$W/qps-$name-gpu.json" 2>&1 \
      | tail -n 4
  else
    echo "a server did not become ready"
    tail -n 15 "$W/server-$name-cpu.log" "$W/server-$name-gpu.log"
  fi
  kill -INT $cpu_pid $gpu_pid 2>/dev/null
  wait $cpu_pid $gpu_pid 2>/dev/null
  grep -hE "WARN|ERROR" "$W/server-$name-cpu.log" "$W/server-$name-gpu.log" | head -n 6
done

log "CPU engines on $(nproc) cores: the seed TOML with device = cpu"
PYTHONUNBUFFERED=1 python3 benches/cpu_engines.py --toml configs/resnet50.toml --bin dist \
  --clients 20 --seconds 10 --out "$W/cpu-engines.json" 2>&1 | tail -n 8

(cd "$W" && tar czf "$OUT/detect-backends.tgz" ./*.json ./*.log 2>/dev/null)
ls -la "$OUT"
log done
