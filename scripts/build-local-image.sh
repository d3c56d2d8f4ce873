#!/usr/bin/env bash
# Builds the container images the compose cluster and cluster-tests/ need, from what this
# machine has (no container registry is needed):
#
#   gridraft-base:bookworm   Debian 12 minbase made with debootstrap from Debian's mirror,
#                            imported with `docker import` (skipped when the image exists)
#   gridraft:local           the host-built gridraft binary on that base (docker/local/)
#   gridraft-haproxy:local   Debian's haproxy package on that base
#
# The result is equivalent to docker/Dockerfile (same user, volume, environment, health check,
# entrypoint) and to the public haproxy image (same config path, unprivileged user).
# Idempotent and cached: debootstrap runs once, cargo and docker build reuse their caches.
#
# Environment:
#   GRIDRAFT_BINARY     use this binary instead of building one (e.g. target/debug/gridraft)
#   GRIDRAFT_PROFILE    cargo profile to build when GRIDRAFT_BINARY is unset (default release)
#   DEBIAN_MIRROR       default http://deb.debian.org/debian
#   BUILD_DIR           work directory (default /var/tmp/gridraft-image-build)
#   REBUILD_BASE=1      debootstrap the base again
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE_IMAGE="${BASE_IMAGE:-gridraft-base:bookworm}"
GRIDRAFT_IMAGE="${GRIDRAFT_LOCAL_IMAGE:-gridraft:local}"
HAPROXY_IMAGE="${HAPROXY_LOCAL_IMAGE:-gridraft-haproxy:local}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
BUILD_DIR="${BUILD_DIR:-/var/tmp/gridraft-image-build}"
PROFILE="${GRIDRAFT_PROFILE:-release}"

log() { echo "build-local-image: $*" >&2; }

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

build_base() {
  if have_image "$BASE_IMAGE" && [ "${REBUILD_BASE:-0}" != 1 ]; then
    log "$BASE_IMAGE exists; skipping debootstrap"
    return
  fi
  if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends debootstrap >&2
  fi
  local rootfs="$BUILD_DIR/rootfs"
  mkdir -p "$BUILD_DIR"
  # A complete debootstrap leaves /etc/debian_version and a working dpkg database; anything
  # else is a half-finished run and starts over.
  if [ ! -s "$rootfs/etc/debian_version" ] || [ ! -s "$rootfs/var/lib/dpkg/status" ] \
     || [ -e "$rootfs/debootstrap" ] || [ "${REBUILD_BASE:-0}" = 1 ]; then
    rm -rf "$rootfs"
    log "debootstrap --variant=minbase bookworm from $DEBIAN_MIRROR (takes a few minutes)"
    debootstrap --variant=minbase bookworm "$rootfs" "$DEBIAN_MIRROR" >"$BUILD_DIR/debootstrap.log" 2>&1 \
      || { tail -n 30 "$BUILD_DIR/debootstrap.log" >&2; exit 1; }
  fi
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  log "importing $rootfs as $BASE_IMAGE"
  tar -C "$rootfs" --numeric-owner -c . \
    | docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
}

gridraft_binary() {
  if [ -n "${GRIDRAFT_BINARY:-}" ]; then
    echo "$GRIDRAFT_BINARY"
    return
  fi
  log "cargo build --profile $PROFILE --bin gridraft"
  (cd "$REPO" && cargo build --profile "$PROFILE" --bin gridraft >&2)
  local dir="$PROFILE"
  [ "$PROFILE" = dev ] && dir=debug
  echo "$REPO/target/$dir/gridraft"
}

build_gridraft() {
  local bin ctx
  bin="$(gridraft_binary)"
  [ -x "$bin" ] || { log "no gridraft binary at $bin"; exit 1; }
  # The binary links only glibc, libm and libgcc_s (libzmq is vendored); the base is the same
  # Debian release as the build host, so the host's glibc matches.
  ctx="$BUILD_DIR/gridraft-context"
  rm -rf "$ctx"
  mkdir -p "$ctx"
  cp -p "$bin" "$ctx/gridraft"
  cp -p "$REPO/docker/entrypoint.sh" "$ctx/entrypoint.sh"
  cp -p "$REPO/docker/local/gridraft.Dockerfile" "$ctx/Dockerfile"
  log "building $GRIDRAFT_IMAGE from $bin"
  docker build -q --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$GRIDRAFT_IMAGE" "$ctx" >/dev/null
}

build_haproxy() {
  local ctx="$BUILD_DIR/haproxy-context"
  rm -rf "$ctx"
  mkdir -p "$ctx"
  cp -p "$REPO/docker/local/haproxy.Dockerfile" "$ctx/Dockerfile"
  log "building $HAPROXY_IMAGE (Debian's haproxy package)"
  docker build -q --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$HAPROXY_IMAGE" "$ctx" >/dev/null
}

build_base
build_gridraft
build_haproxy
docker run --rm --entrypoint gridraft "$GRIDRAFT_IMAGE" --version >&2
# sed, not head: head exits after one line and haproxy's further lines then die of SIGPIPE,
# which pipefail turns into a failed build.
docker run --rm "$HAPROXY_IMAGE" haproxy -v 2>&1 | sed -n 1p >&2
log "done: $GRIDRAFT_IMAGE $HAPROXY_IMAGE"
