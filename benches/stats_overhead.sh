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
ratio_line stats-on stats-off "stats on/off"
