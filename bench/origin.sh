#!/usr/bin/env bash
# bench/origin.sh : cdn-origin vs nginx (static, sendfile) over the same files,
# side by side in one run, alternating servers; prints medians and ratios.
#   medium: GET 1m.bin, 16 connections
#   range:  random 1 MiB ranges of 200m.bin, 16 connections
# Env: DUR (s, default 10), REPS (default 3), BENCH_DIR (default /tmp/cdn-bench),
# CHUNK_KIB (cdn-origin --chunk-kib, default: the binary's default).
# The machine has 2 cores shared by wrk and the server: compare ratios from
# one run, and CPU-seconds per GiB (the server's own cost), not absolute MiB/s.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${DUR:-10}; REPS=${REPS:-3}; WARM=${WARM:-2}
D=${BENCH_DIR:-/tmp/cdn-bench}; C=$D/content
mkdir -p "$C" "$D/nginx"
[[ -s $C/1m.bin ]] || head -c 1048576 /dev/urandom >"$C/1m.bin"
[[ -s $C/200m.bin ]] || head -c 209715200 /dev/urandom >"$C/200m.bin"

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; [[ -s $D/nginx/nginx.pid ]] && kill "$(cat "$D/nginx/nginx.pid")" 2>/dev/null || true; }
trap cleanup EXIT

target/release/cdn-origin --listen 127.0.0.1:0 --media "$C" --name bench ${CHUNK_KIB:+--chunk-kib $CHUNK_KIB} >"$D/origin.out" 2>"$D/origin.err" &
pids+=($!); origin_pid=$!
for _ in $(seq 100); do grep -q "^listening on" "$D/origin.out" 2>/dev/null && break; sleep 0.05; done
origin_url="http://$(awk '/^listening on/{print $3}' "$D/origin.out")/videos"

NGINX_PORT=${NGINX_PORT:-18090}
cat >"$D/nginx/nginx.conf" <<CONF
worker_processes 2;
pid $D/nginx/nginx.pid;
error_log $D/nginx/error.log warn;
worker_rlimit_nofile 16384;
events { worker_connections 8192; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    keepalive_requests 100000;
    default_type application/octet-stream;
    client_body_temp_path $D/nginx/tmp;
    proxy_temp_path $D/nginx/tmp;
    fastcgi_temp_path $D/nginx/tmp;
    uwsgi_temp_path $D/nginx/tmp;
    scgi_temp_path $D/nginx/tmp;
    server { listen 127.0.0.1:$NGINX_PORT backlog=4096; root $C; }
}
CONF
nginx -e "$D/nginx/error.log" -c "$D/nginx/nginx.conf"
for _ in $(seq 100); do [[ -s $D/nginx/nginx.pid ]] && break; sleep 0.05; done
nginx_pid=$(cat "$D/nginx/nginx.pid")
nginx_url="http://127.0.0.1:$NGINX_PORT"
for u in "$origin_url/1m.bin" "$nginx_url/1m.bin"; do curl -fsS -o /dev/null "$u"; done

ticks() { # utime+stime of a process and its children, in clock ticks
  local t=0 p f
  for p in "$1" $(ps -o pid= --ppid "$1"); do
    read -r -a f < <(sed 's/^.*) //' "/proc/$p/stat")
    t=$((t + f[11] + f[12]))
  done
  echo $t
}
mib() { awk -v v="$1" 'BEGIN{ if (v ~ /GB$/) {sub(/GB$/,"",v); print v*1024} else if (v ~ /MB$/) {sub(/MB$/,"",v); print v+0} else if (v ~ /KB$/) {sub(/KB$/,"",v); print v/1024} else {sub(/B$/,"",v); print v/1048576} }'; }
ms() { awk -v v="$1" 'BEGIN{ if (v ~ /us$/) {sub(/us$/,"",v); print v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v); print v+0} else {sub(/s$/,"",v); print v*1000} }'; }
hz=$(getconf CLK_TCK)

run() { # name pid url scenario -> CSV line
  local name=$1 pid=$2 url=$3 sc=$4 args=()
  case $sc in
    medium) args=(-c16 "$url/1m.bin") ;;
    range) args=(-c16 -s bench/range.lua "$url/200m.bin") ;;
  esac
  wrk -t1 -d"${WARM}s" "${args[@]}" >/dev/null 2>&1
  local t0; t0=$(ticks "$pid")
  local out; out=$(wrk -t1 -d"${DUR}s" --latency "${args[@]}" 2>&1)
  local cpu; cpu=$(awk -v a="$t0" -v b="$(ticks "$pid")" -v hz="$hz" 'BEGIN{printf "%.2f", (b-a)/hz}')
  local mibs; mibs=$(mib "$(awk '/^Transfer\/sec/{print $2}' <<<"$out")")
  local rps; rps=$(awk '/^Requests\/sec/{print $2}' <<<"$out")
  local p99; p99=$(ms "$(awk '$1=="99%"{print $2}' <<<"$out")")
  local bad; bad=$(awk '/Non-2xx|Socket errors/{n++} END{print n+0}' <<<"$out")
  echo "$sc,$name,$rps,$mibs,$p99,$cpu,$bad"
}

raw=$D/raw.csv; : >"$raw"
for sc in medium range; do
  for _ in $(seq "$REPS"); do
    run cdn-origin "$origin_pid" "$origin_url" "$sc" | tee -a "$raw" >&2
    run nginx "$nginx_pid" "$nginx_url" "$sc" | tee -a "$raw" >&2
  done
done

med() { sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
col() { awk -F, -v s="$1" -v n="$2" -v c="$3" '$1==s && $2==n {print $c}' "$raw"; }
echo
echo "cdn-origin vs nginx, $(nproc) cores, DUR=${DUR}s, REPS=$REPS (medians); $(date -u +%F)"
echo "| scenario | server | req/s | MiB/s | p99 ms | server CPU-s per GiB | errors | MiB/s ratio to nginx |"
echo "|---|---|---|---|---|---|---|---|"
for sc in medium range; do
  base=$(col "$sc" nginx 4 | med)
  for n in cdn-origin nginx; do
    rps=$(col "$sc" "$n" 3 | med); m=$(col "$sc" "$n" 4 | med); p99=$(col "$sc" "$n" 5 | med)
    cost=$(awk -F, -v s="$sc" -v n="$n" -v d="$DUR" '$1==s && $2==n {c+=$6; g+=$4*d/1024} END{printf "%.2f", (g>0? c/g : 0)}' "$raw")
    errs=$(awk -F, -v s="$sc" -v n="$n" '$1==s && $2==n {e+=$7} END{print e+0}' "$raw")
    awk -v s="$sc" -v n="$n" -v r="$rps" -v m="$m" -v p="$p99" -v c="$cost" -v e="$errs" -v b="$base" \
      'BEGIN{printf "| %s | %s | %.0f | %.0f | %.1f | %s | %d | %.2f |\n", s, n, r, m, p, c, e, (b>0? m/b : 0)}'
  done
done
