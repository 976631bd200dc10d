#!/usr/bin/env bash
# bench/slow-streams.sh : proxy (and origin) memory per open slow stream.
# Starts three cdn-origins and cdn-proxy (release builds) over a copy of the sample video in
# RAM, opens N streams of it through the proxy that each read READ_RATE bytes a second (a
# player that has buffered ahead; the client socket's receive buffer is kept at 64 KiB so
# the kernel does not swallow the body, and asyncio buffers at most 64 KiB), and prints the proxy's and the origins' RSS before,
# with the streams open, and 30 s after they all closed.
# Env: N (1000), READ_RATE (16384), HOLD (15 s with every stream open), CDN_YAML_EXTRA
# (lines appended to the proxy's cdn.yaml; `media: {enabled: false}` measures the plain path).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000}; READ_RATE=${READ_RATE:-16384}; HOLD=${HOLD:-15}
[[ -f media/sample.mp4 ]] || { echo "no media/sample.mp4 (make sample)" >&2; exit 1; }
D=$(mktemp -d -p /dev/shm 2>/dev/null || mktemp -d); C=$D/media
mkdir -p "$C"; cp media/sample.mp4 "$C/"
pids=()
source bench/lib.sh
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || true
start_origins_and_config "$C" 18990 19311 19312 19313
origins=("${pids[@]}")
sed "s|/tmp/cdn-proxy|$D/cdn-proxy|" conf/pingora.yaml >"$D/pingora.yaml"
RUST_LOG=error ${PROXY_ENV:-} target/release/cdn-proxy --cdn-conf "$D/cdn.yaml" -c "$D/pingora.yaml" &
proxy=$!; pids+=($proxy)
for _ in $(seq 300); do curl -fsS -o /dev/null -r 0-0 http://127.0.0.1:18990/videos/sample.mp4 2>/dev/null && break; sleep 0.1; done
python3 - "$N" "$READ_RATE" "$HOLD" "$proxy" "${origins[@]}" <<'PY'
import asyncio, socket, sys
n, rate, hold, proxy = (int(a) for a in sys.argv[1:5])
origins = [int(p) for p in sys.argv[5:]]
def rss(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])
def origin_rss(): return sum(rss(p) for p in origins)
async def stream(opened, stop):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.setblocking(False)
    await asyncio.get_running_loop().sock_connect(s, ("127.0.0.1", 18990))
    r, w = await asyncio.open_connection(sock=s, limit=1 << 15)
    w.write(b"GET /videos/sample.mp4 HTTP/1.1\r\nHost: bench\r\n\r\n")
    await w.drain()
    head = await r.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:40]
    opened.append(w)
    while not stop.is_set():
        if not await r.read(rate): break
        await asyncio.sleep(1)
    w.close()
async def main():
    warm_stop = asyncio.Event(); warm_stop.set(); warm = []
    await asyncio.gather(*(stream(warm, warm_stop) for _ in range(50)))
    await asyncio.sleep(3)
    before, obefore = rss(proxy), origin_rss()
    stop = asyncio.Event(); opened = []
    tasks = []
    for i in range(0, n, 250):
        tasks += [asyncio.create_task(stream(opened, stop)) for _ in range(min(250, n - i))]
        await asyncio.sleep(0.5)
    await asyncio.sleep(hold)
    during, oduring = rss(proxy), origin_rss()
    stop.set(); await asyncio.gather(*tasks)
    await asyncio.sleep(30)
    after, oafter = rss(proxy), origin_rss()
    print(f"| {len(opened)} streams at {rate} B/s | proxy RSS before {before/1024:.1f} MiB | open {during/1024:.1f} MiB | "
          f"per stream {(during-before)/len(opened):.1f} KiB | 30 s after close {after/1024:.1f} MiB | "
          f"origins (3) per stream {(oduring-obefore)/len(opened):.1f} KiB, 30 s after {oafter/1024:.1f} MiB |")
asyncio.run(main())
PY
