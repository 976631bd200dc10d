#!/usr/bin/env bash
# Makes the base images the Docker e2e test builds on, where no registry can
# be pulled from: each is made from Debian's packages and this machine's own
# toolchains, and tagged cdn-test/*. Images that already exist are kept.
#
#   cdn-test/debian:bookworm   debootstrap --variant=minbase bookworm (stands in for debian:bookworm-slim)
#   cdn-test/build:latest      the above + gcc, make and the host's Rust and Node (stands in for rust:1.95-bookworm and node:24-bookworm-slim)
#   cdn-test/prometheus:latest the above + Debian's prometheus package (stands in for prom/prometheus)
set -euo pipefail
cd "$(dirname "$0")/../.."
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cdn-base.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

have() { docker image inspect "$1" >/dev/null 2>&1; }
say() { echo "base-images: $*"; }

if ! have cdn-test/debian:bookworm; then
  say "debootstrap bookworm (minbase) -> cdn-test/debian:bookworm"
  debootstrap --variant=minbase bookworm "$WORK/rootfs" "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log"; exit 1; }
  # As in the official image: no apt caches, no recommends.
  rm -rf "$WORK/rootfs/var/cache/apt/archives/"*.deb "$WORK/rootfs/var/lib/apt/lists/"*
  echo 'APT::Install-Recommends "false";' >"$WORK/rootfs/etc/apt/apt.conf.d/90no-recommends"
  tar -C "$WORK/rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - cdn-test/debian:bookworm >/dev/null
  rm -rf "$WORK/rootfs"
fi

if ! have cdn-test/build:latest; then
  say "host Rust $(rustc --version | cut -d' ' -f2) and Node $(node --version) -> cdn-test/build:latest"
  sysroot=$(rustc --print sysroot)
  mkdir -p "$WORK/build/rust" "$WORK/build/node" "$WORK/build/ca"
  cp /usr/local/share/ca-certificates/*.crt "$WORK/build/ca/" 2>/dev/null || true
  # The toolchain without its documentation (share/ is 0.8 GB of HTML).
  cp -a "$sysroot/bin" "$sysroot/lib" "$WORK/build/rust/"
  cp -a "$(readlink -f "$(command -v node)")" "$WORK/build/node/node"
  cp -a "$(dirname "$(readlink -f "$(command -v npm)")")/.." "$WORK/build/node/npm"
  cp deploy/test/build.Dockerfile "$WORK/build/Dockerfile"
  docker build -q -t cdn-test/build:latest --build-arg BASE=cdn-test/debian:bookworm "$WORK/build" >/dev/null
  rm -rf "$WORK/build"
fi

if ! have cdn-test/prometheus:latest; then
  say "Debian's prometheus package -> cdn-test/prometheus:latest"
  docker build -q -t cdn-test/prometheus:latest --build-arg BASE=cdn-test/debian:bookworm \
    -f deploy/test/prometheus.Dockerfile deploy/test >/dev/null
fi
say "ready: $(docker image ls --format '{{.Repository}}:{{.Tag}}' 'cdn-test/*' | sort | tr '\n' ' ')"
