#!/usr/bin/env bash
# Regenerates thrift/src/serve.rs from thrift/serve.thrift with Debian's thrift-compiler 0.17
# (the `thrift` crate is pinned to the same version). `--check` only compares.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
want="0.17.0"
have="$(thrift --version | awk '{print $3}')"
if [ "$have" != "$want" ]; then
  echo "thrift compiler $have found; the committed code is from $want (apt-get install thrift-compiler on Debian 12)" >&2
  exit 1
fi
thrift -out "$tmp" --gen rs "$here/serve.thrift"
if [ "${1:-}" = "--check" ]; then
  if ! diff -u "$here/src/serve.rs" "$tmp/serve.rs"; then
    echo "thrift/src/serve.rs is stale: run thrift/regenerate.sh" >&2
    exit 1
  fi
  echo "thrift/src/serve.rs matches a fresh generation"
else
  cp "$tmp/serve.rs" "$here/src/serve.rs"
  echo "wrote thrift/src/serve.rs"
fi
