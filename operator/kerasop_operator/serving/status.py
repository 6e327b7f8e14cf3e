"""A KerasModelService's status from what was observed (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kerasop.server_metrics import StoreError
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

# Set for a model in a bucket only: what the server pods last saw of the store.
STORE_CONDITION = "ModelStoreReachable"


def service_status(
    body: dict[str, Any],
    model: ModelRef | Waiting | SpecError,
    deployment: dict[str, Any] | None,
    *,
    now: str,
    cluster_domain: str = "cluster.local",
    apply_error: str | None = None,
    store_errors: list[StoreError | None] | None = None,
) -> dict[str, Any]:
    """The complete ``status`` of a KerasModelService (pure; old status = ``body['status']``).

    ``store_errors``: for a model in a bucket, what each server pod that answered reports of
    its model store (None: not read this time, the old ``ModelStoreReachable`` stays)."""
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
        conds = [
            Cond.of("Ready", False, "InvalidSpec", msg),
            Cond.of("Progressing", False, "InvalidSpec", msg),
            Cond.of("Degraded", True, "InvalidSpec", msg),
            Cond.of("ModelAvailable", False, "InvalidSpec", msg),
        ]
    elif deployment is None:
        st.replicas, st.ready_replicas, st.ready, st.phase = 0, 0, ready(0, 0), "Pending"
        conds = [*_before_deployment(model, apply_error), _model_available(model)]
    else:
        view = _Rollout.of(deployment)
        st.replicas, st.ready_replicas = view.current, view.ready
        st.ready = ready(view.ready, view.desired)
        target = template_version(deployment)
        if st.rollout is not None and st.rollout.stable is not None:
            target = st.rollout.stable  # the rollout plan names the stable version; no pod restart
        if view.complete and view.desired > 0:
            st.serving_version = target  # None = serving "latest": the server picks it
        target_text = f"version {target}" if target is not None else "the latest version"
        st.phase = view.phase()
        conds = [
            view.ready_condition(st.serving_version),
            view.progressing_condition(target_text),
            view.degraded_condition(apply_error),
            _model_available(model),
        ]
    old_conds = old.get("conditions")
    if isinstance(model, ModelRef):
        st.model_name = model.name
        if model.uri is None:  # served from a claim (again): no store to report on
            old_conds = [c for c in old_conds or [] if c.get("type") != STORE_CONDITION]
        elif store_errors is not None:
            conds.append(model_store_condition(model.uri, store_errors))
    st.conditions = status_conditions(old_conds, conds, now=now, generation=generation)
    return st.to_status()


def model_store_condition(uri: str, store_errors: list[StoreError | None]) -> Cond:
    """``ModelStoreReachable`` of a service whose model store is the bucket ``uri``, from what
    each server pod that answered reports of its last poll (None: the store answered). A pod
    that cannot reach the store keeps serving the version it loaded, so this is no ``Ready``
    or ``Degraded`` matter: it says why no new version will arrive."""
    if not store_errors:
        return Cond(
            STORE_CONDITION, "Unknown", "NoServerAnswered", f"no server pod has reported on {uri}"
        )
    failing = [e for e in store_errors if e is not None]
    pods = f"{len(failing) or len(store_errors)} of {len(store_errors)} server pods"
    if not failing:
        return Cond.of(STORE_CONDITION, True, "StoreAnswered", f"{pods} read {uri}")
    first = failing[0]
    return Cond.of(
        STORE_CONDITION,
        False,
        first.reason or "ObjectStoreError",
        f"{pods}: {first.message}; they keep serving the version they loaded",
    )


def _model_available(model: ModelRef | Waiting) -> Cond:
    if isinstance(model, Waiting):
        return Cond.of("ModelAvailable", False, model.reason, model.message)
    return Cond.of(
        "ModelAvailable",
        True,
        "VersionResolved",
        f"model {model.name} version {model.version if model.version is not None else 'latest'}"
        f" on {model.where} ({model.source})",
    )


def _before_deployment(model: ModelRef | Waiting, apply_error: str | None) -> list[Cond]:
    """Conditions while there is no Deployment: waiting for a model, or creating it."""
    if isinstance(model, Waiting):
        return [
            Cond.of("Ready", False, model.reason, model.message),
            Cond.of("Progressing", False, model.reason, model.message),
            Cond.of("Degraded", False, "AsExpected", ""),
        ]
    return [
        Cond.of("Ready", False, "Creating", "creating the server Deployment"),
        Cond.of("Progressing", True, "Creating", "creating the server Deployment"),
        Cond.of(
            "Degraded",
            bool(apply_error),
            "ApplyFailed" if apply_error else "AsExpected",
            apply_error or "",
        ),
    ]


@dataclass(frozen=True)
class _Rollout:
    """What the server Deployment says of its rollout."""

    desired: int
    current: int
    ready: int
    available: int
    updated: int
    complete: bool
    progressing: dict[str, Any]  # the Deployment's Progressing condition
    failure: dict[str, Any]  # its ReplicaFailure condition

    @classmethod
    def of(cls, deployment: dict[str, Any]) -> _Rollout:
        dspec = deployment.get("spec") or {}
        dstat = deployment.get("status") or {}
        dconds = deployment_conditions(deployment)
        return cls(
            desired=int(dspec.get("replicas", 1) or 0),
            current=int(dstat.get("replicas") or 0),
            ready=int(dstat.get("readyReplicas") or 0),
            available=int(dstat.get("availableReplicas") or 0),
            updated=int(dstat.get("updatedReplicas") or 0),
            complete=rollout_complete(deployment),
            progressing=dconds.get("Progressing") or {},
            failure=dconds.get("ReplicaFailure") or {},
        )

    @property
    def deadline_exceeded(self) -> bool:
        return (
            self.progressing.get("status") == "False"
            and self.progressing.get("reason") == "ProgressDeadlineExceeded"
        )

    @property
    def replica_failure(self) -> bool:
        return self.failure.get("status") == "True"

    def phase(self) -> ServicePhase:
        if self.deadline_exceeded or self.replica_failure:
            return "Failed" if self.available == 0 else "Progressing"
        if self.complete and self.available >= self.desired and self.desired > 0:
            return "Ready"
        return "Progressing" if self.available > 0 else "Pending"

    def ready_condition(self, serving_version: int | None) -> Cond:
        if self.desired == 0:
            return Cond.of("Ready", False, "ScaledToZero", "spec.replicas is 0")
        if self.available == 0:
            return Cond.of(
                "Ready", False, "NoServerAvailable", f"0 of {self.desired} server pods available"
            )
        return Cond.of(
            "Ready",
            True,
            "ServerAvailable",
            f"{self.available} of {self.desired} server pods available"
            + (f", serving version {serving_version}" if serving_version else ""),
        )

    def progressing_condition(self, target_text: str) -> Cond:
        if self.complete:
            return Cond.of("Progressing", False, "RolloutComplete", f"serving {target_text}")
        if self.deadline_exceeded:
            return Cond.of(
                "Progressing",
                False,
                "ProgressDeadlineExceeded",
                self.progressing.get("message") or "",
            )
        return Cond.of(
            "Progressing",
            True,
            "RollingOut",
            f"rolling out {target_text}: {self.updated} of {self.desired} pods updated,"
            f" {self.available} available",
        )

    def degraded_condition(self, apply_error: str | None) -> Cond:
        if apply_error:
            return Cond.of("Degraded", True, "ApplyFailed", apply_error)
        if self.deadline_exceeded:
            return Cond.of(
                "Degraded",
                True,
                "ProgressDeadlineExceeded",
                self.progressing.get("message") or "rollout stuck",
            )
        if self.replica_failure:
            return Cond.of(
                "Degraded",
                True,
                self.failure.get("reason") or "ReplicaFailure",
                self.failure.get("message") or "",
            )
        if self.complete and self.desired > 0 and self.available < self.desired:
            return Cond.of(
                "Degraded",
                True,
                "ReplicasUnavailable",
                f"{self.available} of {self.desired} server pods available",
            )
        return Cond.of("Degraded", False, "AsExpected", "")
