#!/usr/bin/env bash
# Regenerates thrift/src/serve.rs and thrift/src/detect.rs from thrift/serve.thrift and
# thrift/detect.thrift with Debian's thrift-compiler 0.17 (the `thrift` crate is pinned to the
# same version). `--check` only compares.
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
for idl in serve detect; do
  thrift -out "$tmp" --gen rs "$here/$idl.thrift"
  if [ "${1:-}" = "--check" ]; then
    if ! diff -u "$here/src/$idl.rs" "$tmp/$idl.rs"; then
      echo "thrift/src/$idl.rs is stale: run thrift/regenerate.sh" >&2
      exit 1
    fi
    echo "thrift/src/$idl.rs matches a fresh generation"
  else
    cp "$tmp/$idl.rs" "$here/src/$idl.rs"
    echo "wrote thrift/src/$idl.rs"
  fi
done
