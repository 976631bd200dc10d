# bench/lib.sh : what the proxy benchmarks share; sourced, not run.
# Needs $D (a scratch folder) and a `pids` array; cleanup kills them and removes $D.

cleanup() { kill -9 "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$D"; }

# start_origins_and_config MEDIA LISTEN_PORT PORT... : a release cdn-origin serving MEDIA on
# each PORT, and $D/cdn.yaml for a proxy on LISTEN_PORT (admin on LISTEN_PORT+3) in front of
# them, with the dashboard off and $CDN_YAML_EXTRA appended.
start_origins_and_config() {
  local media=$1 listen=$2; shift 2
  local list=()
  for port in "$@"; do
    target/release/cdn-origin --listen "127.0.0.1:$port" --media "$media" >/dev/null 2>&1 &
    pids+=($!)
    list+=("{address: 127.0.0.1:$port}")
  done
  local origins; origins=$(IFS=,; echo "${list[*]}")
  cat >"$D/cdn.yaml" <<YAML
listen: ["127.0.0.1:$listen"]
admin_listen: 127.0.0.1:$((listen + 3))
origins: [${origins//,/, }]
dashboard: {enabled: false}
${CDN_YAML_EXTRA:-}
YAML
}
