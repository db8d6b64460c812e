#!/usr/bin/env bash
# End-to-end tests for llmd-worker: installs the openai npm client for the
# client test when missing, then runs every check in e2e.mjs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
worker=${1:?usage: run.sh /path/to/llmd-worker}

if [ ! -d "$here/../openai/node_modules/openai" ]; then
    (cd "$here/../openai" && npm ci --no-audit --no-fund --loglevel=error)
fi
exec node "$here/e2e.mjs" "$worker"
