#!/usr/bin/env bash
# run-local.sh : runs the whole system in the foreground from release builds:
# ORIGINS cdn-origins on consecutive ports from ORIGIN_PORT over MEDIA.
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release}
MEDIA=${MEDIA:-media}
HOST=${HOST:-127.0.0.1}
ORIGINS=${ORIGINS:-3}
ORIGIN_PORT=${ORIGIN_PORT:-9101}

# Origins log warnings only, so the URLs below stay readable; RUST_LOG=info for more.
export RUST_LOG=${RUST_LOG:-warn}
pids=()
stop() {
  trap - INT TERM EXIT
  echo; echo "stopping..."
  ((${#pids[@]})) && kill -TERM "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

urls=()
for i in $(seq 1 "$ORIGINS"); do
  port=$((ORIGIN_PORT + i - 1))
  "$BIN/cdn-origin" --listen "$HOST:$port" --media "$MEDIA" --name "origin-$i" \
    --fault-admin --grace 2s >/dev/null &
  pids+=($!)
  urls+=("http://$HOST:$port")
done

# Ready when every origin answers its health check.
for u in "${urls[@]}"; do
  for _ in $(seq 100); do
    curl -fsS -o /dev/null "$u/healthz" 2>/dev/null && break
    kill -0 "${pids[@]}" 2>/dev/null || { echo "an origin failed to start" >&2; exit 1; }
    sleep 0.1
  done
done

echo
echo "cdn-origin x$ORIGINS serving $MEDIA/"
for i in "${!urls[@]}"; do
  u=${urls[$i]}
  echo "  origin-$((i + 1)): $u/   (video)   $u/videos   $u/metrics   $u/load   $u/healthz"
done
echo
echo "open ${urls[0]}/ in a browser to play and seek the sample video. Ctrl-C stops everything."
wait
