#!/usr/bin/env bash
# bench/cache.sh : the edge cache side by side in one run: cdn-proxy's slice cache vs nginx
# with `slice` + `proxy_cache` (the load kit's caching peer: 1 MiB slices, proxy_cache_lock)
# vs the origin direct, all over the same three cdn-origins.
#  1. Hits: the kit's range and stream scenarios with the caches warm (req/s, MiB/s, CPU
#     seconds per GiB of the proxy, and of the origin for `direct`); cdn-proxy twice, with
#     `sendfile` (the default) and without (hits copied through the proxy, as over TLS).
#  2. Time to first byte of hits: sequential 1 KiB ranges at random offsets (curl), p50/p99.
#  3. Origin offload (origin bytes / client bytes, from the origins' own counters): 100
#     viewers of one cold 16 MiB video at once; then a Zipf(1.0) mix over 200 videos of
#     4 MiB (800 MiB) through caches of 256 MiB, 8 viewers at a time (and cdn-proxy again
#     with the disk nginx really used, as nginx enforces its max_size lazily).
# Env: DUR, REPS (the kit's), HITS (first-byte samples, default 300), ZIPF_N (views, 1200),
# PARTS (which of the sections above to run, default 123).
# Disk: about 3 GB in BENCH_DIR (default /tmp/cdn-bench-cache): content, and the caches,
# which are emptied at the start of each run; `rm -rf` it afterwards on a small disk.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC_KIT=$(cd "${BENCH_KIT:-../shared/bench}" 2>/dev/null && pwd) || { echo "no load kit at ${BENCH_KIT:-../shared/bench} (set BENCH_KIT)" >&2; exit 1; }
D=${BENCH_DIR:-/tmp/cdn-bench-cache}; C=$D/content
HITS=${HITS:-300}; ZIPF_N=${ZIPF_N:-1200}; PARTS=${PARTS:-123}
rm -rf "$D/cdn-cache" "$D/cdn-cache-small" "$D/cdn-cache-copy" "$D/cdn-cache-nginx-size" "$D/peers" "$D/peers-small"
mkdir -p "$D/logs"
KIT=$D/kit; rm -rf "$KIT"; cp -r "$SRC_KIT" "$KIT"; cp bench/range.lua "$KIT/range.lua"
"$KIT/make-content.sh" "$C" >/dev/null
# The offload content: one hot video, and a catalogue of 200 (made once).
[[ -s $C/hot-cdn.bin ]] || head -c $((16 << 20)) /dev/urandom >"$C/hot-cdn.bin"
[[ -s $C/hot-nginx.bin ]] || cp "$C/hot-cdn.bin" "$C/hot-nginx.bin"
mkdir -p "$C/z"
for i in $(seq -w 0 199); do [[ -s $C/z/$i.bin ]] || head -c $((4 << 20)) /dev/urandom >"$C/z/$i.bin"; done

