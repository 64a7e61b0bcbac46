#!/usr/bin/env bash
# Throughput and latency of a feature-flag rule vs a plain header rule, same
# binary, same upstreams, alternating rounds. The flag's targeting (two
# attribute conditions, then `fractional`) is evaluated in full on every
# request; neither rule matches, so both send everything to `stable`.
#
#   bash benches/flag_overhead.sh
#   ROUNDS=5 DURATION=15 bash benches/flag_overhead.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WRK_HEADERS=(-H "x-user-id: user-42" -H "x-plan: pro" -H "x-user-email: alice@example.com")
source benches/lib.sh

cat > "$W/flags.json" <<'JSON'
{"flags": {"new-checkout": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
  "targeting": {"if": [{"and": [{"==": [{"var": "plan"}, "pro"]}, {"starts_with": [{"var": "email"}, "a"]}]},
                       {"fractional": [["on", 0], ["off", 100]]}, "off"]}}}}
JSON
P_FLAG=$(free_port); P_HDR=$(free_port)
with_rule() { # port rule
  switchyard_config "$1" | sed "s/        - { match: { header: { x-canary: always } }, pool: canary }/        - { match: $2, pool: canary }/" \
    | sed 's/    split:/    split:\n      sticky: { header: x-user-id }/'
}
{ with_rule "$P_FLAG" "{ flag: new-checkout }"
  printf 'flags:\n  file: %s\n  context:\n    plan: { header: x-plan }\n    email: { header: x-user-email }\n' "$W/flags.json"; } > "$W/flag.yaml"
with_rule "$P_HDR" "{ header: { x-plan: enterprise } }" > "$W/header.yaml"
"$SY" serve --config "$W/flag.yaml" --no-access-log > "$W/flag.log" 2>&1 & pids+=($!)
"$SY" serve --config "$W/header.yaml" --no-access-log > "$W/header.log" 2>&1 & pids+=($!)
wait_up "$P_FLAG"; wait_up "$P_HDR"

names=(flag-rule header-rule)
declare -A PORT=([flag-rule]=$P_FLAG [header-rule]=$P_HDR)
bench_rounds
ratio_line flag-rule header-rule "flag rule / header rule"
