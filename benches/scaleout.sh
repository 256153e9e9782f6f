#!/usr/bin/env bash
# Replicas on one machine behind HAProxy, each restarted once while client_qps runs through the
# balancer. What makes that lossless: the server's drain on SIGTERM (not ready at once, serving
# on for --drain-seconds while HAProxy's health check takes it out, then no new connections and
# every call in flight answered) and client_qps's resend of a call whose connection closed before
# any byte of its answer. Prints the run's settings, each restart, client_qps's report with a
# row per phase, and the error count; exits non-zero if any request failed or a replica did not
# exit 0 after its SIGTERM. HAProxy does not retry a refused connect here (retries 0), so that the
# run tests the drain: with --drain 0 it loses the calls sent to a replica in the second or so
# before the health check takes it out.
#
#   benches/scaleout.sh [--replicas 3] [--clients 16] [--duration 40] [--drain 5]
#                       [--profile release|debug] [--config configs/tiny_cpu.toml] [--out FILE]
#
# --profile picks target/release (the default; PROFILE=debug also works) or target/debug; missing
# binaries are built. HAProxy is Debian's (scripts/setup installs it; so does this script).
# --out also writes what is printed to FILE.
set -euo pipefail
cd "$(dirname "$0")/.."

replicas=3 clients=16 duration=40 drain=5 profile="${PROFILE:-release}"
config=configs/tiny_cpu.toml out=""
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --replicas) replicas="$2"; shift 2 ;;
    --clients) clients="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --drain) drain="$2"; shift 2 ;;
    --profile) profile="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "scaleout: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
case "$profile" in
  release) cargo_profile=(--release) ;;
  debug) cargo_profile=() ;;
  *) echo "scaleout: --profile is release or debug, not $profile" >&2; exit 2 ;;
esac
[ "$replicas" -ge 2 ] || { echo "scaleout: --replicas must be at least 2 (one serves while another restarts)" >&2; exit 2; }

bin="${CARGO_TARGET_DIR:-target}/$profile"
if [ ! -x "$bin/server" ] || [ ! -x "$bin/client_qps" ]; then
  echo "scaleout: no $bin/server or $bin/client_qps; building them (cargo build ${cargo_profile[*]} -p server -p client_qps --bins)" >&2
  cargo build "${cargo_profile[@]}" --quiet -p server -p client_qps --bins
fi
if [ ! -f models/tiny_cnn.onnx ] || [ ! -f models/resnet50.onnx ]; then
  echo "scaleout: writing the generated models into models/" >&2
  [ -x "$bin/make-models" ] || cargo build "${cargo_profile[@]}" --quiet -p onnx-front --bin make-models
  "$bin/make-models" models >/dev/null
fi
if ! command -v haproxy >/dev/null; then
  echo "scaleout: installing haproxy (Debian)" >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends haproxy >/dev/null
fi

if [ -n "$out" ]; then
  exec > >(tee "$out")
fi

