"""Helpers of the operator component tests: the operator against a real etcd + kube-apiserver.

There is no kubelet, scheduler or controller-manager here, so the tests play
those parts themselves: they create the pods a Job controller would create and
patch Job, Pod and Deployment status the way the kubelet and controllers would.
Pod logs cannot exist without a kubelet; the operator must tolerate that
(progress parsing from logs is covered by the unit tests).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from kerasop_operator import kube as k
from kerasop_operator.kube import Kube
from tests.support import sample
from tests.support.kube import CACHE, KubeCluster, _script_output_dir, free_port, kube_cluster
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def cluster_with_crds() -> Iterator[KubeCluster]:
    """A fresh etcd + kube-apiserver with the project's CRDs established."""
    with kube_cluster() as c:
        c.kubectl("apply", "-f", str(REPO / "crds"))
        c.wait_for_crds(("kerastrainingjobs.kerasop.io", "kerasmodelservices.kerasop.io"))
        yield c


RUNTIME_IMAGE = "kerasop-runtime:test"
SYSTEM_NS = "kerasop-system"


class OperatorProcess:
    """``kerasop-operator`` as a subprocess (the same entry point as in the image)."""

    def __init__(self, cluster: KubeCluster, logdir: Path) -> None:
        self.cluster = cluster
        self.logdir = logdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = itertools.count(1)
        self.log_path: Path | None = None
        self.metrics_port = 0
        self.health_port = 0

    def command(self) -> list[str]:
        # This interpreter's entry point: a `kerasop-operator` found on PATH may belong to
        # another installation (another checkout, the system Python).
        return [sys.executable, "-m", "kerasop_operator.main"]

    def start(self, **extra_env: str) -> None:
        assert self.proc is None
        self.metrics_port, self.health_port = free_port(), free_port()
        env = {
            **self.cluster.env(),
            "KERASOP_RUNTIME_IMAGE": RUNTIME_IMAGE,
            "KERASOP_PROGRESS_INTERVAL": "1",
            "KERASOP_RETRY_DELAY": "1",
            "KERASOP_ROLLOUT_INTERVAL": "1",
            "KERASOP_METRICS_PORT": str(self.metrics_port),
            "KERASOP_HEALTH_PORT": str(self.health_port),
            "KERASOP_LOG_FORMAT": "json",
            **extra_env,
        }
        self.log_path = self.logdir / f"operator-{next(self.runs)}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.command(),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=str(REPO),
            )
        wait_for("operator liveness endpoint", self._healthy, timeout=60)

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"operator exited with {self.proc.returncode}:\n{self.logs()}")
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}/healthz", timeout=2
            ) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def logs(self, tail: int = 80) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-tail:])

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as r:
            text = r.read().decode()
        out = {}
        for family in text_string_to_metric_families(text):
            for point in family.samples:
                out[(point.name, tuple(sorted(point.labels.items())))] = point.value
        return out

    def metric_sum(self, name: str, **labels: str) -> float:
        return sum(
            v
            for (n, lab), v in self.metrics().items()
            if n == name and all(dict(lab).get(a) == b for a, b in labels.items())
        )


# --------------------------------------------------------------------------------------------
# the chart's RBAC as the operator's identity


def helm_binary() -> str:
    path = CACHE / "tools" / "bin" / "helm"
    if path.exists():
        return str(path)
    return str(_script_output_dir("get-tools.sh") / "helm")


