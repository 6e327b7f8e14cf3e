#!/usr/bin/env bash
# Start a real single-node Kubernetes cluster on this machine, from upstream components:
#   etcd (Debian), kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy
#   (built from Go modules by cluster/build-k8s.sh), containerd + runc + CNI plugins (Debian),
#   CoreDNS and a pause image built from source (cluster/node/build-node.sh), a hostPath
#   StorageClass (cluster/node/provisioner). No container registry is used, ever.
#
# Usage: sudo cluster/up.sh            (root is required: containerd, kubelet, iptables)
# Prints the admin kubeconfig's path on the last line of stdout:
#   export KUBECONFIG=$(cluster/up.sh | tail -1)
#
# Idempotent: running components are left alone; missing or dead ones are (re)started.
# On failure: exits non-zero and prints the failing component's log tail. cluster/down.sh tears
# everything down, also after a half-failed up.
#
# Environment:
#   KERASOP_CLUSTER_DIR   all state, logs, certs, volumes (default /var/tmp/kerasop-cluster)
#   KERASOP_CACHE         build cache (default ~/.cache/kerasop); images in $KERASOP_CACHE/images/*.tar
#                         (docker-archive) are imported into the node
#   KERASOP_K8S_VERSION   Kubernetes release (default in cluster/node/lib.sh)
#   KERASOP_NODE_NAME     node name (default: this machine's hostname)
#   KERASOP_UP_TIMEOUT    seconds to wait for each component (default 180)
#
# Networking (cluster/node/lib.sh): bridge kerasop0 = 10.88.0.1/24 (node pod CIDR; the API
# server and kubelet listen on 10.88.0.1), services 10.0.0.0/24, DNS 10.0.0.10. Every other
# listener is on 127.0.0.1. A FORWARD chain (KERASOP-FORWARD) keeps pod traffic on the bridge:
# pods reach each other, services and the node, never another network.
set -euo pipefail

# shellcheck source=node/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/node/lib.sh"

TIMEOUT="${KERASOP_UP_TIMEOUT:-180}"
T_START=$SECONDS
declare -a TIMINGS=()

step_begin() { STEP_NAME="$1"; STEP_T0=$SECONDS; log "== $1"; }
step_end() { TIMINGS+=("$(printf '%-28s %4ds' "$STEP_NAME" $((SECONDS - STEP_T0)))"); }

fail() {
  local component="$1"; shift
  echo "up.sh: FAILED: $component: $*" >&2
  [[ -n "$component" ]] && log_tail "$component" 60
  echo "up.sh: state and logs are in $DIR; cluster/down.sh removes them" >&2
  exit 1
}

# wait_until COMPONENT WHAT CMD...: poll CMD until it succeeds; fail if COMPONENT dies or time
# runs out.
wait_until() {
  local component="$1" what="$2"; shift 2
  local deadline=$((SECONDS + TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    if [[ -n "$component" && -f "$DIR/run/$component.pid" ]] && ! is_running "$component"; then
      fail "$component" "exited while waiting for $what"
    fi
    ((SECONDS < deadline)) || fail "$component" "timed out after ${TIMEOUT}s waiting for $what"
    sleep 1
  done
}

# start_proc NAME CMD...: start CMD in its own session, log to logs/NAME.log, pid to run/NAME.pid.
# Leaves an already-running component alone and reports whether it started one.
# A component whose command line or config files (arguments naming files under $DIR/config)
# changed since it was started is restarted.
start_proc() {
  local name="$1"; shift
  local a f fp
  fp="$({
    printf '%s\n' "$@"
    for a in "$@"; do
      f="${a#*=}"
      [[ "$f" == "$DIR/config/"* && -f "$f" ]] && cat "$f"
    done
  } | sha256sum | cut -c1-16)"
  if is_running "$name"; then
    if [[ "$(cat "$DIR/run/$name.fingerprint" 2>/dev/null)" == "$fp" ]]; then
      log "$name: already running (pid $(pid_of "$name"))"
      return 1
    fi
    log "$name: configuration changed: restarting"
    stop_proc "$name" 30
  fi
  echo "$fp" >"$DIR/run/$name.fingerprint"
  echo "==== $(date -Is) starting: $*" >>"$DIR/logs/$name.log"
  # Not a process-group leader here, so setsid execs in place and $! is the component's pid.
  setsid "$@" >>"$DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$DIR/run/$name.pid"
  # Until setsid has exec'ed, /proc/PID/cmdline is still this script's: wait for the
  # component's own command line so is_running does not mistake it for an exit.
  local i
  for i in $(seq 1 50); do
    is_running "$name" && break
    kill -0 "$!" 2>/dev/null || break
    sleep 0.1
  done
  log "$name: started (pid $!)"
  return 0
}

