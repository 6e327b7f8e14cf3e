"""Scenario e2: what only a cluster of several nodes shows (kind: a control plane, two workers).

e2a ReadWriteOnce pinning, as docs/operator.md says: every pod using the dense job's claims
    (trainer, servers, the toolbox) runs on the one node that holds them, and no volume fails
    to attach there (no Multi-Attach events).
e2b A two-worker job on shared (ReadWriteMany) storage whose workers are required on different
    nodes: both train one model together, as in scenario e but across machines.
e2c Two replicas serving that model from the shared claim land on different nodes (the
    operator's topology spread), and ``kubectl drain`` of one replica's node under load loses
    no request; the drained replica comes back on a node that is left.
e2d A kubelet restart on one replica's node under load (it resets the readiness of every pod
    on that node, kubernetes#100277) loses no request: the other node's replica serves.
e2f A worker frozen (``docker pause`` of its kind container, a machine that stops answering):
    the node goes NotReady, its replica leaves the Service's ready endpoints, the other node's
    replica then serves every request; unpaused, the node and both replicas come back. The
    requests lost while the control plane detects the node (no client retry) are noted.
e2g The API server killed in the control-plane container under load: no request is lost (the
    data path never touches it), its static pod restarts, and the operator reconciles a change
    made afterwards (its watches came back).

Placement is read from the API (``spec.nodeName``), never inferred from timing. The "shared"
StorageClass is the kind cluster's stand-in for NFS/CephFS (cluster/kind/manifests/storage.yaml).
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest
from conftest import (
    DENSE,
    E2E,
    TOOLBOX,
    LoadGen,
    check_workers_trained_one_model,
    claim_node,
    new_job,
    no_request_lost,
    untainted,
    workers_apart,
)
from e2ekit import (
    LABEL_MODEL_SERVICE,
    LABEL_PART_OF,
    LABEL_TRAINING_JOB,
    condition,
    runtime_pod,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

SHARED_CLASS = "shared"
SHARED_DATA = "shared-data"
SPREAD = "dense-spread"
EPOCHS = 2
HOSTNAME = "kubernetes.io/hostname"


def _workers(e2e: E2E) -> list[str]:
    """The nodes ordinary pods may run on (Ready, schedulable, no NoSchedule taint)."""
    return [
        node["metadata"]["name"]
        for node in e2e.kubectl.list("nodes")
        if condition(node, "Ready").get("status") == "True"
        and not node["spec"].get("unschedulable")
        and untainted(node)
    ]


@pytest.fixture(scope="module")
def multinode(data: E2E) -> E2E:
    workers = _workers(data)
    assert len(data.kubectl.list("nodes")) >= 3 and len(workers) >= 2, (
        "scenario e2 needs a cluster with two schedulable workers (make e2e starts kind with"
        f" three nodes); schedulable: {workers}"
    )
    classes = {sc["metadata"]["name"] for sc in data.kubectl.list("storageclass")}
    assert SHARED_CLASS in classes, f"no {SHARED_CLASS!r} StorageClass (RWX) in {classes}"
    return data


def _node_of(pod: dict[str, Any]) -> str:
    return pod["spec"].get("nodeName") or ""


def _spread_replicas(e2e: E2E) -> dict[str, str]:
    """SPREAD's two replicas, Ready and on two nodes: pod name -> node name."""
    k, ns = e2e.kubectl, e2e.namespace
    e2e.wait_service_ready(SPREAD, replicas=2, timeout=600)
    selector = f"{LABEL_MODEL_SERVICE}={SPREAD}"
    placement = {p["metadata"]["name"]: _node_of(p) for p in k.list("pods", ns, selector)}
    if len(set(placement.values())) < 2:
        # After a drain both replicas share the node that was left; a restart of the
        # Deployment spreads them again (the operator's topology spread).
        deployment = f"deployment/{SPREAD}-server"
        k.run("rollout", "restart", deployment, "-n", ns)
        k.run("rollout", "status", deployment, "-n", ns, "--timeout=300s", timeout=360)
        e2e.wait_service_ready(SPREAD, replicas=2, timeout=300)
        placement = {p["metadata"]["name"]: _node_of(p) for p in k.list("pods", ns, selector)}
    assert len(set(placement.values())) == 2, f"both replicas on one node: {placement}"
    return placement


