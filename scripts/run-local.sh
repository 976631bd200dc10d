#!/usr/bin/env bash
# run-local.sh : runs the whole system in the foreground from release builds:
# ORIGINS cdn-origins on consecutive ports from ORIGIN_PORT over MEDIA, and
# cdn-proxy in front of them with conf/cdn.yaml and conf/pingora.yaml, on
# http://127.0.0.1:8080 and https://127.0.0.1:8443 (a local CA and certificate
# made in target/dev-tls on the first run)
# (conf/cdn.yaml lists the origins: keep it in step if you change ORIGINS or
# ORIGIN_PORT). Ctrl-C stops everything.
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

CDN_CONF=${CDN_CONF:-conf/cdn.yaml}
PINGORA_CONF=${PINGORA_CONF:-conf/pingora.yaml}
# The HTTPS listener's certificate and its local CA, made on the first run.
"$BIN/cdn-proxy" dev-cert --dir target/dev-tls >/dev/null
"$BIN/cdn-proxy" --cdn-conf "$CDN_CONF" -c "$PINGORA_CONF" &
pids+=($!)
proxy_url=http://127.0.0.1:8080
for _ in $(seq 100); do
  curl -fsS -o /dev/null "$proxy_url/healthz" 2>/dev/null && break
  kill -0 "${pids[-1]}" 2>/dev/null || { echo "cdn-proxy failed to start (see above)" >&2; exit 1; }
  sleep 0.1
done

echo
echo "cdn-proxy: $proxy_url/   (video through the proxy)"
echo "  https://127.0.0.1:8443/   (HTTPS, HTTP/2; trust target/dev-tls/ca.pem, e.g. curl --cacert target/dev-tls/ca.pem)"
echo "  $proxy_url/dashboard   ${proxy_url/http/ws}/ws"
echo "  $proxy_url/metrics (JSON)   $proxy_url/prometheus   $proxy_url/healthz   admin: http://127.0.0.1:8081/origins"
# Our own children must be the ones answering (not leftovers on the same ports).
for p in "${pids[@]}"; do
  kill -0 "$p" 2>/dev/null || { echo "a process failed to start (port in use? see above)" >&2; exit 1; }
done

echo
echo "cdn-origin x$ORIGINS serving $MEDIA/"
for i in "${!urls[@]}"; do
  u=${urls[$i]}
  echo "  origin-$((i + 1)): $u/   (video)   $u/videos   $u/metrics   $u/load   $u/healthz"
done
echo
echo "open $proxy_url/ in a browser to play and seek the sample video, $proxy_url/dashboard to watch. Ctrl-C stops everything."
wait
