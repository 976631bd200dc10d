#!/usr/bin/env bash
# bench/tls.sh : HTTPS termination side by side in one run: cdn-proxy (rustls) vs nginx
# vs HAProxy (OpenSSL 3), each with the same ECDSA P-256 certificate and key (made by
# `cdn-proxy dev-cert`), TLS 1.3, in front of the same three cdn-origins; plus cdn-proxy
# over plain HTTP for the cost of TLS itself. Then HTTP/2 small requests with h2load
# (64 streams over 4 connections) against the three.
# Uses the load kit in BENCH_KIT (default ../shared/bench): its scenarios, alternation,
# medians and CPU-seconds per 10k requests and per GiB. Env: DUR, REPS, SCENARIOS
# (default "small range stream"), H2_N (h2load requests, default 200000).
set -euo pipefail
cd "$(dirname "$0")/.."
SRC_KIT=$(cd "${BENCH_KIT:-../shared/bench}" 2>/dev/null && pwd) || { echo "no load kit at ${BENCH_KIT:-../shared/bench} (set BENCH_KIT)" >&2; exit 1; }
D=${BENCH_DIR:-/tmp/cdn-bench-tls}; C=$D/content
mkdir -p "$D/run" "$D/logs" "$D/tmp"
KIT=$D/kit; rm -rf "$KIT"; cp -r "$SRC_KIT" "$KIT"; cp bench/range.lua "$KIT/range.lua"
"$KIT/make-content.sh" "$C" >/dev/null