kubectl() { "$KUBECTL" --kubeconfig "$DIR/kubeconfig" "$@"; }

# put FILE: write stdin to FILE only if the content differs (kube-proxy exits when its config
# file is touched, so an unchanged file must stay untouched).
put() {
  local f="$1"
  cat >"$f.new"
  if cmp -s "$f.new" "$f"; then rm -f "$f.new"; else mv "$f.new" "$f"; fi
}

# Our FORWARD chain must come first: kube-proxy prepends its own jumps, whose ACCEPT rules
# (masquerade-marked or established traffic) would otherwise be reached before our filter.
forward_chain_first() {
  if [[ "$(iptables -w -S FORWARD | sed -n 2p)" != "-A FORWARD -j $FW_CHAIN" ]]; then
    while iptables -w -D FORWARD -j "$FW_CHAIN" 2>/dev/null; do :; done
    iptables -w -I FORWARD 1 -j "$FW_CHAIN"
  fi
}

# --- preflight -------------------------------------------------------------------------------

step_begin preflight
[[ $EUID -eq 0 ]] || { echo "up.sh must run as root (containerd, kubelet, iptables, mounts)" >&2; exit 1; }
case "$DIR" in
  /|/root|/home|/var|/tmp|/var/tmp|/usr|/etc|"$HOME") echo "refusing KERASOP_CLUSTER_DIR=$DIR" >&2; exit 1 ;;
esac
if [[ -d "$DIR" && ! -f "$MARKER" && -n "$(ls -A "$DIR" 2>/dev/null)" ]]; then
  echo "$DIR exists, is not empty and was not made by up.sh; choose another KERASOP_CLUSTER_DIR" >&2
  exit 1
fi
[[ "$NODE_NAME" =~ ^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$ ]] || { echo "node name '$NODE_NAME' is not a DNS-1123 name; set KERASOP_NODE_NAME" >&2; exit 1; }
missing=()
for b in etcd containerd containerd-shim-runc-v2 runc ctr iptables ip openssl curl setsid flock gcc python3; do
  command -v "$b" >/dev/null || missing+=("$b")
