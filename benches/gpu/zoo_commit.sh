#!/usr/bin/env bash
# The zoo's record at one commit, in two calls: the whole zoo (zoo.sh: export, PyTorch's time,
# model-check fp16 at batch 1, 8, 32 and fp32 at batch 1, PyTorch's fp16 on the same photos),
# and in the first call the ResNet50 against a62b87c (resnet50_ab.sh) and the seed flow.
# PART=t, before them: the tuner's error bound against the fp16 error (tolerance.sh) on the
# models whose fp16 error is highest, exported here with zoo.py.
# Binaries as for zoo.sh and resnet50_ab.sh: dist/dist.tgz with model-check, server,
# client_qps and old/model-check.
#   COMMIT=<sha> PART=a|b|t bash benches/gpu/zoo_commit.sh   → $OUT/zoo-<PART>.tgz
set -uo pipefail
source "$(dirname "$0")/env.sh"
PART=${PART:?PART=a, b or t}
END=${END:-560}
if [ "$PART" = t ]; then
  TOL_MODELS=${TOL_MODELS:-"resnet101 mobilenet_v3_large regnet_y_400mf mobilenet_v2 mnasnet1_0"}
  mkdir -p /tmp/onnx
  PYTHONUNBUFFERED=1 python3 benches/gpu/zoo.py /tmp/onnx 1 $TOL_MODELS 2>&1 | cut -c1-200
  echo "== exported at ${SECONDS}s"
  TOL_MODELS=$TOL_MODELS DEADLINE=$((END - 30 - SECONDS)) bash benches/gpu/tolerance.sh
  tar czf "$OUT/tolerance.tgz" -C "$OUT" tolerance && rm -rf "$OUT/tolerance"
  ls -la "$OUT"
  exit 0
fi
if [ "$PART" = a ]; then
  timeout 200 bash benches/gpu/resnet50_ab.sh 2>&1 | tail -n 12
  echo "== resnet50 A/B done at ${SECONDS}s"
  MODELS=${MODELS_A:-"resnet18 resnet50 resnet101 resnext50_32x4d wide_resnet50_2 mobilenet_v2 \
    mobilenet_v3_large mnasnet1_0 densenet121"}
  SEED_FLOW=1
else
  MODELS=${MODELS_B:-"efficientnet_b0 regnet_y_400mf squeezenet1_1 shufflenet_v2_x1_0 googlenet \
    vgg16 alexnet convnext_tiny vit_b_16"}
  SEED_FLOW=
fi
# zoo.sh measures its deadline from its own start; it tars its folder into $OUT/zoo-$PART.tgz.
PART=$PART DEADLINE=$((END - 60 - SECONDS)) MODELS="$MODELS" SEED_FLOW=$SEED_FLOW \
  bash benches/gpu/zoo.sh 2>&1 | grep -v '^-r'
[ -d "$OUT/resnet50_ab" ] && tar czf "$OUT/resnet50_ab.tgz" -C "$OUT" resnet50_ab && rm -rf "$OUT/resnet50_ab"
ls -la "$OUT"
