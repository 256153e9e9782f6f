#!/usr/bin/env bash
# On the device: the cuda build of the Python package (installed by closeout.sh PART=b
# from dist/torchpipe_rs-*.whl). First a GPU result taken by torch through DLPack
# (python_gpu.py: against the CPU path, zero copy, lifetime), then 20 Python threads on one pipe
# against the Thrift server on configs/resnet50_gpu.toml (benches/python_threads.py).
#   COMMIT=<sha> bash benches/gpu/python_gpu.sh   → $OUT/python_gpu.json, $OUT/python-<date>-h200.*
set -uo pipefail
source "$(dirname "$0")/env.sh"
ensure_models || exit 1
python3 -c "import torchpipe_rs; print('torchpipe_rs', torchpipe_rs.__file__, 'CUDA', torchpipe_rs.CUDA)"
timeout 90 python3 benches/gpu/python_gpu.py "$OUT" 2>&1 | tail -n 20
python3 benches/python_threads.py --toml configs/resnet50_gpu.toml --threads 20 \
  --duration "${PY_DURATION:-6}" --server dist/server --client dist/client_qps \
  --machine h200 --out-dir "$OUT" 2>&1 | tail -n 12