done
for p in bridge host-local portmap loopback; do [[ -x /usr/lib/cni/$p ]] || missing+=("/usr/lib/cni/$p"); done
if ((${#missing[@]})); then
  echo "missing: ${missing[*]}" >&2
  echo "install with: bash scripts/install-system-deps.sh (or: make system-deps)" >&2
  exit 1
fi
[[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] || modprobe br_netfilter 2>/dev/null || true
[[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] || { echo "kernel lacks br_netfilter" >&2; exit 1; }
mkdir -p "$DIR"/{pki,kubeconfigs,config,etcd,logs,run,images,volumes,kubelet,containerd,cni/net.d,cni/ipam}
chmod 700 "$DIR/etcd"
chmod 700 "$DIR/pki" "$DIR/kubeconfigs"
[[ -f "$MARKER" ]] || echo "made by cluster/up.sh on $(date -Is); remove with cluster/down.sh" >"$MARKER"
step_end

# --- binaries --------------------------------------------------------------------------------

step_begin "binaries (build if cold)"
K8S_BIN="$(KERASOP_K8S_VERSION="$K8S_VERSION" bash "$KERASOP_REPO/cluster/build-k8s.sh" 2>>"$DIR/logs/build.log" | tail -1)" \
  || fail build "cluster/build-k8s.sh failed"
for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
  [[ -x "$K8S_BIN/$c" ]] || fail build "$K8S_BIN/$c missing"
done
TOOLS_BIN="$(bash "$KERASOP_REPO/cluster/get-tools.sh" 2>>"$DIR/logs/build.log" | tail -1)" || fail build "cluster/get-tools.sh failed"
KUBECTL="$TOOLS_BIN/kubectl"
[[ -x "$KUBECTL" ]] || fail build "$KUBECTL missing"
NODE_IMAGES="$(bash "$NODE_SRC/build-node.sh" 2>>"$DIR/logs/build.log" | tail -1)" || fail build "cluster/node/build-node.sh failed"
# Optional, and never fatal: without it only the HPA scenario fails (with a clear message).
METRICS_SERVER="${KERASOP_METRICS_SERVER:-0}"
if [[ "$METRICS_SERVER" == 1 ]] && ! bash "$NODE_SRC/build-node.sh" metrics-server 2>>"$DIR/logs/build.log" >/dev/null; then
  log "WARNING: building metrics-server failed (logs/build.log); continuing without it"
  METRICS_SERVER=0
fi
# Optional too: NetworkPolicy enforcement (kube-router's firewall, which needs ipset);
# without it the policy scenario fails saying so.
NETWORK_POLICY="${KERASOP_NETWORK_POLICY:-0}"
if [[ "$NETWORK_POLICY" == 1 ]] && ! command -v ipset >/dev/null; then
  log "WARNING: no ipset (apt-get install ipset); continuing without NetworkPolicy enforcement"
  NETWORK_POLICY=0
fi
if [[ "$NETWORK_POLICY" == 1 ]] && ! bash "$NODE_SRC/build-node.sh" kube-router 2>>"$DIR/logs/build.log" >/dev/null; then
  log "WARNING: building kube-router failed (logs/build.log); continuing without it"
  NETWORK_POLICY=0
fi
NODE_BIN="$CACHE/node/bin"
step_end

# --- certificates and kubeconfigs ------------------------------------------------------------

step_begin certificates
PKI="$DIR/pki"
if [[ ! -f "$PKI/ca.crt" ]]; then
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -days 3650 -subj "/CN=kerasop-local-cluster-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    2>>"$DIR/logs/certs.log" || fail certs "CA"
fi
if [[ ! -f "$PKI/sa.key" ]]; then
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" 2>>"$DIR/logs/certs.log"
  openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>>"$DIR/logs/certs.log"
fi

if [[ ! -f "$PKI/front-proxy-ca.crt" ]]; then
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$PKI/front-proxy-ca.key" -out "$PKI/front-proxy-ca.crt" -days 3650 -subj "/CN=kerasop-front-proxy-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    2>>"$DIR/logs/certs.log" || fail certs "front-proxy CA"
fi

# cert NAME SUBJECT client|server|both [SAN,...] [CA]
cert() {
  local name="$1" subj="$2" usage="$3" sans="${4:-}" ca="${5:-ca}" eku
  [[ -f "$PKI/$name.crt" ]] && return 0
  case "$usage" in client) eku=clientAuth ;; server) eku=serverAuth ;; both) eku=serverAuth,clientAuth ;; esac
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [[ -n "$sans" ]] && echo "subjectAltName=$sans"
  } >"$PKI/$name.ext"
  if ! openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
         -keyout "$PKI/$name.key" -out "$PKI/$name.csr" -subj "$subj" 2>>"$DIR/logs/certs.log" \
     || ! openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" -CAcreateserial \
         -days 3650 -out "$PKI/$name.crt.tmp" -extfile "$PKI/$name.ext" 2>>"$DIR/logs/certs.log"; then
    fail certs "certificate $name"
  fi
  mv "$PKI/$name.crt.tmp" "$PKI/$name.crt"
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}
cert apiserver "/CN=kube-apiserver" server \
  "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN,DNS:localhost,DNS:$NODE_NAME,IP:$API_SERVICE_IP,IP:$NODE_IP,IP:127.0.0.1"
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" client
cert admin "/O=system:masters/CN=kerasop-admin" client
cert kube-controller-manager "/CN=system:kube-controller-manager" client
cert kube-scheduler "/CN=system:kube-scheduler" client
cert kube-proxy "/CN=system:kube-proxy" client
cert kubelet-client "/O=system:nodes/CN=system:node:$NODE_NAME" client
cert kubelet-server "/CN=$NODE_NAME" server "DNS:$NODE_NAME,DNS:localhost,IP:$NODE_IP,IP:127.0.0.1"
cert hostpath-provisioner "/CN=kerasop:hostpath-provisioner" client
cert kube-router "/CN=kerasop:kube-router" client
# The aggregation layer's client (API server -> extension API servers such as metrics-server).
cert front-proxy-client "/CN=front-proxy-client" client "" front-proxy-ca

# kubeconfig FILE CERTNAME
kubeconfig() {
  local file="$1" who="$2" tmp="$1.tmp"
  cat >"$tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kerasop
  cluster:
    server: $API_URL
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $who
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$who.crt")
    client-key-data: $(base64 -w0 "$PKI/$who.key")
contexts:
- name: kerasop
  context:
    cluster: kerasop
    user: $who
current-context: kerasop
EOF
  chmod 600 "$tmp"
  mv "$tmp" "$file"
}
kubeconfig "$DIR/kubeconfig" admin
for who in kube-controller-manager kube-scheduler kube-proxy kubelet-client kube-router; do
  kubeconfig "$DIR/kubeconfigs/$who.kubeconfig" "$who"
done
step_end

# --- host network: the cluster's bridge, service route, forward filter ----------------------

step_begin network
ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge || fail "" "cannot create bridge $BRIDGE"
# A fixed MAC: a bridge whose address was not set takes the lowest MAC of its ports, so
# deleting that pod changed the gateway's MAC under every other pod, whose ARP entries then
# sent to a MAC that no longer existed: seconds of lost packets (timeouts, "No route to
# host") to Services and DNS. The CNI bridge plugin pins it the same way when it creates one.
ip link set "$BRIDGE" address "$BRIDGE_MAC"
[[ "$(ip -4 addr show dev "$BRIDGE")" == *" $NODE_IP/24 "* ]] || ip addr add "$NODE_IP/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
# Service IPs are virtual (kube-proxy DNATs them); route the range to the bridge so a packet to
# an unused service IP stays on this machine instead of following the default route out.
ip route replace "$SERVICE_CIDR" dev "$BRIDGE" src "$NODE_IP"
sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
iptables -w -N "$FW_CHAIN" 2>/dev/null || iptables -w -F "$FW_CHAIN"
iptables -w -A "$FW_CHAIN" -i "$BRIDGE" -o "$BRIDGE" -m comment --comment "kerasop: pod to pod" -j ACCEPT
iptables -w -A "$FW_CHAIN" -i "$BRIDGE" -m comment --comment "kerasop: pods reach no other network" -j REJECT --reject-with icmp-net-prohibited
iptables -w -A "$FW_CHAIN" -o "$BRIDGE" -m comment --comment "kerasop: no other network reaches pods" -j REJECT --reject-with icmp-net-prohibited
forward_chain_first

# Pods using dnsPolicy Default get this resolv.conf: no upstream server reachable from pods.
printf '# kerasop local cluster: no upstream DNS for pods (no traffic leaves the machine)\nnameserver 127.0.0.1\n' \
  | put "$DIR/config/resolv.conf"
put "$DIR/cni/net.d/10-kerasop.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "kerasop",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$NODE_POD_CIDR", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$DIR/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
step_end

# --- etcd ------------------------------------------------------------------------------------

step_begin etcd
start_proc etcd etcd --name kerasop --data-dir "$DIR/etcd" --logger zap --log-level warn \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "kerasop=http://127.0.0.1:$ETCD_PEER_PORT" --initial-cluster-state new \
  --snapshot-count 10000 --quota-backend-bytes 2147483648 || true
wait_until etcd "etcd /health" curl -fsS "http://127.0.0.1:$ETCD_PORT/health"
step_end

# --- control plane ---------------------------------------------------------------------------

step_begin kube-apiserver
start_proc kube-apiserver "$K8S_BIN/kube-apiserver" --v=1 \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
  --bind-address="$NODE_IP" --advertise-address="$NODE_IP" --secure-port="$API_PORT" \
  --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --client-ca-file="$PKI/ca.crt" \
  --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
  --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority="$PKI/ca.crt" --kubelet-preferred-address-types=InternalIP,Hostname \
  --service-account-issuer="https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
  --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- --enable-aggregator-routing=true \
  --proxy-client-cert-file="$PKI/front-proxy-client.crt" --proxy-client-key-file="$PKI/front-proxy-client.key" \
  --allow-privileged=true --profiling=false --cert-dir="$DIR/run/apiserver-certs" || true
wait_until kube-apiserver "kube-apiserver /readyz" curl -fsS --cacert "$PKI/ca.crt" \
  --cert "$PKI/admin.crt" --key "$PKI/admin.key" "$API_URL/readyz"
step_end

step_begin "controller-manager, scheduler"
start_proc kube-controller-manager "$K8S_BIN/kube-controller-manager" --v=1 \
  --kubeconfig="$DIR/kubeconfigs/kube-controller-manager.kubeconfig" \
  --authentication-kubeconfig="$DIR/kubeconfigs/kube-controller-manager.kubeconfig" \
  --authorization-kubeconfig="$DIR/kubeconfigs/kube-controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --cert-dir="$DIR/run/kcm-certs" \
  --leader-elect=false --controllers='*' --use-service-account-credentials=true \
  --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
  --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
  --allocate-node-cidrs=true --cluster-cidr="$CLUSTER_CIDR" --node-cidr-mask-size=24 \
  --service-cluster-ip-range="$SERVICE_CIDR" --configure-cloud-routes=false || true
put "$DIR/config/kube-scheduler.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: $DIR/kubeconfigs/kube-scheduler.kubeconfig
leaderElection:
  leaderElect: false
EOF
start_proc kube-scheduler "$K8S_BIN/kube-scheduler" --v=1 --config="$DIR/config/kube-scheduler.yaml" \
  --authentication-kubeconfig="$DIR/kubeconfigs/kube-scheduler.kubeconfig" \
  --authorization-kubeconfig="$DIR/kubeconfigs/kube-scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" --cert-dir="$DIR/run/scheduler-certs" || true
wait_until kube-controller-manager "kube-controller-manager /healthz" curl -fsSk "https://127.0.0.1:$KCM_PORT/healthz"
wait_until kube-scheduler "kube-scheduler /healthz" curl -fsSk "https://127.0.0.1:$SCHED_PORT/healthz"
step_end

# --- container runtime -----------------------------------------------------------------------

step_begin containerd
mkdir -p "$DIR/containerd/certs.d"
put "$DIR/config/containerd.toml" <<EOF
# containerd for the kerasop local cluster: its own root, state and socket; CRI only.
version = 2
root = "$DIR/containerd/root"
state = "$DIR/containerd/state"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.internal.v1.opt", "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "$CONTAINERD_SOCK"

[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  enable_selinux = false
  tolerate_missing_hugetlb_controller = true
  # Containers never get an oom_score_adj below containerd's own: kubelet asks -998 for
  # sandboxes, and lowering it needs CAP_SYS_RESOURCE, which this VM withholds even from root.
  restrict_oom_score_adj = true
  max_container_log_line_size = 16384

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        Root = "$DIR/containerd/runc"
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$DIR/cni/net.d"
    max_conf_num = 1

  [plugins."io.containerd.grpc.v1.cri".registry]
    # An empty hosts directory: no registry is configured (images are imported, never pulled).
    config_path = "$DIR/containerd/certs.d"
EOF
# Any pull attempt (an image that was never imported) goes to a closed loopback port and fails
# at once instead of reaching out to a registry.
start_proc containerd env HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY= \
  http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 no_proxy= \
  containerd --config "$DIR/config/containerd.toml" || true
wait_until containerd "containerd socket" ctr --address "$CONTAINERD_SOCK" version
# For debugging: crictl --config $DIR/config/crictl.yaml ps|pods|logs|inspect ...
put "$DIR/config/crictl.yaml" <<EOF
runtime-endpoint: unix://$CONTAINERD_SOCK
image-endpoint: unix://$CONTAINERD_SOCK
timeout: 30
EOF
step_end

step_begin "import images"
KERASOP_CLUSTER_DIR="$DIR" bash "$KERASOP_REPO/cluster/load-images.sh" "$NODE_IMAGES"/*.tar >&2 \
  || fail containerd "importing node images failed"
KERASOP_CLUSTER_DIR="$DIR" bash "$KERASOP_REPO/cluster/load-images.sh" >&2 \
  || fail containerd "importing ${CACHE}/images/*.tar failed"
step_end

# --- node ------------------------------------------------------------------------------------

step_begin kubelet
# kubelet's cgroup root: /kerasop in every v1 hierarchy (and the unified one), so all pod
# cgroups sit under one directory that down.sh removes.
while read -r d; do
  mkdir -p "$d/kerasop"
  if [[ -f "$d/cpuset.cpus" ]]; then
    [[ -n "$(cat "$d/kerasop/cpuset.cpus")" ]] || cat "$d/cpuset.cpus" >"$d/kerasop/cpuset.cpus"
    [[ -n "$(cat "$d/kerasop/cpuset.mems")" ]] || cat "$d/cpuset.mems" >"$d/kerasop/cpuset.mems"
  fi
done < <(cgroup_dirs)
if [[ ! -f "$DIR/run/sysctl.orig" ]]; then
  for s in "${KUBELET_SYSCTLS[@]}"; do echo "$s=$(sysctl -n "$s")"; done >"$DIR/run/sysctl.orig"
fi
put "$DIR/config/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $PKI/kubelet-server.crt
tlsPrivateKeyFile: $PKI/kubelet-server.key
rotateCertificates: false
serverTLSBootstrap: false
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: $PKI/ca.crt
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
cgroupRoot: /kerasop
cgroupsPerQOS: true
failSwapOn: false
failCgroupV1: false
resolvConf: $DIR/config/resolv.conf
clusterDNS: [$DNS_SERVICE_IP]
clusterDomain: $CLUSTER_DOMAIN
registerNode: true
maxPods: 110
serializeImagePulls: false
# Imported images must never be garbage-collected: nothing could pull them back.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 200Mi
  nodefs.available: 2%
  nodefs.inodesFree: 2%
  imagefs.available: 2%
evictionPressureTransitionPeriod: 30s
containerLogMaxSize: 10Mi
containerLogMaxFiles: 3
shutdownGracePeriod: 0s
EOF
start_proc kubelet "$K8S_BIN/kubelet" --v=2 --config="$DIR/config/kubelet.yaml" \
  --kubeconfig="$DIR/kubeconfigs/kubelet-client.kubeconfig" --root-dir="$DIR/kubelet" \
  --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" || true
wait_until kubelet "kubelet /healthz" curl -fsS "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz"
wait_until kubelet "node $NODE_NAME to register" kubectl get node "$NODE_NAME"
wait_until kubelet "node $NODE_NAME Ready" kubectl wait --for=condition=Ready "node/$NODE_NAME" --timeout=5s
step_end

step_begin kube-proxy
put "$DIR/config/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $DIR/kubeconfigs/kube-proxy.kubeconfig
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $CLUSTER_CIDR
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:$PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$PROXY_METRICS_PORT
# NodePorts only on the bridge address, never on the machine's real interfaces.
nodePortAddresses: ["$NODE_IP/32"]
iptables:
  localhostNodePorts: false
  syncPeriod: 30s
  minSyncPeriod: 1s
oomScoreAdj: 0
# Leave the host's conntrack sysctls alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
start_proc kube-proxy "$K8S_BIN/kube-proxy" --v=1 --config="$DIR/config/kube-proxy.yaml" || true
wait_until kube-proxy "kube-proxy /healthz" curl -fsS "http://127.0.0.1:$PROXY_HEALTHZ_PORT/healthz"
step_end

# --- add-ons: storage, DNS -------------------------------------------------------------------

step_begin "storage class + provisioner"
sed "s#__PROVISIONER__#$STORAGE_PROVISIONER#g" "$NODE_SRC/manifests/storage.yaml" | put "$DIR/config/storage.yaml"
kubectl apply -f "$DIR/config/storage.yaml" >>"$DIR/logs/addons.log" 2>&1 || { log_tail addons; fail "" "applying storage.yaml"; }
start_proc hostpath-provisioner "$NODE_BIN/kerasop-hostpath-provisioner" -server "$API_URL" \
  -ca "$PKI/ca.crt" -cert "$PKI/hostpath-provisioner.crt" -key "$PKI/hostpath-provisioner.key" \
  -name "$STORAGE_PROVISIONER" -root "$DIR/volumes" -node "$NODE_NAME" || true
sleep 1
is_running hostpath-provisioner || fail hostpath-provisioner "exited"
step_end

step_begin coredns
coredns_yaml="$(sed -e "s#__DOMAIN__#$CLUSTER_DOMAIN#g" -e "s#__DNS_IP__#$DNS_SERVICE_IP#g" \
    -e "s#__COREDNS_IMAGE__#$COREDNS_IMAGE#g" "$NODE_SRC/manifests/coredns.yaml")"
config_hash="$(sha256sum <<<"$coredns_yaml" | cut -c1-16)"
put "$DIR/config/coredns.yaml" <<<"${coredns_yaml//__CONFIG_HASH__/$config_hash}"
kubectl apply -f "$DIR/config/coredns.yaml" >>"$DIR/logs/addons.log" 2>&1 || { log_tail addons; fail "" "applying coredns.yaml"; }
if ! kubectl -n kube-system rollout status deploy/coredns --timeout="${TIMEOUT}s" >>"$DIR/logs/addons.log" 2>&1; then
  kubectl -n kube-system get pods -o wide >&2 || true
  kubectl -n kube-system describe pods -l k8s-app=kube-dns 2>&1 | tail -30 >&2 || true
  fail kubelet "CoreDNS did not become available"
fi
step_end

# Optional (KERASOP_METRICS_SERVER=1): metrics.k8s.io for HorizontalPodAutoscalers (docs/e2e.md).
if [[ "$METRICS_SERVER" == 1 ]]; then
  step_begin metrics-server
  ms_version="${KERASOP_METRICS_SERVER_VERSION:-v0.8.0}"
  put "$DIR/config/metrics-server.yaml" < <(sed -e "s#__METRICS_SERVER_IMAGE__#kerasop/metrics-server:${ms_version#v}#g" \
    "$NODE_SRC/manifests/metrics-server.yaml")
  if ! kubectl apply -f "$DIR/config/metrics-server.yaml" >>"$DIR/logs/addons.log" 2>&1 \
     || ! kubectl wait --for=condition=Available apiservice/v1beta1.metrics.k8s.io --timeout="${TIMEOUT}s" >>"$DIR/logs/addons.log" 2>&1; then
    kubectl -n kube-system logs deploy/metrics-server --tail=30 >&2 || true
    log "WARNING: metrics-server (apiservice v1beta1.metrics.k8s.io) is not available (logs/addons.log)"
  fi
  step_end
fi

# --- done ------------------------------------------------------------------------------------

forward_chain_first

# Optional (KERASOP_NETWORK_POLICY=1): NetworkPolicy enforcement (the bridge plugin has none).
# kube-router's firewall: iptables chains and ipsets per pod, in the FORWARD path that bridged
# pod traffic takes (br_netfilter). kube-network-policies, the nftables implementation, cannot
# run on kernels without the nftables queue expression (CONFIG_NFT_QUEUE), such as this VM's.
# Started after our FORWARD chain was put first: kube-router puts its own jump above it (and
# keeps it there), so that it sees pod-to-pod traffic before our chain accepts it; it then
# accepts the traffic the policies allow itself (cluster/node/README.md, isolation).
if [[ "$NETWORK_POLICY" == 1 ]]; then
  step_begin kube-router
  kubectl apply -f "$NODE_SRC/manifests/kube-router-rbac.yaml" >>"$DIR/logs/addons.log" 2>&1 \
    || { log_tail addons; fail "" "applying kube-router-rbac.yaml"; }
  start_proc kube-router "$NODE_BIN/kube-router" --run-firewall=true --run-router=false \
    --run-service-proxy=false --enable-cni=false --hostname-override="$NODE_NAME" \
    --kubeconfig="$DIR/kubeconfigs/kube-router.kubeconfig" --health-port=0 --metrics-port=0 --v=1 || true
  wait_until kube-router "kube-router's first policy sync" grep -q "sync iptables took" "$DIR/logs/kube-router.log"
  step_end
fi

{
  echo "cluster up in $((SECONDS - T_START))s (state: $DIR)"
  printf '  %s\n' "${TIMINGS[@]}"
  echo "  kubectl: $KUBECTL"
  echo "  export KUBECONFIG=$DIR/kubeconfig"
} >&2
echo "$DIR/kubeconfig"
