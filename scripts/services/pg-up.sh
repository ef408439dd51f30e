#!/usr/bin/env bash
# Starts a throwaway PostgreSQL 15 on 127.0.0.1:$PGPORT (unix socket in $PGDIR), trust auth, with database $PGDATABASE:
# the metadata server of the tests. From ../shared/recipes/postgres.md (Debian's postgresql-15).
# Env (all optional): PGDIR (default: a new /var/tmp/snapyard-pg.XXXXXX; the postgres user must reach it), PGPORT
#   (default: a free port), PGDATABASE (snapyard).
# Installs postgresql-15 when missing and root (else says so). As root the server runs as the postgres user; as
# another user, as that user.
# Stdout: `export NAME=value` lines (PGDIR, SNAPYARD_TEST_POSTGRES), also written to $PGDIR/env. Progress to stderr.
# Exit 3: the directory holds a running instance (left alone). Stop with PGDIR=... scripts/services/pg-down.sh (also after a failed start).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
t0=$(date +%s%N)
bash "$here/../deps.sh" pg >&2
B=/usr/lib/postgresql/15/bin
PGDIR=${PGDIR:-$(fresh_dir pg)}; check_dir "$PGDIR"
PGPORT=${PGPORT:-$(free_port)}; DB=${PGDATABASE:-snapyard}
[ -f "$PGDIR/data/postmaster.pid" ] && { echo "$PGDIR in use: run pg-down.sh first" >&2; exit 3; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
rm -rf "$PGDIR"; mkdir -p "$PGDIR"; [ "$(id -u)" = 0 ] && chown postgres:postgres "$PGDIR"
cd "$PGDIR"   # initdb and postgres refuse root, and warn from a directory the postgres user cannot enter
as_pg $B/initdb -D "$PGDIR/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync >"$PGDIR/initdb.log"
# fsync etc. off: fast, and fine for data deleted at pg-down.sh. max_connections: room for pools of several replicas.
cat >> "$PGDIR/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$PGDIR'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
CONF
as_pg $B/pg_ctl -D "$PGDIR/data" -l "$PGDIR/server.log" -w -t 60 start >/dev/null ||
  { echo "PostgreSQL did not start, see $PGDIR/server.log:" >&2; tail -n 5 "$PGDIR/server.log" >&2; exit 1; }
as_pg $B/createdb -h "$PGDIR" -p "$PGPORT" -U postgres "$DB"
cat > "$PGDIR/env" <<ENV
export PGDIR='$PGDIR'
export SNAPYARD_TEST_POSTGRES='postgres://postgres@127.0.0.1:$PGPORT/$DB'
ENV
cat "$PGDIR/env"
echo "PostgreSQL up: postgres://postgres@127.0.0.1:$PGPORT/$DB (socket dir $PGDIR) in $(ms_since "$t0") ms" >&2
