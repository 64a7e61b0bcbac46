#!/usr/bin/env bash
# What one request costs in system calls, and where its CPU goes: the 90/10
# split at 50 keep-alive connections (as in compare.sh: load and upstream on
# core 0, each proxy one worker on core 1), counted exactly by the kernel,
# not timed.
#
#   bash benches/per_request.sh
#   DURATION=10 bash benches/per_request.sh
#   CLOSE=1 bash benches/per_request.sh   # a new connection per request (compare.sh's `close`)
#   H2=1 bash benches/per_request.sh      # HTTP/2 (h2c) from the client, as compare.sh's `h2`
#     (h2load, 10 connections x 10 streams; HAProxy and nginx on h2c ports of their own)
#
# - System calls per request, by kind, for Switchyard, HAProxy and nginx:
#   `perf stat` on the syscall tracepoints of the proxy's process.
# - Where Switchyard's CPU goes: `perf record` (cpu-clock samples, no
#   samples only) under the same load, the top entries by self time, each as a
#   share of all samples and as µs per request.
# Needs root (tracepoints) and Debian's linux-perf; installs it
# when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${DURATION:-5}
CLOSE=${CLOSE:-0}
H2=${H2:-0}
WRK_ARGS=(-t1 -c50)
[ "$CLOSE" = 1 ] && WRK_ARGS+=(-H "Connection: close")
LOAD_CPU=${LOAD_CPU:-0}
PROXY_CPU=${PROXY_CPU:-$(( $(nproc) > 1 ? 1 : 0 ))}
BENCH_TOOLS=(perf:linux-perf)
[ "$H2" = 1 ] && BENCH_TOOLS+=(h2load:nghttp2-client)
source benches/lib.sh
declare -A PORT PID LOADED # LOADED: the port loaded (HTTP/2 has its own on HAProxy and nginx)
for c in switchyard haproxy nginx; do PORT[$c]=$(free_port); LOADED[$c]=${PORT[$c]}; done
[ "$H2" = 1 ] && LOADED[haproxy]=$(free_port) && LOADED[nginx]=$(free_port)

start_split_proxies "$([ "$H2" = 1 ] && echo "  bind 127.0.0.1:${LOADED[haproxy]} proto h2")"
mkdir -p "$W/ng"
nginx_proxy_config "$W/ng" "listen 127.0.0.1:${PORT[nginx]};$([ "$H2" = 1 ] && echo " listen 127.0.0.1:${LOADED[nginx]} http2;")" "" \
  > "$W/ng/nginx.conf"
"${PIN_PROXY[@]}" nginx -c "$W/ng/nginx.conf" -g 'daemon off;' & pids+=($!)
for c in switchyard haproxy nginx; do wait_up "${PORT[$c]}"; done
PID[nginx]=$(pgrep -P "$(cat "$W/ng/nginx.pid")" | head -1)

# Loads contender $1 for DURATION + 2 s (wrk, or h2load with H2=1) and
# prints the requests it served.
load() {
  if [ "$H2" = 1 ]; then
    "${PIN_LOAD[@]}" h2load -t1 -c10 -m10 -D "$((DURATION + 2))" "http://127.0.0.1:${LOADED[$1]}/" |
      awk '/^requests:/ {print $8}'
  else
    "${PIN_LOAD[@]}" wrk "${WRK_ARGS[@]}" -d"$((DURATION + 2))s" "http://127.0.0.1:${LOADED[$1]}/" |
      awk '/requests in/ {print $1}'
  fi
}

# Loads contender $1 while `perf stat -e $2` watches its process;
# prints "requests" then perf's counts as "event count" lines.
counted() {
  local out
  load "$1" > "$W/served" &
  local loading=$!
  sleep 1 # let the load settle before counting
  out=$(perf stat -x, -e "$2" -p "${PID[$1]}" -- sleep "$DURATION" 2>&1 >/dev/null)
  wait "$loading"
  cat "$W/served"
  awk -F, '$1 ~ /^[0-9]+$/ {print $3, $1}' <<<"$out"
}

# The kinds counted; a new connection per request adds those of setting one up.
KINDS=(recvfrom sendto writev read write epoll_wait)
[ "$CLOSE" = 1 ] && KINDS+=(accept4 setsockopt getsockname epoll_ctl shutdown close)
events=raw_syscalls:sys_enter$(printf ',syscalls:sys_enter_%s' "${KINDS[@]}")
echo
printf '%-11s %6s' contender all; printf ' %8.8s' "${KINDS[@]}"; echo '   (system calls per request)'
for c in switchyard haproxy nginx; do
  mapfile -t lines < <(counted "$c" "$events")
  total=${lines[0]}
  # wrk's count covers DURATION + 2 s; perf's, DURATION: scale to the counted window.
  per() { awk -v n="$1" -v t="$total" -v d="$DURATION" 'BEGIN { printf "%.2f", n / (t * d / (d + 2)) }'; }
  declare -A n=()
  for l in "${lines[@]:1}"; do n[${l% *}]=${l#* }; done
  printf '%-11s %6s' "$c" "$(per "${n[raw_syscalls:sys_enter]:-0}")"
  for k in "${KINDS[@]}"; do printf ' %8s' "$(per "${n[syscalls:sys_enter_$k]:-0}")"; done
  echo
done


# The profile: self time by symbol, as a share and in µs per request.
load switchyard > "$W/served" &
loading=$!
sleep 1 # let the load settle before sampling
perf record -q -F 4999 -p "${PID[switchyard]}" -o "$W/perf.data" -- sleep "$DURATION" >/dev/null 2>&1
wait "$loading"
total=$(cat "$W/served")
cpu_s=$(perf report -i "$W/perf.data" --stdio --sort dso 2>/dev/null | awk '/Event count/ {print $NF / 1e9}')
echo
echo "switchyard's profile, top 30 by self time (% of samples; µs per request):"
perf report -i "$W/perf.data" --stdio --no-children --sort dso,symbol -g none 2>/dev/null \
  | awk -v t="$total" -v d="$DURATION" -v c="$cpu_s" '/^ +[0-9.]+%/ && n < 30 {
      n++; pct = $1; sub(/%/, "", pct); sym = ""; for (i = 2; i <= NF; i++) sym = sym " " $i
      printf "%6.2f%% %6.3f us %s\n", pct, pct / 100 * c * 1e6 / (t * d / (d + 2)), substr(sym, 1, 110) }'
echo "($([ "$H2" = 1 ] && echo "h2load -t1 -c10 -m10" || echo "wrk ${WRK_ARGS[*]}") for ${DURATION}s per count; load and upstream on core $LOAD_CPU, each proxy one worker on core $PROXY_CPU)"
