"""A KerasModelService's status from what was observed (pure)."""

from __future__ import annotations

from typing import Any

from kerasop.spec import SpecError
from kerasop.status import (
    KerasModelServiceStatus,
    RolloutStatus,
    ServicePhase,
    VersionHistoryEntry,
    ready,
)

from ..conditions import Cond, status_conditions
from .model import ModelRef, Waiting
from .names import selector_string, service_url
from .observed import deployment_conditions, rollout_complete, template_version


def service_status(
    body: dict[str, Any],
    model: ModelRef | Waiting | SpecError,
    deployment: dict[str, Any] | None,
    *,
    now: str,
    cluster_domain: str = "cluster.local",
    apply_error: str | None = None,
) -> dict[str, Any]:
    """The complete ``status`` of a KerasModelService (pure; old status = ``body['status']``)."""
    meta = body.get("metadata") or {}
    old = body.get("status") or {}
    name, namespace = meta.get("name", ""), meta.get("namespace") or "default"
    generation = meta.get("generation")
    st = KerasModelServiceStatus(
        observed_generation=generation,
        url=service_url(name, namespace, cluster_domain),
        selector=selector_string(name),
        serving_version=old.get("servingVersion"),
        model_name=old.get("modelName") or None,
    )
    # Written by the rollout step (rollout.py): carried over as they are.
    if old.get("rollout"):
        st.rollout = RolloutStatus.model_validate(old["rollout"])
    if old.get("history"):
        st.history = [VersionHistoryEntry.model_validate(h) for h in old["history"]]

    if isinstance(model, SpecError):
        st.phase, st.replicas, st.ready_replicas, st.ready = "Failed", 0, 0, ready(0, 0)
        msg = str(model)
        st.conditions = status_conditions(
            old.get("conditions"),
            [
                Cond.of("Ready", False, "InvalidSpec", msg),
                Cond.of("Progressing", False, "InvalidSpec", msg),
                Cond.of("Degraded", True, "InvalidSpec", msg),
                Cond.of("ModelAvailable", False, "InvalidSpec", msg),
            ],
            now=now,
            generation=generation,
        )
        return st.to_status()

    if isinstance(model, ModelRef):
        st.model_name = model.name
        model_cond = Cond.of(
            "ModelAvailable",
            True,
            "VersionResolved",
            f"model {model.name} version {model.version if model.version is not None else 'latest'}"
            f" on claim {model.claim_name} ({model.source})",
        )
    else:
        model_cond = Cond.of("ModelAvailable", False, model.reason, model.message)

    if deployment is None:
        st.replicas, st.ready_replicas, st.ready, st.phase = 0, 0, ready(0, 0), "Pending"
        if isinstance(model, Waiting):
            conds = [
                Cond.of("Ready", False, model.reason, model.message),
                Cond.of("Progressing", False, model.reason, model.message),
                Cond.of("Degraded", False, "AsExpected", ""),
            ]
        else:
            conds = [
                Cond.of("Ready", False, "Creating", "creating the server Deployment"),
                Cond.of("Progressing", True, "Creating", "creating the server Deployment"),
                Cond.of(
                    "Degraded",
                    bool(apply_error),
                    "ApplyFailed" if apply_error else "AsExpected",
                    apply_error or "",
                ),
            ]
        st.conditions = status_conditions(
            old.get("conditions"), [*conds, model_cond], now=now, generation=generation
        )
        return st.to_status()

    dspec = deployment.get("spec") or {}
    dstat = deployment.get("status") or {}
    desired = int(dspec.get("replicas", 1) or 0)
    current = int(dstat.get("replicas") or 0)
    ready_n = int(dstat.get("readyReplicas") or 0)
    available = int(dstat.get("availableReplicas") or 0)
    updated = int(dstat.get("updatedReplicas") or 0)
    st.replicas, st.ready_replicas, st.ready = current, ready_n, ready(ready_n, desired)

    complete = rollout_complete(deployment)
    target = template_version(deployment)
    if st.rollout is not None and st.rollout.stable is not None:
        target = st.rollout.stable  # the rollout plan names the stable version; no pod restart
    if complete and desired > 0:
        st.serving_version = target  # None = serving "latest": the server picks it
    dconds = deployment_conditions(deployment)
    progressing = dconds.get("Progressing") or {}
    failure = dconds.get("ReplicaFailure") or {}
    deadline = (
        progressing.get("status") == "False"
        and progressing.get("reason") == "ProgressDeadlineExceeded"
    )
    replica_failure = failure.get("status") == "True"

    target_text = f"version {target}" if target is not None else "the latest version"
    if desired == 0:
        ready_cond = Cond.of("Ready", False, "ScaledToZero", "spec.replicas is 0")
    elif available > 0:
        ready_cond = Cond.of(
            "Ready",
            True,
            "ServerAvailable",
            f"{available} of {desired} server pods available"
            + (f", serving version {st.serving_version}" if st.serving_version else ""),
        )
    else:
        ready_cond = Cond.of(
            "Ready", False, "NoServerAvailable", f"0 of {desired} server pods available"
        )

    if complete:
        progressing_cond = Cond.of(
            "Progressing", False, "RolloutComplete", f"serving {target_text}"
        )
    elif deadline:
        progressing_cond = Cond.of(
            "Progressing", False, "ProgressDeadlineExceeded", progressing.get("message") or ""
        )
    else:
        progressing_cond = Cond.of(
            "Progressing",
            True,
            "RollingOut",
            f"rolling out {target_text}: {updated} of {desired} pods updated, {available} available",
        )

    if deadline:
        degraded_cond = Cond.of(
            "Degraded",
            True,
            "ProgressDeadlineExceeded",
            progressing.get("message") or "rollout stuck",
        )
    elif replica_failure:
        degraded_cond = Cond.of(
            "Degraded",
            True,
            failure.get("reason") or "ReplicaFailure",
            failure.get("message") or "",
        )
    elif complete and desired > 0 and available < desired:
        degraded_cond = Cond.of(
            "Degraded",
            True,
            "ReplicasUnavailable",
            f"{available} of {desired} server pods available",
        )
    else:
        degraded_cond = Cond.of("Degraded", False, "AsExpected", "")
    if apply_error:
        degraded_cond = Cond.of("Degraded", True, "ApplyFailed", apply_error)

    phase: ServicePhase
    if deadline or replica_failure:
        phase = "Failed" if available == 0 else "Progressing"
    elif complete and available >= desired and desired > 0:
        phase = "Ready"
    elif available > 0:
        phase = "Progressing"
    else:
        phase = "Pending"
    st.phase = phase
    st.conditions = status_conditions(
        old.get("conditions"),
        [ready_cond, progressing_cond, degraded_cond, model_cond],
        now=now,
        generation=generation,
    )
    return st.to_status()
