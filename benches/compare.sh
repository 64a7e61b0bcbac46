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

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
cd "$(dirname "$0")/.."
ROOT=$PWD

need=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin"

echo "building switchyard (release)..."
cargo build --release -q -p switchyard
SY="$ROOT/target/release/switchyard"

W=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.3
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
S1=$(free_port); S2=$(free_port); C1=$(free_port)
P_SY=$(free_port); P_NG=$(free_port); P_HA=$(free_port)

# --- upstreams: one nginx, three ports ---------------------------------------
mkdir -p "$W/up" "$W/ng"
cat > "$W/up/nginx.conf" <<EOF
worker_processes 1;
pid $W/up/nginx.pid;
error_log $W/up/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$S1; location / { return 200 "stable\n"; } }
  server { listen 127.0.0.1:$S2; location / { return 200 "stable\n"; } }
  server { listen 127.0.0.1:$C1; location / { return 200 "canary\n"; } }
}
EOF
nginx -c "$W/up/nginx.conf" -g 'daemon off;' & pids+=($!)

# --- Switchyard ----------------------------------------------------------------
cat > "$W/switchyard.yaml" <<EOF
listeners:
  - { name: bench, bind: "127.0.0.1:$P_SY" }
services:
  - name: web
    pools:
      stable: { endpoints: ["127.0.0.1:$S1", "127.0.0.1:$S2"] }
      canary: { endpoints: ["127.0.0.1:$C1"] }
    split:
      rules:
        - { match: { header: { x-canary: always } }, pool: canary }
      weights: { stable: 90, canary: 10 }
EOF
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
  up=0
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/" >/dev/null && { up=1; break; }; sleep 0.1; done
  if [ $up = 0 ]; then
    echo "nothing answers on port $port; logs:" >&2
    tail -n 5 "$W"/*.log "$W"/*/error.log >&2 || true
    exit 1
  fi
  canary=$(for _ in $(seq 200); do curl -s "http://127.0.0.1:$port/"; done | grep -c canary || true)
  override=$(curl -s -H 'x-canary: always' "http://127.0.0.1:$port/")
  echo "port $port: $canary/200 on canary without header; with x-canary: always -> $override"
done

# wrk prints e.g. "Requests/sec:  12345.67" and, with --latency, "50%  1.23ms".
to_us() { awk '{ v=$1; if (v ~ /us$/) { sub(/us$/,"",v); print v } else if (v ~ /ms$/) { sub(/ms$/,"",v); print v*1000 } else if (v ~ /s$/) { sub(/s$/,"",v); print v*1000000 } }'; }
run() { # name port -> "rps p50us p99us"
  local out; out=$(wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$2/")
  local rps p50 p99
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out" | to_us)
  p99=$(awk '$1=="99%" {print $2}' <<<"$out" | to_us)
  echo "$rps $p50 $p99"
}

declare -A R
names=(switchyard nginx haproxy)
declare -A PORT=([switchyard]=$P_SY [nginx]=$P_NG [haproxy]=$P_HA)
for r in $(seq "$ROUNDS"); do
  # Rotate the order every round so no proxy always runs first.
  for k in 0 1 2; do
    n=${names[$(( (k + r) % 3 ))]}
    res=$(run "$n" "${PORT[$n]}")
    R[$n]+="$res"$'\n'
    echo "round $r $n: $res (req/s p50_us p99_us)"
  done
done

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo
printf '%-12s %12s %10s %10s\n' proxy "req/s" "p50 (us)" "p99 (us)"
declare -A M
for n in "${names[@]}"; do
  rps=$(awk 'NF {print $1}' <<<"${R[$n]}" | median)
  p50=$(awk 'NF {print $2}' <<<"${R[$n]}" | median)
  p99=$(awk 'NF {print $3}' <<<"${R[$n]}" | median)
  M[$n]="$rps $p50 $p99"
  printf '%-12s %12.0f %10.0f %10.0f\n' "$n" "$rps" "$p50" "$p99"
done
echo
for other in nginx haproxy; do
  read -r a_rps _ a_p99 <<<"${M[switchyard]}"
  read -r b_rps _ b_p99 <<<"${M[$other]}"
  awk -v a="$a_rps" -v b="$b_rps" -v ap="$a_p99" -v bp="$b_p99" -v o="$other" \
    'BEGIN { printf "switchyard/%s: throughput %.2fx, p99 latency %.2fx (lower is better)\n", o, a/b, ap/bp }'
done
echo "(${ROUNDS} rounds x ${DURATION}s, ${CONNS} connections, wrk -t${THREADS}; $(nproc) cores shared by wrk, proxy and upstream)"
