#!/usr/bin/env bash
# Load the project's images (docker-archive tars from scripts/images.sh, in $KERASOP_CACHE/images)
# into the kind cluster's worker nodes, where the chart's pods run (the control plane is tainted).
# A tar already loaded into the running cluster and unchanged since is skipped. Then waits (up to
# KERASOP_LOAD_WAIT seconds, default 120) until each worker's kubelet lists the images in its Node's
# status.images, which is where the e2e suite looks for them.
#
# Usage: cluster/kind/load-images.sh [TAR ...]
# Environment: KERASOP_CACHE, KERASOP_KIND_NAME (default kerasop).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${KERASOP_CACHE:-$HOME/.cache/kerasop}"
NAME="${KERASOP_KIND_NAME:-kerasop}"
KIND=$(bash "$HERE/build-kind.sh" | tail -n1)
KUBECTL=$(bash "$HERE/../get-tools.sh" | tail -n1)/kubectl
export KUBECONFIG="${KERASOP_CLUSTER_DIR:-/var/tmp/kerasop-cluster}/kubeconfig"
log() { echo "[kind-load $(date +%H:%M:%S)] $*" >&2; }

tars=("$@")
if ((${#tars[@]} == 0)); then
  shopt -s nullglob
  tars=("$CACHE"/images/*.tar)
  shopt -u nullglob
fi
workers=$("$KIND" get nodes --name "$NAME" | grep -v control-plane | paste -sd, -)
cluster_id=$(docker inspect -f '{{.Id}}' "$NAME-control-plane")
stamps="$CACHE/kind/loaded"
mkdir -p "$stamps"
for tar in "${tars[@]}"; do
  stamp="$stamps/$(basename "$tar").stamp"
  key="$cluster_id $(stat -c '%s %Y' "$tar")"
  if [[ "$(cat "$stamp" 2>/dev/null)" == "$key" ]]; then log "$(basename "$tar"): already loaded"; continue; fi
  t0=$SECONDS
  "$KIND" load image-archive "$tar" --name "$NAME" --nodes "$workers" >&2
  echo "$key" >"$stamp"
  log "$(basename "$tar"): loaded into $workers in $((SECONDS - t0))s"
done

# The images' names, as the kubelet reports them: docker.io/library/ before a bare name,
# docker.io/ before a name whose first part is not a registry host (kerasop/x -> docker.io/kerasop/x).
names=$(for tar in "${tars[@]}"; do tar -xOf "$tar" manifest.json; echo; done | python3 -c '
import json, sys
for line in sys.stdin:
    for entry in json.loads(line) if line.strip() else []:
        for tag in entry.get("RepoTags") or []:
            first, _, rest = tag.partition("/")
            if not rest:
                tag = "docker.io/library/" + tag
            elif "." not in first and ":" not in first and first != "localhost":
                tag = "docker.io/" + tag
            print(tag)')
deadline=$((SECONDS + ${KERASOP_LOAD_WAIT:-120}))
for node in ${workers//,/ }; do
  until listed=$("$KUBECTL" get node "$node" -o jsonpath='{range .status.images[*]}{range .names[*]}{@}{"\n"}{end}{end}') \
      && ! grep -vxFf <(echo "$listed") <<<"$names" | grep -q .; do
    ((SECONDS < deadline)) || { log "$node does not list: $(grep -vxFf <(echo "$listed") <<<"$names" | paste -sd' ')"; exit 1; }
    sleep 2
  done
done
log "every worker lists the images"
