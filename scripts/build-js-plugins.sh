#!/usr/bin/env bash
# Builds the reference JavaScript plugins (sdk/js/examples: the router
# beta-router.js and the policy error-budget.js) to components in
# target/plugins/js/, with ComponentizeJS
# pinned in sdk/js/package-lock.json (installed from npm when missing).
# Needs Node.js 20 and npm (scripts/deps.sh --tests installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d sdk/js/node_modules/@bytecodealliance/componentize-js ]; then
  npm ci --prefix sdk/js --silent --no-audit --no-fund
fi
node sdk/js/build.mjs sdk/js/examples/beta-router.js target/plugins/js/beta_router.wasm router
node sdk/js/build.mjs sdk/js/examples/error-budget.js target/plugins/js/error_budget.wasm policy