pids=()
cleanup() {
  PEERS_DIR=$D/peers "$KIT/peers.sh" stop >/dev/null 2>&1 || true
  PEERS_DIR=$D/peers-small "$KIT/peers.sh" stop >/dev/null 2>&1 || true
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

origin_pids=()
for port in 19101 19102 19103; do
  target/release/cdn-origin --listen "127.0.0.1:$port" --media "$C" --name "bench-$port" >/dev/null 2>&1 &
  pids+=($!); origin_pids+=($!)
done
# proxy PORT CACHE_DIR MAX_SIZE : a cdn-proxy with a cache, every GET on the media path.
proxy() {
  local port=$1 dir=$2 max=$3 sendfile=${4:-true}
  cat >"$D/cdn-$port.yaml" <<YAML
listen: ["127.0.0.1:$port"]
admin_listen: 127.0.0.1:$((port + 3))
origins: [{address: 127.0.0.1:19101}, {address: 127.0.0.1:19102}, {address: 127.0.0.1:19103}]
dashboard: {enabled: false}
media: {slice_size: 1048576, extensions: []}
cache: {dir: $dir, max_size: $max, sendfile: $sendfile}
YAML
  cat >"$D/pingora-$port.yaml" <<YAML
---
version: 1
threads: 2
pid_file: $D/cdn-$port.pid
upgrade_sock: $D/cdn-$port.sock
upstream_keepalive_pool_size: 256
fast_timeout_to_tokio_threshold_seconds: 0
grace_period_seconds: 0
graceful_shutdown_timeout_seconds: 1
YAML
  RUST_LOG=error target/release/cdn-proxy --cdn-conf "$D/cdn-$port.yaml" -c "$D/pingora-$port.yaml" &
  pids+=($!)
}
proxy 18080 "$D/cdn-cache" 4294967296
cdn=${pids[-1]}
proxy 18180 "$D/cdn-cache-small" 268435456
# The same cache with hits read and written by the proxy (as over TLS and HTTP/2).
proxy 18380 "$D/cdn-cache-copy" 4294967296 false
copy=${pids[-1]}
ORIGINS="127.0.0.1:19101 127.0.0.1:19102 127.0.0.1:19103" PEERS_DIR=$D/peers SLICE=1m CACHE_MAX=4g \
  "$KIT/peers.sh" cache >/dev/null
ORIGINS="127.0.0.1:19101 127.0.0.1:19102 127.0.0.1:19103" PEERS_DIR=$D/peers-small SLICE=1m CACHE_MAX=256m \
  NGINX_CACHE_PORT=18184 "$KIT/peers.sh" cache >/dev/null
nginx=$(cat "$D/peers/run/nginx-cache.pid")
for url in http://127.0.0.1:18080/healthz http://127.0.0.1:18180/healthz http://127.0.0.1:18380/healthz http://127.0.0.1:19101/healthz; do
  for _ in $(seq 100); do curl -fs -o /dev/null "$url" && break; sleep 0.1; done
done
for _ in $(seq 100); do
  up=$(curl -s http://127.0.0.1:18080/metrics | grep -o '"origins_up":[0-9]*' | cut -d: -f2)
  [[ ${up:-0} == 3 ]] && break; sleep 0.1
done

cdn_url=http://127.0.0.1:18080; nginx_url=http://127.0.0.1:18084; copy_url=http://127.0.0.1:18380
echo "## Warming the caches with /200m.bin"
for url in $cdn_url $copy_url $nginx_url; do
  for _ in 1 2; do curl -s -o /dev/null "$url/200m.bin"; done
  echo "$url: $(curl -s -o /dev/null -D - -r 0-0 "$url/200m.bin" | tr -d '\r' | grep -i '^x-cache')"
done

if [[ $PARTS == *1* ]]; then
echo; echo "## 1. Hits: throughput and CPU"
(cd "$KIT" && SCENARIOS="range stream" ./compare.sh \
  "direct=http://127.0.0.1:19101@${origin_pids[0]}" "cdn-proxy=$cdn_url@$cdn" "cdn-proxy-no-sendfile=$copy_url@$copy" "nginx=$nginx_url@$nginx")
fi

if [[ $PARTS == *2* ]]; then
echo; echo "## 2. Time to first byte of hits (1 KiB ranges, sequential, $HITS each)"
echo "| target | p50 ms | p99 ms |"; echo "|---|---|---|"
for t in "direct=http://127.0.0.1:19101" "cdn-proxy=$cdn_url" "nginx=$nginx_url"; do
  name=${t%%=*}; url=${t#*=}
  for i in $(seq "$HITS"); do
    off=$(( (RANDOM * 32768 + RANDOM) % (209715200 - 1024) ))
    curl -s -o /dev/null -r "$off-$((off + 1023))" -w '%{time_starttransfer}\n' "$url/200m.bin"
  done | sort -g | awk -v n="$name" '{a[NR]=$1} END{printf "| %s | %.3f | %.3f |\n", n, a[int(NR*0.5)]*1000, a[int(NR*0.99)]*1000}'
done
fi
[[ $PARTS == *3* ]] || exit 0

# The origins' response bytes, summed.
origin_bytes() {
  local sum=0 v
  for port in 19101 19102 19103; do
    v=$(curl -s "http://127.0.0.1:$port/metrics" | awk '$1=="origin_response_bytes_total"{print $2}')
    sum=$(awk -v a="$sum" -v b="${v:-0}" 'BEGIN{printf "%.0f", a+b}')
  done
  echo "$sum"
}
# offload NAME URL PATHS_FILE PARALLEL : fetches every path, prints the offload row.
offload() {
  local name=$1 url=$2 paths=$3 par=$4 before after client
  before=$(origin_bytes)
  client=$(xargs -P "$par" -I{} curl -s -o /dev/null -w '%{size_download}\n' "$url{}" <"$paths" | awk '{s+=$1} END{printf "%.0f", s}')
  after=$(origin_bytes)
  awk -v n="$name" -v c="$client" -v o="$((after - before))" \
    'BEGIN{printf "| %s | %.1f | %.1f | %.2f %% |\n", n, c/1048576, o/1048576, (c>0 ? 100*(1-o/c) : 0)}'
}

echo; echo "## 3a. Origin offload: 100 viewers of one cold 16 MiB video at once"
echo "| target | client MiB | origin MiB | offload |"; echo "|---|---|---|---|"
for _ in $(seq 100); do echo /hot-cdn.bin; done >"$D/hot-cdn.txt"
for _ in $(seq 100); do echo /hot-nginx.bin; done >"$D/hot-nginx.txt"
offload cdn-proxy "$cdn_url" "$D/hot-cdn.txt" 100
offload nginx "$nginx_url" "$D/hot-nginx.txt" 100

echo; echo "## 3b. Origin offload: Zipf(1.0) over 200 videos of 4 MiB (800 MiB), caches of 256 MiB, $ZIPF_N views, 8 at a time"
awk -v n="$ZIPF_N" 'BEGIN{srand(7); for (k=1;k<=200;k++){h+=1/k; c[k]=h} for (i=1;i<=n;i++){u=rand()*h; k=1; while (c[k]<u) k++; printf "/z/%03d.bin\n", k-1}}' >"$D/zipf.txt"
echo "| target | client MiB | origin MiB | offload |"; echo "|---|---|---|---|"
offload cdn-proxy http://127.0.0.1:18180 "$D/zipf.txt" 8
offload nginx http://127.0.0.1:18184 "$D/zipf.txt" 8
# nginx's cache manager enforces max_size lazily: give cdn-proxy the disk nginx really used.
used=$(du -sb "$D/peers-small/cache" | cut -f1)
proxy 18280 "$D/cdn-cache-nginx-size" "$used"
for _ in $(seq 100); do curl -fs -o /dev/null http://127.0.0.1:18280/healthz && break; sleep 0.1; done
for _ in $(seq 100); do
  up=$(curl -s http://127.0.0.1:18280/metrics | grep -o '"origins_up":[0-9]*' | cut -d: -f2)
  [[ ${up:-0} == 3 ]] && break; sleep 0.1
done
offload "cdn-proxy, max_size = nginx's disk use ($((used >> 20)) MiB)" http://127.0.0.1:18280 "$D/zipf.txt" 8
echo; echo "cache sizes after the mix: cdn-proxy $(curl -s http://127.0.0.1:18183/cache), nginx $((used >> 20)) MiB on disk"
