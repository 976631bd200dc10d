#!/usr/bin/env bash
# bench/cold-hits.sh : what cache hits read from disk do to the hits that are not.
# One hot video (16 MiB) and two cold ones (256 MiB each) are cached whole by cdn-proxy and by
# nginx (`slice` + `proxy_cache`, the load kit's caching peer, no `aio threads`), both over
# the same cdn-origin. Then, target by target: an open-loop load of 16 KiB ranges of the hot
# video (cdn-loadgen, fixed arrival rate) runs alone, then again while 4 viewers stream the
# cold videos whole and an evictor drops their cache files from the page cache every 50 ms
# (posix_fadvise DONTNEED), so that their hits come from the disk. A read from disk on a
# request thread stalls every hot request on that thread; cdn-proxy reads cold slices on the
# blocking pool (cache/residency.rs).
# Env: RATE (hot requests/s, 400), DUR (s, 10), BASE_BIN (another cdn-proxy binary, e.g. a
# build from before the change, measured as the third target), BENCH_KIT.
# Disk: about 1.6 GB in BENCH_DIR (default /tmp/cdn-bench-cold); `rm -rf` it afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC_KIT=$(cd "${BENCH_KIT:-../shared/bench}" 2>/dev/null && pwd) || { echo "no load kit at ${BENCH_KIT:-../shared/bench} (set BENCH_KIT)" >&2; exit 1; }
D=${BENCH_DIR:-/tmp/cdn-bench-cold}; C=$D/content
RATE=${RATE:-400}; DUR=${DUR:-10}
rm -rf "$D/cache-"* "$D/peers"; mkdir -p "$C" "$D/logs"
[[ -s $C/hot.bin ]] || head -c $((16 << 20)) /dev/urandom >"$C/hot.bin"
for i in 0 1; do [[ -s $C/cold-$i.bin ]] || head -c $((256 << 20)) /dev/urandom >"$C/cold-$i.bin"; done

pids=()
cleanup() {
  PEERS_DIR=$D/peers "$SRC_KIT/peers.sh" stop >/dev/null 2>&1 || true
  kill "${pids[@]}" 2>/dev/null || true
}
trap cleanup EXIT

target/release/cdn-origin --listen 127.0.0.1:19201 --media "$C" --name cold-bench >/dev/null 2>&1 &
pids+=($!)
# proxy NAME PORT BIN : a cdn-proxy with its own cache over the origin, every GET on the media path.
declare -A PORT CACHE PID
proxy() {
  local name=$1 port=$2 bin=$3
  CACHE[$name]=$D/cache-$name; PORT[$name]=$port
  cat >"$D/$name.yaml" <<YAML
listen: ["127.0.0.1:$port"]
admin_listen: 127.0.0.1:$((port + 3))
origins: [{address: 127.0.0.1:19201}]
dashboard: {enabled: false}
media: {slice_size: 1048576, extensions: []}
cache: {dir: ${CACHE[$name]}, max_size: 4294967296}
YAML
  cat >"$D/$name-pingora.yaml" <<YAML
---
version: 1
threads: 2
pid_file: $D/$name.pid
upgrade_sock: $D/$name.sock
grace_period_seconds: 0
graceful_shutdown_timeout_seconds: 1
YAML
  RUST_LOG=error "$bin" --cdn-conf "$D/$name.yaml" -c "$D/$name-pingora.yaml" &
  pids+=($!); PID[$name]=$!
}
targets=(cdn-proxy)
proxy cdn-proxy 18480 target/release/cdn-proxy
if [[ -n ${BASE_BIN:-} ]]; then proxy cdn-proxy-base 18580 "$BASE_BIN"; targets+=(cdn-proxy-base); fi
ORIGINS="127.0.0.1:19201" PEERS_DIR=$D/peers SLICE=1m CACHE_MAX=4g NGINX_CACHE_PORT=18684 \
  "$SRC_KIT/peers.sh" cache >/dev/null
