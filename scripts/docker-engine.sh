#!/usr/bin/env bash
# Makes a Docker engine and the Debian trixie base image available on this
# machine, without a container registry:
#   - installs Docker's engine from Debian when dockerd is missing;
#   - starts dockerd in the background when no engine answers, and writes its
#     PID to .cache/dockerd.pid so the caller can stop exactly what it started;
#   - imports a debootstrapped trixie as the base image when the engine does
#     not have it (tagged under the name the Dockerfiles use).
# Usage: scripts/docker-engine.sh start | stop
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
cache="$here/.cache"
pidfile="$cache/dockerd.pid"
base_image="${BASE_IMAGE:-debian:trixie-slim}"
mkdir -p "$cache"

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if [ ! -f "$cache/apt-updated" ]; then apt-get update -q >/dev/null && touch "$cache/apt-updated"; fi
  apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

# The Debian mirror this machine's apt already uses: read, never hard-coded.
debian_mirror() {
  local files uri
  files="$(ls /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null || true)"
  # The main archive: a URI whose path ends in /debian (not -security, not third-party).
  uri="$(grep -hoE '^(URIs:|deb) +https?://[^ ]+' $files 2>/dev/null | awk '{print $2}' \
        | grep -E '/debian/?$' | head -n1)"
  [ -n "$uri" ] || { echo "no Debian mirror found in /etc/apt sources" >&2; exit 1; }
  echo "$uri"
}

engine_up() { docker info >/dev/null 2>&1; }

start() {
  command -v dockerd >/dev/null || apt_install docker.io
  command -v debootstrap >/dev/null || apt_install debootstrap
  if ! engine_up; then
    dockerd >"$cache/dockerd.log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 1 60); do engine_up && break; sleep 1; done
    engine_up || { echo "dockerd did not start; see $cache/dockerd.log" >&2; exit 1; }
  fi
  if ! docker image inspect "$base_image" >/dev/null 2>&1; then
    local root="$cache/rootfs-trixie"
    if [ ! -f "$root/.complete" ]; then
      rm -rf "$root"
      debootstrap --variant=minbase trixie "$root" "$(debian_mirror)" >"$cache/debootstrap.log" 2>&1 \
        || { tail -n 20 "$cache/debootstrap.log" >&2; exit 1; }
      # Keep images small and apt quiet, as the official slim images do.
      rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
      touch "$root/.complete"
    fi
    tar -C "$root" --exclude=./.complete -c . | docker import - "$base_image" >/dev/null
  fi
}

stop() {
  if [ -f "$pidfile" ]; then
    local pid; pid="$(cat "$pidfile")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    rm -f "$pidfile"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