def _replica_away_from_toolbox(e2e: E2E) -> tuple[str, str]:
    """(pod, node) of the SPREAD replica not on the toolbox's node: faults go there, so the
    load's source (the toolbox) stays out of them."""
    placement = _spread_replicas(e2e)
    toolbox_node = _node_of(e2e.kubectl.get("pod", TOOLBOX, e2e.namespace))
    return next((p, n) for p, n in placement.items() if n != toolbox_node)


def _cluster_ip(e2e: E2E, service: str) -> str:
    """The Service's cluster IP: the load needs no DNS lookup while CoreDNS pods move."""
    return e2e.kubectl.get("service", service, e2e.namespace)["spec"]["clusterIP"]


def _node_ready(e2e: E2E, node: str) -> bool:
    return condition(e2e.kubectl.get("node", node), "Ready").get("status") == "True"


def _ready_endpoints(e2e: E2E, service: str) -> set[str]:
    """The pods the Service's EndpointSlices list as ready."""
    slices = e2e.kubectl.list(
        "endpointslices", e2e.namespace, f"kubernetes.io/service-name={service}"
    )
    return {
        ep["targetRef"]["name"]
        for sl in slices
        for ep in sl.get("endpoints") or []
        if (ep.get("conditions") or {}).get("ready") and ep.get("targetRef")
    }


def test_e2a_rwo_claims_pin_their_pods_to_one_node(
    multinode: E2E, dense_service: dict, toolbox: str, phase
) -> None:
    e2e = multinode
    k, ns = e2e.kubectl, e2e.namespace
    job = k.get("kerastrainingjob", DENSE, ns)
    claims = {"training-data", job["status"]["modelClaimName"]}
    users = [
        p
        for p in k.list("pods", ns)
        if any(
            (v.get("persistentVolumeClaim") or {}).get("claimName") in claims
            for v in p["spec"].get("volumes") or []
        )
    ]
    kinds = {
        "trainer": [p for p in users if LABEL_TRAINING_JOB in p["metadata"]["labels"]],
        "server": [p for p in users if LABEL_MODEL_SERVICE in p["metadata"]["labels"]],
        "toolbox": [p for p in users if p["metadata"]["name"] == TOOLBOX],
    }
    assert all(kinds.values()), {kind: len(pods) for kind, pods in kinds.items()}
    placement = {p["metadata"]["name"]: _node_of(p) for p in users}
    assert len(set(placement.values())) == 1, (
        f"RWO claims {claims} used on several nodes: {placement}"
    )
    held_on = {claim: claim_node(e2e, claim) for claim in claims}
    assert set(held_on.values()) == set(placement.values()), (held_on, placement)
    # A FailedMount the kubelet retries because the node authorizer's graph did not yet link
    # the new pod to its claim ("no relationship found between node ...") is not a failure
    # to attach; Multi-Attach and FailedAttachVolume are.
    attach = [
        e
        for e in k.list("events", ns)
        if e.get("reason") == "FailedAttachVolume"
        or "Multi-Attach" in (e.get("message") or "")
        or (
            e.get("reason") == "FailedMount"
            and "no relationship found" not in (e.get("message") or "")
        )
    ]
    assert not attach, [e.get("message") for e in attach]
    phase.note(
        f"{len(users)} pods on {next(iter(placement.values()))}, of {len(_workers(e2e))} workers"
    )
    phase("RWO pinning checked")


@pytest.fixture(scope="module")
def shared_data(multinode: E2E) -> E2E:
    """PVC ``shared-data`` (ReadWriteMany, class shared) with the sample dense CSV."""
    e2e = multinode
    e2e.kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": SHARED_DATA, "labels": {LABEL_PART_OF: "kerasop-e2e"}},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": SHARED_CLASS,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
        e2e.namespace,
    )
    log = e2e.run_pod(
        runtime_pod(
            "e2e-shared-data-gen",
            e2e.runtime_image,
            [
                "sh",
                "-c",
                "kerasop sample-data dense --data-dir /data && wc -l /data/dense/train.csv",
            ],
            claims={"/data": (SHARED_DATA, False)},
        ),
        timeout=600,
    )
    assert "dense/train.csv" in log, log
    return e2e


