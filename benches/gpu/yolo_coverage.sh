#!/usr/bin/env bash
# The model-coverage check (coverage.sh) on ultralytics' detectors: YOLOv8n and YOLO11n built
# from ultralytics' YAML with seeded weights, both of PyTorch's exporters, the GPU engine in fp16
# and fp32 and the CPU engine against onnxruntime. ultralytics is not on the device: its wheel
# (pure Python) travels in .whl/ (carry it), with ultralytics-thop:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux2014_x86_64 -d .whl ultralytics ultralytics-thop
# Then, with dist/dist.tgz as coverage.sh says:
#   COMMIT=<sha> bash benches/gpu/yolo_coverage.sh          → $OUT/coverage-yolo.tgz
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site YOLO_OFFLINE=1 YOLO_CONFIG_DIR=/tmp/ultralytics-config
python3 -c "import ultralytics; print('ultralytics', ultralytics.__version__)" || exit 1
mkdir -p dist && tar xzf dist/dist.tgz -C dist
PART=yolo PREPARE=2 MODELS="${MODELS:-ultralytics:yolov8n ultralytics:yolo11n}" \
  bash "$(dirname "$0")/coverage.sh"
# The detectors' outputs ([photos, 84, 8400] per engine and batch) are too large to come back:
# the rows are summarised here and only they, with the logs, return.
W=/tmp/coverage-yolo
python3 benches/gpu/summarise_coverage.py "$OUT/coverage-yolo.json" "$OUT/coverage-yolo.md" "$W"
(cd "$W" && find . -type f \( -name '*.json' -o -name '*.log' -o -name '*.txt' \) \
  | tar czf "$OUT/coverage-yolo.tgz" -T -)
ls -la "$OUT"
