#!/usr/bin/env bash
# Stops the PostgreSQL started by pg-up.sh in $PGDIR (or $1) (immediate mode: its data is thrown away) and deletes the
# directory.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
D=$(down_dir PGDIR pg-down.sh "$@") || exit $?
[ -n "$D" ] || exit 0
if [ -f "$D/data/postmaster.pid" ]; then
  cd /
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$D/data" -m immediate -w stop >/dev/null
  else /usr/lib/postgresql/15/bin/pg_ctl -D "$D/data" -m immediate -w stop >/dev/null; fi
fi
rm -rf "$D"
