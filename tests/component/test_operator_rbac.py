"""The operator runs with exactly the permissions the Helm chart grants it.

The chart's ClusterRole is rendered with ``helm template``, bound to a service
account, and the operator process authenticates with that account's token
(TokenRequest), then goes through a train -> serve flow. Any missing verb shows
up as a 403 in the operator's log or as a flow that never converges. Each mode
has its own release (service account, roles) and removes it afterwards, so the
namespaced operator cannot borrow the cluster-wide grant; a write outside its
namespace must be denied.
"""

from __future__ import annotations

import pytest
import yaml
from opcomponent import (
    apply_yaml,
    chart_rbac,
    complete_job,
    cr,
    events_for,
    install_identity,
    job_yaml,
    service_yaml,
    set_job_status,
    set_pod_state,
    start_trainer_pod,
    trainer_job,
    wait_for,
)

from kerasop_operator import kube as k

pytestmark = pytest.mark.component


def can_write_jobs(cluster, kubeconfig, namespace: str) -> bool:
    """Whether the identity of ``kubeconfig`` may create a Job in ``namespace`` (a real,
    authorized request: server-side dry run)."""
    result = cluster.kubectl(
        "--kubeconfig", str(kubeconfig), "-n", namespace, "create", "job", "rbac-probe",
        "--image=probe", "--dry-run=server", check=False,
    )  # fmt: skip
    if result.returncode != 0:
        assert "forbidden" in result.stderr, result.stderr
    return result.returncode == 0


@pytest.mark.parametrize("mode", ["cluster-wide", "namespaced"])
def test_operator_works_with_the_chart_rbac(cluster, api, operator, namespace, tmp_path, mode):
    elsewhere = f"{namespace}-elsewhere"
    api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": elsewhere}})
    if mode == "namespaced":
        sa, objects = chart_rbac("kop-ns", "--set", f"watchNamespaces[0]={namespace}")
        extra_env = {"KERASOP_WATCH_NAMESPACES": namespace}
        assert {o["kind"] for o in objects} == {"ServiceAccount", "Role", "RoleBinding"}
    else:
        sa, objects = chart_rbac("kop-cw")
        extra_env = {}
        assert {o["kind"] for o in objects} == {
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
        }
    kubeconfig = install_identity(cluster, sa, objects, tmp_path / "operator.kubeconfig")
    assert can_write_jobs(cluster, kubeconfig, namespace)
    assert can_write_jobs(cluster, kubeconfig, elsewhere) == (mode == "cluster-wide")

    operator.stop()
    try:
        operator.start(KUBECONFIG=str(kubeconfig), **extra_env)
        apply_yaml(cluster, job_yaml("rbac", namespace, workers=2))
        apply_yaml(
            cluster, service_yaml("rbac", namespace, model={"trainingJob": "rbac"}, replicas=2)
        )
        job = wait_for("trainer Job", lambda: trainer_job(api, namespace, "rbac"))
        wait_for("workers Service", lambda: api.get(k.SERVICE, namespace, "rbac-workers"))
        pod = start_trainer_pod(api, job, index=0)
        set_pod_state(api, pod, "Running", {"running": {}})
        set_job_status(api, job, {"active": 2, "ready": 1, "startTime": "2026-11-26T10:00:00Z"})
        wait_for(
            "Running",
            lambda: cr(api, k.TRAINING_JOB, namespace, "rbac")["status"].get("phase") == "Running",
        )
        done = (
            '{"kerasop":"done","modelName":"rbac","modelVersion":1,'
            '"modelPath":"/models/rbac/1","metrics":{"loss":0.1}}'
        )
        set_pod_state(api, pod, "Succeeded", {"terminated": {"exitCode": 0, "message": done}})
        complete_job(api, job, "2026-11-26T10:03:00Z", succeeded=2)
        dep = wait_for("Deployment", lambda: api.get(k.DEPLOYMENT, namespace, "rbac-server"))
        assert "--version" in dep["spec"]["template"]["spec"]["containers"][0]["args"]
        wait_for("PDB", lambda: api.get(k.PDB, namespace, "rbac"))

        def reasons() -> set[str]:
            return {e["reason"] for e in events_for(api, namespace, "rbac", "KerasTrainingJob")}

        # kopf posts Events from a background queue: on a loaded machine (the lowest-versions
        # venv runs this tier a second time) they trail the objects by tens of seconds
        wait_for(
            "events posted with the operator's own identity",
            lambda: {"Created", "Running", "Succeeded"} <= reasons(),
            timeout=90,
            diagnose=lambda: f"reasons so far: {sorted(reasons())}\n{operator.logs(60)}",
        )
        wait_for(
            "finalizer removed",
            lambda: not cr(api, k.TRAINING_JOB, namespace, "rbac")["metadata"].get("finalizers"),
        )
        log = operator.logs(100000)
        assert "Forbidden" not in log and " 403" not in log, log[-4000:]
    finally:
        operator.stop()
        # this mode's account and grants go, so the next mode starts from nothing
        cluster.kubectl(
            "delete", "-f", "-", "--ignore-not-found", "--wait=false",
            input=yaml.safe_dump_all(objects),
        )  # fmt: skip
        operator.start()
