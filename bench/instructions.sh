#!/usr/bin/env bash
# bench/instructions.sh : instructions per small request, cdn-proxy vs bare Pingora.
# Counts with valgrind's callgrind, which counts instructions rather than time: the same
# binary and load give the same figure whatever else the machine does, so a change of a
# few percent in the request path shows up, where req/s on a shared 2-core machine moves
# by a quarter. Each proxy runs with `threads: 1` (and conf/pingora.yaml's
# timer threshold) in front of three cdn-origins; after
# 400 warm-up requests the counters are zeroed, N keep-alive GETs of a 1 KiB file are
# made over 4 connections, and the total is divided by N.
# Env: N (default 2000); ORIGINS (default 3: how many cdn-origins both proxies balance
# over, to show that a pick's cost does not grow with the fleet); PROFILE_DIR=dir keeps each callgrind dump there for
# `callgrind_annotate --inclusive=yes`. Needs valgrind (apt-get install valgrind) and release builds.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-2000}
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
[[ -x target/release/examples/bare_pingora ]] || cargo build --release --example bare_pingora >&2
D=$(mktemp -d); C=$D/media
mkdir -p "$C"; head -c 1024 /dev/urandom >"$C/1k.bin"
pids=()
source bench/lib.sh
trap cleanup EXIT
ORIGINS=${ORIGINS:-3}
ports=$(seq 19201 $((19200 + ORIGINS)))
# shellcheck disable=SC2086
start_origins_and_config "$C" 18880 $ports
printf -- '---\nversion: 1\nthreads: 1\npid_file: %s/pid\nupgrade_sock: %s/upgrade.sock\nfast_timeout_to_tokio_threshold_seconds: 0\ngrace_period_seconds: 0\ngraceful_shutdown_timeout_seconds: 1\n' "$D" "$D" >"$D/pingora.yaml"

# N keep-alive GETs of /videos/1k.bin over 4 connections; fails on any other answer.
load() {
  python3 - "$1" "$2" <<'PY'
import http.client, sys, threading
port, n = int(sys.argv[1]), int(sys.argv[2])
bad = []
def run():
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(n // 4):
        c.request("GET", "/videos/1k.bin")
        r = c.getresponse()
        if r.status != 200 or len(r.read()) != 1024:
            bad.append(r.status)
ts = [threading.Thread(target=run) for _ in range(4)]
[t.start() for t in ts]
[t.join() for t in ts]
sys.exit(f"{len(bad)} bad answers" if bad else 0)
PY
}

# measure NAME PORT CMD... : prints instructions per request of CMD under callgrind.
measure() {
  local name=$1 port=$2; shift 2
  RUST_LOG=error valgrind --tool=callgrind --callgrind-out-file="$D/$name.%p" "$@" >"$D/$name.log" 2>&1 &
  local vp=$!
  pids+=($vp)
  for _ in $(seq 300); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/videos/1k.bin" 2>/dev/null && break
    sleep 0.2
  done
  load "$port" 400
  callgrind_control -z "$vp" >/dev/null 2>&1
  load "$port" "$N"
  callgrind_control -d "$vp" >/dev/null 2>&1
  local dump
  for _ in $(seq 100); do
    dump=$(ls "$D/$name".*.1 2>/dev/null | head -1 || true)
    [[ -n $dump ]] && grep -q '^totals:' "$dump" && break
    sleep 0.1
  done
  kill -9 "$vp"
  wait "$vp" 2>/dev/null || true
  [[ -n ${PROFILE_DIR:-} ]] && mkdir -p "$PROFILE_DIR" && cp "$dump" "$PROFILE_DIR/$name.callgrind"
  # The connection tasks alone (Pingora's listener service, inclusive): the request path
  # without the background services, whose work follows the clock and the fleet's size
  # rather than the requests (and under valgrind's ~50x slowdown looks 50x bigger per request).
  local path
  path=$(callgrind_annotate --inclusive=yes "$dump" 2>/dev/null |
    awk '/Service<A>::run_endpoint::\{\{closure\}\}::\{\{closure\}\}/ { gsub(",", "", $1); print $1; exit }' || true)
  awk -v n="$N" -v name="$name" -v path="${path:-0}" \
    '/^totals:/ { printf "| %s | %.0f | %.0f |\n", name, $2 / n, path / n; exit }' "$dump"
}

echo "instructions per 1 KiB GET, callgrind, threads: 1, N=$N, $ORIGINS origins, $(date -u +%F)" >&2
printf '| proxy | instructions per request | of which the request path |\n|---|---|---|\n'
measure cdn-proxy 18880 target/release/cdn-proxy --cdn-conf "$D/cdn.yaml" -c "$D/pingora.yaml"
bare_origins=()
for port in $ports; do bare_origins+=(--origin "127.0.0.1:$port"); done
measure pingora-bare 18890 target/release/examples/bare_pingora -c "$D/pingora.yaml" \
  --listen 127.0.0.1:18890 "${bare_origins[@]}"
