#!/usr/bin/env bash
# Throughput and latency with per-pool statistics on vs off (`--no-stats`),
# same binary, same upstreams, alternating rounds; prints medians and the ratio.
#
#   bash benches/stats_overhead.sh
#   ROUNDS=5 DURATION=15 bash benches/stats_overhead.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source benches/lib.sh

P_ON=$(free_port); P_OFF=$(free_port)
switchyard_config "$P_ON" > "$W/on.yaml"
switchyard_config "$P_OFF" > "$W/off.yaml"
"$SY" serve --config "$W/on.yaml" --no-access-log > "$W/on.log" 2>&1 & pids+=($!)
"$SY" serve --config "$W/off.yaml" --no-access-log --no-stats > "$W/off.log" 2>&1 & pids+=($!)
wait_up "$P_ON"; wait_up "$P_OFF"

names=(stats-on stats-off)
declare -A PORT=([stats-on]=$P_ON [stats-off]=$P_OFF)
bench_rounds
read -r on_rps _ on_p99 <<<"${M[stats-on]}"
read -r off_rps _ off_p99 <<<"${M[stats-off]}"
awk -v a="$on_rps" -v b="$off_rps" -v ap="$on_p99" -v bp="$off_p99" \
  'BEGIN { printf "stats on/off: throughput %.3fx (%.1f%% lower), p99 latency %.2fx\n", a/b, (1-a/b)*100, ap/bp }'
echo "(${ROUNDS} rounds x ${DURATION}s, ${CONNS} connections; both proxies run at once, only one is loaded at a time)"
