#!/usr/bin/env bash
# bench/small-requests.sh : does every small request get a 2xx under multi-thread load?
# Three cdn-origins and cdn-proxy with `threads: THREADS` (4) in front of them; wrk with
# CONNS (256) keep-alive connections GETs a 1 KiB file for DUR seconds (90), then the run
# prints wrk's totals (non-2xx answers and socket errors, if any) and the proxy's
# cdn_requests_total and cdn_client_closed_total. Issue 12 saw 2-4 non-2xx answers and
# closed connections in ~500k requests this way. Env: THREADS, CONNS, DUR, CDN_YAML_EXTRA
# (`media: {extensions: [bin]}` puts the file on the media path).
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-4}; CONNS=${CONNS:-256}; DUR=${DUR:-90}
D=$(mktemp -d); C=$D/media
mkdir -p "$C"; head -c 1024 /dev/urandom >"$C/1k.bin"
pids=()
source bench/lib.sh
trap cleanup EXIT
start_origins_and_config "$C" 18980 19321 19322 19323
printf -- '---\nversion: 1\nthreads: %s\npid_file: %s/pid\nupgrade_sock: %s/upgrade.sock\nupstream_keepalive_pool_size: 256\nfast_timeout_to_tokio_threshold_seconds: 0\ngrace_period_seconds: 0\ngraceful_shutdown_timeout_seconds: 1\n' \
  "$THREADS" "$D" "$D" >"$D/pingora.yaml"
RUST_LOG=warn target/release/cdn-proxy --cdn-conf "$D/cdn.yaml" -c "$D/pingora.yaml" 2>"$D/proxy.err" &
pids+=($!)
for _ in $(seq 300); do curl -fsS -o /dev/null http://127.0.0.1:18980/videos/1k.bin 2>/dev/null && break; sleep 0.1; done
echo "threads: $THREADS, $CONNS connections, ${DUR}s, $(date -u +%F)"
wrk -t2 -c"$CONNS" -d"${DUR}s" http://127.0.0.1:18980/videos/1k.bin | grep -E "requests in|Non-2xx|Socket errors" || true
curl -fsS http://127.0.0.1:18980/prometheus | grep -E "^cdn_(requests_total|client_closed_total)"
echo "proxy log lines at warn or above: $(grep -c . "$D/proxy.err" || true)"
grep -v '^$' "$D/proxy.err" | sed 's/^[^ ]* //' | sort | uniq -c | sort -rn | head -5
