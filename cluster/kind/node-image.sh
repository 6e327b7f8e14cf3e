#!/usr/bin/env bash
# Build kind's node image on this machine, with no registry (kind's own is only on one).
#
#   1. kerasop/kind-base: cluster/kind/node/Dockerfile on kerasop-base (the project's debootstrapped
#      Debian): systemd, containerd, runc, CNI plugins, iptables, from Debian's packages.
#   2. kerasop/node-tools:local: kind-base plus kube-proxy and kube-router (both need iptables and
#      ipset from an image); also the local-path provisioner's helper (it needs a shell).
#   3. The node: kubeadm, kubelet and kubectl (the static one of cluster/get-tools.sh) in /usr/bin,
#      every image kubeadm and the add-ons run
#      (control plane from cluster/build-k8s.sh, etcd, CoreDNS, pause, metrics-server and the
#      local-path provisioner from cluster/addons/build.sh, Kueue from cluster/addons/build-kueue.sh)
#      imported into the node's containerd
#      under the names kubeadm asks for, the CNI (kube-router) and storage manifests kind applies.
#      Committed as kerasop/kind-node:<k8s version>-<hash of every input>: an unchanged input set
#      is not rebuilt.
#
# Usage: cluster/kind/node-image.sh     Prints the node image's name on the last line.
# Environment: KERASOP_CACHE, KERASOP_K8S_VERSION, KERASOP_CA_BUNDLE.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE="${KERASOP_CACHE:-$HOME/.cache/kerasop}"
K8S_VERSION="${KERASOP_K8S_VERSION:-v1.34.12}"
CA_BUNDLE="${KERASOP_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
BASE=kerasop-base:bookworm
KIND_BASE=kerasop/kind-base:bookworm
TOOLS=kerasop/node-tools:local
export DOCKER_BUILDKIT=0

