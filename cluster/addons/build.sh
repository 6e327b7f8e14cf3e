#!/usr/bin/env bash
# Build the kind node's add-on images with no registry and no Docker: one-layer docker-archive tars
# made by mkimage.py, in ${KERASOP_CACHE}/node/images, imported into the node image by
# cluster/kind/node-image.sh:
#   pause                   kerasop/pause:local              the pod sandbox: pause.c, gcc -static
#   coredns                 kerasop/coredns:<ver>            CoreDNS from its Go module (coredns/main.go)
#   metrics-server          kerasop/metrics-server:<ver>     Go module sigs.k8s.io/metrics-server
#   etcd                    registry.k8s.io/etcd:<ver>-0     Go module go.etcd.io/etcd/server/v3
#   local-path-provisioner  kerasop/local-path-provisioner   Go module github.com/rancher/local-path-provisioner
# and one binary (in ${KERASOP_CACHE}/node/bin), which goes into an image with iptables and ipset:
#   kube-router             Go module github.com/cloudnativelabs/kube-router/v2
#
# Usage: cluster/addons/build.sh [pause|coredns|metrics-server|etcd|local-path-provisioner|kube-router ...]
#        (default: all)
# Environment: KERASOP_CACHE, KERASOP_COREDNS_VERSION, KERASOP_METRICS_SERVER_VERSION,
#              KERASOP_KUBE_ROUTER_VERSION, KERASOP_ETCD_VERSION, KERASOP_LOCAL_PATH_VERSION, GO,
#              KERASOP_NODE_FORCE=1 (rebuild everything).
# Idempotent: an output is rebuilt only when missing, forced, or older than its sources.
# Prints the images directory on the last line of stdout.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${KERASOP_CACHE:-$HOME/.cache/kerasop}"
COREDNS_VERSION="${KERASOP_COREDNS_VERSION:-v1.14.7}"
METRICS_SERVER_VERSION="${KERASOP_METRICS_SERVER_VERSION:-v0.8.0}"
KUBE_ROUTER_VERSION="${KERASOP_KUBE_ROUTER_VERSION:-v2.1.0}"
ETCD_VERSION="${KERASOP_ETCD_VERSION:-v3.6.5}"
LOCAL_PATH_VERSION="${KERASOP_LOCAL_PATH_VERSION:-v0.0.30}"
OUT="$CACHE/node"
BIN="$OUT/bin"
IMAGES="$OUT/images"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
export GOFLAGS="${GOFLAGS:-} -buildvcs=false" GOTOOLCHAIN=local
export GOPROXY="${GOPROXY:-https://proxy.golang.org}"

log() { echo "[addons $(date +%H:%M:%S)] $*" >&2; }
mkdir -p "$BIN" "$IMAGES"
exec 9>"$OUT/.lock"
flock 9

# fresh TARGET SOURCE...: true when TARGET exists and is newer than every SOURCE
fresh() {
  local t="$1"; shift
  [[ "${KERASOP_NODE_FORCE:-0}" == 1 || ! -s "$t" ]] && return 1
  local s; for s in "$@"; do [[ "$s" -nt "$t" ]] && return 1; done
  return 0
}

build_pause() {
  if fresh "$IMAGES/pause.tar" "$HERE/pause.c" "$HERE/mkimage.py"; then log "pause: up to date"; return; fi
  local t0=$SECONDS
  gcc -static -O2 -s -Wall -Wextra -o "$BIN/pause" "$HERE/pause.c"
  python3 "$HERE/mkimage.py" "$IMAGES/pause.tar" kerasop/pause:local \
    --add "$BIN/pause:/pause:755" --entrypoint /pause >&2
  log "pause: built in $((SECONDS - t0))s"
}

