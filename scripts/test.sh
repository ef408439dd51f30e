#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing (npm packages; qemu-utils,
# skopeo, zstd, casync, mtools, Ceph RGW, PostgreSQL 15 via apt-get when root), type-checks,
# starts the S3 (Ceph RGW) and PostgreSQL services on loopback ports, runs vitest, stops them
# (also on failure and interrupt). Arguments go to vitest (e.g. one test file).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh npm system
echo "== tsc --noEmit"
npx tsc --noEmit
echo "== services"
CEPH_DIR=$(mktemp -d /var/tmp/snapyard-rgw.XXXXXX); PGDIR=$(mktemp -d /var/tmp/snapyard-pg.XXXXXX)
export CEPH_DIR PGDIR
report=$(mktemp)
clean_up() {
  rm -f "$report"
  bash scripts/services/rgw-down.sh "$CEPH_DIR" || true
  bash scripts/services/pg-down.sh "$PGDIR" || true
}
trap clean_up EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# Each prints export lines: SNAPYARD_TEST_S3 + AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, SNAPYARD_TEST_POSTGRES.
rgw_env=$(bash scripts/services/rgw-up.sh); eval "$rgw_env"
pg_env=$(bash scripts/services/pg-up.sh); eval "$pg_env"
echo "SNAPYARD_TEST_S3=$SNAPYARD_TEST_S3 SNAPYARD_TEST_POSTGRES=$SNAPYARD_TEST_POSTGRES"
echo "== vitest"
status=0
npx vitest run --reporter=default --reporter=json --outputFile.json="$report" "$@" || status=$?
[ -s "$report" ] && node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed` + (r.numPendingTests ? `, ${r.numPendingTests} skipped` : ""));
' "$report" || true
exit $status
