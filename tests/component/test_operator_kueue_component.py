"""Kueue support against a real kube-apiserver with Kueue's own Workload CRD.

No Kueue runs here: the test plays it, writing the Workload of the trainer Job (owned by the
Job, labelled with its uid, as Kueue's job reconciler makes it) and its status conditions as
Kueue's scheduler writes them, and (un)suspending the Job. The operator runs with its Kueue
support on (KERASOP_KUEUE=true) and must report each decision in the job's status and Events,
leave the Job's suspend to Kueue, and pause a job by hand through the Workload. The CRD comes
from the module cluster/addons/build-kueue.sh builds Kueue from (Go's module cache).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from opcomponent import (
    REPO,
    OperatorProcess,
    apply_yaml,
    chart_rbac,
    cr,
    events_for,
    install_identity,
    job_yaml,
    set_job_status,
    set_pod_state,
    start_trainer_pod,
    trainer_job,
)

from kerasop_operator import kube as k
from kerasop_operator.kube import Kube
from tests.support.kube import KubeCluster, kubectl_binary
from tests.support.waiting import wait_for

pytestmark = pytest.mark.component

T0 = "2026-11-26T10:00:00Z"
PENDING = (
    "couldn't assign flavors to pod set main: insufficient quota for cpu in flavor"
    " default-flavor, previously considered podsets requests (0) + current podset request"
    " (1) > maximum capacity (0)"
)
PREEMPTED = (
    "Preempted to accommodate a workload (UID: u2, JobUID: j2) due to prioritization in the"
    " ClusterQueue; preemptor path: /cluster-a; preemptee path: /cluster-a"
)


def build_kueue(target: str) -> Path:
    """cluster/addons/build-kueue.sh's output for ``target`` (crds, manifests)."""
    out = subprocess.run(
        ["bash", str(REPO / "cluster/addons/build-kueue.sh"), target],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "KUBECTL": str(kubectl_binary())},
    ).stdout
    return Path(out.splitlines()[-1])


def workload_crd() -> Path:
    return build_kueue("crds") / "kueue.x-k8s.io_workloads.yaml"