work="$(mktemp -d)"
declare -a pid=()
haproxy_pid="" client_pid=""
cleanup() {
  for p in "${pid[@]}" $haproxy_pid $client_pid; do
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "scaleout: FAILED: $*"
  for f in "$work"/*.log; do
    echo "--- last lines of $(basename "$f")"
    tail -n 15 "$f"
  done
  exit 1
}

# Free ports, all held at once so that none is handed out twice: a Thrift and a metrics port per
# replica, then HAProxy's front end and its stats page.
read -r -a ports <<<"$(python3 -c '
import socket, sys
held = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in held:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in held))' $((2 * replicas + 2)))"
declare -a tport=() mport=()
for i in $(seq 1 "$replicas"); do
  tport[i]=${ports[2 * i - 2]}
  mport[i]=${ports[2 * i - 1]}
done
front=${ports[2 * replicas]}
stats=${ports[2 * replicas + 1]}

t0=$EPOCHREALTIME
note() { printf '[%6.1f s] %s\n' "$(echo "$EPOCHREALTIME $t0" | awk '{print $1 - $2}')" "$*"; }
since() { echo "$EPOCHREALTIME $1" | awk '{printf "%.1f", $1 - $2}'; }

start_replica() {
  local i=$1
  "$bin/server" --toml "$config" --host 127.0.0.1 --port "${tport[i]}" \
    --metrics-port "${mport[i]}" --drain-seconds "$drain" >>"$work/r$i.log" 2>&1 &
  pid[i]=$!
}
wait_ready() {
  local i=$1 deadline=$((SECONDS + 120))
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${mport[i]}/health/ready" || true)" = 200 ]; do
    kill -0 "${pid[i]}" 2>/dev/null || fail "r$i exited while starting"
    [ $SECONDS -lt $deadline ] || fail "r$i not ready after 120 s"
    sleep 0.1
  done
}
# A replica's line in HAProxy's CSV statistics: status is field 18, total sessions field 8.
haproxy_field() {
  curl -s "http://127.0.0.1:$stats/stats;csv" | awk -F, -v s="$1" -v f="$2" '$1 == "replicas" && $2 == s { print $f }'
}
wait_up() {
  local i=$1 deadline=$((SECONDS + 60))
  until [ "$(haproxy_field "r$i" 18)" = UP ]; do
    [ $SECONDS -lt $deadline ] || fail "HAProxy does not see r$i UP after 60 s"
    sleep 0.1
  done
}

echo "# benches/scaleout.sh: $replicas replicas behind HAProxy, each restarted once under load"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ); $(nproc) cores, $(uname -m); commit $(git describe --always --dirty 2>/dev/null || echo unknown)"
echo "binaries: $bin ($profile); $(haproxy -v | head -1 | cut -d' ' -f1-3)"
echo "config: $config; server --drain-seconds $drain; client_qps --request_client $clients --request_batch 1 --duration $duration"
echo "HAProxy: TCP mode, leastconn, option httpchk GET /health/ready on each metrics port, inter 500ms fall 2 rise 2, retries 0"
echo

for i in $(seq 1 "$replicas"); do start_replica "$i"; done
for i in $(seq 1 "$replicas"); do wait_ready "$i"; done
note "$replicas replicas ready; load average $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine shows in the QPS)"

{
  cat <<EOF
global
    maxconn 4096
defaults
    mode tcp
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    # No second try of a connect that a replica refused, as a Kubernetes Service cannot
    # either: only the replica's drain keeps the balancer from sending it connections after it
    # stopped accepting (with --drain 0 this run fails).
    retries 0
frontend thrift
    bind 127.0.0.1:$front
    default_backend replicas
backend replicas
    balance leastconn
    option httpchk GET /health/ready
    http-check expect status 200
    default-server inter 500ms fall 2 rise 2
EOF
  for i in $(seq 1 "$replicas"); do
    echo "    server r$i 127.0.0.1:${tport[i]} check port ${mport[i]}"
  done
  cat <<EOF
listen stats
    mode http
    bind 127.0.0.1:$stats
    timeout client 10s
    stats enable
    stats uri /stats
EOF
} >"$work/haproxy.cfg"
haproxy -c -q -f "$work/haproxy.cfg" || fail "haproxy rejects its configuration"
haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
haproxy_pid=$!
for i in $(seq 1 "$replicas"); do wait_up "$i"; done
note "HAProxy on 127.0.0.1:$front sees every replica UP"

mkfifo "$work/phases"
"$bin/client_qps" --img_dir benches/imgs --port "$front" --request_client "$clients" \
  --request_batch 1 --duration "$duration" --phases-from-stdin --json "$work/report.json" \
  <"$work/phases" >"$work/client.txt" 2>"$work/client.log" &
client_pid=$!
exec 3>"$work/phases"
echo "all $replicas up" >&3
note "client_qps started: $clients clients through HAProxy for $duration s"
sleep 5

for i in $(seq 1 "$replicas"); do
  kill -0 "$client_pid" 2>/dev/null || fail "client_qps ended before r$i was restarted: give a longer --duration"
  echo "restarting r$i" >&3
  began=$EPOCHREALTIME
  note "r$i: SIGTERM"
  kill -TERM "${pid[i]}"
  rc=0
  wait "${pid[i]}" || rc=$?
  [ "$rc" = 0 ] || fail "r$i exited with $rc after SIGTERM"
  note "r$i: exited 0 after $(since "$began") s ($(grep -o 'answered [0-9]* of [0-9]* calls' "$work/r$i.log" | tail -n 1))"
  start_replica "$i"
  wait_ready "$i"
  note "r$i: restarted and ready"
  wait_up "$i"
  note "r$i: UP in HAProxy, $(since "$began") s after its SIGTERM"
done
kill -0 "$client_pid" 2>/dev/null || fail "client_qps ended before the last restart was over: give a longer --duration"
echo "all $replicas up again" >&3
exec 3>&-
rc=0
wait "$client_pid" || rc=$?
client_pid=""
[ "$rc" = 0 ] || fail "client_qps exited with $rc"
note "client_qps done"
sessions=""
for i in $(seq 1 "$replicas"); do sessions+=" r$i $(haproxy_field "r$i" 8)"; done
note "connections HAProxy handed to each replica:$sessions"
echo
cat "$work/client.txt"
echo
read -r errors resent total <<<"$(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
print(r["errors"], r["resent"], r["total"])' "$work/report.json")"
echo "errors: $errors of $total requests (calls resent after a clean close: $resent); every replica restarted once and exited 0"
[ "$errors" = 0 ] || exit 1
