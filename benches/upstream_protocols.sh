#!/usr/bin/env bash
# What the upstream protocol costs: the same nginx upstream reached over
# HTTP/1.1, h2c, HTTP/1.1 over TLS and HTTP/2 over TLS, one Switchyard per
# protocol (same binary), alternating rounds; prints medians, the proxy's
# CPU per request, and the ratios h2c/h1, tls/plain and h2/h1 over TLS.
#
#   bash benches/upstream_protocols.sh
#   ROUNDS=5 DURATION=15 bash benches/upstream_protocols.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source benches/lib.sh

# The upstream: nginx on four ports (h1, h2c, TLS with h1, TLS with h2).
# A CA, and a certificate it signs for backend.test (a CA's own certificate
# is no server's: rustls refuses it as an end entity).
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=bench CA" -keyout "$W/up/ca.key" -out "$W/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=backend.test" -keyout "$W/up/key.pem" -out "$W/up/req.csr" 2>/dev/null
printf 'subjectAltName=DNS:backend.test\nbasicConstraints=CA:FALSE\n' > "$W/up/ext.cnf"
openssl x509 -req -in "$W/up/req.csr" -CA "$W/ca.pem" -CAkey "$W/up/ca.key" -CAcreateserial -days 2 \
  -extfile "$W/up/ext.cnf" -out "$W/up/cert.pem" 2>/dev/null
U_H1=$(free_port); U_H2C=$(free_port); U_TLS=$(free_port); U_TLS2=$(free_port)
cat > "$W/up/protocols.conf" <<NGINX
worker_processes 1;
pid $W/up/protocols.pid;
error_log $W/up/protocols-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  ssl_certificate $W/up/cert.pem;
  ssl_certificate_key $W/up/key.pem;
  server { listen 127.0.0.1:$U_H1; location / { return 200 "ok\n"; } }
  server { listen 127.0.0.1:$U_H2C http2; location / { return 200 "ok\n"; } }
  server { listen 127.0.0.1:$U_TLS ssl; location / { return 200 "ok\n"; } }
  server { listen 127.0.0.1:$U_TLS2 ssl http2; location / { return 200 "ok\n"; } }
}
NGINX
nginx -c "$W/up/protocols.conf" -g 'daemon off;' & pids+=($!)

config() { # port upstream pool-extra
  cat <<YAML
listeners:
  - { name: bench, bind: "127.0.0.1:$1" }
server: { workers: 1 }
services:
  - name: web
    pools:
      p: { endpoints: ["127.0.0.1:$2"]$3 }
YAML
}
names=(h1 h2c tls-h1 tls-h2)
declare -A PORT UP EXTRA
UP=([h1]=$U_H1 [h2c]=$U_H2C [tls-h1]=$U_TLS [tls-h2]=$U_TLS2)
TLS=", tls: { ca: ca.pem, server_name: backend.test }"
EXTRA=([h1]="" [h2c]=", protocol: h2c" [tls-h1]="$TLS" [tls-h2]=", protocol: h2$TLS")
for n in "${names[@]}"; do
  PORT[$n]=$(free_port)
  config "${PORT[$n]}" "${UP[$n]}" "${EXTRA[$n]}" > "$W/$n.yaml"
  "$SY" serve --config "$W/$n.yaml" --no-access-log > "$W/$n.log" 2>&1 & pids+=($!)
  PID[$n]=$!
done
for n in "${names[@]}"; do wait_up "${PORT[$n]}"; done

bench_rounds
ratio_line h2c h1 "h2c vs h1 to the upstream"
ratio_line tls-h1 h1 "TLS vs plain (h1)"
ratio_line tls-h2 tls-h1 "h2 vs h1 over TLS"