def cond(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(
        (c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), {}
    )


def kcond(type_: str, status: bool, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True" if status else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": T0,
    }


@pytest.fixture(scope="module")
def kueue_operator(cluster: KubeCluster, operator: OperatorProcess) -> Iterator[OperatorProcess]:
    """The session's operator, restarted with its Kueue support on; then back to normal."""
    operator.stop()
    operator.start(KERASOP_KUEUE="true")
    try:
        yield operator
    finally:
        operator.stop()
        operator.start()


def admitted_job(api: Kube, namespace: str, name: str) -> dict[str, Any]:
    return cr(api, k.TRAINING_JOB, namespace, name)


def test_queue_not_served_without_the_workload_api(cluster, api, kueue_operator, namespace):
    """Kueue support on, Kueue not installed: a clear condition, not a silently stuck job."""
    # The first test of the file: the module's with_workloads fixture installs the CRD later.
    assert not api.served(k.WORKLOAD, namespace), "the Workload CRD must not be installed yet"
    apply_yaml(cluster, job_yaml("orphan", namespace, queueName="team-a"))
    job = wait_for("trainer Job", lambda: trainer_job(api, namespace, "orphan"))
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    body = wait_for(
        "QueueNotServed",
        lambda: (
            (b := admitted_job(api, namespace, "orphan"))
            and cond(b, "Admitted").get("reason") == "QueueNotServed"
            and b
        ),
    )
    assert "workloads.kueue.x-k8s.io" in cond(body, "Admitted")["message"]
    assert body["status"]["phase"] == "Pending"
    # The Event is posted after the status is written: wait for it too.
    wait_for(
        "a QueueNotServed Event",
        lambda: any(
            e["reason"] == "QueueNotServed"
            for e in events_for(api, namespace, "orphan", "KerasTrainingJob")
        ),
    )


@pytest.fixture(scope="module")
def with_workloads(cluster: KubeCluster, kueue_operator: OperatorProcess) -> OperatorProcess:
    """Kueue's Workload CRD installed; the operator restarted to watch Workloads."""
    cluster.kubectl("apply", "--server-side", "-f", str(workload_crd()))
    cluster.wait_for_crds(("workloads.kueue.x-k8s.io",))
    kueue_operator.stop()
    kueue_operator.start(KERASOP_KUEUE="true")
    return kueue_operator


def make_workload(api: Kube, job: dict[str, Any]) -> dict[str, Any]:
    """The Workload Kueue's job reconciler makes for a queued Job."""
    meta = job["metadata"]
    return api.create(
        {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "Workload",
            "metadata": {
                "name": f"job-{meta['name']}-1a2b3",
                "namespace": meta["namespace"],
                "labels": {"kueue.x-k8s.io/job-uid": meta["uid"]},
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {
                "queueName": meta["labels"]["kueue.x-k8s.io/queue-name"],
                "podSets": [
                    {
                        "name": "main",
                        "count": job["spec"]["parallelism"],
                        "template": job["spec"]["template"],
                    }
                ],
            },
        }
    )


def set_workload_status(api: Kube, wl: dict[str, Any], status: dict[str, Any]) -> None:
    meta = wl["metadata"]
    api.merge_patch(
        k.WORKLOAD, meta["namespace"], meta["name"], {"status": status}, subresource="status"
    )


def suspend_job(api: Kube, job: dict[str, Any], suspend: bool) -> None:
    meta = job["metadata"]
    api.merge_patch(k.JOB, meta["namespace"], meta["name"], {"spec": {"suspend": suspend}})


ADMISSION = {
    "clusterQueue": "cluster-a",
    "podSetAssignments": [{"name": "main", "flavors": {"cpu": "default-flavor"}, "count": 1}],
}


def test_queued_admitted_preempted_and_resumed(cluster, api, with_workloads, namespace):
    apply_yaml(cluster, job_yaml("q", namespace, queueName="team-a", priorityClassName="low"))
    job = wait_for("trainer Job", lambda: trainer_job(api, namespace, "q"))
    assert job["spec"]["suspend"] is True, "created suspended: Kueue starts it"
    assert job["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "low"
    wl = make_workload(api, job)

    # queued: Kueue's reason in the status and an Event
    set_workload_status(
        api, wl, {"conditions": [kcond("QuotaReserved", False, "Pending", PENDING)]}
    )
    body = wait_for(
        "Queued with Kueue's reason",
        lambda: (
            (b := admitted_job(api, namespace, "q"))
            and cond(b, "Admitted").get("message") == f"LocalQueue team-a: {PENDING}"
            and b
        ),
    )
    assert body["status"]["phase"] == "Queued" and cond(body, "Admitted")["reason"] == "Queued"
    assert body["status"]["queue"]["localQueue"] == "team-a"
    wait_for(
        "Queued event",
        lambda: any(
            e["reason"] == "Queued" for e in events_for(api, namespace, "q", "KerasTrainingJob")
        ),
    )

    # admitted: Kueue unsuspends the Job; the operator leaves it so, pods run
    set_workload_status(
        api,
        wl,
        {
            "admission": ADMISSION,
            "conditions": [
                kcond(
                    "QuotaReserved",
                    True,
                    "QuotaReserved",
                    "Quota reserved in ClusterQueue cluster-a",
                ),
                kcond("Admitted", True, "Admitted", "The workload is admitted"),
            ],
        },
    )
    suspend_job(api, job, False)
    p = start_trainer_pod(api, job)
    set_pod_state(api, p, "Running", {"running": {}})
    set_job_status(api, job, {"active": 1, "ready": 1, "startTime": T0})
    body = wait_for(
        "Running",
        lambda: (b := admitted_job(api, namespace, "q"))["status"].get("phase") == "Running" and b,
    )
    assert cond(body, "Admitted")["status"] == "True"
    assert body["status"]["queue"]["flavors"] == {"cpu": "default-flavor"}
    # a spec change reconciles the Job: its suspend stays Kueue's
    apply_yaml(
        cluster,
        job_yaml(
            "q", namespace, queueName="team-a", priorityClassName="low", activeDeadlineSeconds=900
        ),
    )
    wait_for(
        "deadline patched",
        lambda: trainer_job(api, namespace, "q")["spec"].get("activeDeadlineSeconds") == 900,
    )
    assert trainer_job(api, namespace, "q")["spec"]["suspend"] is False

    # preempted: who preempted it, as a Warning Event
    set_workload_status(
        api,
        wl,
        {
            "conditions": [
                kcond("QuotaReserved", False, "Pending", PENDING),
                kcond("Admitted", False, "NoReservation", "The workload has no reservation"),
                kcond(
                    "Evicted",
                    True,
                    "Preempted",
                    "Preempted to accommodate a higher priority Workload",
                ),
                kcond("Preempted", True, "InClusterQueue", PREEMPTED),
            ],
        },
    )
    suspend_job(api, job, True)
    body = wait_for(
        "Preempted",
        lambda: (
            (b := admitted_job(api, namespace, "q"))["status"].get("phase") == "Preempted" and b
        ),
    )
    assert cond(body, "Admitted")["message"] == PREEMPTED
    assert body["status"]["queue"]["clusterQueue"] == "cluster-a", "the last admission is kept"
    wait_for(
        "Preempted event",
        lambda: any(
            e["reason"] == "Preempted" and e["type"] == "Warning"
            for e in events_for(api, namespace, "q", "KerasTrainingJob")
        ),
    )

    # readmitted: Running again, Resumed
    set_workload_status(
        api,
        wl,
        {
            "admission": ADMISSION,
            "conditions": [
                kcond(
                    "QuotaReserved",
                    True,
                    "QuotaReserved",
                    "Quota reserved in ClusterQueue cluster-a",
                ),
                kcond("Admitted", True, "Admitted", "The workload is admitted"),
                kcond("Evicted", False, "QuotaReserved", "Previously: preempted"),
                kcond("Preempted", False, "QuotaReserved", "Previously: " + PREEMPTED),
            ],
        },
    )
    suspend_job(api, job, False)
    wait_for(
        "Running again",
        lambda: admitted_job(api, namespace, "q")["status"].get("phase") == "Running",
    )
    # Admitted again (Preempted -> Running posts Resumed; via Pending, Running)
    reasons = {e["reason"] for e in events_for(api, namespace, "q", "KerasTrainingJob")}
    assert {"Queued", "Preempted"} <= reasons and reasons & {"Resumed", "Running"}
    wait_for(
        "Admitted twice",
        lambda: (
            sum(
                e.get("count") or 1
                for e in events_for(api, namespace, "q", "KerasTrainingJob")
                if e["reason"] == "Admitted"
            )
            >= 2
        ),
    )

    # paused by hand: through the Workload (Kueue then evicts it and suspends the Job)
    apply_yaml(
        cluster,
        job_yaml(
            "q",
            namespace,
            queueName="team-a",
            priorityClassName="low",
            activeDeadlineSeconds=900,
            suspend=True,
        ),
    )
    wait_for(
        "Workload deactivated",
        lambda: (
            api.get(k.WORKLOAD, namespace, wl["metadata"]["name"])["spec"].get("active") is False
        ),
    )
    assert trainer_job(api, namespace, "q")["spec"]["suspend"] is False, "Kueue suspends it"
    wait_for(
        "Suspended", lambda: admitted_job(api, namespace, "q")["status"].get("phase") == "Suspended"
    )
    apply_yaml(
        cluster,
        job_yaml(
            "q", namespace, queueName="team-a", priorityClassName="low", activeDeadlineSeconds=900
        ),
    )
    wait_for(
        "Workload reactivated",
        lambda: (
            api.get(k.WORKLOAD, namespace, wl["metadata"]["name"])["spec"].get("active") is True
        ),
    )


def test_queue_name_is_immutable(cluster, api, with_workloads, namespace):
    apply_yaml(cluster, job_yaml("fixed", namespace, queueName="team-a"))
    with pytest.raises(subprocess.CalledProcessError) as err:
        apply_yaml(cluster, job_yaml("fixed", namespace, queueName="team-b"))
    assert "queueName and priorityClassName are immutable" in err.value.stderr


def test_kueue_support_works_with_the_chart_rbac(cluster, api, with_workloads, namespace, tmp_path):
    """With kueue.enabled the chart grants exactly what the Kueue support uses (namespaced
    release: read Workloads, patch one to pause its job); without it, no Workload access."""
    sa, objects = chart_rbac(
        "kop-kueue", "--set", f"watchNamespaces[0]={namespace}", "--set", "kueue.enabled=true"
    )
    kubeconfig = install_identity(cluster, sa, objects, tmp_path / "operator.kubeconfig")
    plain_sa, plain = chart_rbac("kop-plain", "--set", f"watchNamespaces[0]={namespace}")
    plain_config = install_identity(cluster, plain_sa, plain, tmp_path / "plain.kubeconfig")
    denied = cluster.kubectl(
        "--kubeconfig", str(plain_config), "-n", namespace, "get", "workloads", check=False
    )
    assert denied.returncode != 0 and "forbidden" in denied.stderr, denied.stderr
    with_workloads.stop()
    try:
        with_workloads.start(
            KUBECONFIG=str(kubeconfig), KERASOP_KUEUE="true", KERASOP_WATCH_NAMESPACES=namespace
        )
        apply_yaml(cluster, job_yaml("rbac-q", namespace, queueName="team-a"))
        job = wait_for("trainer Job", lambda: trainer_job(api, namespace, "rbac-q"))
        wl = make_workload(api, job)
        set_workload_status(
            api, wl, {"conditions": [kcond("QuotaReserved", False, "Pending", PENDING)]}
        )
        wait_for(
            "Queued with Kueue's reason",
            lambda: (
                PENDING
                in cond(admitted_job(api, namespace, "rbac-q"), "Admitted").get("message", "")
            ),
        )
        apply_yaml(cluster, job_yaml("rbac-q", namespace, queueName="team-a", suspend=True))
        wait_for(
            "Workload deactivated",
            lambda: (
                api.get(k.WORKLOAD, namespace, wl["metadata"]["name"])["spec"].get("active")
                is False
            ),
        )
        log = with_workloads.logs(100000)
        assert "Forbidden" not in log and " 403" not in log, log[-4000:]
    finally:
        with_workloads.stop()
        cluster.kubectl(
            "delete", "-f", "-", "--ignore-not-found", "--wait=false",
            input=yaml.safe_dump_all(objects + plain),
        )  # fmt: skip
        with_workloads.start(KERASOP_KUEUE="true")


def test_kind_cluster_kueue_manifests_are_valid(cluster):
    """What cluster/kind/up.sh applies: rendered from the module's config/default with our
    image and internal certificates; the API server accepts every object (server-side dry
    run: nothing is installed, so no webhook of it intercepts the other tests' Jobs)."""
    manifests = build_kueue("manifests")
    docs = [d for d in yaml.safe_load_all(manifests.read_text()) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    manager = deployment["spec"]["template"]["spec"]["containers"][0]
    assert manager["image"].startswith("docker.io/kerasop/kueue:")
    assert manager["imagePullPolicy"] == "IfNotPresent"
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    assert "internalCertManagement:\n  enable: false" not in next(iter(config.values()))
    assert {d["kind"] for d in docs} >= {
        "CustomResourceDefinition",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "Secret",  # the webhook certificate Kueue's internal cert management fills
    }
    cluster.kubectl("create", "namespace", "kueue-system", check=False)
    applied = cluster.kubectl(
        "apply", "--server-side", "--dry-run=server", "-f", str(manifests), timeout=180
    )
    assert applied.stdout.count("(server dry run)") == len(docs), applied.stdout[-2000:]
