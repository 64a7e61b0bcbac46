#!/usr/bin/env bash
# Fleet mode on one machine: etcd and three Switchyard replicas on loopback.
# Shows a weight change made on one replica applied by all three, the fleet
# as `ctl status` sees it, and traffic flowing on the last state while etcd
# is down (writes refused with 503). Stops everything when it ends.
#
#   bash examples/fleet/run.sh          (needs etcd: Debian's etcd-server; scripts/deps.sh --tests installs it)
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet
bin=target/release/switchyard
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT

if curl -sf http://127.0.0.1:23790/health >/dev/null; then
  echo "something already answers on 127.0.0.1:23790; stop it first" >&2
  exit 1
fi
start_etcd() {
  ETCD_UNSUPPORTED_ARCH=$(uname -m) etcd --data-dir "$work/etcd" --log-level error \
    --listen-client-urls http://127.0.0.1:23790 --advertise-client-urls http://127.0.0.1:23790 \
    --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
    --initial-cluster default=http://127.0.0.1:23800 >"$work/etcd.log" 2>&1 &
  etcd_pid=$!
  pids+=("$etcd_pid")
  until curl -sf http://127.0.0.1:23790/health >/dev/null; do sleep 0.1; done
}
start_etcd

token=fleet-demo-token-0123456789abcdef
echo "demo:$token" >"$work/admin.token"
for i in 1 2 3; do
  cat >"$work/r$i.yaml" <<YAML
listeners: [{ name: main, bind: "127.0.0.1:808$i" }]
admin: { bind: "127.0.0.1:909$i", token_file: admin.token }
state: { dir: state-r$i, etcd: { endpoints: ["http://127.0.0.1:23790"], prefix: /switchyard/demo, replica: r$i } }
services:
  - name: web
    pools:
      stable: { endpoints: ["127.0.0.1:9001"] }
      canary: { endpoints: ["127.0.0.1:9003"] }
    split: { weights: { stable: 100, canary: 0 } }
YAML
  # The first replica also runs the demo upstreams.
  if [ "$i" = 1 ]; then run=(demo); else run=(serve --no-access-log); fi
  "$bin" "${run[@]}" --config "$work/r$i.yaml" >"$work/r$i.log" 2>&1 &
  pids+=("$!")
done
for i in 1 2 3; do until curl -sf "http://127.0.0.1:909$i/health/ready" >/dev/null; do sleep 0.1; done; done
sleep 0.5

serving() { for i in 1 2 3; do printf 'r%s: %s  ' "$i" "$(curl -s "http://127.0.0.1:808$i/")"; done; echo; }
echo "== all weight on stable:"; serving
echo "== PUT stable=0 canary=100 on r1 only:"
curl -s -X PUT -H "authorization: Bearer $token" -H 'content-type: application/json' \
  -d '{"stable": 0, "canary": 100}' http://127.0.0.1:9091/v1/services/web/weights | grep '"message"'
sleep 0.2
echo "== every replica now:"; serving
echo "== ctl status on r3:"
"$bin" ctl --addr 127.0.0.1:9093 --token "$token" status | sed -n '/^fleet/,$p'
echo "== etcd down: traffic flows on the last state, writes are refused"
kill "$etcd_pid"; sleep 1
serving
curl -s -o /dev/null -w 'PUT on r2 while etcd is down: HTTP %{http_code}\n' -X PUT -H "authorization: Bearer $token" \
  -H 'content-type: application/json' -d '{"stable": 100}' http://127.0.0.1:9092/v1/services/web/weights
curl -s http://127.0.0.1:9092/health/ready; echo
