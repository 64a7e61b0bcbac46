#!/usr/bin/env bash
# Side by side: Switchyard vs HAProxy vs nginx, same upstream, same 90/10
# split with a header override (x-canary: always -> canary), on six workloads:
#
#   split      wrk, 50 keep-alive connections
#   c1000      wrk, 1,000 keep-alive connections
#   close      wrk, 50 connections, a new connection per request
#   tls        wrk over TLS, 50 keep-alive connections
#   tls-close  wrk over TLS, a new connection (and full handshake) per request
#   h2         h2load, HTTP/2 (h2c), 10 connections x 10 streams
#   body1m     wrk, 10 connections, a 1 MiB response body
#
#   bash benches/compare.sh                          # all, 5 rounds x 10 s
#   WORKLOADS="split close" ROUNDS=3 DURATION=5 bash benches/compare.sh
#   FORWARDED=1 bash benches/compare.sh              # the peers also set
#     X-Forwarded-For, -Proto and -Host, as Switchyard always does
#
# Fairness: the load generator and the upstream (one nginx worker) share
# core LOAD_CPU (0); each proxy runs one worker pinned to core PROXY_CPU (1):
# Switchyard `server.workers: 1`, HAProxy `nbthread 1`, nginx
# `worker_processes 1`. All three run at once; only one is loaded at a time,
# in an order rotated round by round, and each round also loads the upstream
# directly ("direct"), so "% direct" compares within one round. Per
# contender: the median of the rounds of throughput, p99 (wrk; h2load gives
# none), CPU per request of the proxy's process (user + system, all its
# threads, from /proc) and its RSS late in the run (all of it, and the anonymous part: what is not
# mapped from files, such as its own binary's code). Every workload starts
# fresh proxies, so its RSS is its own. Switchyard runs with
# its per-pool statistics on and no access log; nginx with access_log off.
# Installs nginx, haproxy, wrk and h2load (nghttp2-client) when missing.
# Everything stops by itself; nothing leaves 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
WORKLOADS=${WORKLOADS:-split c1000 close tls tls-close h2 body1m}
LOAD_CPU=${LOAD_CPU:-0}
PROXY_CPU=${PROXY_CPU:-$(( $(nproc) > 1 ? 1 : 0 ))}
BENCH_TOOLS=(h2load:nghttp2-client)
source benches/lib.sh
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

tls_cert

# Ports per contender: plain (h1 and h2c), TLS, and h2c where a peer wants its own.
declare -A PLAIN TLS H2C PID
for c in direct switchyard haproxy nginx; do PLAIN[$c]=$(free_port); TLS[$c]=$(free_port); H2C[$c]=$(free_port); done
H2C[switchyard]=${PLAIN[switchyard]}

# --- direct: a second worker of the upstream's kind, answering as it does -----
mkdir -p "$W/direct"
cat > "$W/direct/nginx.conf" <<NGINX
worker_processes 1;
pid $W/direct/nginx.pid;
error_log $W/direct/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 1000000;
  root $W/up/www;
  ssl_certificate $W/cert.pem;
  ssl_certificate_key $W/key.pem;
  server {
    listen 127.0.0.1:${PLAIN[direct]}; listen 127.0.0.1:${TLS[direct]} ssl http2; listen 127.0.0.1:${H2C[direct]} http2;
    location / { return 200 "stable\n"; } location = /1m {}
  }
}
NGINX
"${PIN_LOAD[@]}" nginx -c "$W/direct/nginx.conf" -g 'daemon off;' & pids+=($!)

# --- Switchyard ---------------------------------------------------------------
{
  echo "server: { workers: 1 }"
  switchyard_config "${PLAIN[switchyard]}" | sed "s|^listeners:|listeners:\n  - { name: tls, bind: \"127.0.0.1:${TLS[switchyard]}\", tls: { cert: $W/cert.pem, key: $W/key.pem } }|"
} > "$W/switchyard.yaml"

# --- HAProxy --------------------------------------------------------------------
haproxy_config "  bind 127.0.0.1:${PLAIN[haproxy]}
  bind 127.0.0.1:${TLS[haproxy]} ssl crt $W/both.pem alpn h2,http/1.1
  bind 127.0.0.1:${H2C[haproxy]} proto h2" > "$W/haproxy.cfg"

# --- nginx as the proxy ------------------------------------------------------------
mkdir -p "$W/ng"
nginx_proxy_config "$W/ng" \
  "listen 127.0.0.1:${PLAIN[nginx]}; listen 127.0.0.1:${TLS[nginx]} ssl http2; listen 127.0.0.1:${H2C[nginx]} http2;" \
  "ssl_certificate $W/cert.pem; ssl_certificate_key $W/key.pem;" > "$W/ng/nginx.conf"