PORT[nginx]=18684; CACHE[nginx]=$D/peers/cache; targets+=(nginx)
for t in "${targets[@]}"; do
  for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:${PORT[$t]}/hot.bin" && break; sleep 0.1; done
  for f in hot cold-0 cold-1; do curl -s -o /dev/null "http://127.0.0.1:${PORT[$t]}/$f.bin"; done
  echo "$t: $(curl -s -o /dev/null -D - -r 0-0 "http://127.0.0.1:${PORT[$t]}/cold-1.bin" | tr -d '\r' | grep -i '^x-cache')" >&2
done
sync

# evict DIR : drops the cache files of the cold videos from the page cache, every 50 ms, until killed.
evict() {
  python3 - "$1" <<'PY'
import os, sys, time, json
root = sys.argv[1]
def cold_files():
    # cdn-proxy: <hash>.meta names the key, <hash>-<version>.<slice> the slices;
    # nginx: the key is in each file's header ("KEY: /cold-0.binbytes=...").
    metas, files = set(), []
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            if n.endswith(".meta"):
                try:
                    if "cold" in json.load(open(p)).get("key", ""): metas.add(n[:-5])
                except Exception: pass
            else: files.append((n, p))
    out = []
    for n, p in files:
        if n.split("-")[0] in metas: out.append(p)
        elif not metas:
            with open(p, "rb") as f:
                if b"KEY: /cold" in f.read(1024): out.append(p)
    return out
paths = cold_files()
print(f"evicting {len(paths)} files", file=sys.stderr)
while True:
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)
        except OSError: pass
    time.sleep(0.05)
PY
}
# hot NAME LABEL : the open-loop hot load; prints the row.
hot() {
  local t=$1 label=$2 line
  line=$(target/release/cdn-loadgen --url "http://127.0.0.1:${PORT[$t]}/hot.bin" --rate "$RATE" \
    --range-bytes 16384 --duration "${DUR}s" --warmup 2s --label "$t/$label")
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("| %s | %s | %d | %.2f | %.2f | %.2f | %.1f |" % (sys.argv[2], sys.argv[3], r["errors"], r["p50_ms"], r["p99_ms"], r["p999_ms"], r["max_ms"]))' "$line" "$t" "$label"
}
echo "## Hot hits (16 KiB ranges at $RATE/s, open loop, ${DUR} s) alone and beside 4 cold streams"
echo "| target | load | errors | p50 ms | p99 ms | p99.9 ms | max ms |"; echo "|---|---|---|---|---|---|---|"
for t in "${targets[@]}"; do
  hot "$t" "hot only"
  evict "${CACHE[$t]}" & ev=$!; pids+=($ev)
  cold=(); : >"$D/logs/cold-$t.txt"; start=$(date +%s.%N)
  for i in 0 1 0 1; do
    (while true; do
      curl -s -o /dev/null -w '%{size_download}\n' "http://127.0.0.1:${PORT[$t]}/cold-$i.bin" >>"$D/logs/cold-$t.txt" || break
    done) &
    cold+=($!); pids+=($!)
  done
  hot "$t" "beside 4 cold streams"
  for p in "$ev" "${cold[@]}"; do pkill -P "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
  # The cold streams' pace: whole downloads finished while the hot load ran.
  awk -v t="$t" -v s="$start" -v e="$(date +%s.%N)" '{b+=$1} END{printf "%s: cold streams finished %.0f MiB in %.1f s (%.0f MiB/s)\n", t, b/1048576, e-s, b/1048576/(e-s)}' "$D/logs/cold-$t.txt" >&2
  cold_reads=$(curl -s "http://127.0.0.1:${PORT[$t]}/prometheus" 2>/dev/null | awk '$1=="cdn_cache_cold_reads_total"{print $2}')
  [[ -n $cold_reads ]] && echo "$t: cdn_cache_cold_reads_total $cold_reads" >&2
done
