#!/usr/bin/env bash
# shellcheck disable=SC2317  # helpers are called through check/retry
# Check that the local cluster from cluster/up.sh really works, end to end, using only images
# built here (kerasop/probe:local, a static Go tool). Each check prints PASS/FAIL with evidence;
# exits non-zero if any failed. Cleans up its namespace.
#
# Usage: cluster/smoke-test.sh        (KUBECONFIG defaults to the cluster's admin kubeconfig)
set -uo pipefail

# shellcheck source=node/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/node/lib.sh"
export KUBECONFIG="${KUBECONFIG:-$DIR/kubeconfig}"
KUBECTL="${KUBECTL:-$CACHE/tools/bin/kubectl}"
NS=kerasop-smoke
k() { "$KUBECTL" "$@"; }
kn() { "$KUBECTL" -n "$NS" "$@"; }
failed=0
T0=$SECONDS

check() { # check NAME CMD...: run CMD, print its output, PASS/FAIL
  local name="$1"; shift
  local out rc t0=$SECONDS
  out="$("$@" 2>&1)"; rc=$?
  if ((rc == 0)); then
    printf 'PASS  %-52s (%ss)\n' "$name" $((SECONDS - t0))
  else
    printf 'FAIL  %-52s (%ss)\n' "$name" $((SECONDS - t0)); failed=1
  fi
  [[ -n "$out" ]] && head -20 <<<"$out" | sed 's/^/      | /'
  return $rc
}
expect_fail() { ! "$@"; }
# retry N CMD...: up to N tries a second apart (Service endpoints, kube-proxy rules and DNS
# answers follow object changes within seconds, not at once).
retry() { local n="$1" i; shift; for ((i = 1; i <= n; i++)); do "$@" && return 0; ((i < n)) && sleep 1; done; return 1; }

k delete namespace "$NS" --ignore-not-found --wait=true >/dev/null 2>&1
k create namespace "$NS" >/dev/null

check "node Ready" k wait --for=condition=Ready "node/$NODE_NAME" --timeout=60s
check "CoreDNS available" k -n kube-system wait --for=condition=Available deploy/coredns --timeout=60s

