"""Factories for operator unit tests, and an in-memory stand-in for the API server.

The fake only stores objects (create / get / list / server-side apply / merge
patch / delete); it has no controllers. It is used to test the *write
discipline* of the reconcile code (what is written, how often); the same code
runs against a real kube-apiserver in tests/component/.
"""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any

from kerasop_operator import kube as k
from kerasop_operator.kube import ApiError

from tests.support import sample

NOW = "2026-11-26T10:00:00Z"
LATER = "2026-11-26T10:05:00Z"


def training_job(name: str = "mnist", namespace: str = "ml", **spec: Any) -> dict[str, Any]:
    body = sample.training_job(name, namespace, **spec)
    body["metadata"].update(uid=f"uid-{name}", generation=1)  # what the API server adds
    return body


def model_service(name: str = "mnist", namespace: str = "ml", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "kerasop.io/v1alpha1",
        "kind": "KerasModelService",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-svc-{name}",
            "generation": 1,
        },
        "spec": {"model": {"trainingJob": "mnist"}},
    }
    body["spec"].update(spec)
    return body


def k8s_job(uid: str = "job-uid-1", *, suspend: bool = False, **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "mnist-trainer", "namespace": "ml", "uid": uid},
        "spec": {"suspend": suspend},
        "status": status,
    }


def pod(
    name: str = "mnist-trainer-abcde",
    *,
    job_uid: str = "job-uid-1",
    phase: str = "Pending",
    created: str = NOW,
    index: str | None = None,
    state: dict[str, Any] | None = None,
    conditions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    labels = {"kerasop.io/training-job": "mnist", "batch.kubernetes.io/controller-uid": job_uid}
    annotations = {}
    if index is not None:
        annotations["batch.kubernetes.io/job-completion-index"] = index
    status: dict[str, Any] = {"phase": phase}
    if state is not None:
        status["containerStatuses"] = [{"name": "trainer", "state": state}]
    if conditions is not None:
        status["conditions"] = conditions
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "ml",
            "labels": labels,
            "annotations": annotations,
            "creationTimestamp": created,
        },
        "status": status,
    }


def terminated(exit_code: int, message: str = "", reason: str = "Error") -> dict[str, Any]:
    return {
        "terminated": {
            "exitCode": exit_code,
            "message": message,
            "reason": reason,
            "finishedAt": LATER,
        }
    }


def event_line(event: str, **fields: Any) -> str:
    return json.dumps({"kerasop": event, **fields})


class FakeKube:
    """Dict store keyed by (kind, namespace, name); counts writes."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        self.writes: list[tuple[str, str, str]] = []  # (verb, kind, name)
        self.logs: dict[str, str] = {}
        self._uids = itertools.count(1)
        self._rv = itertools.count(1)

    # helpers for tests
    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", f"fake-uid-{next(self._uids)}")
        meta["resourceVersion"] = str(next(self._rv))
        self.objects[(obj["kind"], meta.get("namespace"), meta["name"])] = obj
        return copy.deepcopy(obj)

    def find(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, namespace, name))

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [o for (kd, _, _), o in self.objects.items() if kd == kind]

    # the Kube interface
    def get(self, kind: k.Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        obj = self.objects.get((kind.kind, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def list(
        self, kind: k.Kind, namespace: str | None = None, *, label_selector: str | None = None
    ):
        wanted = (
            dict(part.split("=", 1) for part in label_selector.split(",")) if label_selector else {}
        )
        out = []
        for (kd, ns, _), obj in self.objects.items():
            if kd != kind.kind or (namespace and ns != namespace):
                continue
            labels = obj.get("metadata", {}).get("labels") or {}
            if all(labels.get(a) == b for a, b in wanted.items()):
                out.append(copy.deepcopy(obj))
        return out

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        key = (obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])
        if key in self.objects:
            raise ApiError(409, "AlreadyExists", "exists")
        self.writes.append(("create", obj["kind"], obj["metadata"]["name"]))
        return self.put(obj)

    def apply(self, obj: dict[str, Any], *, force: bool = True) -> dict[str, Any]:
        key = (obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])
        self.writes.append(("apply", obj["kind"], obj["metadata"]["name"]))
        live = self.objects.get(key)
        new = copy.deepcopy(obj)
        if live is not None:
            new["metadata"]["uid"] = live["metadata"]["uid"]
            if "status" in live:
                new["status"] = live["status"]
        return self.put(new)

    def merge_patch(self, kind, namespace, name, patch, *, subresource=None):
        live = self.objects.get((kind.kind, namespace, name))
        if live is None:
            raise ApiError(404, "NotFound", "not found")
        self.writes.append((f"patch{'/' + subresource if subresource else ''}", kind.kind, name))
        _merge(live, patch)
        live["metadata"]["resourceVersion"] = str(next(self._rv))
        return copy.deepcopy(live)

    def delete(self, kind, namespace, name, *, uid=None, propagation="Background") -> bool:
        self.writes.append(("delete", kind.kind, name))
        return self.objects.pop((kind.kind, namespace, name), None) is not None

    def pod_log(self, namespace, name, *, container, tail_lines=300, limit_bytes=0):
        return self.logs.get(name)


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