def test_e2b_two_workers_on_two_nodes_train_one_model(shared_data: E2E, phase) -> None:
    e2e = shared_data
    k, ns = e2e.kubectl, e2e.namespace
    job = new_job(SPREAD, epochs=EPOCHS, workers=2)
    spec = job["spec"]
    spec["data"]["volume"] = {"claimName": SHARED_DATA}
    spec["output"]["storage"] = {
        "size": "1Gi",
        "storageClassName": SHARED_CLASS,
        "accessMode": "ReadWriteMany",
    }
    spec["scheduling"] = workers_apart(SPREAD)
    k.apply(job, ns)
    done = e2e.wait_job_phase(SPREAD, "Succeeded", timeout=1500)
    phase("2-worker job on shared storage Succeeded")
    assert done["status"].get("modelVersion") == 1, json.dumps(done["status"], indent=1)
    pods = k.list("pods", ns, f"{LABEL_TRAINING_JOB}={SPREAD}")
    nodes = {p["metadata"]["name"]: _node_of(p) for p in pods}
    assert len(set(nodes.values())) == 2, f"the workers shared a node: {nodes}"
    shards, total = check_workers_trained_one_model(e2e, SPREAD, EPOCHS)
    phase.note(f"workers on {sorted(set(nodes.values()))}, shards {shards} of {total} rows")
    phase("both workers, two nodes, one model")


def test_e2c_replicas_spread_and_a_drain_loses_no_request(
    shared_data: E2E, toolbox: str, phase
) -> None:
    e2e = shared_data
    k, ns = e2e.kubectl, e2e.namespace
    assert k.get("kerastrainingjob", SPREAD, ns), "scenario e2c serves the model of e2b"
    k.apply(
        {
            "apiVersion": "kerasop.io/v1alpha1",
            "kind": "KerasModelService",
            "metadata": {"name": SPREAD},
            "spec": {"model": {"trainingJob": SPREAD}, "replicas": 2},
        },
        ns,
    )
    e2e.wait_service_ready(SPREAD, replicas=2, timeout=600)
    selector = f"{LABEL_MODEL_SERVICE}={SPREAD}"
    servers = k.list("pods", ns, selector)
    placement = {p["metadata"]["name"]: _node_of(p) for p in servers}
    assert len(set(placement.values())) == 2, f"both replicas on one node: {placement}"
    phase.note(f"replicas on {sorted(set(placement.values()))}")
    phase("2 replicas on 2 nodes")

    # Drain the replica's node that does not hold the toolbox (the load's source and the
    # RWO data claim live there).
    _, victim_node = _replica_away_from_toolbox(e2e)
    try:
        with LoadGen(e2e, _cluster_ip(e2e, SPREAD), SPREAD, tag="drain") as load:
            time.sleep(8)  # traffic on both replicas before the drain
            k.run(
                "drain",
                victim_node,
                "--ignore-daemonsets",
                "--delete-emptydir-data",
                "--timeout=300s",
                timeout=360,
            )
            phase("node drained under load")

            def both_ready_elsewhere():
                pods = k.list("pods", ns, selector)
                ready = [p for p in pods if condition(p, "Ready").get("status") == "True"]
                return len(ready) >= 2 and all(_node_of(p) != victim_node for p in ready)

            wait_for(
                "two Ready replicas off the drained node",
                both_ready_elsewhere,
                interval=2,
                timeout=300,
                diagnose=e2e.service_diagnose(SPREAD),
            )
            result = load.stop()
    finally:
        k.run("uncordon", victim_node, check=False)
    no_request_lost(result, phase, f"drain of {victim_node}")


def test_e2d_kubelet_restart_under_load_loses_no_request(
    shared_data: E2E, toolbox: str, phase
) -> None:
    e2e = shared_data
    k, ns = e2e.kubectl, e2e.namespace
    selector = f"{LABEL_MODEL_SERVICE}={SPREAD}"
    _, node = _replica_away_from_toolbox(e2e)
    restarts = 0
    with LoadGen(e2e, _cluster_ip(e2e, SPREAD), SPREAD, tag="kubelet") as load:
        time.sleep(8)
        # kind's node is a container of the same name: its kubelet is a systemd unit in it.
        for _ in range(2):
            subprocess.run(
                ["docker", "exec", node, "systemctl", "restart", "kubelet"], check=True, timeout=60
            )
            restarts += 1
            time.sleep(15)
        wait_for(
            "both replicas Ready again",
            lambda: (
                len(
                    [
                        p
                        for p in k.list("pods", ns, selector)
                        if condition(p, "Ready").get("status") == "True"
                    ]
                )
                >= 2
            ),
            interval=2,
            timeout=300,
            diagnose=e2e.service_diagnose(SPREAD),
        )
        result = load.stop()
    no_request_lost(result, phase, f"{restarts} kubelet restarts on {node}")


