#!/usr/bin/env bash
# ensure-packages.sh CMD:PACKAGE ... : installs the Debian package for every
# command that is missing, with apt-get when we are root; otherwise names the
# command to run and fails.
set -euo pipefail
missing=()
for pair in "$@"; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
((${#missing[@]})) || exit 0
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "installing: ${missing[*]}" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Some packages start a system service on install; ours run with their own configs.
  for s in nginx haproxy prometheus; do service "$s" stop >/dev/null 2>&1 || true; done
else
  echo "missing system packages: ${missing[*]}" >&2
  echo "install them with: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
