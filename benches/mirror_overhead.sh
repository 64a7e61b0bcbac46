#!/usr/bin/env bash
# What mirroring costs the primary requests: the same 90/10 split without a
# mirror, copying 10 % and 100 % of the requests to a mirror pool (nginx,
# answering), and copying 100 % to a mirror pool nothing listens on — same
# binary, same upstreams, alternating rounds, medians; throughput, the
# primary's latency and the proxy's CPU per (primary) request.
#
#   bash benches/mirror_overhead.sh
#   ROUNDS=5 DURATION=15 bash benches/mirror_overhead.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source benches/lib.sh

DEAD=$(free_port)
with_mirror() { # port mirror-endpoint percent (empty: no mirror)
  switchyard_config "$1" | sed "s/      canary: { endpoints: \[\"127.0.0.1:$C1\"\] }/&\n      shadow: { endpoints: [\"127.0.0.1:$2\"] }/"
  if [ -n "$3" ]; then printf '      mirror: { pool: shadow, percent: %s }\n' "$3"; fi
}
names=(none mirror-10 mirror-100 dead-100)
declare -A PORT
for n in "${names[@]}"; do PORT[$n]=$(free_port); done
with_mirror "${PORT[none]}" "$C1" "" > "$W/none.yaml"
with_mirror "${PORT[mirror-10]}" "$C1" 10 > "$W/mirror-10.yaml"
with_mirror "${PORT[mirror-100]}" "$C1" 100 > "$W/mirror-100.yaml"
with_mirror "${PORT[dead-100]}" "$DEAD" 100 > "$W/dead-100.yaml"
for n in "${names[@]}"; do
  # shellcheck disable=SC2016
  sed -i 's/      weights: { stable: 90, canary: 10 }/      weights: { stable: 90, canary: 10, shadow: 0 }/' "$W/$n.yaml"
  "$SY" serve --config "$W/$n.yaml" --no-access-log > "$W/$n.log" 2>&1 & pids+=($!); PID[$n]=$!
done
for n in "${names[@]}"; do wait_up "${PORT[$n]}"; done

bench_rounds
ratio_line mirror-10 none "10 % mirrored / no mirror"
ratio_line mirror-100 none "100 % mirrored / no mirror"
ratio_line dead-100 none "100 % to a dead mirror / no mirror"
