#!/usr/bin/env bash
# Kueue for the kind cluster (docs/queues.md), with no registry and no Docker: its manager built from
# its Go module, an image of it made by mkimage.py, and its manifests rendered from the same module's
# config/ (kustomize: config/default, with Kueue's internal certificate management for its webhooks,
# no cert-manager), in ${KERASOP_CACHE}/kueue/<version>/:
#   image            kerasop/kueue:<ver>   -> images/kueue-<ver>.tar (node-image.sh imports it)
#   manifests        manifests.yaml        (cluster/kind/up.sh applies it)
#   crds             the module's CRD folder (config/components/crd/bases), for the component tests
#
# Usage: cluster/addons/build-kueue.sh [image|manifests|crds ...]   (default: image manifests)
#        Prints the last target's output (the tar, the manifest file, the CRD folder) on the last line.
# Environment: KERASOP_CACHE, KERASOP_KUEUE_VERSION, GO, KUBECTL (default: the static one of
#              cluster/get-tools.sh), KERASOP_NODE_FORCE=1 (rebuild).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE="${KERASOP_CACHE:-$HOME/.cache/kerasop}"
VERSION="${KERASOP_KUEUE_VERSION:-v0.17.0}"
MODULE=sigs.k8s.io/kueue
IMAGE="kerasop/kueue:${VERSION#v}"
OUT="$CACHE/kueue/$VERSION"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
export GOFLAGS="${GOFLAGS:-} -buildvcs=false" GOTOOLCHAIN=local
export GOPROXY="${GOPROXY:-https://proxy.golang.org}"

log() { echo "[kueue $(date +%H:%M:%S)] $*" >&2; }
mkdir -p "$OUT/images"
# Only the targets that write take the lock (crds reads the module cache).
lock() { exec 9>"$OUT/.lock"; flock 9; }

# The module's source (read-only, in Go's module cache): config/ and the CRDs come from there.
module_dir() {
  local dir
  dir=$(cd "$OUT" && GOFLAGS='' "$GO" mod download -json "$MODULE@$VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
  [[ -d "$dir/config/default" ]] || { log "cannot fetch $MODULE@$VERSION from $GOPROXY"; exit 1; }
  echo "$dir"
}

fresh() {
  local t="$1"; shift
  [[ "${KERASOP_NODE_FORCE:-0}" == 1 || ! -s "$t" ]] && return 1
  local s; for s in "$@"; do [[ "$s" -nt "$t" ]] && return 1; done
  return 0
}

build_image() {
  lock
  local tar="$OUT/images/kueue-$VERSION.tar"
  if fresh "$tar" "$HERE/mkimage.py" "$HERE/build-kueue.sh"; then log "image: up to date"; result=$tar; return; fi
  local t0=$SECONDS bin="$OUT/bin"
  # The module's go.mod has no replace directives, so go install builds cmd/kueue as released.
  log "building $MODULE/cmd/kueue@$VERSION"
  GOBIN="$bin" CGO_ENABLED=0 "$GO" install -trimpath \
    -ldflags="-s -w -X $MODULE/pkg/version.GitVersion=$VERSION" "$MODULE/cmd/kueue@$VERSION"
  # Kueue's own image: distroless, /manager, user 65532.
  python3 "$HERE/mkimage.py" "$tar" "$IMAGE" --add "$bin/kueue:/manager:755" \
    --entrypoint /manager --user 65532:65532 --workdir / >&2
  log "image: built in $((SECONDS - t0))s"
  result=$tar
}

# config/default (CRDs, RBAC, the manager with internal cert management, webhooks, the visibility
# API) under an overlay that names our image and lets the node's containerd serve it (kustomize
# takes the base by a relative path only).
render_manifests() {
  lock
  local file="$OUT/manifests.yaml"
  if fresh "$file" "$HERE/build-kueue.sh"; then log "manifests: up to date"; result=$file; return; fi
  local dir overlay kubectl="${KUBECTL:-}"
  dir=$(module_dir)
  [[ -n "$kubectl" ]] || kubectl="$(bash "$ROOT/cluster/get-tools.sh" | tail -n1)/kubectl"
  overlay=$(mktemp -d "$OUT/overlay.XXXXXX")
  # The manager's released image name is set in config/components/manager/kustomization.yaml.
  local released
  released=$(sed -n 's/^[[:space:]]*newName: //p' "$dir/config/components/manager/kustomization.yaml")
  cat >"$overlay/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- $(realpath --relative-to="$overlay" "$dir/config/default")
images:
- name: $released
  newName: docker.io/${IMAGE%%:*}
  newTag: ${IMAGE#*:}
patches:
# On the control-plane node: Kueue's webhooks (failurePolicy Fail) see every Job and Deployment
# write, so its one replica must not be on a worker that a drain or a fault takes away.
- target: {kind: Deployment, name: kueue-controller-manager}
  patch: |-
    - op: replace
      path: /spec/template/spec/containers/0/imagePullPolicy
      value: IfNotPresent
    - op: add
      path: /spec/template/spec/nodeSelector
      value: {node-role.kubernetes.io/control-plane: ""}
    - op: add
      path: /spec/template/spec/tolerations
      value: [{key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}]
EOF
  "$kubectl" kustomize "$overlay" >"$file.tmp" || { rm -rf "$overlay"; exit 1; }
  rm -rf "$overlay"
  grep -q "image: docker.io/$IMAGE" "$file.tmp" || { log "the rendered manager does not run $IMAGE"; exit 1; }
  mv "$file.tmp" "$file"
  log "manifests: $(grep -c '^kind:' "$file") objects in $file"
  result=$file
}

targets=("$@"); [[ ${#targets[@]} -gt 0 ]] || targets=(image manifests)
result=""
for t in "${targets[@]}"; do
  case "$t" in
    image) build_image ;;
    manifests) render_manifests ;;
    crds) result="$(module_dir)/config/components/crd/bases" ;;
    *) echo "unknown target: $t" >&2; exit 2 ;;
  esac
done
echo "$result"
