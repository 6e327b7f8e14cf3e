"""Reading the observed trainer Job and its pods."""

from __future__ import annotations

from typing import Any

from .names import CONTAINER


def job_conditions(job: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    conds = ((job or {}).get("status") or {}).get("conditions") or []
    return {c["type"]: c for c in conds if c.get("status") == "True"}


def job_pods(job: dict[str, Any] | None, pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pods of this incarnation of the Job (pods of a deleted older Job are dropped)."""
    if job is None:
        return []
    uid = (job.get("metadata") or {}).get("uid")
    out = []
    for pod in pods:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        owner = labels.get("batch.kubernetes.io/controller-uid") or labels.get("controller-uid")
        refs = [r.get("uid") for r in (pod.get("metadata") or {}).get("ownerReferences") or []]
        if uid and (owner or refs) and owner != uid and uid not in refs:
            continue
        out.append(pod)
    return out


def _pod_index(pod: dict[str, Any]) -> str | None:
    meta = pod.get("metadata") or {}
    return (meta.get("annotations") or {}).get("batch.kubernetes.io/job-completion-index") or (
        meta.get("labels") or {}
    ).get("batch.kubernetes.io/job-completion-index")


def worker0_pod(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest pod of worker 0 (the one that writes the model and reports progress)."""
    candidates = [p for p in pods if _pod_index(p) in (None, "0")]
    if not candidates:
        return None
    return max(candidates, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "")


def trainer_state(pod: dict[str, Any] | None) -> dict[str, Any]:
    """``state`` of the trainer container of a pod (``{}`` if unknown)."""
    for cs in ((pod or {}).get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == CONTAINER:
            return cs.get("state") or {}
    return {}


def termination(pod: dict[str, Any] | None) -> dict[str, Any] | None:
    return trainer_state(pod).get("terminated")


def pod_running(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running"
