#!/usr/bin/env bash
# Checks the dependency tree with cargo-deny: RustSec advisories, licences,
# bans and sources (deny.toml). Runs offline against a local copy of the
# advisory database: $SWITCHYARD_ADVISORY_DB, else ../shared/advisory-db beside
# the repository, else the snapshot kept in scripts/advisory-db.tar.xz. Then
# proves the check bites: a fixture depending on a crate with a known
# advisory must be refused, with the advisory named.
set -euo pipefail
cd "$(dirname "$0")/.."

db=${SWITCHYARD_ADVISORY_DB:-../shared/advisory-db}
if [ ! -d "$db/crates" ]; then
  if [ -n "${SWITCHYARD_ADVISORY_DB:-}" ]; then
    echo "audit: no RustSec advisory database at $db (SWITCHYARD_ADVISORY_DB)." >&2
    exit 1
  fi
  mkdir -p target/advisory-snapshot
  tar -xJf scripts/advisory-db.tar.xz -C target/advisory-snapshot
  db=target/advisory-snapshot/advisory-db
fi
echo "audit: advisory database from $db"
command -v cargo-deny >/dev/null || cargo install cargo-deny --locked --version 0.20.2

# cargo-deny opens its database as a git checkout under db-path, named after
# the URL; the commit carries the snapshot's date so staleness is real.
copy=target/advisory-dbs/advisory-db-3157b0e258782691
rm -rf "$copy" && mkdir -p "$copy" && cp -r "$db"/. "$copy"/ && rm -rf "$copy/.git"
when=$(sed -n 's/.*(\([0-9-]*\)).*/\1/p' "$db/SNAPSHOT.txt" 2>/dev/null | head -1)
when=${when:-$(date -u +%F)}
(
  cd "$copy"
  git init -q && git add -A
  GIT_AUTHOR_DATE="${when}T00:00:00Z" GIT_COMMITTER_DATE="${when}T00:00:00Z" \
    git -c user.name=audit -c user.email=audit@localhost commit -qm "advisory-db snapshot $when"
)
echo "audit: advisory database snapshot of $when ($(find "$copy/crates" -name '*.md' | wc -l) advisories)"

cargo fetch --locked -q
cargo fetch --locked -q --manifest-path tests/fixtures/advisory/Cargo.toml
cargo deny --offline check

if out=$(cargo deny --offline --manifest-path tests/fixtures/advisory/Cargo.toml --config deny.toml check advisories 2>&1); then
  echo "audit: the fixture with RUSTSEC-2021-0003 passed the check: the advisory check is not working" >&2
  exit 1
fi
grep -q "RUSTSEC-2021-0003" <<<"$out" || { echo "$out" >&2; echo "audit: the fixture was refused, but not for RUSTSEC-2021-0003" >&2; exit 1; }
echo "audit: ok (and a known-vulnerable dependency is refused: RUSTSEC-2021-0003)"
