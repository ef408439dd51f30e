#!/bin/sh
# The existing emulator entrypoint, with snapyard doing the snapshot step.
# Same environment as before: USE_PREBUILT_SNAPSHOT, SNAPSHOT_REGISTRY,
# SNAPSHOT_TAG, SNAPSHOT_DIR, DISK, SNAPSHOT_MODE, SNAPSHOT_RESET,
# SNAPSHOT_BRANCH, SNAPSHOT_PARENT_DISK, POD_NAME (docs/pod-init.md); plus
# SNAPYARD_CACHE for the node cache (default $SNAPSHOT_DIR/.snapyard-cache),
# SNAPYARD_USERNAME/SNAPYARD_PASSWORD, SNAPYARD_INSECURE=true for a plain http
# registry, and SNAPSHOT_LOADVM, the internal snapshot to resume when the
# image lists it. The same steps as deploy/kubernetes/examples/emulator, where
# pod-init is an init container instead.
set -eu
: "${SNAPSHOT_DIR:=/images}" "${DISK:=$SNAPSHOT_DIR/win98.qcow2}" "${POD_NAME:=emulator-0}"
N=${POD_NAME##*-}; case "$N" in (*[!0-9]*|'') N=0 ;; esac

if [ "${USE_PREBUILT_SNAPSHOT:-false}" = true ]; then
  # Fetches only what this node lacks, makes win98_instance_$N.qcow2 over the snapshot.
  snapyard pod-init
  if [ -n "${SNAPSHOT_BRANCH:-}" ]; then TOP="$SNAPSHOT_DIR/$SNAPSHOT_BRANCH/win98_instance_$N.qcow2"; else TOP="$SNAPSHOT_DIR/win98_instance_$N.qcow2"; fi
else
  TOP="$DISK"
fi

# -loadvm only when the image lists that snapshot (docs/pod-init.md, "VM state").
LOADVM=
if [ -n "${SNAPSHOT_LOADVM:-}" ] &&
  qemu-img snapshot -l "$TOP" | awk -v n="$SNAPSHOT_LOADVM" 'NR > 2 && $2 == n { f = 1 } END { exit !f }'; then
  LOADVM=$SNAPSHOT_LOADVM
fi
exec qemu-system-i386 -m 128 -nographic -drive "file=$TOP,format=qcow2,if=ide" ${LOADVM:+-loadvm "$LOADVM"} "$@"
