#!/usr/bin/env bash
# bench/idle-connections.sh : proxy memory per idle keep-alive client connection.
# Starts three cdn-origins and cdn-proxy (release builds), opens N client connections
# that each make one keep-alive GET of a 1 KiB file and then stay open and quiet (as
# players do between segments), and prints the proxy's RSS before, with the connections
# open, and 30 s after they all closed.
# Env: N (default 4000), CDN_YAML_EXTRA (lines appended to the proxy's cdn.yaml),
# PROXY_ENV (a command prefix for the proxy, e.g. `env VAR=value`).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-4000}
D=$(mktemp -d); C=$D/media
mkdir -p "$C"; head -c 1024 /dev/urandom >"$C/1k.bin"
pids=()
source bench/lib.sh
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || true
start_origins_and_config "$C" 18980 19301 19302 19303
sed "s|/tmp/cdn-proxy|$D/cdn-proxy|" conf/pingora.yaml >"$D/pingora.yaml"
RUST_LOG=error ${PROXY_ENV:-} target/release/cdn-proxy --cdn-conf "$D/cdn.yaml" -c "$D/pingora.yaml" &
proxy=$!; pids+=($proxy)
for _ in $(seq 300); do curl -fsS -o /dev/null http://127.0.0.1:18980/videos/1k.bin 2>/dev/null && break; sleep 0.1; done
rss() { awk '/^VmRSS/ {print $2}' "/proc/$proxy/status"; }
python3 - "$N" "$proxy" <<'PY'
import asyncio, sys, time
n, pid = int(sys.argv[1]), int(sys.argv[2])
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])
async def one(conns):
    r, w = await asyncio.open_connection("127.0.0.1", 18980)
    w.write(b"GET /videos/1k.bin HTTP/1.1\r\nHost: bench\r\n\r\n")
    await w.drain()
    head = await r.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:40]
    await r.readexactly(1024)
    conns.append(w)
async def main():
    # Warm the proxy's allocator and pools first.
    warm = []
    await asyncio.gather(*(one(warm) for _ in range(200)))
    for w in warm: w.close()
    await asyncio.sleep(2)
    before = rss()
    conns = []
    for i in range(0, n, 500):
        await asyncio.gather(*(one(conns) for _ in range(min(500, n - i))))
    await asyncio.sleep(2)
    open_ = rss()
    for w in conns: w.close()
    await asyncio.sleep(30)
    after = rss()
    print(f"| {n} idle connections | RSS before {before/1024:.1f} MiB | open {open_/1024:.1f} MiB | "
          f"per connection {(open_-before)/n:.1f} KiB | 30 s after close {after/1024:.1f} MiB |")
asyncio.run(main())
PY
