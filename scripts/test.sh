#!/usr/bin/env bash
# The whole test suite, on a fresh machine with a Rust toolchain and Python 3:
#   0. protoc and etcd from Debian's packages when missing (scripts/deps.sh);
#   1. the reference plugins, built to WebAssembly (scripts/build-plugins.sh;
#      the JavaScript one with ComponentizeJS, pinned, from npm:
#      scripts/build-js-plugins.sh), and the library's layering checked (scripts/layers.py: no import
#      circles, every arrow down the layers);
#   2. the dependency audit against the RustSec advisory database (scripts/audit.sh);
#   3. schemathesis, for the admin API's contract test, and flagd's reference
#      evaluator in both bucketing generations (openfeature-flagd-core 1.0.0
#      and 2.0.0, into target/flagd-reference/), all pinned, from PyPI;
#   4. Playwright's driver (playwright-core, pinned in tests/ui/package-lock.json),
#      from npm, for the dashboard's test in Debian's Chromium;
#   5. cargo test: unit tests, the plugins' native tests, the fuzz corpora
#      replayed, and end-to-end tests against the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh --tests
bash scripts/build-plugins.sh
bash scripts/build-js-plugins.sh
python3 scripts/layers.py
bash scripts/audit.sh
schemathesis=4.32.5
if ! st --version 2>/dev/null | grep -q "$schemathesis"; then
  python3 -m pip install --quiet --disable-pip-version-check "schemathesis==$schemathesis"
fi
for flagd in 1.0.0 2.0.0; do
  if [ ! -d "target/flagd-reference/$flagd/openfeature" ]; then
    python3 -m pip install --quiet --disable-pip-version-check --target "target/flagd-reference/$flagd" \
      "openfeature-flagd-core==$flagd"
  fi
done
if [ ! -d tests/ui/node_modules/playwright-core ]; then
  npm ci --prefix tests/ui --silent --no-audit --no-fund
fi
# pip may put `st` outside PATH (a --user install, say): tell the test where.
scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
command -v st >/dev/null || export SWITCHYARD_SCHEMATHESIS="$scripts/st"
cargo test --workspace