# Each workload gets fresh proxies, so one's peak memory is not the last's.
running=()
start_proxies() {
  "${PIN_PROXY[@]}" "$SY" serve --config "$W/switchyard.yaml" --no-access-log > "$W/switchyard.log" 2>&1 &
  PID[switchyard]=$!
  "${PIN_PROXY[@]}" haproxy -f "$W/haproxy.cfg" -db > "$W/haproxy.log" 2>&1 &
  PID[haproxy]=$!
  "${PIN_PROXY[@]}" nginx -c "$W/ng/nginx.conf" -g 'daemon off;' &
  running=("${PID[switchyard]}" "${PID[haproxy]}" $!)
  pids+=("${running[@]}")
  for c in direct switchyard haproxy nginx; do wait_up "${PLAIN[$c]}"; done
  PID[nginx]=""
  for _ in $(seq 50); do PID[nginx]=$(pgrep -P "${running[2]}" | head -1 || true); [ -n "${PID[nginx]}" ] && break; sleep 0.1; done # poll for the worker
}
stop_proxies() {
  kill "${running[@]}" 2>/dev/null || true
  for p in "${running[@]}"; do wait "$p" 2>/dev/null || true; done
}
start_proxies
PID[direct]=$(pgrep -P "$(cat "$W/direct/nginx.pid")" | head -1)
# Check the split, the override and every listener of each proxy.
for c in switchyard haproxy nginx; do
  canary=$(for _ in $(seq 200); do curl -s "http://127.0.0.1:${PLAIN[$c]}/"; done | grep -c canary || true)
  override=$(curl -s -H 'x-canary: always' "http://127.0.0.1:${PLAIN[$c]}/")
  tls=$(curl -sk --http2 -o /dev/null -w '%{http_version}' "https://127.0.0.1:${TLS[$c]}/")
  h2c=$(curl -s --http2-prior-knowledge -o /dev/null -w '%{http_version}' "http://127.0.0.1:${H2C[$c]}/")
  big=$(curl -s "http://127.0.0.1:${PLAIN[$c]}/1m" | wc -c)
  echo "$c: $canary/200 on canary; x-canary: always -> $override; TLS HTTP/$tls; h2c HTTP/$h2c; /1m $big bytes"
done

# One load run of workload $1 at contender $2 -> "rps p99_us" (p99 "-" from h2load).
load() {
  local w=$1 c=$2 out
  case $w in
    split) out=$("${PIN_LOAD[@]}" wrk -t1 -c50 -d"${DURATION}s" --latency "http://127.0.0.1:${PLAIN[$c]}/") ;;
    c1000) out=$("${PIN_LOAD[@]}" wrk -t1 -c1000 -d"${DURATION}s" --latency "http://127.0.0.1:${PLAIN[$c]}/") ;;
    close) out=$("${PIN_LOAD[@]}" wrk -t1 -c50 -d"${DURATION}s" --latency -H 'Connection: close' "http://127.0.0.1:${PLAIN[$c]}/") ;;
    tls) out=$("${PIN_LOAD[@]}" wrk -t1 -c50 -d"${DURATION}s" --latency "https://127.0.0.1:${TLS[$c]}/") ;;
    tls-close) out=$("${PIN_LOAD[@]}" wrk -t1 -c50 -d"${DURATION}s" --latency -H 'Connection: close' "https://127.0.0.1:${TLS[$c]}/") ;;
    body1m) out=$("${PIN_LOAD[@]}" wrk -t1 -c10 -d"${DURATION}s" --latency "http://127.0.0.1:${PLAIN[$c]}/1m") ;;
    h2)
      out=$("${PIN_LOAD[@]}" h2load -t1 -c10 -m10 -D "$DURATION" "http://127.0.0.1:${H2C[$c]}/")
      awk '/^finished in/ { gsub(",", ""); r=$4 } END { print r, "-" }' <<<"$out"
      grep -q ' 0 failed, 0 errored' <<<"$out" || echo "h2load at $c: $(grep '^requests:' <<<"$out")" >&2
      return ;;
    *) echo "unknown workload: $w" >&2; exit 2 ;;
  esac
  grep -q 'Non-2xx\|Socket errors' <<<"$out" && echo "wrk at $c ($w): $(grep 'Non-2xx\|Socket errors' <<<"$out" | tr '\n' ' ')" >&2
  awk '/^Requests\/sec/ {r=$2} $1=="99%" {p=$2} END {print r, p}' <<<"$out" | { read -r r p; echo "$r $(echo "$p" | to_us)"; }
}

