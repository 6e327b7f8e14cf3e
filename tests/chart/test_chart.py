"""The Helm chart: lint, values schema, rendered objects (RBAC, security, operator wiring)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "keras-operator"
RELEASE_NAMESPACE = "kerasop-system"  # the helm fixture renders release "kerasop" into it

NAMESPACED = ("watchNamespaces={team-a,team-b}",)
# The operator's names for trainer and model-server pods' ServiceAccounts
# (kerasop_operator.training/serving.DEFAULT_SERVICE_ACCOUNT).
RUNTIME_SERVICE_ACCOUNTS = ("kerasop-trainer", "kerasop-server")

# What the operator does, and therefore all it may do (docs/install.md, RBAC section): kopf
# watches and patches its resources (finalizer, annotations), the controller writes status with
# merge patches and children with server-side apply (patch, plus create when missing).
EXPECTED_OPERATOR_RULES = {
    ("kerasop.io", "kerastrainingjobs"): {"get", "list", "watch", "patch"},
    ("kerasop.io", "kerasmodelservices"): {"get", "list", "watch", "patch"},
    ("kerasop.io", "kerastrainingjobs/status"): {"get", "patch"},
    ("kerasop.io", "kerasmodelservices/status"): {"get", "patch"},
    ("kerasop.io", "kerastrainingjobs/finalizers"): {"update"},
    ("kerasop.io", "kerasmodelservices/finalizers"): {"update"},
    ("batch", "jobs"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "pods"): {"get", "list", "watch", "patch", "delete"},
    ("", "pods/log"): {"get"},
    ("", "services"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "persistentvolumeclaims"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "serviceaccounts"): {"get", "create", "patch"},
    ("", "configmaps"): {"get", "create", "patch", "delete"},
    ("apps", "deployments"): {"get", "list", "watch", "create", "patch", "delete"},
    ("autoscaling", "horizontalpodautoscalers"): {
        "get",
        "list",
        "watch",
        "create",
        "patch",
        "delete",
    },
    ("policy", "poddisruptionbudgets"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
}


def by_kind(objs, kind):
    return [o for o in objs if o["kind"] == kind]


def one(objs, kind, name=None):
    found = [o for o in by_kind(objs, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name, [o["metadata"]["name"] for o in by_kind(objs, kind)])
    return found[0]


def rules_as_set(rules):
    out: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for res in rule["resources"]:
                out.setdefault((group, res), set()).update(rule["verbs"])
    return out


@pytest.mark.parametrize("set_args", [(), NAMESPACED], ids=["cluster-wide", "namespaced"])
def test_helm_lint_strict(helm, set_args):
    args = ["lint", "--strict", str(CHART)]
    for s in set_args:
        args += ["--set", s]
    proc = helm.run(*args)
    assert "0 chart(s) failed" in proc.stdout
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


def test_chart_metadata():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "keras-operator"
    assert chart["appVersion"] == "0.1.0"


def test_values_schema_rejects_typos_and_bad_values(helm):
    for bad in (
        "operator.imag.tag=x",
        "watchNamespaces[0]=Bad_NS",
        "operator.logFormat=xml",
        "operator.logLevel=loud",
        "operator.image.pullPolicy=Sometimes",
        "metrics.port=0",
    ):
        proc = helm.run("template", "x", str(CHART), "--set", bad, check=False)
        assert proc.returncode != 0, f"--set {bad} was accepted"
        assert "schema" in proc.stderr.lower(), proc.stderr


def test_values_schema_accepts_default_values():
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"])


def test_default_render_is_cluster_wide(helm):
    objs = helm.objects()
    role = one(objs, "ClusterRole", "kerasop-keras-operator")
    binding = one(objs, "ClusterRoleBinding", "kerasop-keras-operator")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "kerasop-keras-operator", "namespace": RELEASE_NAMESPACE}
    ]
    assert rules_as_set(role["rules"]) == EXPECTED_OPERATOR_RULES
    assert not by_kind(objs, "Role") and not by_kind(objs, "RoleBinding")
    container = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert not any(a.startswith("--namespace") for a in container["args"])
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KERASOP_WATCH_NAMESPACES"] == ""


@pytest.mark.parametrize("set_args", [(), NAMESPACED], ids=["cluster-wide", "namespaced"])
def test_kueue_support_adds_the_workload_rule_only(helm, set_args):
    """kueue.enabled: read Workloads for status, patch spec.active to pause by hand."""
    objs = helm.objects("kueue.enabled=true", *set_args)
    kind = "Role" if set_args else "ClusterRole"
    roles = [r for r in by_kind(objs, kind) if r["metadata"]["name"] == "kerasop-keras-operator"]
    assert len(roles) == (2 if set_args else 1)
    for role in roles:
        assert rules_as_set(role["rules"]) == {
            **EXPECTED_OPERATOR_RULES,
            ("kueue.x-k8s.io", "workloads"): {"get", "list", "watch", "patch"},
        }
    env = {
        e["name"]: e.get("value")
        for e in one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["KERASOP_KUEUE"] == "true"
    default = one(helm.objects(), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "KERASOP_KUEUE", "value": "false"} in default["env"]


def test_namespaced_render_has_role_per_namespace(helm):
    objs = helm.objects(*NAMESPACED)
    roles = by_kind(objs, "Role")
    bindings = by_kind(objs, "RoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for role in roles:
        assert rules_as_set(role["rules"]) == EXPECTED_OPERATOR_RULES
    for b in bindings:
        assert b["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "kerasop-keras-operator",
        }
        assert b["subjects"][0]["namespace"] == RELEASE_NAMESPACE
    operator_cluster_roles = [
        r
        for r in by_kind(objs, "ClusterRole")
        if not r["metadata"]["name"].endswith(("-edit", "-view"))
    ]
    assert not operator_cluster_roles and not by_kind(objs, "ClusterRoleBinding")
    container = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "--namespace=team-a" in container["args"] and "--namespace=team-b" in container["args"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KERASOP_WATCH_NAMESPACES"] == "team-a,team-b"
    for name in RUNTIME_SERVICE_ACCOUNTS:
        found = [sa for sa in by_kind(objs, "ServiceAccount") if sa["metadata"]["name"] == name]
        assert sorted(sa["metadata"]["namespace"] for sa in found) == sorted(
            [RELEASE_NAMESPACE, "team-a", "team-b"]
        )


@pytest.mark.parametrize("set_args", [(), NAMESPACED], ids=["cluster-wide", "namespaced"])
def test_rbac_has_no_wildcards_and_no_secrets(helm, set_args):
    objs = helm.objects(*set_args)
    roles = by_kind(objs, "ClusterRole") + by_kind(objs, "Role")
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], (role["metadata"]["name"], rule)
            assert "secrets" not in rule["resources"] and "nonResourceURLs" not in rule
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])


@pytest.mark.parametrize("set_args", [(), NAMESPACED], ids=["cluster-wide", "namespaced"])
def test_runtime_service_account_has_no_permissions(helm, set_args):
    objs = helm.objects(*set_args)
    runtime = [
        sa
        for sa in by_kind(objs, "ServiceAccount")
        if sa["metadata"]["name"] in RUNTIME_SERVICE_ACCOUNTS
    ]
    assert {sa["metadata"]["name"] for sa in runtime} == set(RUNTIME_SERVICE_ACCOUNTS)
    for sa in runtime:
        assert sa["automountServiceAccountToken"] is False
    for binding in by_kind(objs, "RoleBinding") + by_kind(objs, "ClusterRoleBinding"):
        for subject in binding["subjects"]:
            assert subject["name"] not in RUNTIME_SERVICE_ACCOUNTS


def test_operator_deployment(helm):
    objs = helm.objects()
    dep = one(objs, "Deployment", "kerasop-keras-operator")
    assert dep["metadata"]["namespace"] == RELEASE_NAMESPACE
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "kerasop-keras-operator"
    one(objs, "ServiceAccount", "kerasop-keras-operator")
    (c,) = pod["containers"]
    assert c["image"] == "kerasop-operator:0.1.0" and c["imagePullPolicy"] == "IfNotPresent"
    assert c["args"] == [
        "kerasop-operator",
        "--health-port=8080",
        "--metrics-port=9090",
        "--log-format=json",
    ]
    assert "command" not in c  # the image's entrypoint (tini) stays PID 1
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 9090, "health": 8080}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["KERASOP_RUNTIME_IMAGE"] == "kerasop-runtime:0.1.0"
    assert env["KERASOP_RUNTIME_IMAGE_PULL_POLICY"] == "IfNotPresent"
    assert env["KERASOP_SERVING_IMAGE"] == ""  # off: the runtime image serves every version
    assert env["KERASOP_METRICS_PORT"] == "9090" and env["KERASOP_HEALTH_PORT"] == "8080"
    assert env["KERASOP_LOG_FORMAT"] == "json" and env["KERASOP_LOG_LEVEL"] == "info"
    assert env["KERASOP_WATCH_NAMESPACES"] == ""
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    svc = one(objs, "Service", "kerasop-keras-operator-metrics")
    assert svc["spec"]["selector"] == selector
    assert svc["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]


@pytest.mark.parametrize("set_args", [(), NAMESPACED], ids=["cluster-wide", "namespaced"])
def test_containers_are_locked_down(helm, set_args):
    for dep in by_kind(helm.objects(*set_args), "Deployment"):
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc.get("privileged") is not True
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            assert "limits" in c["resources"] and "requests" in c["resources"]


def test_values_are_wired(helm):
    objs = helm.objects(
        "operator.image.repository=reg.local/op",
        "operator.image.tag=9.9",
        "runtime.image.repository=reg.local/rt",
        "runtime.image.tag=1.2",
        "runtime.image.pullPolicy=Always",
        "nodeSelector.pool=system",
        "tolerations[0].key=dedicated",
        "tolerations[0].operator=Exists",
        "operator.logLevel=debug",
        "metrics.port=9999",
        "metrics.service.enabled=false",
        "runtime.serviceAccounts.create=false",
        "watchNamespaces={x}",
    )
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    c = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert c["image"] == "reg.local/op:9.9"
    assert env["KERASOP_RUNTIME_IMAGE"] == "reg.local/rt:1.2"
    assert env["KERASOP_RUNTIME_IMAGE_PULL_POLICY"] == "Always"
    assert env["KERASOP_METRICS_PORT"] == "9999" and "--metrics-port=9999" in c["args"]
    assert env["KERASOP_LOG_LEVEL"] == "debug" and "--verbose" in c["args"]
    assert "--namespace=x" in c["args"]
    assert pod["nodeSelector"] == {"pool": "system"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    assert not by_kind(objs, "Service")
    assert [sa["metadata"]["name"] for sa in by_kind(objs, "ServiceAccount")] == [
        "kerasop-keras-operator"
    ]


def test_serving_image_value_reaches_the_operator(helm):
    def env_of(*set_args):
        c = one(helm.objects(*set_args), "Deployment")["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e.get("value") for e in c["env"]}

    assert env_of("runtime.servingImage.repository=kerasop-serving")["KERASOP_SERVING_IMAGE"] == (
        "kerasop-serving:0.1.0"  # the chart's appVersion, like the runtime image
    )
    env = env_of("runtime.servingImage.repository=reg.local/sv", "runtime.servingImage.tag=1.2")
    assert env["KERASOP_SERVING_IMAGE"] == "reg.local/sv:1.2"
    notes = helm.run(
        "install",
        "x",
        str(CHART),
        "--dry-run=client",
        "-n",
        "ns",
        "--set",
        "runtime.servingImage.repository=reg.local/sv",
    ).stdout
    assert "Serving image (model servers whose versions all have model.onnx): reg.local/sv" in notes


def test_chart_crds_are_the_generated_ones(helm):
    from kerasop import crds as crdschema

    rendered = [d for d in yaml.safe_load_all(helm.template(include_crds=True)) if d]
    crds = {d["metadata"]["name"]: d for d in rendered if d["kind"] == "CustomResourceDefinition"}
    assert crds == {c["metadata"]["name"]: c for c in crdschema.crds().values()}


def test_notes_render(helm):
    proc = helm.run("install", "x", str(CHART), "--dry-run=client", "-n", "ns")
    assert "kubectl get keras" in proc.stdout
    assert "kerasop-trainer" in proc.stdout
    assert "Serving image" not in proc.stdout  # off by default
