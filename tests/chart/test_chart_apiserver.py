"""The chart against a real kube-apiserver: server-side validation, helm install, RBAC in effect.

kubeconform and the upstream JSON schemas cannot be downloaded here, so the API server itself
validates the rendered manifests (server-side dry run with strict field validation).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.component

CHART = Path(__file__).resolve().parents[2] / "charts" / "keras-operator"
RELEASE = "kerasop"
RELEASE_NAMESPACE = "kerasop-system"
WATCHED = ("team-a", "team-b")
OPERATOR = f"system:serviceaccount:{RELEASE_NAMESPACE}:{RELEASE}-keras-operator"


@pytest.fixture(scope="module")
def cluster(kube):
    for ns in (RELEASE_NAMESPACE, *WATCHED, "team-c"):
        kube.kubectl("create", "namespace", ns)
    return kube


def can_i(kube, user: str, *args: str) -> bool:
    proc = kube.kubectl("auth", "can-i", f"--as={user}", *args, check=False)
    answer = proc.stdout.strip()
    assert answer in ("yes", "no"), proc.stderr
    return answer == "yes"


@pytest.mark.parametrize(
    "set_args", [(), ("watchNamespaces={team-a,team-b}",)], ids=["cluster-wide", "namespaced"]
)
def test_rendered_manifests_pass_server_side_validation(cluster, helm, set_args):
    manifests = helm.template(*set_args, include_crds=True)
    proc = cluster.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-f", "-", input=manifests, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr
    kinds = {line.split("/")[0].split(".")[0] for line in proc.stdout.splitlines()}
    assert {"deployment", "serviceaccount", "service", "customresourcedefinition"} <= kinds, kinds


def test_helm_install_upgrade_and_rbac_in_effect(cluster, helm):
    kc = ("--kubeconfig", str(cluster.kubeconfig))
    helm.run("install", RELEASE, str(CHART), "-n", RELEASE_NAMESPACE, *kc)
    try:
        out = cluster.kubectl("get", "crd", "-o", "name").stdout
        assert "kerastrainingjobs.kerasop.io" in out and "kerasmodelservices.kerasop.io" in out

        # Cluster-wide: the operator may do its work in any namespace, and nothing else.
        for ns in ("team-a", "team-c"):
            assert can_i(cluster, OPERATOR, "create", "jobs.batch", "-n", ns)
            assert can_i(cluster, OPERATOR, "get", "pods", "--subresource=log", "-n", ns)
            assert can_i(
                cluster,
                OPERATOR,
                "patch",
                "kerastrainingjobs.kerasop.io",
                "--subresource=status",
                "-n",
                ns,
            )
            assert can_i(
                cluster, OPERATOR, "create", "horizontalpodautoscalers.autoscaling", "-n", ns
            )
            assert can_i(cluster, OPERATOR, "create", "poddisruptionbudgets.policy", "-n", ns)
            assert not can_i(cluster, OPERATOR, "get", "secrets", "-n", ns)
            assert not can_i(cluster, OPERATOR, "create", "pods", "-n", ns)
            assert not can_i(cluster, OPERATOR, "create", "kerastrainingjobs.kerasop.io", "-n", ns)
            assert not can_i(cluster, OPERATOR, "delete", "kerastrainingjobs.kerasop.io", "-n", ns)
        assert can_i(cluster, OPERATOR, "watch", "kerastrainingjobs.kerasop.io", "--all-namespaces")
        assert not can_i(
            cluster, OPERATOR, "list", "customresourcedefinitions.apiextensions.k8s.io"
        )
        assert not can_i(cluster, OPERATOR, "list", "namespaces")
        assert not can_i(cluster, OPERATOR, "create", "clusterroles.rbac.authorization.k8s.io")

        # The trainer/server pods' accounts can do nothing at all.
        for sa in ("kerasop-trainer", "kerasop-server"):
            cluster.kubectl("get", "serviceaccount", sa, "-n", RELEASE_NAMESPACE)
            runtime = f"system:serviceaccount:{RELEASE_NAMESPACE}:{sa}"
            for verb, res in (
                ("get", "pods"),
                ("list", "kerastrainingjobs.kerasop.io"),
                ("get", "secrets"),
                ("get", "configmaps"),
            ):
                assert not can_i(cluster, runtime, verb, res, "-n", RELEASE_NAMESPACE)

        # Users with the built-in edit/view roles get the custom resources (aggregation).
        cluster.kubectl(
            "create",
            "rolebinding",
            "alice-edit",
            "--clusterrole=edit",
            "--user=alice",
            "-n",
            "team-a",
        )
        cluster.kubectl(
            "create", "rolebinding", "bob-view", "--clusterrole=view", "--user=bob", "-n", "team-a"
        )
        assert _eventually(
            lambda: can_i(
                cluster, "alice", "create", "kerastrainingjobs.kerasop.io", "-n", "team-a"
            )
        )
        assert _eventually(
            lambda: can_i(cluster, "bob", "list", "kerasmodelservices.kerasop.io", "-n", "team-a")
        )
        assert not can_i(cluster, "bob", "create", "kerasmodelservices.kerasop.io", "-n", "team-a")
        assert not can_i(
            cluster,
            "alice",
            "patch",
            "kerastrainingjobs.kerasop.io",
            "--subresource=status",
            "-n",
            "team-a",
        )

        # Switch to namespaced mode: Roles in the watched namespaces only.
        helm.run(
            "upgrade",
            RELEASE,
            str(CHART),
            "-n",
            RELEASE_NAMESPACE,
            *kc,
            "--set",
            "watchNamespaces={team-a,team-b}",
        )
        for ns in WATCHED:
            assert can_i(cluster, OPERATOR, "create", "jobs.batch", "-n", ns)
            assert can_i(cluster, OPERATOR, "watch", "kerastrainingjobs.kerasop.io", "-n", ns)
            cluster.kubectl("get", "serviceaccount", "kerasop-trainer", "-n", ns)
        assert not can_i(cluster, OPERATOR, "create", "jobs.batch", "-n", "team-c")
        assert not can_i(
            cluster, OPERATOR, "watch", "kerastrainingjobs.kerasop.io", "--all-namespaces"
        )
        dep = cluster.kubectl(
            "get",
            "deployment",
            "-n",
            RELEASE_NAMESPACE,
            "-o",
            "jsonpath={.items[0].spec.template.spec.containers[0].args}",
        ).stdout
        assert "--namespace=team-a" in dep and "--namespace=team-b" in dep
    finally:
        helm.run("uninstall", RELEASE, "-n", RELEASE_NAMESPACE, *kc, check=False)
    # Helm never deletes CRDs (and so never deletes users' jobs and services with them).
    assert "kerastrainingjobs.kerasop.io" in cluster.kubectl("get", "crd", "-o", "name").stdout


def _eventually(probe, timeout: float = 20.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return True
        time.sleep(0.5)
    return probe()
