#!/usr/bin/env bash
# Soak: N minutes of mixed good and bad traffic against the release server, sampling its RSS and
# open file descriptors; prints whether they stayed flat and writes benches/results/soak-DATE.md.
#   benches/soak.sh [MINUTES=10] [CONFIG=configs/tiny_cpu.toml]
# Flat means: the mean of the last minute is within 5% of the mean of the second minute (the
# first minute is warm-up: allocator pools and thread stacks grow to their working size).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-10}"
config="${2:-configs/tiny_cpu.toml}"
port="${PORT:-18990}"
mport="${METRICS_PORT:-18991}"
bin="${CARGO_TARGET_DIR:-target}/release"
cargo build --release --bins --quiet
"$bin/make-models" models >/dev/null

traffic="$(mktemp -d)"
trap 'rm -rf "$traffic"; kill "$server" 2>/dev/null || true' EXIT
cp benches/imgs/*.jpg benches/imgs/*.png "$traffic/"
head -c 5000 benches/imgs/chelsea.jpg >"$traffic/zz_truncated.jpg"
: >"$traffic/zz_empty.jpg"
printf 'not an image at all' >"$traffic/zz_text.jpg"
cp engine/tests/fixtures/jpeg/*.jpg "$traffic/"

"$bin/server" --toml "$config" --host 127.0.0.1 --port "$port" --metrics-port "$mport" 2>/dev/null &
server=$!
for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done

"$bin/client_qps" --img_dir "$traffic" --port "$port" --request_client 8 --request_batch 1 \
  --duration $((minutes * 60)) --warmup 0 --json "$traffic/report.json" >"$traffic/client.txt" 2>/dev/null &
client=$!
samples="$traffic/samples.tsv"
start=$(date +%s)
while kill -0 "$client" 2>/dev/null; do
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$server/status")
  fds=$(ls "/proc/$server/fd" | wc -l)
  echo -e "$(( $(date +%s) - start ))\t$rss\t$fds" >>"$samples"
  sleep 10
done
wait "$client" || true
requests=$(curl -s "http://127.0.0.1:$mport/metrics" 2>/dev/null | awk '/^torchpipe_requests_total / {print $2}' || true)
kill -TERM "$server"; wait "$server" || true

verdict=$(awk -F'\t' -v m="$minutes" '
  $1 >= 60 && $1 < 120 { r2 += $2; f2 += $3; n2++ }
  $1 >= (m - 1) * 60   { rl += $2; fl += $3; nl++ }
  END {
    if (n2 == 0 || nl == 0) { print "too short to judge"; exit }
    r2 /= n2; f2 /= n2; rl /= nl; fl /= nl
    dr = (rl - r2) / r2 * 100; df = (fl - f2) / f2 * 100
    flat = (dr <= 5 && dr >= -5 && df <= 5 && df >= -5) ? "FLAT" : "NOT FLAT"
    printf "%s: RSS %.1f MB -> %.1f MB (%+.1f%%), fds %.1f -> %.1f (%+.1f%%)", flat, r2/1024, rl/1024, dr, f2, fl, df
  }' "$samples")
echo "$verdict"
out="benches/results/soak-$(date +%Y-%m-%d).md"
{
  echo "# Soak — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -m)"
  echo
  echo "Command: \`benches/soak.sh $minutes $config\` (8 clients, good images plus truncated, empty and"
  echo "non-image files, CMYK and progressive JPEGs, for $minutes minutes)."
  echo
  echo "**$verdict**"
  echo
  echo "Server metrics at the end: torchpipe_requests_total = ${requests:-n/a}."
  echo
  echo '```'
  grep -E "^(request_client|QPS|avg|server)" "$traffic/client.txt" || true
  echo '```'
  echo
  echo "| t (s) | RSS (kB) | open fds |"
  echo "|---:|---:|---:|"
  awk -F'\t' '{ printf "| %s | %s | %s |\n", $1, $2, $3 }' "$samples"
} >"$out"
echo "wrote $out"
