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


def deployment(
    version="3",
    *,
    replicas=2,
    generation=1,
    observed=1,
    updated=2,
    ready=2,
    available=2,
    total=2,
    conditions=None,
    uid="uid-svc-mnist",
):
    """A server Deployment of service mnist with this status (the rollout's observations)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "mnist-server",
            "namespace": "ml",
            "generation": generation,
            "ownerReferences": [{"uid": uid, "controller": True}],
        },
        "spec": {
            "replicas": replicas,
            "template": {"metadata": {"annotations": {"kerasop.io/model-version": version}}},
        },
        "status": {
            "observedGeneration": observed,
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": available,
            "conditions": conditions or [],
        },
    }


def event_line(event: str, **fields: Any) -> str:
    return json.dumps({"kerasop": event, **fields})


class FakeKube:
    """Dict store keyed by (kind, namespace, name); counts the writes that changed something.

    Like the API server, a server-side apply or merge patch that leaves the object
    as it was is no write: the ``resourceVersion`` stays and ``writes`` does not
    grow. Every read returns a copy, so a test that keeps an object and reads it
    again compares two snapshots, not one object with itself.
    """

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        self.applied: dict[tuple[str, str | None, str], dict[str, Any]] = {}  # last SSA body
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

    def edit(self, kind: str, namespace: str | None, name: str, change) -> dict[str, Any]:
        """Someone else's write: ``change(obj)`` mutates the stored object."""
        obj = copy.deepcopy(self.objects[(kind, namespace, name)])
        change(obj)
        return self.put(obj)

    def find(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        obj = self.objects.get((kind, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for (kd, _, _), o in self.objects.items() if kd == kind]

    def _write(self, verb: str, key: tuple[str, str | None, str], new: dict[str, Any]):
        live = self.objects.get(key)
        if live is not None and new == live:
            return copy.deepcopy(live)  # no-op: nothing stored, same resourceVersion
        self.writes.append((verb, key[0], key[2]))
        return self.put(new)

    # the Kube interface
    def get(self, kind: k.Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self.find(kind.kind, namespace, name)

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

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply: fields applied before and left out now are removed,
        the applied fields are set, fields nobody applied (defaults) stay."""
        key = (obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])
        live = self.objects.get(key)
        new = copy.deepcopy(live) if live is not None else {}
        _drop(new, self.applied.get(key, {}), obj)
        _merge(new, obj)
        self.applied[key] = copy.deepcopy(obj)
        return self._write("apply", key, new)

    def merge_patch(self, kind, namespace, name, patch, *, subresource=None):
        key = (kind.kind, namespace, name)
        live = self.objects.get(key)
        if live is None:
            raise ApiError(404, "NotFound", "not found")
        new = copy.deepcopy(live)
        _merge(new, patch)
        return self._write(f"patch{'/' + subresource if subresource else ''}", key, new)

    def add_owner_reference(self, kind, namespace, name, ref):
        """The strategic merge patch: merged into the stored list by uid."""
        key = (kind.kind, namespace, name)
        live = self.objects.get(key)
        if live is None:
            raise ApiError(404, "NotFound", "not found")
        new = copy.deepcopy(live)
        refs = new["metadata"].setdefault("ownerReferences", [])
        refs[:] = [r for r in refs if r.get("uid") != ref["uid"]] + [ref]
        return self._write("patch", key, new)

    def delete(self, kind, namespace, name) -> bool:
        self.writes.append(("delete", kind.kind, name))
        self.applied.pop((kind.kind, namespace, name), None)
        return self.objects.pop((kind.kind, namespace, name), None) is not None

    def pod_log(self, namespace, name, *, container, tail_lines=300, limit_bytes=0):
        return self.logs.get(name)


def _drop(target: dict[str, Any], before: dict[str, Any], now: dict[str, Any]) -> None:
    """Remove from ``target`` what ``before`` set and ``now`` no longer sets."""
    for key, value in before.items():
        if key not in now:
            target.pop(key, None)
        elif (
            isinstance(value, dict)
            and isinstance(now[key], dict)
            and isinstance(target.get(key), dict)
        ):
            _drop(target[key], value, now[key])


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