pids=()
cleanup() {
  for f in "$D"/run/*.pid; do [[ -s $f ]] && kill "$(cat "$f")" 2>/dev/null; done
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

target/release/cdn-proxy dev-cert --dir "$D/tls" --name localhost --name 127.0.0.1 >/dev/null
cat "$D/tls/cert.pem" "$D/tls/key.pem" >"$D/tls/haproxy.pem"
# curl (the kit's stream scenario) trusts the local CA; wrk and h2load do not verify.
export CURL_CA_BUNDLE=$D/tls/ca.pem

for port in 19101 19102 19103; do
  target/release/cdn-origin --listen "127.0.0.1:$port" --media "$C" --name "bench-$port" >/dev/null 2>&1 &
  pids+=($!)
done
cat >"$D/cdn.yaml" <<YAML
listen: ["127.0.0.1:18080"]
admin_listen: 127.0.0.1:18083
tls:
  - listen: 127.0.0.1:18443
    certificates: [{cert: $D/tls/cert.pem, key: $D/tls/key.pem}]
origins: [{address: 127.0.0.1:19101}, {address: 127.0.0.1:19102}, {address: 127.0.0.1:19103}]
dashboard: {enabled: false}
YAML
cat >"$D/pingora.yaml" <<YAML
---
version: 1
threads: 2
pid_file: $D/cdn-proxy.pid
upgrade_sock: $D/cdn-proxy-upgrade.sock
upstream_keepalive_pool_size: 256
fast_timeout_to_tokio_threshold_seconds: 0
grace_period_seconds: 0
graceful_shutdown_timeout_seconds: 1
YAML
RUST_LOG=error target/release/cdn-proxy --cdn-conf "$D/cdn.yaml" -c "$D/pingora.yaml" &
proxy=$!
pids+=($proxy)

# The peers as the kit configures them (2 workers, least_conn / leastconn, keepalive to
# the origins), listening with TLS 1.3 and HTTP/2 offered by ALPN.
cat >"$D/nginx.conf" <<CONF
worker_processes 2;
pid $D/run/nginx.pid;
error_log $D/logs/nginx.error.log warn;
worker_rlimit_nofile 16384;
events { worker_connections 8192; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    keepalive_requests 100000;
    client_body_temp_path $D/tmp/client;
    proxy_temp_path $D/tmp/proxy;
    fastcgi_temp_path $D/tmp/fastcgi;
    uwsgi_temp_path $D/tmp/uwsgi;
    scgi_temp_path $D/tmp/scgi;
    upstream origins {
        least_conn;
        server 127.0.0.1:19101; server 127.0.0.1:19102; server 127.0.0.1:19103;
        keepalive 64;
        keepalive_requests 100000;
    }
    server {
        listen 127.0.0.1:18481 ssl http2 backlog=4096;
        ssl_certificate $D/tls/cert.pem;
        ssl_certificate_key $D/tls/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {
            proxy_pass http://origins;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
CONF
nginx -e "$D/logs/nginx.error.log" -c "$D/nginx.conf"
cat >"$D/haproxy.cfg" <<CFG
global
    nbthread 2
    maxconn 9000
    daemon
    ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client  60s
    timeout server  60s
frontend fe
    bind 127.0.0.1:18482 ssl crt $D/tls/haproxy.pem alpn h2,http/1.1
    default_backend origins
backend origins
    balance leastconn
    http-reuse always
    server o1 127.0.0.1:19101
    server o2 127.0.0.1:19102
    server o3 127.0.0.1:19103
CFG
haproxy -f "$D/haproxy.cfg" -D -p "$D/run/haproxy.pid"
for _ in $(seq 100); do
  [[ $(curl -fsS "http://127.0.0.1:18080/metrics" 2>/dev/null | grep -o '"origins_up":3') ]] && break
  sleep 0.1
done

# What each one negotiates with an OpenSSL client.
for t in cdn-proxy=18443 nginx=18481 haproxy=18482; do
  v=$(curl -sv -o /dev/null "https://127.0.0.1:${t#*=}/videos/1k.bin" 2>&1 | grep -o 'SSL connection using [^ ]* / [^ ]*' | sed 's/SSL connection using //' || true)
  alpn=$(curl -sv --http2 -o /dev/null "https://127.0.0.1:${t#*=}/videos/1k.bin" 2>&1 | grep -o 'ALPN: server accepted [^ ]*' | head -1 | sed 's/.* //' || true)
  echo "${t%=*}: $v, ALPN $alpn" >&2
done

echo "TLS termination: cdn-proxy vs nginx vs HAProxy, $(nproc) cores, DUR=${DUR:-10}s REPS=${REPS:-2}, $(date -u +%F)" >&2
SCENARIOS=${SCENARIOS:-small range stream} "$KIT/compare.sh" \
  cdn-proxy-plain=http://127.0.0.1:18080/videos@$proxy \
  cdn-proxy-tls=https://127.0.0.1:18443/videos@$proxy \
  nginx-tls=https://127.0.0.1:18481/videos@"$(cat "$D/run/nginx.pid")" \
  haproxy-tls=https://127.0.0.1:18482/videos@"$(cat "$D/run/haproxy.pid")"

# HTTP/2: small requests, 4 connections x 16 streams, each target twice (alternated).
ticks() { local t=0 p f; for p in "$@" $(for q in "$@"; do ps -o pid= --ppid "$q" 2>/dev/null; done); do
  [[ -r /proc/$p/stat ]] || continue; read -r -a f < <(sed 's/^.*) //' "/proc/$p/stat"); t=$((t + f[11] + f[12])); done; echo $t; }
echo "HTTP/2 small requests (h2load -n ${H2_N:-200000} -c 4 -m 16, GET 1 KiB):" >&2
printf '| target | req/s (run 1, run 2) | CPU-s per 10k requests |\n|---|---|---|\n'
declare -A rps cpu
for rep in 1 2; do
  for t in cdn-proxy=18443=$proxy nginx=18481=$(cat "$D/run/nginx.pid") haproxy=18482=$(cat "$D/run/haproxy.pid"); do
    IFS== read -r name port pid <<<"$t"
    h2load -n 2000 -c 4 -m 16 "https://127.0.0.1:$port/videos/1k.bin" >/dev/null 2>&1
    t0=$(ticks "$pid")
    out=$(h2load -n "${H2_N:-200000}" -c 4 -m 16 "https://127.0.0.1:$port/videos/1k.bin" 2>&1)
    t1=$(ticks "$pid")
    ok=$(awk '/^requests:/{print $8}' <<<"$out")
    [[ $ok == "${H2_N:-200000}" ]] || echo "$name: only $ok of ${H2_N:-200000} succeeded" >&2
    rps[$name]+="$(awk '/^finished in/{gsub(",","",$4); print $4}' <<<"$out") "
    cpu[$name]+="$(awk -v a="$t0" -v b="$t1" -v hz="$(getconf CLK_TCK)" -v n="${H2_N:-200000}" 'BEGIN{printf "%.2f", (b-a)/hz/n*10000}') "
  done
done
for name in cdn-proxy nginx haproxy; do printf '| %s | %s| %s|\n' "$name" "${rps[$name]}" "${cpu[$name]}"; done
