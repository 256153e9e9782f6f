# Sourced by the detection goal's device scripts (detect_goal.sh, detect_tp99.sh): ultralytics
# from the carried wheels, env.sh, the binaries unpacked, and the work folders: W for the models,
# TOMLs and outputs, IMGS for the photos (benches/imgs without the odd_* sizes, which
# ultralytics' letterbox cannot resize).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site YOLO_OFFLINE=1 YOLO_CONFIG_DIR=/tmp/ultralytics-config
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
report_header | tee "$OUT/device.txt"
mkdir -p dist && tar xzf dist/dist.tgz -C dist
W=/tmp/goal
IMGS=/tmp/goal-imgs
rm -rf "$W" "$IMGS"
mkdir -p "$W" "$IMGS"
find benches/imgs -maxdepth 1 -type f ! -name 'odd_*' -exec cp {} "$IMGS" \;
log() { echo "== $* (${SECONDS}s)"; }
