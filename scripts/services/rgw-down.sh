#!/usr/bin/env bash
# Stops the Ceph started by rgw-up.sh in $CEPH_DIR (or $1): kills only the PIDs it recorded, and only while their
# command line still names this cluster's ceph.conf; waits until they are gone, then deletes the directory.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
D=$(down_dir CEPH_DIR rgw-down.sh "$@") || exit $?
[ -n "$D" ] || exit 0
pids=()
if [ -f "$D/run/pids" ]; then
  while read -r _ pid; do
    grep -qF "$D/ceph.conf" "/proc/$pid/cmdline" 2>/dev/null && { kill -9 "$pid" 2>/dev/null; pids+=("$pid"); }
  done < "$D/run/pids"
fi
for pid in "${pids[@]}"; do while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done; done
rm -rf "$D"
