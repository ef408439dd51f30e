#!/usr/bin/env bash
# Installs what snapyard needs on a Debian/Ubuntu machine, only when missing:
#   npm packages (npm ci), and for tests and benchmarks the Debian packages
#   qemu-utils (qemu-img, qemu-io), qemu-system-x86 (qemu-system-i386), skopeo, zstd, casync, mtools, dosfstools,
#   docker-registry, apache2-utils (htpasswd) and chromium (test/ui.test.ts, bench/ui.ts); for the S3 and PostgreSQL test services
#   (scripts/services/) ceph-mon, ceph-osd and radosgw (Ceph RGW) and postgresql-15.
# Usage: scripts/deps.sh [npm] [system] [rgw] [pg]   (system includes rgw and pg)
set -euo pipefail
cd "$(dirname "$0")/.."

want_npm=0; want_system=0; want_rgw=0; want_pg=0
for a in "${@:-npm system}"; do
  for w in $a; do
    case "$w" in
      npm) want_npm=1 ;; system) want_system=1; want_rgw=1; want_pg=1 ;; rgw) want_rgw=1 ;; pg) want_pg=1 ;;
      *) echo "deps.sh: unknown part $w" >&2; exit 2 ;;
    esac
  done
done

missing=()
if [ "$want_rgw" = 1 ]; then
  command -v ceph-mon >/dev/null || missing+=(ceph-mon)
  command -v ceph-osd >/dev/null || missing+=(ceph-osd)
  command -v radosgw >/dev/null || missing+=(radosgw)
fi
if [ "$want_pg" = 1 ]; then
  [ -x /usr/lib/postgresql/15/bin/initdb ] || missing+=(postgresql-15)
fi
if [ "$want_system" = 1 ]; then
  command -v qemu-img >/dev/null && command -v qemu-io >/dev/null || missing+=(qemu-utils)
  command -v qemu-system-i386 >/dev/null || missing+=(qemu-system-x86)
  command -v skopeo >/dev/null || missing+=(skopeo)
  command -v zstd >/dev/null || missing+=(zstd)
  command -v casync >/dev/null || missing+=(casync)
  command -v mcopy >/dev/null || missing+=(mtools)
  command -v mkfs.fat >/dev/null || missing+=(dosfstools)
  command -v docker-registry >/dev/null || missing+=(docker-registry)
  command -v htpasswd >/dev/null || missing+=(apache2-utils)
  [ -x /usr/bin/chromium ] || missing+=(chromium)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "deps: installing ${missing[*]}" >&2
    if [[ " ${missing[*]} " == *" postgresql-15 "* ]]; then
      # The tests run private servers (scripts/services/pg-up.sh): do not let the package create and start a "main" cluster.
      mkdir -p /etc/postgresql-common/createcluster.d
      echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/50-no-main.conf
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "deps: missing Debian packages: ${missing[*]}" >&2
    echo "deps: install them with: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
fi

if [ "$want_npm" = 1 ]; then
  if ! command -v node >/dev/null || [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
    echo "deps: Node.js 20 or newer is required" >&2
    exit 1
  fi
  # (Re)install when node_modules is absent or older than the lock file.
  if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    echo "deps: npm ci (native addons compile from source: about 2 minutes the first time)" >&2
    npm ci --no-audit --no-fund --loglevel=error
  fi
fi