declare -A RPS P99 CPU RSS ANON M
# The median of a space-separated list, leaving out h2load's missing p99 ("-").
med() { tr ' ' '\n' <<<"$1" | awk 'NF && $1 != "-"' | median; }
summary=()
for w in $WORKLOADS; do
  echo; echo "== $w =="
  stop_proxies; start_proxies
  names=(direct switchyard haproxy nginx)
  for r in $(seq "$ROUNDS"); do
    for k in 0 1 2 3; do
      c=${names[$(( (k + r) % 4 ))]}
      pid=${PID[$c]} before=$(cpu_ticks "${PID[$c]}")
      # RSS read once, late in the run, from the load's core.
      "${PIN_LOAD[@]}" bash -c "sleep $(( DURATION * 8 / 10 )).5; awk '/^(VmRSS|RssAnon)/ {print \$2}' /proc/$pid/status > $W/rss" & sampler=$!
      read -r rps p99 <<<"$(load "$w" "$c")"
      wait "$sampler" || true
      cpu=$(awk -v a="$before" -v b="$(cpu_ticks "$pid")" -v t="$(getconf CLK_TCK)" -v rps="$rps" -v d="$DURATION" \
        'BEGIN { printf "%.2f", (b - a) / t * 1e6 / (rps * d) }')
      RPS[$w.$c]+="$rps "; P99[$w.$c]+="$p99 "; CPU[$w.$c]+="$cpu "; RSS[$w.$c]+="$(sed -n 1p "$W/rss") "; ANON[$w.$c]+="$(sed -n 2p "$W/rss") "
      echo "round $r $c: $rps req/s, p99 $p99 us, cpu $cpu us/req"
    done
  done
  d_rps=$(med "${RPS[$w.direct]}")
  printf '\n%-11s %10s %8s %12s %9s %8s %8s\n' contender "req/s" "% direct" "cpu us/req" "p99 us" "rss MB" "anon MB"
  for c in direct switchyard haproxy nginx; do
    rps=$(med "${RPS[$w.$c]}"); p99=$(med "${P99[$w.$c]}"); cpu=$(med "${CPU[$w.$c]}"); rss=$(med "${RSS[$w.$c]}")
    anon=$(med "${ANON[$w.$c]}")
    printf '%-11s %10.0f %7.0f%% %12.2f %9s %8.1f %8.1f\n' "$c" "$rps" "$(awk -v a="$rps" -v b="$d_rps" 'BEGIN{print a/b*100}')" \
      "$cpu" "${p99:--}" "$(awk -v k="$rss" 'BEGIN{print k/1024}')" "$(awk -v k="$anon" 'BEGIN{print k/1024}')"
    M[$c.rps]=$rps M[$c.cpu]=$cpu M[$c.p99]=${p99:-0} M[$c.rss]=$rss M[$c.anon]=$anon
  done
  if [ "$w" = body1m ]; then
    for c in switchyard haproxy nginx; do
      echo "$c: $(awk -v r="${M[$c.rps]}" -v u="${M[$c.cpu]}" 'BEGIN { printf "%.0f MiB/s, %.0f us CPU per MiB", r, u }')"
    done
  fi
  for o in haproxy nginx; do
    awk -v a="${M[switchyard.cpu]}" -v b="${M[$o.cpu]}" -v ar="${M[switchyard.rps]}" -v br="${M[$o.rps]}" -v o="$o" \
      'BEGIN { printf "switchyard/%s: CPU per request %.2fx, throughput %.2fx\n", o, a / b, ar / br }'
  done
  # One row of the summary: the three proxies' figures side by side.
  three() { # figure, format, divisor
    awk -v f="$2" -v d="${3:-1}" -v s="${M[switchyard.$1]}" -v h="${M[haproxy.$1]}" -v n="${M[nginx.$1]}" \
      'BEGIN { printf f " / " f " / " f, s / d, h / d, n / d }'
  }
  best=$(awk -v h="${M[haproxy.cpu]}" -v n="${M[nginx.cpu]}" 'BEGIN { print h < n ? h : n }')
  share() { awk -v a="$1" -v d="$d_rps" 'BEGIN { printf "%.0f%%", a / d * 100 }'; }
  p99s=$([ "$w" = h2 ] && echo - || three p99 %.0f)
  summary+=("$(printf '| %s | %.2f | %.2f | %.2f | **%.2fx** | %s / %s / %s | %s | %s | %s |' "$w" \
    "${M[switchyard.cpu]}" "${M[haproxy.cpu]}" "${M[nginx.cpu]}" "$(awk -v a="${M[switchyard.cpu]}" -v b="$best" 'BEGIN { print a / b }')" \
    "$(share "${M[switchyard.rps]}")" "$(share "${M[haproxy.rps]}")" "$(share "${M[nginx.rps]}")" \
    "$p99s" "$(three rss %.1f 1024)" "$(three anon %.1f 1024)")")
done

echo
echo "| workload | Switchyard CPU µs/req | HAProxy | nginx | Switchyard / best peer | % of direct (S / H / N) | p99 µs (S / H / N) | RSS MB (S / H / N) | anonymous MB (S / H / N) |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
printf '%s\n' "${summary[@]}"
echo "(${ROUNDS} rounds x ${DURATION}s per contender and workload, medians; load and upstream on core $LOAD_CPU, each proxy one worker on core $PROXY_CPU; $(nproc) cores)"
