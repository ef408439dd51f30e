#!/usr/bin/env bash
# Serves the registry on the embedded default store (local disk + SQLite under ./data),
# installing the npm packages first when needed. Extra arguments go to `snapyard serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh npm
npm run --silent build
# As the container image does (Dockerfile, docs/deploy-replicas.md): glibc returns freed large buffers, V8's young generation stays small.
export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_:-131072}"
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}"
export NODE_OPTIONS="${NODE_OPTIONS:---max-semi-space-size=4}"
exec node bin/snapyard.js serve "$@"
