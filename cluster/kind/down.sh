#!/usr/bin/env bash
# Delete the kind cluster and the host routes cluster/kind/up.sh added. Safe when nothing runs.
# Environment: KERASOP_CACHE, KERASOP_CLUSTER_DIR, KERASOP_KIND_NAME (default kerasop).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NAME="${KERASOP_KIND_NAME:-kerasop}"
DIR="${KERASOP_CLUSTER_DIR:-/var/tmp/kerasop-cluster}"
docker info >/dev/null 2>&1 || exit 0
KIND=$(bash "$HERE/build-kind.sh" | tail -n1)
for cidr in 10.244.0.0/16 10.96.0.0/16; do
  ip route show | awk -v net="${cidr%.*.*}" 'index($1, net) == 1 && / via / {print $1}' | xargs -r -n1 ip route del
done
"$KIND" delete cluster --name "$NAME"
rm -f "$DIR/kubeconfig"
