#!/usr/bin/env bash
# One CI step: point a pool at a new version and ship it, or roll it back.
#
#   deploy.sh SERVICE POOL ENDPOINTS VERSION
#
# Sets POOL's endpoints (comma-separated) and version through the admin API,
# then starts the service's rollout and waits for the verdict. Exits with the
# rollout's code: 0 promoted, 2 rolled back, 3 aborted, 4 not ended within
# DEPLOY_TIMEOUT, 1 any other error (the message says which).
#
# Environment:
#   SWITCHYARD_ADMIN_ADDR   the proxy's admin API (host:port)
#   SWITCHYARD_CTL_TOKEN    a write token
#   DEPLOY_TIMEOUT          how long to wait for the verdict (default 30m)
#   COMMIT, BUILD_URL, COMMIT_TIME   optional release metadata (lead time is measured from COMMIT_TIME)
#   SWITCHYARD              the switchyard binary (default: switchyard on PATH)
set -euo pipefail
if [ $# -ne 4 ]; then
  echo "usage: $0 SERVICE POOL ENDPOINTS VERSION" >&2
  exit 1
fi
service=$1 pool=$2 endpoints=$3 version=$4
sy=${SWITCHYARD:-switchyard}
meta=()
[ -n "${COMMIT:-}" ] && meta+=(--commit "$COMMIT")
[ -n "${BUILD_URL:-}" ] && meta+=(--build-url "$BUILD_URL")
[ -n "${COMMIT_TIME:-}" ] && meta+=(--commit-time "$COMMIT_TIME")

echo "deploying $version to $service/$pool ($endpoints)"
"$sy" ctl pool set "$service" "$pool" --endpoints "$endpoints" --version "$version" "${meta[@]}" \
  --reason "deploy $version"
set +e
"$sy" ctl rollout start "$service" --wait --timeout "${DEPLOY_TIMEOUT:-30m}"
code=$?
set -e
case $code in
  0) echo "$version shipped: $service/$pool has all traffic" ;;
  2) echo "$version rolled back: all traffic is on the baseline" >&2 ;;
  3) echo "the rollout of $version was aborted" >&2 ;;
  4) echo "no verdict on $version within ${DEPLOY_TIMEOUT:-30m}; the rollout goes on" >&2 ;;
esac
exit $code
