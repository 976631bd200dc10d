#!/usr/bin/env bash
# bench/policies.sh : every selection policy, nginx least_conn and HAProxy leastconn
# in front of the same three cdn-origins, under an open-loop load (cdn-loadgen: fixed
# arrival rate, latency from the scheduled send time), one scenario at a time with the
# third origin (o3) degraded through its own fault flags. Targets are interleaved and
# their order rotated each repetition; each figure is the median over repetitions.
# Writes $OUT/results.jsonl, $OUT/table.md and $OUT/p99.svg (bench/policies-report.py).
# Env: RATE (300 req/s), RANGE (262144 bytes per request), DUR (10 s), WARM (2 s),
# Only the target under load runs; the others are stopped (SIGSTOP) meanwhile, and get
# WARM seconds of load before measuring.
# MEDIA_PATH (false: cdn-proxy's media path off), REPS (2), WHOLE_RATE (6 whole-file GETs/s), SCENARIOS (all), TARGETS (all), OUT
# (bench/results/policies).
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-300}; RANGE=${RANGE:-262144}; DUR=${DUR:-10}; WARM=${WARM:-2}; REPS=${REPS:-2}
WHOLE_RATE=${WHOLE_RATE:-6}
SCENARIOS=${SCENARIOS:-"healthy slow20 slow4 conc2 err5 midrun whole"}
TARGETS=${TARGETS:-"tier least_conn p2c_ewma round_robin random consistent nginx haproxy"}
OUT=${OUT:-bench/results/policies}
MEDIA=${MEDIA:-media}; FILE=${FILE:-sample.mp4}
[[ -f $MEDIA/$FILE ]] || { echo "no $MEDIA/$FILE (make sample)" >&2; exit 1; }
for b in cdn-origin cdn-proxy cdn-loadgen; do
  [[ -x target/release/$b ]] || { echo "build first: cargo build --release" >&2; exit 1; }
done
command -v nginx >/dev/null && command -v haproxy >/dev/null || { echo "needs nginx and haproxy" >&2; exit 1; }
D=$(mktemp -d); mkdir -p "$OUT" "$D/nginx"
# The origins serve a copy in RAM (tmpfs): on this VM the page cache does not keep
# the file, and reads from disk put tens of milliseconds into every tail.
SHM=$(mktemp -d -p /dev/shm 2>/dev/null || mktemp -d)
cp "$MEDIA/$FILE" "$SHM/"; MEDIA=$SHM
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; done
  [[ -s $D/nginx.pid ]] && kill "$(cat "$D/nginx.pid")" 2>/dev/null
  [[ -s $D/haproxy.pid ]] && kill "$(cat "$D/haproxy.pid")" 2>/dev/null
  kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$D" "$SHM"
}
trap cleanup EXIT

ORIGIN_PORTS=(19301 19302 19303)
origins_yaml=""; servers=""; hservers=""
for k in 0 1 2; do
  port=${ORIGIN_PORTS[$k]}
  target/release/cdn-origin --listen "127.0.0.1:$port" --media "$MEDIA" --name "o$((k + 1))" \
    --fault-admin >"$D/o$((k + 1)).log" 2>&1 &
  pids+=($!)
  origins_yaml+="  - address: 127.0.0.1:$port"$'\n'
  servers+="        server 127.0.0.1:$port;"$'\n'
  hservers+="    server o$((k + 1)) 127.0.0.1:$port"$'\n'
done
O3=http://127.0.0.1:${ORIGIN_PORTS[2]}

declare -A PORT PID
port=18300
printf -- '---\nversion: 1\nthreads: 2\npid_file: %s/pingora.pid\nupgrade_sock: %s/upgrade.sock\nfast_timeout_to_tokio_threshold_seconds: 0\ngrace_period_seconds: 0\ngraceful_shutdown_timeout_seconds: 1\n' "$D" "$D" >"$D/pingora.yaml"
for policy in tier least_conn p2c_ewma round_robin random consistent; do
  port=$((port + 10)); PORT[$policy]=$port
  cat >"$D/$policy.yaml" <<YAML
listen: ["127.0.0.1:$port"]
admin_listen: 127.0.0.1:$((port + 3))
origins:
$origins_yaml
selection: {policy: $policy}
# One origin request per client request, as nginx and HAProxy send: the policies
# are compared on the same requests (the media path would split ranges into slices;
# MEDIA_PATH=true turns it on).
media: {enabled: ${MEDIA_PATH:-false}}
dashboard: {enabled: false}
YAML
  sed "s|pingora.pid|$policy.pid|; s|upgrade.sock|$policy.sock|" "$D/pingora.yaml" >"$D/$policy.pingora.yaml"
  RUST_LOG=warn target/release/cdn-proxy --cdn-conf "$D/$policy.yaml" -c "$D/$policy.pingora.yaml" >"$D/$policy.log" 2>&1 &
  pids+=($!); PID[$policy]=$!