log() { echo "[node-image $(date +%H:%M:%S)] $*" >&2; }
label_of() { docker image inspect -f "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true; }

# build TAG DOCKERFILE_DIR [docker build args...]: rebuilt only when its inputs changed.
build() {
  local tag=$1 dir=$2; shift 2
  local inputs
  inputs=$( { (cd "$dir" && find . -type f -print0 | sort -z | xargs -0 sha256sum); printf '%s\n' "$@"; } \
    | sha256sum | cut -c1-16)
  if [[ "$(label_of "$tag" io.kerasop.inputs)" == "$inputs" ]]; then log "$tag is up to date"; return; fi
  log "docker build $tag"
  docker build --network host --label "io.kerasop.inputs=$inputs" "$@" -t "$tag" "$dir" \
    >"$CACHE/kind/build-${tag//[\/:]/_}.log" 2>&1 \
    || { tail -n 30 "$CACHE/kind/build-${tag//[\/:]/_}.log" >&2; exit 1; }
}

mkdir -p "$CACHE/kind"
exec 9>"$CACHE/kind/.node-image.lock"
flock 9

KUBECTL=$(bash "$ROOT/cluster/get-tools.sh" | tail -n1)/kubectl
NODE_IMAGES=$(bash "$ROOT/cluster/addons/build.sh" pause coredns metrics-server kube-router etcd \
  local-path-provisioner | tail -n1)
KUEUE_TAR=$(bash "$ROOT/cluster/addons/build-kueue.sh" image | tail -n1)
# Kubernetes last: under `make prebuild` the tools lane holds build-k8s.sh's lock at first.
K8S_BIN=$(bash "$ROOT/cluster/build-k8s.sh" kube-apiserver kube-controller-manager kube-scheduler \
  kubelet kube-proxy kubeadm | tail -n1)
NODE_BIN="$CACHE/node/bin"
bash "$ROOT/scripts/images.sh" base

# 1. the base
ctx="$CACHE/kind/context-base"
rm -rf "$ctx" && cp -r "$HERE/node" "$ctx"
cp "$CA_BUNDLE" "$ctx/proxy-ca.pem"
build "$KIND_BASE" "$ctx" --build-arg "BASE_IMAGE=$BASE" --label "io.kerasop.base-id=$(docker image inspect -f '{{.Id}}' "$BASE")"

# 2. the tools image
ctx="$CACHE/kind/context-tools"
rm -rf "$ctx" && mkdir -p "$ctx"
cp "$K8S_BIN/kube-proxy" "$NODE_BIN/kube-router" "$ctx/"
printf 'FROM %s\nCOPY kube-proxy kube-router /usr/local/bin/\nENTRYPOINT []\n' "$KIND_BASE" >"$ctx/Dockerfile"
build "$TOOLS" "$ctx" --label "io.kerasop.base-id=$(docker image inspect -f '{{.Id}}' "$KIND_BASE")"

# 3. the control-plane images: one static binary each
images="$CACHE/kind/images"
mkdir -p "$images"
for c in kube-apiserver kube-controller-manager kube-scheduler; do
  if [[ ! -s "$images/$c.tar" || "$K8S_BIN/$c" -nt "$images/$c.tar" ]]; then
    python3 "$ROOT/cluster/addons/mkimage.py" "$images/$c.tar" "registry.k8s.io/$c:$K8S_VERSION" \
      --add "$K8S_BIN/$c:/usr/local/bin/$c:755" --env PATH=/usr/local/bin >&2
  fi
done
docker save "$TOOLS" -o "$images/node-tools.tar.tmp" && mv "$images/node-tools.tar.tmp" "$images/node-tools.tar"

# The names kubeadm and kind's manifests ask for, and the tar that holds each.
kubeadm_images=$("$K8S_BIN/kubeadm" config images list --kubernetes-version "$K8S_VERSION")
want() { grep -m1 "/$1:" <<<"$kubeadm_images"; }
tars=("$images"/kube-{apiserver,controller-manager,scheduler}.tar "$images/node-tools.tar"
  "$NODE_IMAGES/pause.tar" "$NODE_IMAGES"/coredns-*.tar "$NODE_IMAGES"/etcd-*.tar
  "$NODE_IMAGES"/metrics-server-*.tar "$NODE_IMAGES"/local-path-provisioner-*.tar "$KUEUE_TAR")
retag=("docker.io/kerasop/pause:local=$(want pause)"
  "docker.io/$(tar -xOf "$NODE_IMAGES"/coredns-*.tar manifest.json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["RepoTags"][0])')=$(want coredns)"
  "docker.io/$TOOLS=$(want kube-proxy)")
[[ "$(want etcd)" == "$(tar -xOf "$NODE_IMAGES"/etcd-*.tar manifest.json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["RepoTags"][0])')" ]] \
  || { log "kubeadm wants $(want etcd): set KERASOP_ETCD_VERSION to match"; exit 1; }

inputs=$( { sha256sum "${tars[@]}" "$K8S_BIN"/{kubeadm,kubelet} "$KUBECTL" "$HERE"/manifests/{cni,storage}.yaml \
  | cut -d' ' -f1; docker image inspect -f '{{.Id}}' "$KIND_BASE"; printf '%s\n' "${retag[@]}"; } \
  | sha256sum | cut -c1-12)
NODE="kerasop/kind-node:$K8S_VERSION-$inputs"
if docker image inspect "$NODE" >/dev/null 2>&1; then log "$NODE is up to date"; echo "$NODE"; exit 0; fi

t0=$SECONDS
cid=$(docker run -d --privileged --entrypoint sleep "$KIND_BASE" infinity)
trap 'docker rm -f -v "$cid" >/dev/null 2>&1 || true' EXIT
for b in "$K8S_BIN/kubeadm" "$K8S_BIN/kubelet" "$KUBECTL"; do docker cp "$b" "$cid:/usr/bin/"; done
docker exec -i "$cid" sh -c "echo $K8S_VERSION >/kind/version"
docker cp "$HERE/manifests/cni.yaml" "$cid:/kind/manifests/default-cni.yaml"
docker cp "$HERE/manifests/storage.yaml" "$cid:/kind/manifests/default-storage.yaml"
docker exec "$cid" sh -c 'nohup containerd >/tmp/containerd.log 2>&1 &
  for i in $(seq 50); do ctr version >/dev/null 2>&1 && exit 0; sleep 0.2; done; cat /tmp/containerd.log; exit 1'
for t in "${tars[@]}"; do
  log "importing $(basename "$t")"
  # No unpacking here: the node's /var is a volume at run time, where containerd unpacks on use.
  docker exec -i "$cid" ctr -n k8s.io images import --all-platforms --no-unpack --digests - <"$t" >/dev/null
done
for pair in "${retag[@]}"; do
  docker exec "$cid" ctr -n k8s.io images tag --force "${pair%%=*}" "${pair#*=}" >/dev/null
done
docker exec "$cid" ctr -n k8s.io images ls -q >&2
docker exec "$cid" pkill containerd
docker commit --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' --change 'CMD []' \
  "$cid" "$NODE" >/dev/null
log "built $NODE in $((SECONDS - t0))s"
echo "$NODE"
