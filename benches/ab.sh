#!/usr/bin/env bash
# Before and after: two Switchyard binaries side by side, with HAProxy as
# the yardstick, on the 90/10 split (as in compare.sh: load and upstream on
# core 0, each proxy one worker on core 1). For a change to the request
# path, build the old commit's binary, copy it away, and run this on the
# new tree (it builds the release binary of this checkout):
#
#   A=/tmp/switchyard-old bash benches/ab.sh
#   A=/tmp/switchyard-old CONNS_LIST="1000 50" ROUNDS=5 bash benches/ab.sh
#
# Per contender and round (the order alternates between rounds): requests
# per second, proxy CPU per request (user + system, from /proc/PID/stat),
# TCP segments sent per request on the machine (`OutSegs` of
# /proc/net/snmp: the loopback traffic of client, proxy and upstream), and
# wrk's p99; then the medians, and the new binary's against the old one's.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
: "${A:?set A to the binary to compare against (the old one)}"
CONNS_LIST=${CONNS_LIST:-1000 50}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
LOAD_CPU=${LOAD_CPU:-0}
PROXY_CPU=${PROXY_CPU:-$(( $(nproc) > 1 ? 1 : 0 ))}
source benches/lib.sh

declare -A PORT BIN
BIN[old]=$A
BIN[new]=$SY
for c in old new; do
  PORT[$c]=$(free_port)
  { echo "server: { workers: 1 }"; switchyard_config "${PORT[$c]}"; } > "$W/$c.yaml"
  "${PIN_PROXY[@]}" "${BIN[$c]}" serve --config "$W/$c.yaml" --no-access-log > "$W/$c.log" 2>&1 & pids+=($!)
  PID[$c]=$!
done
PORT[haproxy]=$(free_port)
haproxy_config "  bind 127.0.0.1:${PORT[haproxy]}" > "$W/haproxy.cfg"
"${PIN_PROXY[@]}" haproxy -f "$W/haproxy.cfg" -db > "$W/haproxy.log" 2>&1 & pids+=($!)
PID[haproxy]=$!
for c in old new haproxy; do wait_up "${PORT[$c]}"; done

out_segs() { awk '/^Tcp:/ && $2 ~ /^[0-9]/ {print $12}' /proc/net/snmp; }
tck=$(getconf CLK_TCK)
for conns in $CONNS_LIST; do
  rows=""
  for r in $(seq "$ROUNDS"); do
    order=(old new haproxy)
    [ $((r % 2)) -eq 0 ] && order=(haproxy new old)
    for c in "${order[@]}"; do
      t0=$(cpu_ticks "${PID[$c]}")
      s0=$(out_segs)
      res=$("${PIN_LOAD[@]}" wrk -t1 -c"$conns" -d"${DURATION}s" --latency "http://127.0.0.1:${PORT[$c]}/")
      t1=$(cpu_ticks "${PID[$c]}")
      s1=$(out_segs)
      rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$res")
      p99=$(awk '$1=="99%" {print $2}' <<<"$res" | to_us)
      row=$(awk -v c="$c" -v rps="$rps" -v a="$t0" -v b="$t1" -v t="$tck" -v d="$DURATION" \
        -v s0="$s0" -v s1="$s1" -v p99="$p99" \
        'BEGIN { n = rps * d; printf "%s %.0f %.2f %.2f %.0f", c, rps, (b - a) / t * 1e6 / n, (s1 - s0) / n, p99 }')
      rows+="$row"$'\n'
      echo "c$conns round $r: $row (contender req/s cpu_us/req segments/req p99_us)"
    done
  done
  echo
  printf 'c%s medians: %-8s %10s %14s %14s %10s\n' "$conns" contender "req/s" "cpu (us/req)" "segments/req" "p99 (us)"
  declare -A MED=()
  for c in old new haproxy; do
    line=$c
    for col in 2 3 4 5; do
      line+=" $(awk -v c="$c" -v k="$col" '$1 == c {print $k}' <<<"$rows" | median)"
    done
    MED[$c]=$line
    read -r _ rps cpu segs p99 <<<"$line"
    printf 'c%s medians: %-8s %10.0f %14.2f %14.2f %10.0f\n' "$conns" "$c" "$rps" "$cpu" "$segs" "$p99"
  done
  read -r _ o_rps o_cpu _ o_p99 <<<"${MED[old]}"
  read -r _ n_rps n_cpu _ n_p99 <<<"${MED[new]}"
  read -r _ h_rps h_cpu _ _ <<<"${MED[haproxy]}"
  awk -v orps="$o_rps" -v ocpu="$o_cpu" -v op="$o_p99" -v nrps="$n_rps" -v ncpu="$n_cpu" -v np="$n_p99" \
    -v hcpu="$h_cpu" -v c="$conns" 'BEGIN {
      printf "c%s new/old: CPU per request %.3fx, throughput %.3fx, p99 %.3fx; CPU against HAProxy %.3fx (old %.3fx)\n",
        c, ncpu / ocpu, nrps / orps, np / op, ncpu / hcpu, ocpu / hcpu }'
  echo
done
echo "(${ROUNDS} rounds x ${DURATION}s per contender, medians; load and upstream on core $LOAD_CPU, each proxy one worker on core $PROXY_CPU)"
