#!/usr/bin/env bash
# Local stand-ins for the public base images the product's Dockerfiles and compose file
# name, built from Debian's archive alone (no registry is reachable on CI machines).
# Test machinery only: the product's Dockerfiles stay unmodified and name the real images.
#   usage: tests/containers/standins.sh [--rebuild]
# An image that already exists is kept unless --rebuild is given.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"
export BUILDAH_FORMAT=docker  # OCI format drops HEALTHCHECK
rebuild=0
[ "${1:-}" = "--rebuild" ] && rebuild=1

# The names the product uses (Dockerfile FROM lines, docker-compose.yml image keys).
BASE=localhost/debian:bookworm
PYTHON=docker.io/library/python:3.11-slim-bookworm
MOSQUITTO=docker.io/library/eclipse-mosquitto:2.0.18
MARIADB=docker.io/library/mariadb:11.4
HAPROXY=docker.io/library/haproxy:2.8  # docker-compose.galera.yml

have() { [ "$rebuild" = 0 ] && podman image exists "$1"; }
step() { printf '[standins %(%H:%M:%S)T] %s\n' -1 "$*"; }

mirror="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
[ -n "$mirror" ] || mirror="$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)"
mirror="${mirror:-http://deb.debian.org/debian}"

if ! have "$BASE"; then
  step "debootstrap bookworm from $mirror"
  rootfs="$(mktemp -d)"
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
  # This machine intercepts TLS: trust its CA inside test images only (never in the product).
  mkdir -p "$rootfs/etc/ssl/certs"
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/host-ca.crt"
  tar -C "$rootfs" -c . | podman import --change 'CMD=["/bin/bash"]' - "$BASE" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
fi

build() {  # build NAME CONTAINERFILE
  if have "$1"; then step "$1: present"; return; fi
  step "building $1"
  podman build -q --format docker -t "$1" -f "$here/$2" "$here" >/dev/null
}
build "$PYTHON" Containerfile.python
build "$MOSQUITTO" Containerfile.mosquitto
build "$MARIADB" Containerfile.mariadb
build "$HAPROXY" Containerfile.haproxy
step "stand-ins ready"
