#!/usr/bin/env bash
# Fleet mode on one machine: etcd and three Switchyard replicas on loopback.
# Shows a weight change made on one replica applied by all three, the fleet
# as `ctl status` sees it, traffic flowing on the last state while etcd is
# down (writes refused with 503), then a canary rollout started on one
# replica, run by the elected leader, and taken over at the same step by
# another replica when the leader is killed. Stops everything when it ends.
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
# The service every process serves: stable on 9001, canary on 9003.
services='services:
  - name: web
    pools:
      stable: { endpoints: ["127.0.0.1:9001"] }
      canary: { endpoints: ["127.0.0.1:9003"] }
    split: { weights: { stable: 100, canary: 0 } }'
# The demo upstreams, apart from the replicas so any of them can be killed.
cat >"$work/upstreams.yaml" <<YAML
listeners: [{ name: main, bind: "127.0.0.1:8089" }]
$services
YAML
"$bin" demo --config "$work/upstreams.yaml" >"$work/upstreams.log" 2>&1 &
pids+=("$!")
declare -A replica_pid
for i in 1 2 3; do
  cat >"$work/r$i.yaml" <<YAML
listeners: [{ name: main, bind: "127.0.0.1:808$i" }]
admin: { bind: "127.0.0.1:909$i", token_file: admin.token }
state: { dir: state-r$i, etcd: { endpoints: ["http://127.0.0.1:23790"], prefix: /switchyard/demo, replica: r$i } }
$services
YAML
  "$bin" serve --no-access-log --config "$work/r$i.yaml" >"$work/r$i.log" 2>&1 &
  pids+=("$!")
  replica_pid[r$i]=$!
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

echo "== etcd back: the replicas catch up without a restart"
start_etcd
for i in 1 2 3; do
  until curl -s "http://127.0.0.1:909$i/health/ready" | grep -q '"fleet": *"in-step"'; do sleep 0.1; done
done
serving

leader() { curl -s -H "authorization: Bearer $token" "http://127.0.0.1:909$1/v1/fleet" | grep -o '"leader": *"r[0-9]"' | grep -o 'r[0-9]'; }
rollout() { curl -s -H "authorization: Bearer $token" "http://127.0.0.1:909$1/v1/services/web/rollout"; }
field() { grep -o "\"$1\": *[^,}]*" | head -1 | cut -d: -f2 | tr -d '" '; }
until [ -n "$(leader 1)" ]; do sleep 0.1; done
lead=$(leader 1)
starter=$(( ${lead#r} % 3 + 1 ))
echo "== the leader is $lead; a canary rollout is started on r$starter (20 % for 4 s, then 50 % for 4 s), which the leader runs"
curl -s -X DELETE -H "authorization: Bearer $token" http://127.0.0.1:909$starter/v1/services/web/weights >/dev/null
curl -s -X POST -H "authorization: Bearer $token" -H 'content-type: application/json' \
  -d '{"steps": [{"weight": 20, "hold": "4s"}, {"weight": 50, "hold": "4s"}], "analysis": {"interval": "500ms", "window": "5s", "min_requests": 5}}' \
  "http://127.0.0.1:909$starter/v1/services/web/rollout" | field status
# Traffic on every replica, so the leader has the fleet's figures to judge.
( end=$((SECONDS + 40)); while [ $SECONDS -lt $end ]; do
    for i in 1 2 3; do curl -s -o /dev/null --max-time 1 "http://127.0.0.1:808$i/" || true; done
  done ) &
pids+=("$!")
until [ "$(rollout "$starter" | field step)" = 1 ]; do sleep 0.2; done
sleep 1.5
lead=$(leader "$starter")
spent=$(rollout "$starter" | field in_step_ms)
echo "== kill -9 the leader $lead at step 2 (50 %), ${spent} ms of its 4 s hold spent"
kill -9 "${replica_pid[$lead]}"
other=$(( starter % 3 + 1 )); [ "r$other" = "$lead" ] && other=$(( other % 3 + 1 ))
[ "r$starter" = "$lead" ] && starter=$(( other % 3 + 1 )) && [ "r$starter" = "$lead" ] && starter=$(( starter % 3 + 1 ))
until [ -n "$(leader "$starter")" ] && [ "$(leader "$starter")" != "$lead" ]; do sleep 0.2; done
echo "== $(leader "$starter") leads now and carries the rollout on from the last checkpoint:"
"$bin" ctl --addr "127.0.0.1:909$starter" --token "$token" rollout status web | head -4
until [ "$(rollout "$starter" | field status)" = promoted ]; do sleep 0.2; done
echo "== promoted; the history shows each step once:"
"$bin" ctl --addr "127.0.0.1:909$other" --token "$token" events --limit 30 | grep -E "rollout|weights of web" | tail -5
