# Shared settings and helpers for cluster/up.sh, cluster/down.sh, cluster/load-images.sh.
# Sourced, not run.
# shellcheck shell=bash disable=SC2034  # settings used by the scripts that source this

KERASOP_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
NODE_SRC="$KERASOP_REPO/cluster/node"
CACHE="${KERASOP_CACHE:-$HOME/.cache/kerasop}"
export KERASOP_CACHE="$CACHE"
DIR="${KERASOP_CLUSTER_DIR:-/var/tmp/kerasop-cluster}"
DIR="${DIR%/}"
K8S_VERSION="${KERASOP_K8S_VERSION:-v1.34.12}"
NODE_NAME="${KERASOP_NODE_NAME:-$(hostname | tr '[:upper:]' '[:lower:]')}"

# Addresses. Everything listens on loopback or on NODE_IP, the address of the cluster's own
# bridge; nothing listens on the machine's real interfaces.
BRIDGE=kerasop0
BRIDGE_MAC=02:6b:65:72:61:73  # fixed, locally administered (see up.sh)
NODE_IP=10.88.0.1
NODE_POD_CIDR=10.88.0.0/24      # the bridge's subnet = the node's podCIDR
CLUSTER_CIDR=10.88.0.0/16       # kube-controller-manager hands out /24s of this
SERVICE_CIDR=10.0.0.0/24
API_SERVICE_IP=10.0.0.1
DNS_SERVICE_IP=10.0.0.10
CLUSTER_DOMAIN=cluster.local
API_PORT=6443
ETCD_PORT=12379
ETCD_PEER_PORT=12380
KUBELET_PORT=10250
KUBELET_HEALTHZ_PORT=10248
PROXY_HEALTHZ_PORT=10256
PROXY_METRICS_PORT=10249
KCM_PORT=10257
SCHED_PORT=10259
API_URL="https://$NODE_IP:$API_PORT"

CONTAINERD_SOCK="$DIR/containerd/containerd.sock"
PAUSE_IMAGE=docker.io/kerasop/pause:local
PROBE_IMAGE=docker.io/kerasop/probe:local
COREDNS_VERSION="${KERASOP_COREDNS_VERSION:-v1.14.7}"
COREDNS_IMAGE="docker.io/kerasop/coredns:${COREDNS_VERSION#v}"
STORAGE_PROVISIONER=kerasop.local/hostpath
FW_CHAIN=KERASOP-FORWARD
MARKER="$DIR/.kerasop-cluster"

# Components in start order; down.sh stops them in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy hostpath-provisioner)

# sysctls kubelet sets on start (kubelet's setupKernelTunables); up.sh saves the originals and
# down.sh puts them back, so the shared machine is left as it was found.
KUBELET_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
                 kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

# Controllers of the cgroup v1 hierarchies kubelet's /kerasop cgroup root lives in.
cgroup_dirs() {
  local d
  for d in /sys/fs/cgroup/*/; do
    d="${d%/}"
    [[ -d "$d" && -f "$d/cgroup.procs" ]] && echo "$d"
  done
}

ts() { date +%H:%M:%S; }
log() { echo "[$(ts)] $*" >&2; }

# --- processes -------------------------------------------------------------------------------

pid_of() { cat "$DIR/run/$1.pid" 2>/dev/null || true; }

# True when the component's recorded pid is alive and is ours (its command line names $DIR/),
# so a recycled pid is never mistaken for a component, nor ever signalled.
is_running() {
  local pid; pid=$(pid_of "$1")
  [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
  local cmd; cmd="$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmd" == *"$DIR/"* ]]
}

# stop_proc NAME [TIMEOUT]: SIGTERM, then SIGKILL after TIMEOUT seconds.
stop_proc() {
  local name="$1" timeout="${2:-20}" pid i
  if ! is_running "$name"; then rm -f "$DIR/run/$name.pid"; return 0; fi
  pid=$(pid_of "$name")
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < timeout * 5; i++)); do
    is_running "$name" || break
    sleep 0.2
  done
  if is_running "$name"; then
    log "$name (pid $pid) ignored SIGTERM for ${timeout}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "$DIR/run/$name.pid"
}

# Tail of a component's log, for failure reports.
log_tail() {
  local name="$1" n="${2:-40}"
  if [[ -s "$DIR/logs/$name.log" ]]; then
    echo "---- last $n lines of $DIR/logs/$name.log ----" >&2
    tail -n "$n" "$DIR/logs/$name.log" >&2
    echo "----" >&2
  fi
}

# Mount points at or under a directory, deepest first.
mounts_under() {
  local root="$1"
  awk -v root="$root" '{
      p = $5; gsub(/\\040/, " ", p)
      if (p == root || index(p, root "/") == 1) print length(p) "\t" p
    }' /proc/self/mountinfo | sort -rn | cut -f2- | uniq
}
