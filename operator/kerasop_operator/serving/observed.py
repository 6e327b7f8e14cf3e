"""What the server Deployment says about the rollout of the current template."""

from __future__ import annotations

from typing import Any

from ..common import ANN_MODEL_VERSION


def deployment_conditions(dep: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (dep.get("status") or {}).get("conditions") or []}


def rollout_complete(dep: dict[str, Any]) -> bool:
    """The `kubectl rollout status` test: every pod runs the current template and is available."""
    meta = dep.get("metadata") or {}
    spec = dep.get("spec") or {}
    st = dep.get("status") or {}
    desired = int(spec.get("replicas", 1) or 0)
    updated = int(st.get("updatedReplicas") or 0)
    return (
        int(st.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
        and updated >= desired
        and int(st.get("replicas") or 0) <= updated
        and int(st.get("availableReplicas") or 0) >= updated
    )


def template_version(dep: dict[str, Any]) -> int | None:
    annotations = (((dep.get("spec") or {}).get("template") or {}).get("metadata") or {}).get(
        "annotations"
    ) or {}
    value = annotations.get(ANN_MODEL_VERSION)
    return int(value) if value and value.isdigit() else None