def chart_rbac(release: str, *helm_args: str) -> tuple[str, list[dict]]:
    """The operator's service account name and the RBAC objects the chart renders for it."""
    out = subprocess.run(
        [
            helm_binary(),
            "template",
            release,
            str(REPO / "charts" / "keras-operator"),
            "--namespace",
            SYSTEM_NS,
            *helm_args,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    bindings = [d for d in docs if d["kind"] in ("ClusterRoleBinding", "RoleBinding")]
    sa_name = bindings[0]["subjects"][0]["name"]
    roles = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs}
    wanted = [d for d in docs if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == sa_name]
    for b in bindings:
        kind = b["roleRef"]["kind"]
        ns = b["metadata"].get("namespace") if kind == "Role" else None
        assert (kind, ns, b["roleRef"]["name"]) in roles
        wanted += [
            d
            for d in docs
            if (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"])
            == (kind, ns, b["roleRef"]["name"])
        ]
        wanted.append(b)
    return sa_name, wanted


def install_identity(cluster: KubeCluster, sa: str, objects: list[dict], path: Path) -> Path:
    """Apply ``chart_rbac``'s objects and write a kubeconfig with the service account's token."""
    cluster.kubectl("create", "namespace", SYSTEM_NS, check=False)
    for obj in objects:
        if obj["kind"] == "ServiceAccount":
            obj["metadata"].setdefault("namespace", SYSTEM_NS)
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
    token = cluster.kubectl("-n", SYSTEM_NS, "create", "token", sa, "--duration=1h").stdout.strip()
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {
                            "server": cluster.server,
                            "certificate-authority": str(cluster.ca_file),
                        },
                    }
                ],
                "users": [{"name": "op", "user": {"token": token}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "op"}}],
                "current-context": "c",
            }
        )
    )
    return path


# --------------------------------------------------------------------------------------------
# playing the Job controller and the kubelet


def apply_yaml(cluster: KubeCluster, text: str) -> str:
    return cluster.kubectl("apply", "-f", "-", input=text).stdout


def trainer_job(api: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    return api.get(k.JOB, namespace, f"{name}-trainer")


def start_trainer_pod(
    api: Kube, job: dict[str, Any], index: int | None = None, suffix: str = "a"
) -> dict[str, Any]:
    """Create a pod from the Job's template, labelled as the Job controller labels it."""
    meta = job["metadata"]
    template = copy.deepcopy(job["spec"]["template"])
    labels = dict(template["metadata"].get("labels") or {})
    labels.update(
        {
            "batch.kubernetes.io/controller-uid": meta["uid"],
            "batch.kubernetes.io/job-name": meta["name"],
            "controller-uid": meta["uid"],
            "job-name": meta["name"],
        }
    )
    annotations = dict(template["metadata"].get("annotations") or {})
    name = f"{meta['name']}-{suffix}"
    if index is not None:
        annotations["batch.kubernetes.io/job-completion-index"] = str(index)
        labels["batch.kubernetes.io/job-completion-index"] = str(index)
        name = f"{meta['name']}-{index}-{suffix}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": annotations,
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
        "spec": template["spec"],
    }
    return api.create(pod)


def set_pod_state(
    api: Kube, pod: dict[str, Any], phase: str, state: dict[str, Any]
) -> dict[str, Any]:
    meta = pod["metadata"]
    return api.merge_patch(
        k.POD,
        meta["namespace"],
        meta["name"],
        {
            "status": {
                "phase": phase,
                "containerStatuses": [
                    {
                        "name": "trainer",
                        "image": RUNTIME_IMAGE,
                        "imageID": "",
                        "ready": phase == "Running",
                        "restartCount": 0,
                        "state": state,
                    }
                ],
            }
        },
        subresource="status",
    )


