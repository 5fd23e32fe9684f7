#!/usr/bin/env bash
# Runs the Durable Streams server conformance suite (the public npm package
# @durable-streams/server-conformance-tests) against a running StreamDB.
#
#   bash scripts/conformance.sh http://127.0.0.1:8080 [vitest args, e.g. -t 'SSE']
#
# The base URL has no path: the suite addresses streams as /v1/stream/{name}.
# Env: DS_LONG_POLL_MS  the server's --long-poll-timeout in ms (default 500)
#      DS_SUITE_DIR     where the suite is installed (default ~/.cache/streamdb-ds-conformance)
#      DS_SUITE_VERSION the suite version (default 0.3.6)
set -euo pipefail
base="${1:?usage: conformance.sh BASE_URL [vitest args...]}"
shift
version="${DS_SUITE_VERSION:-0.3.6}"
dir="${DS_SUITE_DIR:-$HOME/.cache/streamdb-ds-conformance}/$version"
mkdir -p "$dir"
cd "$dir"
if [ ! -f node_modules/@durable-streams/server-conformance-tests/package.json ]; then
    [ -f package.json ] || echo '{"private": true}' > package.json
    npm install --no-audit --no-fund --loglevel=error \
        "@durable-streams/server-conformance-tests@$version" >/dev/null
fi
# The package exports runConformanceTests(); vitest needs a test file in
# this directory that calls it, and a config that includes that file.
cat > suite.test.mjs <<'JS'
import { runConformanceTests } from "@durable-streams/server-conformance-tests"
runConformanceTests({
  baseUrl: process.env.STREAMDB_DS_URL,
  longPollTimeoutMs: Number(process.env.DS_LONG_POLL_MS ?? 500),
})
JS
cat > vitest.config.mjs <<'JS'
import { defineConfig } from "vitest/config"
export default defineConfig({ test: { include: ["suite.test.mjs"], testTimeout: 30000 } })
JS
export STREAMDB_DS_URL="$base"
exec npx --no-install vitest run --config vitest.config.mjs "$@"
