#!/usr/bin/env bash
# Serves the registry on the embedded default store (local disk + SQLite under ./data),
# installing the npm packages first when needed. Extra arguments go to `snapyard serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh npm
npm run --silent build
exec node bin/snapyard.js serve "$@"