def set_job_status(api: Kube, job: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    meta = job["metadata"]
    return api.merge_patch(
        k.JOB, meta["namespace"], meta["name"], {"status": status}, subresource="status"
    )


def complete_job(api: Kube, job: dict[str, Any], at: str, succeeded: int = 1) -> dict[str, Any]:
    """What the Job controller writes when every completion succeeded (at time ``at``)."""
    return set_job_status(
        api,
        job,
        {
            "active": 0,
            "ready": 0,
            "succeeded": succeeded,
            "completionTime": at,
            "conditions": [
                {
                    "type": "SuccessCriteriaMet",
                    "status": "True",
                    "lastTransitionTime": at,
                    "lastProbeTime": at,
                },
                {
                    "type": "Complete",
                    "status": "True",
                    "lastTransitionTime": at,
                    "lastProbeTime": at,
                },
            ],
        },
    )


def cr(api: Kube, kind: k.Kind, namespace: str, name: str) -> dict[str, Any]:
    obj = api.get(kind, namespace, name)
    assert obj is not None, f"{kind.kind} {namespace}/{name} missing"
    return obj


def events_for(api: Kube, namespace: str, name: str, kind: str) -> list[dict[str, Any]]:
    return [
        e
        for e in api.list(k.EVENT, namespace)
        if (e.get("involvedObject") or {}).get("name") == name
        and e["involvedObject"].get("kind") == kind
    ]


def job_yaml(name: str, namespace: str, **extra: Any) -> str:
    return yaml.safe_dump(sample.training_job(name, namespace, training={"epochs": 3}, **extra))


def service_yaml(name: str, namespace: str, **spec: Any) -> str:
    doc = {
        "apiVersion": "kerasop.io/v1alpha1",
        "kind": "KerasModelService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    return yaml.safe_dump(doc)


# --------------------------------------------------------------------------------------------
# "nothing happened" checks: wait until the operator is done, then watch for a while

QUIET_SECONDS = 4.0  # > 2 retry delays of the tests' operator (KERASOP_RETRY_DELAY=1)
CHILD_KINDS = (k.JOB, k.PVC, k.SERVICE_ACCOUNT, k.SERVICE, k.DEPLOYMENT, k.HPA, k.PDB)


def handled(api: Kube, kind: k.Kind, namespace: str, name: str) -> dict[str, Any]:
    """The configuration kopf recorded as handled (its diff base, empty if none).

    kopf writes it once every create/update handler of a change has finished,
    succeeded or failed for good, never while a retry is pending: per object, it says
    "the operator is done with this change".
    """
    annotations = cr(api, kind, namespace, name)["metadata"].get("annotations") or {}
    raw = annotations.get("kerasop.io/last-handled-configuration")
    return json.loads(raw) if raw else {}


def reconciles_settled(op: OperatorProcess) -> bool:
    """Every reconcile the operator started has finished (counted at start and at end)."""
    samples = op.metrics()
    started = sum(v for (n, _), v in samples.items() if n == "kerasop_reconcile_total")
    finished = sum(
        v for (n, _), v in samples.items() if n == "kerasop_reconcile_duration_seconds_count"
    )
    return started > 0 and started == finished


def stays(
    fn: Callable[[], Any], *, seconds: float = QUIET_SECONDS, interval: float = 0.25, what: str = ""
) -> None:
    """Fail as soon as ``fn`` turns falsy within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = fn()
        assert value, f"{what or fn} did not hold for {seconds}s: {value!r}"
        time.sleep(interval)


def children_versions(api: Kube, namespace: str) -> dict[tuple[str, str], str]:
    """resourceVersion of every object of a child kind in ``namespace``."""
    return {
        (kind.kind, obj["metadata"]["name"]): obj["metadata"]["resourceVersion"]
        for kind in CHILD_KINDS
        for obj in api.list(kind, namespace)
    }


@contextlib.contextmanager
def no_child_writes(op: OperatorProcess, api: Kube, namespace: str) -> Iterator[None]:
    """Neither the block nor a quiet window after it (once every reconcile has finished)
    writes a child: the operator's write counter stays and no object in ``namespace``
    changes."""
    writes = op.metric_sum("kerasop_child_writes_total")
    versions = children_versions(api, namespace)
    yield
    wait_for("reconciles in flight to finish", lambda: reconciles_settled(op))

    def unchanged() -> bool:
        written = op.metric_sum("kerasop_child_writes_total") - writes
        assert written == 0, f"the operator wrote {written} child objects"
        assert children_versions(api, namespace) == versions, "children changed"
        return True

    stays(unchanged, what="no child writes")