kn apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      securityContext: {runAsUser: 1000, runAsNonRoot: true}
      containers:
      - name: web
        image: $PROBE_IMAGE
        imagePullPolicy: IfNotPresent
        args: [serve, ":8080"]
        ports: [{containerPort: 8080}]
        readinessProbe: {httpGet: {path: /ready, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  securityContext: {runAsUser: 1000, runAsGroup: 1000, runAsNonRoot: true}
  containers:
  - name: client
    image: $PROBE_IMAGE
    imagePullPolicy: IfNotPresent
    args: [sleep]
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: data}
EOF

check "deployment web (2 pods) available" kn rollout status deploy/web --timeout=120s
check "pod client Ready (PVC bound, volume mounted)" kn wait --for=condition=Ready pod/client --timeout=120s
check "PVC bound by default StorageClass" bash -c "
  set -e; kn() { \"$KUBECTL\" -n $NS \"\$@\"; }
  kn get pvc data -o jsonpath='{.status.phase} {.spec.storageClassName} {.spec.volumeName}{\"\n\"}'
  test \"\$(kn get pvc data -o jsonpath='{.status.phase}')\" = Bound"
SVC_IP="$(kn get svc web -o jsonpath='{.spec.clusterIP}')"
check "kubectl logs" bash -c "\"$KUBECTL\" -n $NS logs deploy/web | grep 'serving on'"
check "kubectl exec (pod -> own hostname)" kn exec client -- /probe lookup localhost
check "DNS: kubernetes.default.svc.cluster.local = $API_SERVICE_IP" \
  bash -c "out=\$(\"$KUBECTL\" -n $NS exec client -- /probe lookup kubernetes.default.svc.$CLUSTER_DOMAIN) && echo \"\$out\" && [ \"\$out\" = $API_SERVICE_IP ]"
check "DNS: short name 'web' (search path) = $SVC_IP" retry 10 \
  bash -c "out=\$(\"$KUBECTL\" -n $NS exec client -- /probe lookup web) && echo \"\$out\" && [ \"\$out\" = $SVC_IP ]"
check "Service ClusterIP from a pod (http://web/)" retry 10 kn exec client -- /probe get http://web/hello
check "Service ClusterIP from the node (http://$SVC_IP/)" retry 10 curl -fsS --max-time 5 "http://$SVC_IP/node"
check "API server via kubernetes Service from a pod" kn exec client -- /probe tcp "$API_SERVICE_IP:443"
check "PVC writable by uid 1000; file on the node" bash -c "
  set -e; \"$KUBECTL\" -n $NS exec client -- /probe write /data/model/1/hello.txt from-pod
  \"$KUBECTL\" -n $NS exec client -- /probe cat /data/model/1/hello.txt
  pv=\$(\"$KUBECTL\" -n $NS get pvc data -o jsonpath='{.spec.volumeName}')
  path=\$(\"$KUBECTL\" get pv \$pv -o jsonpath='{.spec.hostPath.path}')
  echo \"node: \$path/model/1/hello.txt: \$(cat \$path/model/1/hello.txt)\""
check "no upstream DNS: external name fails fast" expect_fail kn exec client -- /probe lookup pypi.org
check "no egress: pod cannot reach 203.0.113.1:80" expect_fail kn exec client -- /probe tcp 203.0.113.1:80
check "garbage collection: deleting the Deployment removes its pods" bash -c "
  set -e; \"$KUBECTL\" -n $NS delete deploy web --wait=true >/dev/null
  for i in \$(seq 60); do
    n=\$(\"$KUBECTL\" -n $NS get pods -l app=web --no-headers 2>/dev/null | wc -l)
    rs=\$(\"$KUBECTL\" -n $NS get rs --no-headers 2>/dev/null | wc -l)
    [ \$n = 0 ] && [ \$rs = 0 ] && { echo \"pods=0 replicasets=0 after \${i}s\"; exit 0; }; sleep 1
  done; echo \"pods=\$n rs=\$rs\"; exit 1"
PV="$(kn get pvc data -o jsonpath='{.spec.volumeName}' 2>/dev/null)"
PV_PATH="$(k get pv "$PV" -o jsonpath='{.spec.hostPath.path}' 2>/dev/null)"
check "volume reclaimed: PVC delete removes PV and directory" bash -c "
  set -e; \"$KUBECTL\" -n $NS delete pod client --wait=true >/dev/null; \"$KUBECTL\" -n $NS delete pvc data --wait=true >/dev/null
  for i in \$(seq 60); do
    if ! \"$KUBECTL\" get pv $PV >/dev/null 2>&1 && [ ! -e '$PV_PATH' ]; then echo \"$PV and $PV_PATH gone after \${i}s\"; exit 0; fi; sleep 1
  done; exit 1"

# Every socket of the cluster's own processes is on loopback or on the bridge address.
cluster_pids() {
  local f; for f in "$DIR"/run/*.pid; do cat "$f"; done
  pgrep -f "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" || true
}
check "listeners only on 127.0.0.1 / $NODE_IP" bash -c "
  pids='$(cluster_pids | tr '\n' '|' | sed 's/|$//')'
  ss -ltnupH -p | grep -E \"pid=(\$pids),\" | awk '{print \$1, \$5}' | sort -u > /tmp/kerasop-listeners.\$\$
  cat /tmp/kerasop-listeners.\$\$
  bad=\$(awk '{print \$2}' /tmp/kerasop-listeners.\$\$ | grep -vE '^(127\.0\.0\.1|$NODE_IP|\[::1\]):[0-9]+\$'); rm -f /tmp/kerasop-listeners.\$\$
  [ -z \"\$bad\" ] || { echo \"unexpected: \$bad\"; exit 1; }"
check "connections only to 127.0.0.1 / $NODE_POD_CIDR" bash -c "
  pids='$(cluster_pids | tr '\n' '|' | sed 's/|$//')'
  peers=\$(ss -tunpH state established | grep -E \"pid=(\$pids),\" | awk '{print \$5}' | sed -E 's/:[0-9]+\$//' | sort | uniq -c)
  echo \"\$peers\"
  ! echo \"\$peers\" | awk '{print \$2}' | grep -vqE '^(127\.0\.0\.1|${NODE_POD_CIDR%.*}\.[0-9]+)\$'"

k delete namespace "$NS" --wait=false >/dev/null 2>&1
echo "smoke test finished in $((SECONDS - T0))s: $([[ $failed == 0 ]] && echo ALL PASSED || echo FAILURES)"
exit "$failed"
