#!/usr/bin/env bash
# bench/proxy.sh : direct origin vs cdn-proxy vs nginx vs HAProxy in front of the
# same three cdn-origins, side by side in one run (targets alternated, medians,
# ratios to `direct`, and each proxy's CPU-seconds per 10k requests and per GiB).
# Uses the load kit (compare.sh, load.sh, peers.sh, make-content.sh) in
# BENCH_KIT (default ../shared/bench). Env: DUR, REPS, SCENARIOS as compare.sh;
# ALSO_THREADS=N adds a second cdn-proxy with `threads: N` (port 18090) to the same run;
# BARE=0 leaves out `pingora-bare` (proxy/examples/bare_pingora.rs: Pingora's round robin
# with none of our features, port 18095), the floor that cdn-proxy's cost is measured against;
# CDN_YAML_EXTRA: lines appended to cdn-proxy's cdn.yaml (e.g. `media: {extensions: [bin]}`
# puts the benchmark's .bin files on the media path);
# SPLIT=1 then runs bench/cpu-split.sh (user vs kernel CPU per small request) on every proxy.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC_KIT=$(cd "${BENCH_KIT:-../shared/bench}" 2>/dev/null && pwd) || { echo "no load kit at ${BENCH_KIT:-../shared/bench} (set BENCH_KIT)" >&2; exit 1; }
D=${BENCH_DIR:-/tmp/cdn-bench}; C=$D/content
mkdir -p "$D"
# Run the kit from a copy whose range script keeps the URL's path: ours serves /videos/<file>,
# the kit's range.lua asks for /200m.bin at the root.
KIT=$D/kit; rm -rf "$KIT"; cp -r "$SRC_KIT" "$KIT"; cp bench/range.lua "$KIT/range.lua"
"$KIT/make-content.sh" "$C" >/dev/null

pids=()
cleanup() {
  PEERS_DIR=$D/peers "$KIT/peers.sh" stop >/dev/null 2>&1 || true
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

origins=""
for port in 19101 19102 19103; do
  target/release/cdn-origin --listen "127.0.0.1:$port" --media "$C" --name "bench-$port" >/dev/null 2>&1 &
  pids+=($!)
  origins+="127.0.0.1:$port "
done
cat >"$D/cdn.yaml" <<YAML
listen: ["127.0.0.1:18080"]
admin_listen: 127.0.0.1:18083
origins:
  - address: 127.0.0.1:19101
  - address: 127.0.0.1:19102
  - address: 127.0.0.1:19103
${CDN_YAML_EXTRA:-}
YAML
cat >"$D/pingora.yaml" <<YAML
---
version: 1
threads: 2
pid_file: $D/cdn-proxy.pid
upgrade_sock: $D/cdn-proxy-upgrade.sock
upstream_keepalive_pool_size: 256
fast_timeout_to_tokio_threshold_seconds: 0
# SIGTERM at the end: stop at once (Pingora waits 5 min by default).
grace_period_seconds: 0
graceful_shutdown_timeout_seconds: 1
YAML
RUST_LOG=error target/release/cdn-proxy --cdn-conf "$D/cdn.yaml" -c "$D/pingora.yaml" &
proxy=$!
pids+=($proxy)
extra=()
if [[ -n ${ALSO_THREADS:-} ]]; then
  { sed 's/127.0.0.1:18080/127.0.0.1:18090/; s/127.0.0.1:18083/127.0.0.1:18093/' "$D/cdn.yaml"
    echo "dashboard: {enabled: false}"; } >"$D/cdn-t.yaml"
  sed "s/^threads: .*/threads: $ALSO_THREADS/; s/cdn-proxy\./cdn-proxy-t./; s/cdn-proxy-upgrade/cdn-proxy-t-upgrade/" "$D/pingora.yaml" >"$D/pingora-t.yaml"
  RUST_LOG=error target/release/cdn-proxy --cdn-conf "$D/cdn-t.yaml" -c "$D/pingora-t.yaml" &
  pids+=($!)
  extra=("cdn-proxy-threads$ALSO_THREADS=http://127.0.0.1:18090/videos@$!")
fi
if [[ ${BARE:-1} != 0 ]]; then
  [[ -x target/release/examples/bare_pingora ]] || cargo build --release --example bare_pingora >&2
  sed "s/cdn-proxy\./bare-pingora./; s/cdn-proxy-upgrade/bare-pingora-upgrade/" "$D/pingora.yaml" >"$D/pingora-bare.yaml"
  target/release/examples/bare_pingora -c "$D/pingora-bare.yaml" --listen 127.0.0.1:18095 \
    --origin 127.0.0.1:19101 --origin 127.0.0.1:19102 --origin 127.0.0.1:19103 &
  pids+=($!)
  extra+=("pingora-bare=http://127.0.0.1:18095/videos@$!")
  for _ in $(seq 100); do curl -fsS -o /dev/null http://127.0.0.1:18095/videos/1k.bin 2>/dev/null && break; sleep 0.1; done
fi
for port in 18080 ${ALSO_THREADS:+18090}; do
  for _ in $(seq 100); do
    [[ $(curl -fsS "http://127.0.0.1:$port/metrics" 2>/dev/null | grep -o '"origins_up":3') ]] && break
    sleep 0.1
  done
done
ORIGINS="$origins" PEERS_DIR=$D/peers "$KIT/peers.sh" start >/dev/null
echo "cdn-proxy vs nginx vs HAProxy, $(nproc) cores, DUR=${DUR:-10}s REPS=${REPS:-2}, $(date -u +%F)" >&2
proxies=(
  cdn-proxy=http://127.0.0.1:18080/videos@$proxy
  "${extra[@]}"
  nginx=http://127.0.0.1:18081/videos@"$(cat "$D/peers/run/nginx-proxy.pid")"
  haproxy=http://127.0.0.1:18082/videos@"$(cat "$D/peers/run/haproxy.pid")"
)
"$KIT/compare.sh" direct=http://127.0.0.1:19101/videos "${proxies[@]}"
if [[ ${SPLIT:-0} == 1 ]]; then
  echo "CPU per small request, user vs kernel:" >&2
  bench/cpu-split.sh "${proxies[@]}"
fi
