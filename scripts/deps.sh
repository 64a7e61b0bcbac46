#!/usr/bin/env bash
# System packages the build needs, installed when missing (Debian/Ubuntu,
# with apt-get; elsewhere it says what to install):
#   - protoc (protobuf-compiler): the etcd client's build generates its gRPC code;
#   - with --tests, etcd (etcd-server): fleet tests start real etcd servers;
#     Chromium and Node.js (chromium, nodejs, npm): the dashboard's test
#     drives a headless browser; systemd-analyze (systemd): the packaging
#     test verifies the systemd unit.
set -euo pipefail
need=()
command -v protoc >/dev/null || need+=(protobuf-compiler)
if [ "${1:-}" = "--tests" ]; then
  command -v etcd >/dev/null || need+=(etcd-server)
  command -v chromium >/dev/null || need+=(chromium)
  command -v node >/dev/null || need+=(nodejs)
  command -v npm >/dev/null || need+=(npm)
  command -v systemd-analyze >/dev/null || need+=(systemd)
fi
[ ${#need[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "deps: install ${need[*]} with your package manager, then run this again" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "deps: installing ${need[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