def test_e2f_worker_paused_goes_notready_and_the_other_node_serves(
    shared_data: E2E, toolbox: str, phase
) -> None:
    e2e = shared_data
    victim_pod, victim = _replica_away_from_toolbox(e2e)
    cluster_ip = _cluster_ip(e2e, SPREAD)
    # docker pause freezes the kind node and every container in it: the node stops answering
    # as a crashed machine would, without a clean shutdown.
    subprocess.run(["docker", "pause", victim], check=True, timeout=60)
    try:
        with LoadGen(e2e, cluster_ip, SPREAD, tag="pause") as load:
            wait_for(
                f"{victim} NotReady",
                lambda: not _node_ready(e2e, victim),
                interval=2,
                timeout=240,
                diagnose=e2e.service_diagnose(SPREAD),
            )
            phase(f"{victim} NotReady (paused)")
            wait_for(
                f"{victim_pod} out of the Service's ready endpoints",
                lambda: victim_pod not in _ready_endpoints(e2e, SPREAD),
                interval=2,
                timeout=120,
                diagnose=e2e.service_diagnose(SPREAD),
            )
            detection = load.stop()
        phase.note(
            f"until the node was NotReady and its replica left the endpoints:"
            f" {detection['failed']} of {detection['total']} requests failed (no client retry)"
        )
        assert _ready_endpoints(e2e, SPREAD), "no ready endpoint left on the other node"
        with LoadGen(e2e, cluster_ip, SPREAD, tag="paused") as load:
            time.sleep(20)
            after = load.stop()
        no_request_lost(after, phase, f"{victim} paused, its replica out", minimum=50)
    finally:
        subprocess.run(["docker", "unpause", victim], check=False, timeout=60)
    wait_for(f"{victim} Ready again", lambda: _node_ready(e2e, victim), interval=2, timeout=300)
    e2e.wait_service_ready(SPREAD, replicas=2, timeout=300)
    phase(f"{victim} unpaused: Ready, two replicas serve again")


def test_e2g_api_server_restart_under_load_loses_no_request(
    shared_data: E2E, toolbox: str, phase
) -> None:
    e2e = shared_data
    k, ns = e2e.kubectl, e2e.namespace
    e2e.wait_service_ready(SPREAD, replicas=2, timeout=600)
    plane = next(
        n["metadata"]["name"]
        for n in k.list("nodes")
        if "node-role.kubernetes.io/control-plane" in n["metadata"].get("labels", {})
    )
    mirror = f"kube-apiserver-{plane}"

    def restarts() -> int:
        pod = k.get("pod", mirror, "kube-system") or {}
        return sum(
            c.get("restartCount", 0) for c in pod.get("status", {}).get("containerStatuses", [])
        )

    before = restarts()
    with LoadGen(e2e, _cluster_ip(e2e, SPREAD), SPREAD, tag="apiserver") as load:
        time.sleep(5)
        # Kill the API server in the control-plane container (host PIDs from docker top);
        # the kubelet there restarts its static pod.
        top = subprocess.run(
            ["docker", "top", plane, "-eo", "pid,comm"],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.split()
        pids = [
            int(pid)
            for pid, comm in zip(top[::2], top[1::2], strict=True)
            if comm == "kube-apiserver"
        ]
        assert pids, f"no kube-apiserver process in {plane}: {top}"
        subprocess.run(["kill", "-9", *map(str, pids)], check=True, timeout=30)
        wait_for(
            "the API server down",
            lambda: not k.run("get", "--raw", "/readyz", check=False, timeout=5).ok,
            interval=0.5,
            timeout=30,
        )
        phase("API server killed")
        wait_for(
            "the API server ready again",
            lambda: k.run("get", "--raw", "/readyz", check=False, timeout=5).ok,
            interval=1,
            timeout=300,
        )
        phase("API server back")
        time.sleep(5)
        result = load.stop()
    no_request_lost(result, phase, "API server restart", minimum=50)
    # The kubelet posts the container's restart with its next status sync.
    wait_for(f"{mirror}'s restart in its status", lambda: restarts() > before, timeout=90)
    # The operator's watches came back: a change made after the restart is reconciled.
    k.run(
        "patch",
        "kerasmodelservice",
        SPREAD,
        "-n",
        ns,
        "--type=merge",
        "-p",
        '{"spec":{"replicas":1}}',
    )
    e2e.wait_service_ready(SPREAD, replicas=1, timeout=300)
    phase("the operator reconciles after the restart")
    k.delete("kerasmodelservice", SPREAD, ns)