done
PORT[nginx]=18381; PORT[haproxy]=18382
cat >"$D/nginx.conf" <<CONF
worker_processes 2;
pid $D/nginx.pid;
error_log $D/nginx/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $D/nginx/client; proxy_temp_path $D/nginx/proxy;
    fastcgi_temp_path $D/nginx/fastcgi; uwsgi_temp_path $D/nginx/uwsgi; scgi_temp_path $D/nginx/scgi;
    upstream origins {
        least_conn;
$servers        keepalive 64;
    }
    server {
        listen 127.0.0.1:${PORT[nginx]} backlog=4096;
        location / {
            proxy_pass http://origins;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
CONF
nginx -e "$D/nginx/error.log" -c "$D/nginx.conf"
cat >"$D/haproxy.cfg" <<CFG
global
    nbthread 2
    maxconn 9000
    pidfile $D/haproxy.pid
    daemon
defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend fe
    bind 127.0.0.1:${PORT[haproxy]}
    default_backend origins
backend origins
    balance leastconn
    http-reuse always
$hservers
CFG
haproxy -f "$D/haproxy.cfg"

PID[nginx]="$(cat "$D/nginx.pid") $(pgrep -P "$(cat "$D/nginx.pid")" | tr '\n' ' ')"
PID[haproxy]=$(cat "$D/haproxy.pid")
# Only the target under load runs: the others are stopped (SIGSTOP), so their
# health checks and timers add no noise on two shared cores.
pause_all_but() {
  local t
  for t in $TARGETS; do
    # shellcheck disable=SC2086
    if [[ $t == "$1" ]]; then kill -CONT ${PID[$t]}; else kill -STOP ${PID[$t]}; fi
  done
}

# Every target answers through every origin before the first run.
for t in $TARGETS; do
  for _ in $(seq 100); do
    curl -fsS -o /dev/null -r 0-0 "http://127.0.0.1:${PORT[$t]}/videos/$FILE" 2>/dev/null && break
    sleep 0.1
  done
done
sleep 3  # the proxies' health checks mark every origin up (rise: 2 at 1 s)

fault() { curl -fsS -o /dev/null -X POST -H 'content-type: application/json' -d "$1" "$O3/admin/faults"; }

: >"$OUT/results.jsonl"
echo "policies bench: rate $RATE/s, $DUR s measured after $WARM s, $REPS reps, $(date -u +%FT%TZ)" >&2
for sc in $SCENARIOS; do
  rate=$RATE; range=$RANGE; extra=()
  case $sc in
  healthy) f='{"reset": true}' ;;
  slow20) f='{"reset": true, "latency_ms": 20}' ;;
  slow4) f='{"reset": true, "latency_ms": 4}' ;;
  conc2) f='{"reset": true, "concurrency_limit": 2, "latency_ms": 10}' ;;
  err5) f='{"reset": true, "error_rate": 0.05}' ;;
  midrun) f='{"reset": true}'; extra=(--fault-at 5s --fault-url "$O3/admin/faults" --fault-body '{"latency_ms": 20}') ;;
  whole) f='{"reset": true, "bandwidth_bytes_per_sec": 33554432}'; rate=$WHOLE_RATE; range=0 ;;
  *) echo "unknown scenario $sc" >&2; exit 2 ;;
  esac
  read -r -a order <<<"$TARGETS"
  for rep in $(seq "$REPS"); do
    for t in "${order[@]}"; do
      fault "$f"
      pause_all_but "$t"
      line=$(target/release/cdn-loadgen --url "http://127.0.0.1:${PORT[$t]}/videos/$FILE" --rate "$rate" \
        --range-bytes "$range" --duration "${DUR}s" --warmup "${WARM}s" --seed "$rep" \
        --label "$sc/$t/$rep" "${extra[@]}")
      echo "$line" >>"$OUT/results.jsonl"
      python3 bench/policies-report.py --line "$line" >&2
    done
    order=("${order[@]:1}" "${order[0]}")
  done
done
for t in $TARGETS; do kill -CONT ${PID[$t]} 2>/dev/null || true; done
fault '{"reset": true}'
python3 bench/policies-report.py "$OUT/results.jsonl" "$OUT"
