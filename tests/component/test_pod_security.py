"""Every pod the operator creates passes Pod Security `restricted`.

Checked twice: against the profile's rules written out below (fast, names the field), and by
the real kube-apiserver's PodSecurity admission in a namespace labelled
``pod-security.kubernetes.io/enforce=restricted`` (server-side dry run of each pod).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from kerasop_operator import serving, training

# The restricted profile (https://kubernetes.io/docs/concepts/security/pod-security-standards/).
RESTRICTED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                           "persistentVolumeClaim", "projected", "secret"}  # fmt: skip
SAFE_SECCOMP = {"RuntimeDefault", "Localhost"}


def job_body(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kerasop.io/v1alpha1", "kind": "KerasTrainingJob",
        "metadata": {"name": "job", "namespace": "ns", "uid": "u1"},
        "spec": {"data": {"format": "csv", "path": "d.csv"},
                 "model": {"layers": [{"type": "Dense", "units": 1}]}, **spec},
    }  # fmt: skip


def service_body(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kerasop.io/v1alpha1", "kind": "KerasModelService",
        "metadata": {"name": "svc", "namespace": "ns", "uid": "u2"},
        "spec": {"model": {"name": "m", "claimName": "models"}, **spec},
    }  # fmt: skip


def trainer_template(**spec: Any) -> dict[str, Any]:
    children = training.desired_children(job_body(**spec), default_image="kerasop-runtime:0.1.0")
    return children.job["spec"]["template"]


def server_template(**spec: Any) -> dict[str, Any]:
    ref = serving.ModelRef("m", "models", 1, "claim models")
    children = serving.desired_children(
        service_body(**spec), ref, default_image="kerasop-runtime:0.1.0"
    )
    return children.deployment["spec"]["template"]


BUILDERS = {
    "trainer": lambda: trainer_template(),
    "trainer-multi-worker": lambda: trainer_template(workers=3),
    "trainer-gpu-data-volume": lambda: trainer_template(
        resources={"gpus": 1},
        data={"format": "csv", "path": "d.csv", "volume": {"claimName": "data"}},
    ),
    "trainer-created-pvc": lambda: trainer_template(output={"storage": {"size": "1Gi"}}),
    "server": lambda: server_template(),
    "server-gpu": lambda: server_template(resources={"gpus": 1}),
}


def restricted_violations(template: dict[str, Any]) -> list[str]:
    """Rules of the restricted profile (baseline included) this pod template breaks."""
    spec = template["spec"]
    pod_sc = spec.get("securityContext") or {}
    out = []
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            out.append(f"spec.{key}")
    for vol in spec.get("volumes", []):
        kinds = set(vol) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            out.append(f"volume {vol['name']}: {kinds}")
    if pod_sc.get("sysctls"):
        out.append("spec.securityContext.sysctls")
    for c in spec.get("initContainers", []) + spec["containers"]:
        sc = c.get("securityContext") or {}
        where = f"container {c['name']}"
        if sc.get("privileged"):
            out.append(f"{where}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{where}: allowPrivilegeEscalation must be false")
        if not (
            sc.get("runAsNonRoot")
            or (pod_sc.get("runAsNonRoot") and sc.get("runAsNonRoot") is None)
        ):
            out.append(f"{where}: runAsNonRoot must be true")
        if 0 in (sc.get("runAsUser"), pod_sc.get("runAsUser")):
            out.append(f"{where}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in SAFE_SECCOMP:
            out.append(f"{where}: seccompProfile must be RuntimeDefault or Localhost")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{where}: capabilities must drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"{where}: adds capabilities {caps['add']}")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            out.append(f"{where}: hostPort")
        if sc.get("procMount", "Default") != "Default":
            out.append(f"{where}: procMount")
    return out


@pytest.mark.parametrize("builder", BUILDERS.values(), ids=BUILDERS.keys())
def test_every_operator_pod_meets_the_restricted_profile(builder):
    assert restricted_violations(builder()) == []


def test_the_rules_catch_a_pod_that_breaks_them():
    template = trainer_template()
    container = template["spec"]["containers"][0]
    del container["securityContext"]["capabilities"]
    container["securityContext"]["allowPrivilegeEscalation"] = True
    template["spec"]["volumes"].append({"name": "h", "hostPath": {"path": "/"}})
    assert restricted_violations(template) == [
        "volume h: {'hostPath'}",
        "container trainer: allowPrivilegeEscalation must be false",
        "container trainer: capabilities must drop ALL",
    ]


@pytest.mark.component
def test_the_api_servers_pod_security_admission_accepts_every_operator_pod(cluster):
    ns = "restricted-pods"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    for sa in (training.DEFAULT_SERVICE_ACCOUNT, serving.DEFAULT_SERVICE_ACCOUNT):
        cluster.kubectl("create", "serviceaccount", sa, "-n", ns)

    def dry_run(template: dict[str, Any], name: str):
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": ns, **template["metadata"]},
               "spec": template["spec"]}  # fmt: skip
        return cluster.kubectl("create", "--dry-run=server", "-f", "-",
                               input=json.dumps(pod), check=False)  # fmt: skip

    for name, builder in BUILDERS.items():
        proc = dry_run(builder(), name)
        assert proc.returncode == 0, f"{name}: {proc.stderr}"
    # The admission really enforces here: a pod without the settings is refused.
    bad = trainer_template()
    del bad["spec"]["containers"][0]["securityContext"]["seccompProfile"]
    del bad["spec"]["securityContext"]["seccompProfile"]
    proc = dry_run(bad, "bad")
    assert proc.returncode != 0 and 'violates PodSecurity "restricted' in proc.stderr
