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

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from kerasop_operator import kube as k  # noqa: E402
from kerasop_operator.kube import Kube  # noqa: E402

from tests.support.kube import KubeCluster, free_port  # noqa: E402

RUNTIME_IMAGE = "kerasop-runtime:test"


def wait_for(
    fn: Callable[[], Any], *, timeout: float = 30, interval: float = 0.2, what: str = ""
) -> Any:
    """Poll ``fn`` until it returns something truthy; fail with its last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except (AssertionError, KeyError, TypeError, IndexError) as exc:  # not there yet
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or fn}: last={last!r}")


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
        wait_for(self._healthy, timeout=60, what="operator liveness endpoint")

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
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    def metric_sum(self, name: str, **labels: str) -> float:
        return sum(
            v
            for (n, lab), v in self.metrics().items()
            if n == name and all(dict(lab).get(a) == b for a, b in labels.items())
        )


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
    doc = {
        "apiVersion": "kerasop.io/v1alpha1",
        "kind": "KerasTrainingJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "data": {"format": "csv", "path": "train.csv"},
            "model": {
                "layers": [
                    {"type": "Dense", "units": 10, "activation": "relu"},
                    {"type": "Dense", "units": 1, "activation": "sigmoid"},
                ]
            },
            "training": {"epochs": 3},
            **extra,
        },
    }
    return yaml.safe_dump(doc)


def service_yaml(name: str, namespace: str, **spec: Any) -> str:
    doc = {
        "apiVersion": "kerasop.io/v1alpha1",
        "kind": "KerasModelService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    return yaml.safe_dump(doc)


@contextlib.contextmanager
def no_child_writes(op: OperatorProcess) -> Iterator[None]:
    before = op.metric_sum("kerasop_child_writes_total")
    yield
    after = op.metric_sum("kerasop_child_writes_total")
    assert after == before, f"the operator wrote {after - before} child objects"
