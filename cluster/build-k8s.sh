#!/usr/bin/env bash
# Build Kubernetes server components from their Go modules (via the Go module proxy).
#
# Technique: a throw-away main module that requires k8s.io/kubernetes at one pinned release and
# replaces every staging module (k8s.io/api, k8s.io/client-go, ...) -- which k8s.io/kubernetes's own
# go.mod points at ./staging/src/... -- with the published k8s.io/<name> v0.<minor>.<patch> module.
#
# Usage: cluster/build-k8s.sh [component ...]
#   components: kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl kubeadm
#   default: kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy
#
# Environment:
#   KERASOP_CACHE      cache root (default ~/.cache/kerasop)
#   KERASOP_K8S_VERSION  release to build (default below)
#   GO                 go binary (default: go on PATH, else /usr/local/go/bin/go)
#   KERASOP_K8S_FORCE=1  rebuild even if the binary exists
#
# Prints the path of the bin directory on the last line of stdout.
set -euo pipefail

K8S_VERSION="${KERASOP_K8S_VERSION:-v1.34.12}"
CACHE="${KERASOP_CACHE:-$HOME/.cache/kerasop}"
ROOT="$CACHE/k8s/$K8S_VERSION"
BIN="$ROOT/bin"
MODDIR="$ROOT/mod"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"

DEFAULT_COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
if [[ $# -gt 0 ]]; then COMPONENTS=("$@"); else COMPONENTS=("${DEFAULT_COMPONENTS[@]}"); fi

log() { echo "[build-k8s $(date +%H:%M:%S)] $*" >&2; }

mkdir -p "$BIN" "$MODDIR"

# Fast path without the lock: everything requested is already built.
all_built=1
for c in "${COMPONENTS[@]}"; do [[ -x "$BIN/$c" ]] || all_built=0; done
if [[ $all_built == 1 && "${KERASOP_K8S_FORCE:-0}" != 1 ]]; then echo "$BIN"; exit 0; fi

# Serialise concurrent invocations (test suite vs. a background full build).
exec 9>"$ROOT/.lock"
flock 9

missing=()
for c in "${COMPONENTS[@]}"; do
  case "$c" in
    kube-apiserver|kube-controller-manager|kube-scheduler|kubelet|kube-proxy|kubectl|kubeadm) ;;
    *) echo "unknown component: $c" >&2; exit 2 ;;
  esac
  if [[ -x "$BIN/$c" && "${KERASOP_K8S_FORCE:-0}" != 1 ]]; then
    log "$c: already built ($BIN/$c)"
  else
    missing+=("$c")
  fi
done
if [[ ${#missing[@]} -eq 0 ]]; then echo "$BIN"; exit 0; fi

export GOFLAGS="${GOFLAGS:-} -mod=mod -buildvcs=false"
export GOTOOLCHAIN=local
export GOPROXY="${GOPROXY:-https://proxy.golang.org}"

# --- generate the main module ---------------------------------------------------------------
STAGING_VERSION="v0.${K8S_VERSION#v1.}"   # v1.34.12 -> v0.34.12
if [[ ! -f "$MODDIR/go.mod" ]]; then
  log "resolving k8s.io/kubernetes@$K8S_VERSION go.mod"
  t0=$(date +%s)
  upstream_mod=$(cd "$MODDIR" && GOFLAGS= "$GO" mod download -json "k8s.io/kubernetes@$K8S_VERSION" \
    | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
  [[ -f "$upstream_mod" ]] || { echo "could not download k8s.io/kubernetes@$K8S_VERSION go.mod" >&2; exit 1; }
  # Every "k8s.io/x => ./staging/src/k8s.io/x" becomes "k8s.io/x => k8s.io/x v0.MINOR.PATCH".
  staging=$(sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._-]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\1#p' "$upstream_mod")
  go_line=$(grep -m1 '^go ' "$upstream_mod")
  {
    echo "module kerasop.local/k8s-build"
    echo
    echo "$go_line"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    for m in $staging; do echo "	$m => $m $STAGING_VERSION"; done
    echo ")"
  } > "$MODDIR/go.mod.tmp"
  mv "$MODDIR/go.mod.tmp" "$MODDIR/go.mod"
  log "go.mod written: $(echo "$staging" | wc -w) staging replaces at $STAGING_VERSION ($(( $(date +%s) - t0 ))s)"
fi

pkg_of() {
  case "$1" in
    kubectl) echo "k8s.io/kubernetes/cmd/kubectl" ;;
    *) echo "k8s.io/kubernetes/cmd/$1" ;;
  esac
}

# --- version stamping -----------------------------------------------------------------------
minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
commit=$(cd "$MODDIR" && GOFLAGS= "$GO" mod download -json "k8s.io/kubernetes@$K8S_VERSION" 2>/dev/null \
  | sed -n 's/^[[:space:]]*"Hash": "\([0-9a-f]\{40\}\)",\{0,1\}$/\1/p' | head -1 || true)
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
  ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=$build_date"
  [[ -n "$commit" ]] && ldflags+=" -X $p.gitCommit=$commit"
done

# --- download the modules the requested packages need ----------------------------------------
pkgs=(); for c in "${missing[@]}"; do pkgs+=("$(pkg_of "$c")"); done
t0=$(date +%s)
log "downloading modules for: ${missing[*]}"
(cd "$MODDIR" && "$GO" list -deps "${pkgs[@]}" >/dev/null)
log "module download/resolve took $(( $(date +%s) - t0 ))s"

# --- build ------------------------------------------------------------------------------------
for c in "${missing[@]}"; do
  pkg=$(pkg_of "$c")
  t0=$(date +%s)
  log "building $c ($pkg) ..."
  if ! (cd "$MODDIR" && CGO_ENABLED=0 "$GO" build -trimpath -ldflags "$ldflags" -o "$BIN/.$c.tmp" "$pkg"); then
    log "$c: CGO_ENABLED=0 build failed, retrying with cgo"
    (cd "$MODDIR" && CGO_ENABLED=1 "$GO" build -trimpath -ldflags "$ldflags" -o "$BIN/.$c.tmp" "$pkg")
  fi
  mv "$BIN/.$c.tmp" "$BIN/$c"
  log "built $c in $(( $(date +%s) - t0 ))s ($(du -h "$BIN/$c" | cut -f1))"
done
echo "$BIN"
