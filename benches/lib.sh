# Shared by the comparison scripts: installs, the upstream pools, wrk runs,
# medians. Source it; it sets up a temp dir $W and cleans up on exit.

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}

# Debian packages for the tools: nginx, haproxy and wrk always; a script
# needing more sets BENCH_TOOLS=("command:package" ...) before sourcing this.
need=()
for tool in nginx:nginx haproxy:haproxy wrk:wrk ${BENCH_TOOLS[@]+"${BENCH_TOOLS[@]}"}; do
  command -v "${tool%%:*}" >/dev/null || [ -x "/usr/sbin/${tool%%:*}" ] || need+=("${tool#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin"

bash "$ROOT/scripts/deps.sh" # protoc, for the etcd client's build
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

# Builds the floor (benches/floor, its own small crate); sets FLOOR to its binary.
build_floor() {
  echo "building the floor (release)..."
  cargo build --release -q -p hyper-floor
  FLOOR="$ROOT/target/release/hyper_floor"
}

# One certificate for every TLS listener (ECDSA P-256, as most sites
# serve): $W/cert.pem and $W/key.pem, and both in $W/both.pem for HAProxy.
tls_cert() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null
  cat "$W/cert.pem" "$W/key.pem" > "$W/both.pem"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The upstream pools: one nginx answering on three ports (stable ×2, canary),
# with a 1 MiB file at /1m on each. LOAD_CPU, when set, pins it (and the load
# generators that use $PIN_LOAD) to that core.
# PROXY_CPU, when set, pins the proxies started with $PIN_PROXY.
PIN_LOAD=() PIN_PROXY=()
[ -n "${LOAD_CPU:-}" ] && PIN_LOAD=(taskset -c "$LOAD_CPU")
[ -n "${PROXY_CPU:-}" ] && PIN_PROXY=(taskset -c "$PROXY_CPU")
S1=$(free_port); S2=$(free_port); C1=$(free_port)
mkdir -p "$W/up/www"
head -c 1048576 /dev/urandom > "$W/up/www/1m"
chmod a+rx "$W" "$W/up" "$W/up/www" && chmod a+r "$W/up/www/1m" # nginx's workers run as nobody
cat > "$W/up/nginx.conf" <<NGINX
worker_processes 1;
pid $W/up/nginx.pid;
error_log $W/up/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  root $W/up/www;
  server { listen 127.0.0.1:$S1; location / { return 200 "stable\n"; } location = /1m {} }
  server { listen 127.0.0.1:$S2; location / { return 200 "stable\n"; } location = /1m {} }
  server { listen 127.0.0.1:$C1; location / { return 200 "canary\n"; } location = /1m {} }
}
NGINX
"${PIN_LOAD[@]}" nginx -c "$W/up/nginx.conf" -g 'daemon off;' & pids+=($!)

# A Switchyard config for the 90/10 split with the x-canary override, on $1.
switchyard_config() {
  cat <<YAML
listeners:
  - { name: bench, bind: "127.0.0.1:$1" }
services:
  - name: web
    pools:
      stable: { endpoints: ["127.0.0.1:$S1", "127.0.0.1:$S2"] }
      canary: { endpoints: ["127.0.0.1:$C1"] }
    split:
      rules:
        - { match: { header: { x-canary: always } }, pool: canary }
      weights: { stable: 90, canary: 10 }
YAML
}

# FORWARDED=1: the peers also set X-Forwarded-For, -Proto and -Host, as
# Switchyard always does. Off by default, as the issue's setup has them.
FORWARDED=${FORWARDED:-0}

# HAProxy (one thread) as the same 90/10 split with the x-canary override;
# $1: its frontend's `bind` lines.
haproxy_config() {
  cat <<CFG
global
  nbthread 1
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 15s
  http-reuse always
frontend bench
$1
$([ "$FORWARDED" = 1 ] && printf '%s\n' "  option forwardfor" \
  "  http-request set-header X-Forwarded-Proto %[ssl_fc,iif(https,http)]" \
  "  http-request set-header X-Forwarded-Host %[req.hdr(host)]")
  use_backend canary if { req.hdr(x-canary) -m str always }
  use_backend canary if { rand(100) lt 10 }
  default_backend stable
backend stable
  balance roundrobin
  server s1 127.0.0.1:$S1
  server s2 127.0.0.1:$S2
backend canary
  server c1 127.0.0.1:$C1
CFG
}

