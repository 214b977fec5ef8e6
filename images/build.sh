#!/usr/bin/env bash
# Build the images the example pipeline and the tests run:
#   gpu-docker-trainer:0.1  the example trainer (Debian bookworm + numpy + scikit-learn)
#   gpu-docker-testbox:0.1  a busybox image for the test suite
# The trainer's base comes from a registry (debian:bookworm-slim) when one answers; where none
# does (an air-gapped host), it is bootstrapped from Debian packages with mmdebstrap instead.
# Usage: images/build.sh [trainer|testbox|all]   (DOCKER_HOST selects the engine, as for docker)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
what=${1:-all}
TRAINER=${TRAINER_IMAGE:-gpu-docker-trainer:0.1}
TESTBOX=${TESTBOX_IMAGE:-gpu-docker-testbox:0.1}
LOCAL_BASE=gpu-docker-base:bookworm

have() { docker image inspect "$1" >/dev/null 2>&1; }

trainer_base() {
  if have debian:bookworm-slim || timeout 120 docker pull -q debian:bookworm-slim >/dev/null 2>&1; then
    echo debian:bookworm-slim; return
  fi
  if ! have "$LOCAL_BASE"; then
    echo "build.sh: no registry answers; bootstrapping $LOCAL_BASE from Debian packages" >&2
    command -v mmdebstrap >/dev/null || apt-get install -y -qq mmdebstrap >&2
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' RETURN
    mmdebstrap --quiet --variant=essential \
      --include=python3-minimal,python3-numpy,python3-sklearn bookworm "$tmp/rootfs.tar" >&2
    docker import "$tmp/rootfs.tar" "$LOCAL_BASE" >/dev/null
  fi
  echo "$LOCAL_BASE"
}

build_trainer() {
  local base
  base=$(trainer_base)
  echo "build.sh: $TRAINER from $base" >&2
  # The bootstrapped base has everything the trainer needs, so its build needs no network (and
  # does not depend on the engine's bridge); a registry's base installs packages over the network.
  local network=()
  [ "$base" = "$LOCAL_BASE" ] && network=(--network none)
  docker build -q "${network[@]}" --build-arg BASE="$base" -t "$TRAINER" "$here/trainer" >/dev/null
}

build_testbox() {
  local bb=/bin/busybox
  [ -x "$bb" ] && "$bb" --list >/dev/null 2>&1 && ldd "$bb" 2>&1 | grep -q "not a dynamic" || {
    command -v apt-get >/dev/null && apt-get install -y -qq busybox-static >&2
  }
  local ctx
  ctx=$(mktemp -d)
  trap 'rm -rf "$ctx"' RETURN
  cp "$here/testbox/Dockerfile" "$ctx/" && cp "$bb" "$ctx/busybox"
  echo "build.sh: $TESTBOX" >&2
  docker build -q --network none -t "$TESTBOX" "$ctx" >/dev/null
}

# Save each image where the test suite's private engines load it from (tools/dockerd.py).
save() {
  local cache=${GPU_DOCKER_IMAGE_CACHE:-$here/../.cache/images}
  mkdir -p "$cache"
  local tar="$cache/$(echo "$1" | tr '/:' '__').tar"
  local id
  id=$(docker image inspect -f '{{.Id}}' "$1")
  [ -f "$tar.id" ] && [ "$(cat "$tar.id")" = "$id" ] && [ -f "$tar" ] && return
  docker save -o "$tar.tmp" "$1" && mv "$tar.tmp" "$tar" && echo "$id" > "$tar.id"
}

case "$what" in
  trainer) build_trainer; save "$TRAINER" ;;
  testbox) build_testbox; save "$TESTBOX" ;;
  all) build_trainer; build_testbox; save "$TRAINER"; save "$TESTBOX" ;;
  *) echo "usage: $0 [trainer|testbox|all]" >&2; exit 2 ;;
esac
