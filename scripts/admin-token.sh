#!/usr/bin/env bash
# admin-token.sh : prints the admin API token `make up` gives the containers
# (CDN_ADMIN_TOKEN), made once in target/admin-token (48 hex digits).
set -euo pipefail
cd "$(dirname "$0")/.."
f=target/admin-token
if [[ ! -s $f ]]; then
  mkdir -p target
  (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$f")
fi
cat "$f"
