#!/usr/bin/env bash
# bench/cpu-split.sh name=URL@PID[,PID] ... : where each proxy's CPU per request goes.
# Runs the `small` load (wrk -t1 -c64, GET URL/1k.bin) against each target in turn, REPS
# times, and prints the user-space and kernel CPU microseconds per request of its processes
# (and their children: nginx's workers), from /proc/PID/stat. Env: DUR (default 5), REPS (3).
# The kernel share is the sockets' work, alike for every proxy; the user share is the proxy's own.
set -euo pipefail
DUR=${DUR:-5}; REPS=${REPS:-3}
hz=$(getconf CLK_TCK)
# Sum of utime and stime, in clock ticks, over the given pids and their children.
ticks() {
  local u=0 s=0 p
  for p in $(echo "$1" | tr , ' '); do
    for q in $p $(pgrep -P "$p" || true); do
      read -r a b < <(awk '{print $14, $15}' "/proc/$q/stat")
      u=$((u + a)); s=$((s + b))
    done
  done
  echo "$u $s"
}
printf '| target | req/s | user µs/req | kernel µs/req | total µs/req |\n|---|---|---|---|---|\n'
for r in $(seq "$REPS"); do
  for t in "$@"; do
    name=${t%%=*}; rest=${t#*=}; url=${rest%@*}; pids=${rest##*@}
    read -r u0 s0 < <(ticks "$pids")
    out=$(wrk -t1 -c64 -d"${DUR}s" "$url/1k.bin")
    read -r u1 s1 < <(ticks "$pids")
    n=$(awk '/requests in/{print $1}' <<<"$out")
    awk -v name="$name" -v n="$n" -v d="$DUR" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$hz" -v r="$r" 'BEGIN {
      us = 1e6 / hz / n
      printf "| %s (run %d) | %.0f | %.1f | %.1f | %.1f |\n", name, r, n / d, u * us, s * us, (u + s) * us }'
  done
done
