#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing (npm packages; qemu-utils,
# skopeo, zstd, casync, mtools, Ceph RGW, PostgreSQL 15 via apt-get when root), type-checks,
# starts the S3 (Ceph RGW) and PostgreSQL services on loopback ports, runs vitest, stops them
# (also on failure and interrupt). Arguments go to vitest (e.g. one test file).
# Without arguments a second pass follows: the files of test/s3-suites.txt again, with
# SNAPYARD_TEST_BACKEND=s3 (test servers on S3 + PostgreSQL: test/helpers/server.ts). The last line
# counts both passes: "N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh npm system
echo "== tsc --noEmit"
npx tsc --noEmit
npx tsc --noEmit -p ui
echo "== services"
CEPH_DIR=$(mktemp -d /var/tmp/snapyard-rgw.XXXXXX); PGDIR=$(mktemp -d /var/tmp/snapyard-pg.XXXXXX)
export CEPH_DIR PGDIR
report=$(mktemp); report_s3=$(mktemp)
clean_up() {
  rm -f "$report" "$report_s3"
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
if [ $# -eq 0 ]; then
  echo "== vitest on S3 + PostgreSQL (SNAPYARD_TEST_BACKEND=s3: the files of test/s3-suites.txt)"
  mapfile -t s3_files < <(sed -e 's/#.*//' -e 's/[[:space:]]*$//' test/s3-suites.txt | grep -v '^$')
  SNAPYARD_TEST_BACKEND=s3 npx vitest run --reporter=default --reporter=json --outputFile.json="$report_s3" "${s3_files[@]}" || status=$?
fi
# One line for both passes (the CI reads it); a pass that wrote no report is said so (its exit status already failed the run).
node -e '
  const fs = require("fs");
  let passed = 0, failed = 0, pending = 0, missing = 0;
  for (const f of process.argv.slice(1)) {
    if (!fs.existsSync(f) || fs.statSync(f).size === 0) { missing++; continue; }
    const r = JSON.parse(fs.readFileSync(f, "utf8"));
    passed += r.numPassedTests; failed += r.numFailedTests; pending += r.numPendingTests;
  }
  if (missing) console.log(`${missing} vitest pass(es) wrote no report`);
  console.log(`${passed} passed, ${failed} failed` + (pending ? `, ${pending} skipped` : ""));
' "$report" $([ $# -eq 0 ] && echo "$report_s3") || true
exit $status
