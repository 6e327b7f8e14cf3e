#!/usr/bin/env bash
# Import docker-archive image tars (`docker save` output) into the local cluster's containerd
# (namespace k8s.io), where pods with imagePullPolicy IfNotPresent or Never find them.
#
# Usage: cluster/load-images.sh [TAR ...]     default: ${KERASOP_CACHE}/images/*.tar
#   KERASOP_LOAD_FORCE=1 reimports tars that were imported before and have not changed.
# Needs the cluster's containerd running (cluster/up.sh). A tar is skipped when its size and
# mtime match the last import. Prints each image's name and how long it took. When the node is
# registered, waits (up to KERASOP_LOAD_WAIT seconds, default 120) until kubelet lists the new
# images in the Node's status.images, which is where tests look for them.
set -euo pipefail

# shellcheck source=node/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/node/lib.sh"

[[ $EUID -eq 0 ]] || { echo "load-images.sh must run as root" >&2; exit 1; }
ctr_() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }
ctr_ version >/dev/null 2>&1 || { echo "containerd of $DIR is not running (run cluster/up.sh)" >&2; exit 1; }

tars=("$@")
if ((${#tars[@]} == 0)); then
  shopt -s nullglob
  tars=("$CACHE"/images/*.tar)
  shopt -u nullglob
  ((${#tars[@]})) || { echo "load-images: no tars in $CACHE/images" >&2; exit 0; }
fi

mkdir -p "$DIR/images"
rc=0
imported=()
for tar in "${tars[@]}"; do
  [[ -f "$tar" ]] || { echo "load-images: $tar: no such file" >&2; rc=1; continue; }
  abs="$(readlink -f "$tar")"
  stamp="$DIR/images/$(echo "$abs" | tr '/' '_').stamp"
  want="$(stat -c '%s %Y' "$abs")"
  if [[ "${KERASOP_LOAD_FORCE:-0}" != 1 && -f "$stamp" && "$(head -1 "$stamp")" == "$want" ]]; then
    echo "load-images: $(basename "$tar"): unchanged, already imported ($(tail -n +2 "$stamp" | tr '\n' ' '))" >&2
    continue
  fi
  t0=$SECONDS
  if ! out="$(ctr_ images import --no-unpack=false "$abs" 2>&1)"; then
    echo "load-images: importing $tar failed:" >&2
    echo "$out" >&2
    rc=1
    continue
  fi
  names="$(echo "$out" | sed -n 's/^unpacking \([^ ]*\) .*/\1/p')"
  [[ -n "$names" ]] || names="$(echo "$out" | tr '\n' ' ')"
  { echo "$want"; echo "$names"; } >"$stamp"
  mapfile -t -O "${#imported[@]}" imported <<<"$names"
  echo "load-images: $(basename "$tar"): $(echo "$names" | tr '\n' ' ')in $((SECONDS - t0))s" >&2
done

# kubelet refreshes its image list every 30 s or so and reports it with the next status update.
KUBECTL="$CACHE/tools/bin/kubectl"
if ((${#imported[@]})) && [[ -x "$KUBECTL" && -f "$DIR/kubeconfig" ]] \
   && "$KUBECTL" --kubeconfig "$DIR/kubeconfig" get node "$NODE_NAME" >/dev/null 2>&1; then
  t0=$SECONDS deadline=$((SECONDS + ${KERASOP_LOAD_WAIT:-120}))
  while :; do
    listed="$("$KUBECTL" --kubeconfig "$DIR/kubeconfig" get node "$NODE_NAME" \
      -o jsonpath='{range .status.images[*]}{range .names[*]}{@}{"\n"}{end}{end}' 2>/dev/null)"
    missing=()
    for n in "${imported[@]}"; do
      [[ -z "$n" ]] || grep -qxF -- "$n" <<<"$listed" || missing+=("$n")
    done
    ((${#missing[@]})) || { echo "load-images: node $NODE_NAME lists the images ($((SECONDS - t0))s)" >&2; break; }
    if ((SECONDS >= deadline)); then
      echo "load-images: node $NODE_NAME does not list ${missing[*]} yet (kubelet will, shortly)" >&2
      break
    fi
    sleep 2
  done
fi
exit "$rc"
