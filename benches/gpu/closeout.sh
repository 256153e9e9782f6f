#!/usr/bin/env bash
# A batch of device checks in three parts (binaries as for
# zoo.sh: dist/dist.tgz, here also carrying preprocess-check, dist/damaged/ and
# dist/damaged_outcomes.txt as benches/gpu/zoo_check.sh describes, and for PART=b the cuda
# wheel of python/ as dist/torchpipe_rs-*.whl, from
#   target/pyenv/bin/maturin build --release --strip -m python/Cargo.toml --features cuda -o dist/).
#   PART=a: device_id.sh, damaged_pipeline.sh, then zoo.sh at batch 1 on
#           the models whose fp16 error is above 1e-2 and resnet50 with the seed flow,
#           with zoo_ref.py's PyTorch reference on folded BatchNorm weights.
#   PART=b: sweep.sh, then the Python package with the cuda build:
#           python_threads.py on the GPU TOML and a GPU result taken by torch through DLPack.
#   PART=c: tune_gpu_toml.py (the GPU TOML against variants of itself), then
#           zoo.sh's timing at batch 1, 8, 32 of the models nearest PyTorch's time.
#   TUNE_ONLY="name,name" runs only those variants of tune_gpu_toml.py, and TUNE_ONLY_STOP=1
#           ends part c after them (the second call of 2026-12-02).
#   COMMIT=<sha> PART=a|b|c bash benches/gpu/closeout.sh   → $OUT/closeout-<PART>.tgz
set -uo pipefail
source "$(dirname "$0")/env.sh"
PART=${PART:?PART=a, b or c}
END=${END:-560}
W=/tmp/closeout-$PART
rm -rf "$W"
mkdir -p "$W"
if [ "$PART" = a ]; then
  OUT=$W timeout 200 bash benches/gpu/device_id.sh | tail -n 40
  echo "== device_id done at ${SECONDS}s"
  OUT=$W timeout 90 bash benches/gpu/damaged_pipeline.sh | tail -n 50
  echo "== damaged pipeline done at ${SECONDS}s"
  # zoo.sh measures its deadline from its own start. Batch 1 only: the accuracy question
  # (model-check's batch-1 row is the worst photo), not the timing table.
  BATCHES=1 PART=a DEADLINE=$((END - 90 - SECONDS)) SEED_FLOW=1 MODELS="${MODELS_A:-\
    mobilenet_v3_large resnet50 mobilenet_v2 mnasnet1_0 resnet101 regnet_y_400mf \
    efficientnet_b0}" \
    OUT=$W bash benches/gpu/zoo.sh 2>&1 | grep -v '^-r'
  echo "== zoo done at ${SECONDS}s"
elif [ "$PART" = c ]; then
  ensure_models
  timeout $((END - 200)) python3 benches/gpu/tune_gpu_toml.py "$W" --deadline $((END - 260)) \
    ${TUNE_ONLY:+--only "$TUNE_ONLY"} 2>&1 | tail -n 14
  echo "== tuning done at ${SECONDS}s"
  [ -n "${TUNE_ONLY_STOP:-}" ] && { tar czf "$OUT/closeout-$PART.tgz" -C "$W" .; exit 0; }
  # The closest ratios to PyTorch, timed at this commit.
  PART=c DEADLINE=$((END - 60 - SECONDS)) MODELS="${MODELS_C:-resnet50 vit_b_16 convnext_tiny \
    mobilenet_v3_large}" FP32=none OUT=$W bash benches/gpu/zoo.sh 2>&1 | grep -v '^-r'
  echo "== zoo done at ${SECONDS}s"
else
  OUT=$W DURATION=${DURATION:-4} timeout $((END - 150)) bash benches/gpu/sweep.sh 2>&1 | tail -n 60
  echo "== sweep done at ${SECONDS}s"
  grep -hiE "did not stop|panicked" "$W"/sweep-*.log | head -n 5
  # The wheel unpacked onto PYTHONPATH: no pip resolution against the box's packages.
  rm -rf /tmp/tprs && python3 -m zipfile -e dist/torchpipe_rs-*.whl /tmp/tprs
  PYTHONPATH=/tmp/tprs OUT=$W timeout $((END - 30 - SECONDS)) bash benches/gpu/python_gpu.sh \
    2>&1 | tail -n 40
  echo "== python done at ${SECONDS}s"
fi
tar czf "$OUT/closeout-$PART.tgz" -C "$W" .
ls -la "$OUT"
