#!/usr/bin/env bash
# Throughput and latency with the cohort-router Wasm plugin deciding every
# request vs the same split done by a built-in header rule: same binary, same
# upstreams, alternating rounds. Every request carries `x-cohort: beta` and a
# sticky cookie, so both rules match and send it to the canary.
#
#   bash benches/plugin_overhead.sh
#   ROUNDS=5 DURATION=15 bash benches/plugin_overhead.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WRK_HEADERS=(-H "x-cohort: beta" -H "cookie: theme=dark; session=8d7f6e5a4b3c2d1e; consent=1"
             -H "user-agent: Mozilla/5.0 (X11; Linux x86_64)" -H "accept-language: en-GB,en;q=0.9")
bash scripts/build-plugins.sh >/dev/null
source benches/lib.sh
WASM="$ROOT/target/plugins/wasm32-unknown-unknown/plugin/cohort_router.wasm"

P_PLUGIN=$(free_port); P_HDR=$(free_port)
with_rule() { # port rule
  switchyard_config "$1" | sed "s|        - { match: { header: { x-canary: always } }, pool: canary }|        - $2|" \
    | sed 's/    split:/    split:\n      sticky: { cookie: session }/'
}
{ with_rule "$P_PLUGIN" "{ plugin: cohort-router, config: { header: { name: x-cohort, values: [beta] } } }"
  printf 'plugins:\n  - { name: cohort-router, path: "%s" }\n' "$WASM"; } > "$W/plugin.yaml"
with_rule "$P_HDR" "{ match: { header: { x-cohort: beta } }, pool: canary }" > "$W/header.yaml"
"$SY" serve --config "$W/plugin.yaml" --no-access-log > "$W/plugin.log" 2>&1 & pids+=($!); PID_PLUGIN=$!
"$SY" serve --config "$W/header.yaml" --no-access-log > "$W/header.log" 2>&1 & pids+=($!); PID_HDR=$!
wait_up "$P_PLUGIN"; wait_up "$P_HDR"
for p in "$P_PLUGIN" "$P_HDR"; do
  got=$(curl -s "${WRK_HEADERS[@]}" "http://127.0.0.1:$p/")
  [ "$got" = "canary" ] || { echo "port $p answered '$got', not canary" >&2; exit 1; }
done

names=(plugin-rule header-rule)
declare -A PORT=([plugin-rule]=$P_PLUGIN [header-rule]=$P_HDR)
PID=([plugin-rule]=$PID_PLUGIN [header-rule]=$PID_HDR)
bench_rounds
ratio_line plugin-rule header-rule "cohort-router plugin / header rule"
