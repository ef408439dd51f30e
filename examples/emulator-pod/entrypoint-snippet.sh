#!/bin/sh
# The existing emulator entrypoint, with snapyard doing the snapshot step.
# Same environment as before: USE_PREBUILT_SNAPSHOT, SNAPSHOT_REGISTRY,
# SNAPSHOT_TAG, SNAPSHOT_DIR, DISK, SNAPSHOT_MODE, SNAPSHOT_RESET,
# SNAPSHOT_BRANCH, SNAPSHOT_PARENT_DISK, POD_NAME (docs/pod-init.md).
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

exec qemu-system-i386 -m 128 -drive "file=$TOP,format=qcow2,if=ide" -nographic "$@"
