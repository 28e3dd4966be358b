#!/usr/bin/env bash
# Builds local stand-ins for the public base images, for machines that reach Debian's package mirror and
# PyPI but no image registry. docker-compose.local.yml points the stack at these names:
#
#   mlops/debian:bookworm        debootstrap --variant=minbase bookworm, imported with `docker import`
#   mlops/python:3.11-bookworm   + python3 (3.11), python3-venv, python3-pip; stands in for python:3.11-slim
#   mlops/postgres:15            + postgresql-15 and an entrypoint compatible with the official postgres image
#   mlops/redis:7                + redis-server; stands in for redis:7
#   mlops/prometheus:2           + prometheus; stands in for prom/prometheus
#   mlops/haproxy:2.6            + haproxy; stands in for haproxy:2.6 (the predictors' load balancer)
#   mlops/alertmanager:0.25      + prometheus-alertmanager; stands in for prom/alertmanager
#
# Images that already exist are kept while their docker/base/<dir> is unchanged (each image carries a hash of its
# folder in the label mlops.base.hash; FORCE=1 rebuilds everything). The host's CA bundle is copied into the rootfs
# and PIP_CERT points at it, so pip inside `docker build --network host` trusts the same CAs as the host.
# Needs root, debootstrap and a running Docker engine. Usage: docker/build-base-images.sh [FORCE=1 in env]
set -euo pipefail
cd "$(dirname "$0")"

MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
WORK=${BASE_BUILD_DIR:-/var/tmp/mlops-base-images}
HOST_CA=${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
FORCE=${FORCE:-0}

have() { [ "$FORCE" != 1 ] && docker image inspect "$1" >/dev/null 2>&1; }
log() { printf '== %s\n' "$*"; }

if have mlops/debian:bookworm; then
  log "mlops/debian:bookworm exists"
else
  command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install -y debootstrap" >&2; exit 1; }
  log "debootstrap $SUITE into $WORK/rootfs (about a minute)"
  rm -rf "$WORK/rootfs" && mkdir -p "$WORK/rootfs"
  debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
  # As in Debian's official images: packages' maintainer scripts must not start daemons during a build.
  printf '#!/bin/sh\nexit 101\n' >"$WORK/rootfs/usr/sbin/policy-rc.d" && chmod +x "$WORK/rootfs/usr/sbin/policy-rc.d"
  cp "$HOST_CA" "$WORK/rootfs/etc/ssl/certs/build-host-ca-bundle.crt"
  # Slim it like the official images: no apt lists, docs or man pages, and apt keeps no .debs.
  rm -rf "$WORK/rootfs"/var/lib/apt/lists/* "$WORK/rootfs"/var/cache/apt/*.bin "$WORK/rootfs"/usr/share/{doc,man,info}/*
  printf 'path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\n' \
    >"$WORK/rootfs/etc/dpkg/dpkg.cfg.d/01-slim"
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >"$WORK/rootfs/etc/apt/apt.conf.d/01-slim"
  printf 'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n' >"$WORK/rootfs/etc/apt/apt.conf.d/02-nocache"
  log "docker import mlops/debian:bookworm"
  tar -C "$WORK/rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/build-host-ca-bundle.crt' \
    --change 'CMD ["bash"]' - mlops/debian:bookworm
  rm -rf "$WORK/rootfs"
fi

folder_hash() { (cd "base/$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16; }

for spec in python:mlops/python:3.11-bookworm postgres:mlops/postgres:15 redis:mlops/redis:7 prometheus:mlops/prometheus:2 \
    haproxy:mlops/haproxy:2.6 alertmanager:mlops/alertmanager:0.25; do
  dir=${spec%%:*} name=${spec#*:}
  hash=$(folder_hash "$dir")
  if have "$name" && [ "$(docker image inspect -f '{{index .Config.Labels "mlops.base.hash"}}' "$name")" = "$hash" ]; then
    log "$name exists (docker/base/$dir unchanged)"; continue
  fi
  log "docker build $name (docker/base/$dir)"
  docker build --network host -q --label "mlops.base.hash=$hash" -t "$name" "base/$dir"
done
docker image ls 'mlops/*'