build_coredns() {
  local tar="$IMAGES/coredns-$COREDNS_VERSION.tar"
  if fresh "$tar" "$HERE/coredns/main.go" "$HERE/mkimage.py"; then log "coredns: up to date"; return; fi
  local t0=$SECONDS mod="$OUT/coredns-$COREDNS_VERSION"
  mkdir -p "$mod"
  cp "$HERE/coredns/main.go" "$mod/main.go"
  if [[ ! -f "$mod/go.mod" ]]; then
    local gomod
    gomod=$(cd "$mod" && GOFLAGS='' "$GO" mod download -json "github.com/coredns/coredns@$COREDNS_VERSION" \
      | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
    [[ -f "$gomod" ]] || { log "cannot fetch github.com/coredns/coredns@$COREDNS_VERSION from $GOPROXY"; exit 1; }
    printf 'module kerasop.local/coredns\n\n%s\n\nrequire github.com/coredns/coredns %s\n' \
      "$(grep -m1 '^go ' "$gomod")" "$COREDNS_VERSION" > "$mod/go.mod"
  fi
  log "coredns: resolving modules"
  (cd "$mod" && "$GO" mod tidy >&2)
  log "coredns: modules ready after $((SECONDS - t0))s; compiling"
  (cd "$mod" && CGO_ENABLED=0 "$GO" build -mod=mod -trimpath -ldflags='-s -w' -o "$BIN/coredns" .)
  "$BIN/coredns" -version >&2
  python3 "$HERE/mkimage.py" "$tar" "kerasop/coredns:${COREDNS_VERSION#v}" \
    --add "$BIN/coredns:/coredns:755" --entrypoint /coredns --port 53/udp --port 53/tcp >&2
  log "coredns: built in $((SECONDS - t0))s"
}

build_metrics_server() {
  local tar="$IMAGES/metrics-server-$METRICS_SERVER_VERSION.tar"
  if fresh "$tar" "$HERE/mkimage.py"; then log "metrics-server: up to date"; return; fi
  local t0=$SECONDS
  # Like crictl: the module's go.mod has no replace directives, so go install builds it as is.
  GOBIN="$BIN/.metrics-server-build" CGO_ENABLED=0 "$GO" install -trimpath \
    -ldflags="-s -w -X k8s.io/client-go/pkg/version.gitVersion=$METRICS_SERVER_VERSION" \
    "sigs.k8s.io/metrics-server/cmd/metrics-server@$METRICS_SERVER_VERSION"
  mv "$BIN/.metrics-server-build/metrics-server" "$BIN/metrics-server"; rmdir "$BIN/.metrics-server-build"
  python3 "$HERE/mkimage.py" "$tar" "kerasop/metrics-server:${METRICS_SERVER_VERSION#v}" \
    --add "$BIN/metrics-server:/metrics-server:755" --entrypoint /metrics-server --port 10250/tcp >&2
  log "metrics-server: built in $((SECONDS - t0))s"
}

build_kube_router() {
  local dst="$BIN/kube-router-$KUBE_ROUTER_VERSION"
  if [[ -x "$dst" && "${KERASOP_NODE_FORCE:-0}" != 1 ]]; then log "kube-router: up to date"; return; fi
  local t0=$SECONDS
  GOBIN="$BIN/.kube-router-build" CGO_ENABLED=0 "$GO" install -trimpath -ldflags="-s -w" \
    "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@$KUBE_ROUTER_VERSION"
  mv "$BIN/.kube-router-build/kube-router" "$dst"; rmdir "$BIN/.kube-router-build"
  ln -sfn "${dst##*/}" "$BIN/kube-router"
  log "kube-router: built in $((SECONDS - t0))s"
}

# etcd for kubeadm's static pod (kind nodes): its server package under a throw-away main module
# (the release's own main module carries replace directives, so `go install` of it fails).
build_etcd() {
  local tar="$IMAGES/etcd-$ETCD_VERSION.tar"
  if fresh "$tar" "$HERE/mkimage.py"; then log "etcd: up to date"; return; fi
  local t0=$SECONDS mod="$OUT/etcd-$ETCD_VERSION"
  mkdir -p "$mod"
  printf 'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\nfunc main() { etcdmain.Main(os.Args) }\n' >"$mod/main.go"
  printf 'module kerasop.local/etcd\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" >"$mod/go.mod"
  (cd "$mod" && "$GO" mod tidy >&2 && CGO_ENABLED=0 "$GO" build -mod=mod -trimpath -ldflags='-s -w' -o "$BIN/etcd" .)
  python3 "$HERE/mkimage.py" "$tar" "registry.k8s.io/etcd:${ETCD_VERSION#v}-0" \
    --add "$BIN/etcd:/usr/local/bin/etcd:755" --env PATH=/usr/local/bin:/bin >&2
  log "etcd: built in $((SECONDS - t0))s"
}

# Rancher's local-path provisioner, kind's default StorageClass (a directory on the pod's node).
build_local_path() {
  local tar="$IMAGES/local-path-provisioner-$LOCAL_PATH_VERSION.tar"
  if fresh "$tar" "$HERE/mkimage.py"; then log "local-path-provisioner: up to date"; return; fi
  local t0=$SECONDS
  GOBIN="$BIN/.local-path-build" CGO_ENABLED=0 "$GO" install -trimpath -ldflags="-s -w" \
    "github.com/rancher/local-path-provisioner@$LOCAL_PATH_VERSION"
  mv "$BIN/.local-path-build/local-path-provisioner" "$BIN/local-path-provisioner"; rmdir "$BIN/.local-path-build"
  python3 "$HERE/mkimage.py" "$tar" "kerasop/local-path-provisioner:${LOCAL_PATH_VERSION#v}" \
    --add "$BIN/local-path-provisioner:/usr/bin/local-path-provisioner:755" --env PATH=/usr/bin >&2
  log "local-path-provisioner: built in $((SECONDS - t0))s"
}

targets=("$@"); [[ ${#targets[@]} -gt 0 ]] || targets=(pause coredns metrics-server etcd local-path-provisioner kube-router)
for t in "${targets[@]}"; do
  case "$t" in
    pause) build_pause ;; coredns) build_coredns ;; metrics-server) build_metrics_server ;;
    kube-router) build_kube_router ;; etcd) build_etcd ;; local-path-provisioner) build_local_path ;;
    *) echo "unknown image: $t" >&2; exit 2 ;;
  esac
done
echo "$IMAGES"
