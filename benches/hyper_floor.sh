#!/usr/bin/env bash
# How much of Switchyard's CPU per request is hyper's: the floor under any
# hyper-based HTTP/1.1 proxy (benches/floor: hyper's server and
# client on one current-thread runtime, one upstream connection per client
# connection, nothing else) beside Switchyard and HAProxy, on compare.sh's
# `split` workload (wrk, one thread, 50 keep-alive connections; load and
# upstream on core LOAD_CPU, each proxy on core PROXY_CPU; alternating
# rounds, medians of CPU per request from /proc).
#
#   bash benches/hyper_floor.sh
#   ROUNDS=3 DURATION=5 bash benches/hyper_floor.sh
#
# Switchyard minus the floor is Switchyard's own work (routing, the split,
# statistics, header rules, pooling, timeouts); the floor against HAProxy is
# what hyper costs before any of it. Everything stops by itself; nothing
# leaves 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-8}
THREADS=1
CONNS=50
LOAD_CPU=${LOAD_CPU:-0}
PROXY_CPU=${PROXY_CPU:-$(( $(nproc) > 1 ? 1 : 0 ))}
source benches/lib.sh
build_floor

declare -A PORT
names=(floor switchyard haproxy)
for c in "${names[@]}"; do PORT[$c]=$(free_port); done
"${PIN_PROXY[@]}" "$FLOOR" "127.0.0.1:${PORT[floor]}" "127.0.0.1:$S1" > "$W/floor.log" 2>&1 & pids+=($!)
PID[floor]=$!
start_split_proxies
for c in "${names[@]}"; do wait_up "${PORT[$c]}"; done

bench_rounds
ratio_line floor haproxy "hyper's floor vs HAProxy"
ratio_line switchyard floor "Switchyard vs hyper's floor"
ratio_line switchyard haproxy "Switchyard vs HAProxy"