# nginx (one worker) as the same split; $1: its directory (pid, error log),
# $2: its `listen` directives, $3: more `http` directives (certificates).
nginx_proxy_config() {
  cat <<CFG
worker_processes 1;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 1000000;
  $3
  upstream stable { server 127.0.0.1:$S1; server 127.0.0.1:$S2; keepalive 128; }
  upstream canary { server 127.0.0.1:$C1; keepalive 128; }
  split_clients "\$request_id" \$weighted { 10% canary; * stable; }
  map \$http_x_canary \$pool { always canary; default \$weighted; }
  server {
    $2
    location / {
      proxy_pass http://\$pool; proxy_http_version 1.1; proxy_set_header Connection "";
      $([ "$FORWARDED" = 1 ] && echo 'proxy_set_header X-Forwarded-For $remote_addr; proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Forwarded-Host $http_host;')
    }
  }
}
CFG
}

# Starts Switchyard (one worker, statistics on, no access log) and HAProxy
# (one thread), both as the split above and pinned by $PIN_PROXY, on
# ${PORT[switchyard]} and ${PORT[haproxy]}; sets their PID entries. $1, when
# given: more `bind` lines for HAProxy's frontend.
start_split_proxies() {
  { echo "server: { workers: 1 }"; switchyard_config "${PORT[switchyard]}"; } > "$W/switchyard.yaml"
  "${PIN_PROXY[@]}" "$SY" serve --config "$W/switchyard.yaml" --no-access-log > "$W/switchyard.log" 2>&1 & pids+=($!)
  PID[switchyard]=$!
  haproxy_config "  bind 127.0.0.1:${PORT[haproxy]}${1:+
$1}" > "$W/haproxy.cfg"
  "${PIN_PROXY[@]}" haproxy -f "$W/haproxy.cfg" -db > "$W/haproxy.log" 2>&1 & pids+=($!)
  PID[haproxy]=$!
}

# Waits until $1 answers, up to $2 tenths of a second (default 100); prints
# the logs and exits if it never does.
wait_up() {
  for _ in $(seq "${2:-100}"); do curl -skf "${SCHEME:-http}://127.0.0.1:$1/" >/dev/null && return 0; sleep 0.1; done
  echo "nothing answers on port $1; logs:" >&2
  tail -n 5 "$W"/*.log "$W"/*/error.log >&2 || true
  exit 1
}

