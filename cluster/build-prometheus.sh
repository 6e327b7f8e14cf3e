#!/usr/bin/env bash
# Build promtool and prometheus from the Go module github.com/prometheus/prometheus (via the Go
# module proxy), cached under $KERASOP_CACHE by version: a second run prints the path at once.
#
# Prometheus 3.x releases are published as module versions v0.3MM.P (v3.MM.P on GitHub), so
# KERASOP_PROMETHEUS_VERSION=v0.316.0 is Prometheus 3.16.0.
#
# Technique (as cluster/build-k8s.sh): a throw-away main module that requires the pinned
# release; `go build` of only ./cmd/promtool and ./cmd/prometheus. To keep the cold build small:
#   - -tags remove_all_sd,enable_kubernetes_sd: of the service-discovery plugins
#     (plugins/plugin_*.go) only Kubernetes SD (what the e2e test uses) is compiled in, so the
#     AWS/Azure/GCE/... SDKs are never downloaded nor built;
#   - no builtinassets tag: the web UI assets are not embedded (the HTTP API, which the tests use,
#     does not need them);
#   - -trimpath -ldflags "-s -w", CGO_ENABLED=0 (static binaries, also runnable in the image).
#
# Usage: cluster/build-prometheus.sh
# Environment:
#   KERASOP_CACHE               cache root (default ~/.cache/kerasop)
#   KERASOP_PROMETHEUS_VERSION  module version to build (default below)
#   GO                          go binary (default: go on PATH, else /usr/local/go/bin/go)
#   KERASOP_PROMETHEUS_FORCE=1  rebuild even if the binaries exist
#
# Prints the path of the bin directory (promtool, prometheus) on the last line of stdout.
set -euo pipefail

VERSION="${KERASOP_PROMETHEUS_VERSION:-v0.316.0}"
CACHE="${KERASOP_CACHE:-$HOME/.cache/kerasop}"
ROOT="$CACHE/prometheus/$VERSION"
BIN="$ROOT/bin"
MODDIR="$ROOT/mod"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
MODULE=github.com/prometheus/prometheus
COMMANDS=(promtool prometheus)

log() { echo "[build-prometheus $(date +%H:%M:%S)] $*" >&2; }

built() { for c in "${COMMANDS[@]}"; do [[ -x "$BIN/$c" ]] || return 1; done; }

mkdir -p "$BIN" "$MODDIR"
if built && [[ "${KERASOP_PROMETHEUS_FORCE:-0}" != 1 ]]; then echo "$BIN"; exit 0; fi

# Serialise concurrent invocations (make tools vs. a test fixture).
exec 9>"$ROOT/.lock"
flock 9
if built && [[ "${KERASOP_PROMETHEUS_FORCE:-0}" != 1 ]]; then echo "$BIN"; exit 0; fi

export GOFLAGS="${GOFLAGS:-} -mod=mod -buildvcs=false"
export GOTOOLCHAIN=local
export GOPROXY="${GOPROXY:-https://proxy.golang.org}"
export CGO_ENABLED=0
TAGS="remove_all_sd,enable_kubernetes_sd"

t_all=$(date +%s)
if [[ ! -f "$MODDIR/go.mod" ]]; then
  upstream_mod=$(cd "$MODDIR" && GOFLAGS= "$GO" mod download -json "$MODULE@$VERSION" \
    | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
  [[ -f "$upstream_mod" ]] || { echo "could not download $MODULE@$VERSION go.mod" >&2; exit 1; }
  printf 'module kerasop.local/prometheus-build\n\n%s\n\nrequire %s %s\n' \
    "$(grep -m1 '^go ' "$upstream_mod")" "$MODULE" "$VERSION" > "$MODDIR/go.mod.tmp"
  mv "$MODDIR/go.mod.tmp" "$MODDIR/go.mod"
fi

# Version stamping (what `promtool --version` and the server's build_info report).
rest="${VERSION#v0.3}"   # v0.316.0 -> 16.0 -> 3.16.0 (v0.300.1 -> 3.0.1)
ver="3.$((10#${rest%%.*})).${rest#*.}"
pv=github.com/prometheus/common/version
ldflags="-s -w -X $pv.Version=$ver -X $pv.Branch=module -X $pv.BuildUser=kerasop"
ldflags+=" -X $pv.BuildDate=$(date -u +%Y%m%d-%H:%M:%S)"

t0=$(date +%s)
log "resolving and downloading modules for $MODULE@$VERSION ./cmd/{promtool,prometheus}"
(cd "$MODDIR" && "$GO" list -tags "$TAGS" -deps "$MODULE/cmd/promtool" "$MODULE/cmd/prometheus" >/dev/null)
log "module download/resolve took $(( $(date +%s) - t0 ))s"

for c in "${COMMANDS[@]}"; do
  t0=$(date +%s)
  log "building $c ..."
  (cd "$MODDIR" && "$GO" build -tags "$TAGS" -trimpath -ldflags "$ldflags" \
    -o "$BIN/.$c.tmp" "$MODULE/cmd/$c")
  mv "$BIN/.$c.tmp" "$BIN/$c"
  log "built $c in $(( $(date +%s) - t0 ))s ($(du -h "$BIN/$c" | cut -f1))"
done
log "cold build took $(( $(date +%s) - t_all ))s"
echo "$BIN"
