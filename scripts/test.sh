#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing (npm packages; qemu-utils,
# skopeo, zstd, casync, mtools via apt-get when root), type-checks, runs vitest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh npm system
echo "== tsc --noEmit"
npx tsc --noEmit
echo "== vitest"
report=$(mktemp)
status=0
npx vitest run --reporter=default --reporter=json --outputFile.json="$report" "$@" || status=$?
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed` + (r.numPendingTests ? `, ${r.numPendingTests} skipped` : ""));
' "$report" || true
rm -f "$report"
exit $status
