#!/usr/bin/env bash
# Before and after: two Switchyard binaries side by side, with HAProxy as
# the yardstick, on the 90/10 split (as in compare.sh: load and upstream on
# core 0, each proxy one worker on core 1). For a change to the request
# path, build the old commit's binary, copy it away, and run this on the
# new tree (it builds the release binary of this checkout):
#
#   A=/tmp/switchyard-old bash benches/ab.sh
#   A=/tmp/switchyard-old CONNS_LIST="1000 50" ROUNDS=5 bash benches/ab.sh
#   A=/tmp/switchyard-old TLS=1 CLOSE=1 CONNS_LIST=50 bash benches/ab.sh
#     TLS=1: over TLS (an ECDSA P-256 certificate; HAProxy on OpenSSL);
#     CLOSE=1: a new connection per request (with TLS=1, a full handshake each)
#
# Per contender and round (lib.sh's bench_rounds, the order rotating):
# requests per second, p50 and p99, proxy CPU per request (user + system,
# from /proc/PID/stat) and TCP segments sent per request on the machine;
# then the medians, and the new binary's ratios to the old one and to HAProxy.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
: "${A:?set A to the binary to compare against (the old one)}"
CONNS_LIST=${CONNS_LIST:-1000 50}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
THREADS=${THREADS:-1}
LOAD_CPU=${LOAD_CPU:-0}
PROXY_CPU=${PROXY_CPU:-$(( $(nproc) > 1 ? 1 : 0 ))}
TLS=${TLS:-0}
CLOSE=${CLOSE:-0}
source benches/lib.sh
[ "$CLOSE" = 1 ] && WRK_HEADERS=(-H 'Connection: close')
if [ "$TLS" = 1 ]; then
  SCHEME=https
  tls_cert
fi
# Switchyard's config for port $1: plain, or its one listener over TLS.
config_for() {
  echo "server: { workers: 1 }"
  if [ "$TLS" = 1 ]; then
    switchyard_config "$1" | sed "s|{ name: bench, bind: \"127.0.0.1:$1\" }|{ name: bench, bind: \"127.0.0.1:$1\", tls: { cert: $W/cert.pem, key: $W/key.pem } }|"
  else
    switchyard_config "$1"
  fi
}

declare -A PORT BIN=([old]=$A [new]=$SY)
for c in old new; do
  PORT[$c]=$(free_port)
  config_for "${PORT[$c]}" > "$W/$c.yaml"
  "${PIN_PROXY[@]}" "${BIN[$c]}" serve --config "$W/$c.yaml" --no-access-log > "$W/$c.log" 2>&1 & pids+=($!)
  PID[$c]=$!
done
PORT[haproxy]=$(free_port)
haproxy_config "  bind 127.0.0.1:${PORT[haproxy]}$([ "$TLS" = 1 ] && echo " ssl crt $W/both.pem")" > "$W/haproxy.cfg"
"${PIN_PROXY[@]}" haproxy -f "$W/haproxy.cfg" -db > "$W/haproxy.log" 2>&1 & pids+=($!)
PID[haproxy]=$!
names=(old new haproxy)
for c in "${names[@]}"; do wait_up "${PORT[$c]}"; done

for CONNS in $CONNS_LIST; do
  R=() CPU=() SEGS=()
  echo "== $CONNS connections$([ "$TLS" = 1 ] && echo ", TLS")$([ "$CLOSE" = 1 ] && echo ", a new connection per request")"
  bench_rounds
  ratio_line new old "c$CONNS new vs old"
  ratio_line new haproxy "c$CONNS new vs HAProxy"
  echo
done