# wrk prints e.g. "Requests/sec:  12345.67" and, with --latency, "50%  1.23ms".
to_us() { awk '{ v=$1; if (v ~ /us$/) { sub(/us$/,"",v); print v } else if (v ~ /ms$/) { sub(/ms$/,"",v); print v*1000 } else if (v ~ /s$/) { sub(/s$/,"",v); print v*1000000 } }'; }
run_wrk() { # port -> "rps p50us p99us"
  local out rps p50 p99
  # WRK_HEADERS: extra `-H` arguments, as an array, when the caller sets it;
  # SCHEME: https for a TLS listener.
  out=$("${PIN_LOAD[@]}" wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "${WRK_HEADERS[@]}" "${SCHEME:-http}://127.0.0.1:$1/")
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out" | to_us)
  p99=$(awk '$1=="99%" {print $2}' <<<"$out" | to_us)
  echo "$rps $p50 $p99"
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# Runs ROUNDS rounds over the contenders named in $names (ports in $PORT),
# rotating the order each round; fills M[name]="rps p50 p99" with medians,
# and SEG[name] with the median TCP segments sent per request on the
# machine (`OutSegs` of /proc/net/snmp: client, proxy and upstream).
# When $PID[name] names the contender's process, also measures its CPU time
# per request (user + system, all threads): C[name] = median µs/request.
# CPU per request is steadier than throughput on a shared machine.
declare -A R M C CPU PID SEG SEGS
WRK_HEADERS=("${WRK_HEADERS[@]}")
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
out_segs() { awk '/^Tcp:/ && $2 ~ /^[0-9]/ {print $12}' /proc/net/snmp; }
bench_rounds() {
  local n=${#names[@]} tck; tck=$(getconf CLK_TCK)
  for r in $(seq "$ROUNDS"); do
    for k in $(seq 0 $((n - 1))); do
      local c=${names[$(( (k + r) % n ))]} before="" res cpu="" segs0 segs
      [ -n "${PID[$c]:-}" ] && before=$(cpu_ticks "${PID[$c]}")
      segs0=$(out_segs)
      res=$(run_wrk "${PORT[$c]}")
      segs=$(awk -v a="$segs0" -v b="$(out_segs)" -v rps="${res%% *}" -v d="$DURATION" \
        'BEGIN { printf "%.2f", (b - a) / (rps * d) }')
      SEGS[$c]+="$segs"$'\n'
      if [ -n "$before" ]; then
        cpu=$(awk -v a="$before" -v b="$(cpu_ticks "${PID[$c]}")" -v t="$tck" -v rps="${res%% *}" -v d="$DURATION" \
          'BEGIN { printf "%.2f", (b - a) / t * 1e6 / (rps * d) }')
        CPU[$c]+="$cpu"$'\n'
      fi
      R[$c]+="$res"$'\n'
      echo "round $r $c: $res (req/s p50_us p99_us)${cpu:+ cpu ${cpu} us/req} segments $segs/req"
    done
  done
  echo
  printf '%-14s %12s %10s %10s %14s %14s\n' contender "req/s" "p50 (us)" "p99 (us)" "cpu (us/req)" "segments/req"
  for c in "${names[@]}"; do
    local rps p50 p99 cpu=""
    rps=$(awk 'NF {print $1}' <<<"${R[$c]}" | median)
    p50=$(awk 'NF {print $2}' <<<"${R[$c]}" | median)
    p99=$(awk 'NF {print $3}' <<<"${R[$c]}" | median)
    [ -n "${CPU[$c]:-}" ] && cpu=$(awk 'NF' <<<"${CPU[$c]}" | median) && C[$c]=$cpu
    SEG[$c]=$(awk 'NF' <<<"${SEGS[$c]}" | median)
    M[$c]="$rps $p50 $p99"
    printf '%-14s %12.0f %10.0f %10.0f %14s %14s\n' "$c" "$rps" "$p50" "$p99" "${cpu:--}" "${SEG[$c]}"
  done
  echo
}

# After bench_rounds with two contenders: prints "LABEL: throughput Nx (P% more or less), p99 latency Mx" for $1 vs $2.
ratio_line() { # name_a name_b label
  local a_rps a_p99 b_rps b_p99
  read -r a_rps _ a_p99 <<<"${M[$1]}"
  read -r b_rps _ b_p99 <<<"${M[$2]}"
  awk -v a="$a_rps" -v b="$b_rps" -v ap="$a_p99" -v bp="$b_p99" -v l="$3" \
    'BEGIN { printf "%s: throughput %.3fx (%+.1f%%), p99 latency %.2fx\n", l, a/b, (a/b-1)*100, ap/bp }'
  if [ -n "${C[$1]:-}" ] && [ -n "${C[$2]:-}" ]; then
    awk -v a="${C[$1]}" -v b="${C[$2]}" -v l="$3" \
      'BEGIN { printf "%s: proxy CPU per request %.2f vs %.2f us: %.3fx (%+.2f us)\n", l, a, b, a/b, a-b }'
  fi
  echo "(${ROUNDS} rounds x ${DURATION}s, ${CONNS} connections; both proxies run at once, only one is loaded at a time)"
}
