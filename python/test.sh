#!/usr/bin/env bash
# The Python package's tests (scripts/test runs this after the workspace's): builds torchpipe_rs
# into a virtual environment under target/ with maturin (pinned), then runs pytest on
# python/tests. Needs target/debug/server and make-models (cargo build --workspace --bins).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/pyenv
if [ ! -x "$venv/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  "maturin==1.16.0" "pytest==9.2.0" "numpy==2.4.6"
VIRTUAL_ENV="$PWD/$venv" PATH="$PWD/$venv/bin:$PATH" \
  "$venv/bin/maturin" develop --quiet -m python/Cargo.toml
"$venv/bin/python" -m pytest -q python/tests "$@"
