"""Scenario h: deleting and uninstalling leaves the models and nothing else.

Deleting every KerasTrainingJob and KerasModelService removes their children (trainer
Jobs and pods, Deployments, Services, PDBs) but not the model volumes: the versions are
still there. ``helm uninstall`` then leaves nothing of the operator behind but the CRDs
(Helm never deletes them) and the kept volumes. Runs last in a whole-suite run (file
order: it uninstalls the operator); alone, it uses the dense job and service it asks for.
"""

from __future__ import annotations

import pytest
from conftest import DENSE, E2E, OPERATOR_NAMESPACE, TOOLBOX
from e2ekit import CRDS, LABEL_PART_OF, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

CHILD_KINDS = (
    "deployments,replicasets,services,jobs.batch,pods,poddisruptionbudgets,horizontalpodautoscalers"
)
KEPT_KINDS = {"PersistentVolumeClaim", "Event"}


def _operator_children(e2e: E2E) -> list[str]:
    """Objects in the test namespace made by the operator for a job or a service."""
    out = []
    for selector in ("kerasop.io/training-job", "kerasop.io/model-service"):
        items = e2e.kubectl.list(CHILD_KINDS, e2e.namespace, selector)
        out += [f"{i['kind']}/{i['metadata']['name']}" for i in items]
    return sorted(set(out))


def _store_listing(e2e: E2E) -> list[str]:
    """Every file of every version of the dense model on its volume (relative paths)."""
    out = e2e.kubectl.exec(
        TOOLBOX,
        e2e.namespace,
        "sh",
        "-c",
        f"cd /models && find {DENSE} -path '*/.checkpoints' -prune -o -type f -print | sort",
    ).stdout
    return out.split()


def _leftovers(e2e: E2E) -> list[str]:
    """What the release or the operator left: everything in kerasop-system and the test
    namespace not made by the tests themselves, and cluster-wide RBAC of the chart."""
    k = e2e.kubectl
    kinds = (
        "deployments,replicasets,statefulsets,daemonsets,pods,services,serviceaccounts,"
        "configmaps,secrets,roles,rolebindings,jobs.batch,cronjobs,poddisruptionbudgets,"
        "horizontalpodautoscalers,networkpolicies,persistentvolumeclaims,leases"
    )
    found = []
    for ns in (OPERATOR_NAMESPACE, e2e.namespace):
        for item in k.list(kinds, ns):
            meta = item["metadata"]
            labels = meta.get("labels") or {}
            name = meta["name"]
            if item["kind"] in KEPT_KINDS:
                continue
            if labels.get(LABEL_PART_OF) == "kerasop-e2e" or name.startswith("e2e-"):
                continue  # the tests' own toolbox, scripts, data
            if item["kind"] == "ServiceAccount" and name == "default":
                continue
            if item["kind"] == "ConfigMap" and name == "kube-root-ca.crt":
                continue
            found.append(f"{ns}: {item['kind']}/{name}")
    for item in k.list("clusterroles,clusterrolebindings"):
        meta = item["metadata"]
        labels = meta.get("labels") or {}
        if (
            labels.get("app.kubernetes.io/instance") == e2e.release
            or labels.get(LABEL_PART_OF) == "keras-operator"
            or "keras-operator" in meta["name"]
        ):
            found.append(f"cluster: {item['kind']}/{meta['name']}")
    for item in k.list("mutatingwebhookconfigurations,validatingwebhookconfigurations"):
        if "kerasop" in item["metadata"]["name"]:
            found.append(f"cluster: {item['kind']}/{item['metadata']['name']}")
    return found


def test_h_delete_resources_then_uninstall_leaves_models_and_crds(
    data: E2E, dense_service: dict, toolbox: str, phase
) -> None:
    e2e = data
    k, ns = e2e.kubectl, e2e.namespace
    # A claim no pod ever used (a queued job that never ran) stays Pending: it must not change.
    claims_before = {p["metadata"]["name"]: p["status"]["phase"] for p in k.list("pvc", ns)}
    assert f"{DENSE}-models" in claims_before, claims_before
    assert _operator_children(e2e), "the dense job and service made no children"
    store_before = _store_listing(e2e)
    assert f"{DENSE}/1/model.keras" in store_before, store_before

    k.run(
        "delete",
        "kerasmodelservices,kerastrainingjobs",
        "--all",
        "-n",
        ns,
        "--wait=true",
        "--timeout=180s",
        timeout=240,
    )
    wait_for(
        "the operator's children to be garbage-collected",
        lambda: not _operator_children(e2e),
        interval=2,
        timeout=240,
        diagnose=lambda: "left: " + ", ".join(_operator_children(e2e)) + "\n" + e2e.diag.report(),
    )
    phase("jobs and services deleted, children gone")
    claims_after = {p["metadata"]["name"]: p["status"]["phase"] for p in k.list("pvc", ns)}
    assert claims_after == claims_before, f"volumes changed: {claims_before} -> {claims_after}"
    assert claims_after[f"{DENSE}-models"] == "Bound", claims_after
    store_after = _store_listing(e2e)
    assert store_after == store_before, (
        f"the model volume changed: before {store_before}, after {store_after}"
    )
    versions = sorted({f.split("/")[1] for f in store_after})
    phase.note(
        f"kept claims {sorted(claims_after)}; {DENSE} versions {versions} intact"
        f" ({len(store_after)} files)"
    )

    e2e.helm.run(
        "uninstall", e2e.release, "-n", OPERATOR_NAMESPACE, "--wait", "--timeout", "3m", timeout=240
    )
    e2e.uninstalled = True
    wait_for("the operator pods to go", lambda: not e2e.operator_pods(), interval=2, timeout=180)
    phase("helm uninstall")
    left = wait_for(
        "nothing but CRDs and volumes to remain",
        lambda: not _leftovers(e2e),
        timeout=30,
        interval=5,
        diagnose=lambda: "leftovers:\n  " + "\n  ".join(_leftovers(e2e)),
    )
    assert left
    for crd in CRDS:
        assert k.get("crd", crd) is not None, f"CRD {crd} must survive helm uninstall"
    assert {p["metadata"]["name"] for p in k.list("pvc", ns)} == set(claims_before)
