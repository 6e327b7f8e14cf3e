#!/usr/bin/env bash
# Start the e2e tier's cluster: kind, one control plane and two workers, on the node image built
# here (cluster/kind/node-image.sh), with metrics-server and Kueue; NetworkPolicy is enforced by kube-router,
# the cluster's CNI. Idempotent: a running cluster on the same node image is kept.
#
# The host gets a route to each node's pod range and to the Service range (through the control
# plane), so that tools on the host (a Prometheus, a probe) reach pods as they would on a node.
#
# Usage: cluster/kind/up.sh      Prints the kubeconfig's path on the last line.
# Environment: KERASOP_CACHE, KERASOP_CLUSTER_DIR (kubeconfig; default /var/tmp/kerasop-cluster),
#              KERASOP_KIND_NAME (default kerasop).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
DIR="${KERASOP_CLUSTER_DIR:-/var/tmp/kerasop-cluster}"
NAME="${KERASOP_KIND_NAME:-kerasop}"
KUBECONFIG="$DIR/kubeconfig"
export KUBECONFIG
log() { echo "[kind-up $(date +%H:%M:%S)] $*" >&2; }

bash "$ROOT/scripts/start-dockerd.sh"
KIND=$(bash "$HERE/build-kind.sh" | tail -n1)
NODE=$(bash "$HERE/node-image.sh" | tail -n1)
KUBECTL=$(bash "$ROOT/cluster/get-tools.sh" | tail -n1)/kubectl
mkdir -p "$DIR"

running_image=$(docker inspect -f '{{.Config.Image}}' "$NAME-control-plane" 2>/dev/null || true)
if [[ "$running_image" != "$NODE" ]]; then
  [[ -n "$running_image" ]] && { log "node image changed ($running_image -> $NODE): recreating"; "$KIND" delete cluster --name "$NAME"; }
  log "kind create cluster --name $NAME --image $NODE (3 nodes)"
  t0=$SECONDS
  mkdir -p "$DIR/shared"
  sed "s#__SHARED__#$DIR/shared#" "$HERE/cluster.yaml" >"$DIR/kind.yaml"
  "$KIND" create cluster --name "$NAME" --image "$NODE" --config "$DIR/kind.yaml" \
    --kubeconfig "$KUBECONFIG" --wait 5m
  log "cluster created in $((SECONDS - t0))s"
else
  "$KIND" export kubeconfig --name "$NAME" --kubeconfig "$KUBECONFIG" 2>/dev/null
  log "cluster $NAME is running on $NODE"
fi

# Routes from the host into the cluster: each node's podCIDR via that node, Services via the
# control plane (its kube-proxy forwards them).
cp_ip=""
while read -r node cidr; do
  ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$node")
  ip route replace "$cidr" via "$ip"
  [[ $node == *-control-plane ]] && cp_ip=$ip
done < <("$KUBECTL" get nodes -o jsonpath='{range .items[*]}{.metadata.name} {.spec.podCIDR}{"\n"}{end}')
ip route replace 10.96.0.0/16 via "$cp_ip"

"$KUBECTL" apply -f "$HERE/manifests/metrics-server.yaml" >/dev/null
"$KUBECTL" -n kube-system rollout status deploy/metrics-server --timeout=180s >&2
# Kueue (docs/queues.md): its manifests rendered from the Go module its image (imported into the
# node image by node-image.sh) was built from; server-side apply (its CRDs are too large for the
# last-applied annotation). Its webhooks serve with certificates it makes itself.
KUEUE_MANIFESTS=$(KUBECTL="$KUBECTL" bash "$ROOT/cluster/addons/build-kueue.sh" manifests | tail -n1)
"$KUBECTL" apply --server-side --force-conflicts -f "$KUEUE_MANIFESTS" >/dev/null
"$KUBECTL" -n kueue-system rollout status deploy/kueue-controller-manager --timeout=300s >&2
"$KUBECTL" get nodes -o wide >&2
echo "$KUBECONFIG"
