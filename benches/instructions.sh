#!/usr/bin/env bash
# Instructions per request in user space, counted by valgrind's callgrind:
# exact and repeatable (the same binary and load give the same count, whatever
# else the machine does), where CPU time on a shared VM varies by ±10 %.
# Contenders: hyper's floor (benches/floor), Switchyard and HAProxy,
# on compare.sh's `split` workload (the 90/10 split at 50 keep-alive
# connections; h2load sends a fixed number of HTTP/1.1 requests).
#
#   bash benches/instructions.sh
#   REQUESTS=50000 TOP=40 bash benches/instructions.sh
#   OUT=/tmp/cg bash benches/instructions.sh   # keeps the profiles, for
#     callgrind_annotate --tree=caller /tmp/cg/switchyard.out (who calls what)
#   FORWARDED=1 bash benches/instructions.sh   # HAProxy also sets
#     X-Forwarded-For, -Proto and -Host, as Switchyard always does
#   H2=1 bash benches/instructions.sh          # HTTP/2 (h2c) from the client, as
#     compare.sh's `h2` (10 connections x 10 streams); Switchyard and HAProxy
#     only (the floor speaks HTTP/1.1)
#
# Counting starts after a warm-up and stops before shutdown, so start-up and
# the first connections are not in it. The kernel's share (about two thirds
# of each proxy's CPU here, see per_request.sh) is not counted: this measures
# what each contender's own code does per request. Then Switchyard's and the
# floor's top functions by their own (exclusive) instructions per request.
# Everything stops by itself; nothing leaves 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
REQUESTS=${REQUESTS:-20000}
TOP=${TOP:-25}
BENCH_TOOLS=(valgrind:valgrind h2load:nghttp2-client)
source benches/lib.sh
build_floor

declare -A PORT
H2=${H2:-0}
names=(floor switchyard haproxy)
[ "$H2" = 1 ] && names=(switchyard haproxy)
declare -A LOADED # the port loaded: HAProxy takes h2c on a port of its own
for c in "${names[@]}"; do PORT[$c]=$(free_port); LOADED[$c]=${PORT[$c]}; done
[ "$H2" = 1 ] && LOADED[haproxy]=$(free_port)
{ echo "server: { workers: 1 }"; switchyard_config "${PORT[switchyard]}"; } > "$W/switchyard.yaml"
haproxy_config "  bind 127.0.0.1:${PORT[haproxy]}$([ "$H2" = 1 ] && echo "
  bind 127.0.0.1:${LOADED[haproxy]} proto h2")" > "$W/haproxy.cfg"
declare -A CMD=(
  [floor]="$FLOOR 127.0.0.1:${PORT[floor]:-0} 127.0.0.1:$S1"
  [switchyard]="$SY serve --config $W/switchyard.yaml --no-access-log"
  [haproxy]="haproxy -f $W/haproxy.cfg -db"
)

LOAD_ARGS=(--h1 -t1 -c50)
[ "$H2" = 1 ] && LOAD_ARGS=(-t1 -c10 -m10)
load() { h2load "${LOAD_ARGS[@]}" -n"$1" "http://127.0.0.1:$2/" | awk '/^requests:/ {print $8}'; }

declare -A IR
for c in "${names[@]}"; do
  # shellcheck disable=SC2086 # CMD holds a command line
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$W/cg.$c" ${CMD[$c]} > "$W/$c.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  wait_up "${PORT[$c]}" 600 # start-up under valgrind is slow: up to a minute
  load 2000 "${LOADED[$c]}" >/dev/null # warm-up: connections, caches, the pool
  callgrind_control -i on "$pid" >/dev/null
  ok=$(load "$REQUESTS" "${LOADED[$c]}")
  callgrind_control -i off "$pid" >/dev/null
  callgrind_control -d "$pid" >/dev/null
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  out="$W/cg.$c.1" # the dump's
  total=$(awk '/^totals:/ {print $2}' "$out")
  [ "$ok" = "$REQUESTS" ] || { echo "$c: $ok of $REQUESTS requests succeeded" >&2; exit 1; }
  IR[$c]=$(awk -v t="$total" -v n="$REQUESTS" 'BEGIN { printf "%.0f", t / n }')
  [ -n "${OUT:-}" ] && mkdir -p "$OUT" && cp "$out" "$OUT/$c.out"
  echo "$c: ${IR[$c]} instructions per request ($total over $REQUESTS requests)"
done

echo
printf '%-12s %16s %12s\n' contender "instructions/req" "÷ HAProxy"
for c in "${names[@]}"; do
  printf '%-12s %16s %11.2fx\n' "$c" "${IR[$c]}" "$(awk -v a="${IR[$c]}" -v b="${IR[haproxy]}" 'BEGIN { print a / b }')"
done
[ "$H2" = 1 ] || awk -v a="${IR[switchyard]}" -v b="${IR[floor]}" \
  'BEGIN { printf "Switchyard above the floor: %d instructions per request (%.2fx the floor)\n", a - b, a / b }'

for c in switchyard $([ "$H2" = 1 ] || echo floor); do
  echo
  echo "$c: top $TOP functions by own instructions per request"
  callgrind_annotate --inclusive=no "$W/cg.$c.1" 2>/dev/null |
    awk -v n="$REQUESTS" -v top="$TOP" '
      /^-+$/ { rule++; next }
      rule >= 3 && $1 ~ /^[0-9,]+$/ && shown < top {
        ir = $1; gsub(",", "", ir)
        # "1,234 ( 5.67%)  file:function [object]" -> "function"
        sub(/^ *[0-9,]+ +\( *[0-9.]+%\) +/, ""); sub(/ \[[^]]*\]$/, ""); sub(/^[^:]*:/, "")
        printf "%8.1f  %s\n", ir / n, substr($0, 1, 110); shown++
      }'
done
