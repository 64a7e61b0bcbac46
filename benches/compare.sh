#!/usr/bin/env bash
# Side-by-side: Switchyard vs nginx vs HAProxy, same upstreams, same 90/10
# split with a header override (x-canary: always -> canary), loopback only.
#
#   bash benches/compare.sh                # 3 rounds x 10 s per proxy
#   ROUNDS=5 DURATION=15 CONNS=128 bash benches/compare.sh
#
# Installs nginx, haproxy and wrk from Debian packages when missing. The two
# upstream pools (stable: two endpoints, canary: one) are one separate nginx
# process answering a fixed 2-byte-ish body, so no proxy gets a faster
# upstream than another. Runs alternate between proxies round by round; the
# table shows the median of the rounds and the ratios Switchyard/nginx and
# Switchyard/HAProxy. Everything stops by itself; nothing leaves 127.0.0.1.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
source benches/lib.sh

P_SY=$(free_port); P_NG=$(free_port); P_HA=$(free_port)
mkdir -p "$W/ng"

# --- Switchyard ----------------------------------------------------------------
switchyard_config "$P_SY" > "$W/switchyard.yaml"
"$SY" serve --config "$W/switchyard.yaml" --no-access-log > "$W/switchyard.log" 2>&1 & pids+=($!)

# --- nginx as the proxy ----------------------------------------------------------
cat > "$W/ng/nginx.conf" <<EOF
worker_processes auto;
pid $W/ng/nginx.pid;
error_log $W/ng/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream stable { server 127.0.0.1:$S1; server 127.0.0.1:$S2; keepalive 128; }
  upstream canary { server 127.0.0.1:$C1; keepalive 128; }
  split_clients "\$request_id" \$weighted { 10% canary; * stable; }
  map \$http_x_canary \$pool { always canary; default \$weighted; }
  server {
    listen 127.0.0.1:$P_NG;
    location / {
      proxy_pass http://\$pool;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
nginx -c "$W/ng/nginx.conf" -g 'daemon off;' & pids+=($!)

# --- HAProxy -----------------------------------------------------------------------
cat > "$W/haproxy.cfg" <<EOF
global
  nbthread 2
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 15s
  http-reuse always
frontend bench
  bind 127.0.0.1:$P_HA
  use_backend canary if { req.hdr(x-canary) -m str always }
  use_backend canary if { rand(100) lt 10 }
  default_backend stable
backend stable
  balance roundrobin
  server s1 127.0.0.1:$S1
  server s2 127.0.0.1:$S2
backend canary
  server c1 127.0.0.1:$C1
EOF
haproxy -f "$W/haproxy.cfg" -db > "$W/haproxy.log" 2>&1 & pids+=($!)

# Wait until all three answer, and check the split and the override on each.
for port in $P_SY $P_NG $P_HA; do
  wait_up "$port"
  canary=$(for _ in $(seq 200); do curl -s "http://127.0.0.1:$port/"; done | grep -c canary || true)
  override=$(curl -s -H 'x-canary: always' "http://127.0.0.1:$port/")
  echo "port $port: $canary/200 on canary without header; with x-canary: always -> $override"
done

names=(switchyard nginx haproxy)
declare -A PORT=([switchyard]=$P_SY [nginx]=$P_NG [haproxy]=$P_HA)
bench_rounds
for other in nginx haproxy; do
  read -r a_rps _ a_p99 <<<"${M[switchyard]}"
  read -r b_rps _ b_p99 <<<"${M[$other]}"
  awk -v a="$a_rps" -v b="$b_rps" -v ap="$a_p99" -v bp="$b_p99" -v o="$other" \
    'BEGIN { printf "switchyard/%s: throughput %.2fx, p99 latency %.2fx (lower is better)\n", o, a/b, ap/bp }'
done
echo "(${ROUNDS} rounds x ${DURATION}s, ${CONNS} connections, wrk -t${THREADS}; $(nproc) cores shared by wrk, proxy and upstream)"
