"""Typed status models of the two custom resources.

The operator writes these (``model_dump(by_alias=True, exclude_none=True,
mode="json")``) into ``.status`` through the status subresource; the CRD status
schemas in ``crds/`` are generated from them (``kerasop.crds``), so a field
missing here is silently *pruned* by the API server, and a field of the wrong
type makes the whole status patch fail. Add fields here first.

Conventions follow Kubernetes API conventions: ``conditions`` is a list map
keyed by ``type`` (merge-friendly for server-side apply), times are RFC 3339
strings, ``observedGeneration`` says which ``metadata.generation`` the status
describes. GitOps tools read health from ``conditions`` (``Ready``,
``Succeeded``, ``Failed``) and ``phase`` (see docs/argocd.md).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

# Phases of a KerasTrainingJob, in the order a job normally goes through them.
# Queued and Preempted: waiting for Kueue to admit the job (spec.queueName, docs/queues.md).
TrainingPhase = Literal[
    "Pending", "Queued", "Running", "Preempted", "Succeeded", "Failed", "Suspended"
]
TRAINING_PHASES: tuple[str, ...] = TrainingPhase.__args__  # type: ignore[attr-defined]

# Phases of a KerasModelService.
ServicePhase = Literal["Pending", "Progressing", "Ready", "Failed"]
SERVICE_PHASES: tuple[str, ...] = ServicePhase.__args__  # type: ignore[attr-defined]

# Condition types the operator sets (others are allowed, these are the contract).
#   KerasTrainingJob:  Created, Running, Succeeded, Failed, Suspended (+ Admitted when queued)
#   KerasModelService: Ready, Progressing, Degraded, ModelAvailable (+ ModelStoreReachable
#                      when the model store is a bucket)

LOG_TAIL_LIMIT = 4096  # characters of the trainer's log kept in status.failure.logTail


class StatusModel(BaseModel):
    """Base: camelCase on the wire; unknown fields ignored when reading a status back."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        protected_namespaces=(),  # fields named model_* (model_formats) are ours
    )

    def to_status(self) -> dict[str, Any]:
        """The JSON-ready dict to patch into ``.status``."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def now_rfc3339() -> str:
    """The current time as Kubernetes writes it (seconds, ``Z``)."""
    return datetime.now(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


class Condition(StatusModel):
    """One observation of the object's state (the shape of ``metav1.Condition``)."""

    type: str = Field(
        ...,
        min_length=1,
        max_length=316,
        description="Condition type, e.g. Ready, Running, Succeeded, Failed.",
    )
    status: Literal["True", "False", "Unknown"] = Field(..., description="True, False or Unknown.")
    reason: str | None = Field(
        None, max_length=1024, description="One CamelCase word: why the condition has this status."
    )
    message: str | None = Field(None, max_length=32768, description="Human-readable details.")
    last_transition_time: str | None = Field(
        None,
        json_schema_extra={"format": "date-time"},
        description="When status last changed (RFC 3339).",
    )
    observed_generation: int | None = Field(
        None, ge=0, description="metadata.generation this condition was computed from."
    )


_CONDITIONS_EXTRA: JsonDict = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}


class FailureStatus(StatusModel):
    """Why a training job failed: from the trainer's exit code, events and log."""

    reason: str | None = Field(
        None,
        description="InvalidSpec, BadData, ModelDataMismatch, TrainerError, DeadlineExceeded, ...",
    )
    exit_code: int | None = Field(None, description="Trainer container exit code.")
    message: str | None = Field(None, description="What went wrong, one paragraph.")
    log_tail: str | None = Field(
        None, description=f"Last lines of the trainer's log (at most {LOG_TAIL_LIMIT} characters)."
    )


class WorkersStatus(StatusModel):
    """Trainer pods by state (one pod per worker)."""

    desired: int | None = Field(None, ge=0, description="spec.workers.")
    active: int | None = Field(None, ge=0, description="Pods pending or running.")
    succeeded: int | None = Field(None, ge=0, description="Pods that finished successfully.")
    failed: int | None = Field(None, ge=0, description="Pods that failed (restarts included).")


class MetricsDisplay(StatusModel):
    """The metrics ``kubectl get ktj`` shows: rounded, validation ones where they exist."""

    accuracy: float | None = Field(None, description="Accuracy, 4 significant digits.")
    loss: float | None = Field(None, description="Loss, 4 significant digits.")
    measured_on: Literal["validation", "training"] | None = Field(
        None, description="Which data the shown metrics were measured on."
    )


class TrialStatus(StatusModel):
    """One finished trial of a search: its values and its objective."""

    trial_id: str = Field(..., description="keras-tuner's trial id.")
    values: dict[str, str] | None = Field(
        None, description="Spec path -> the trial's value (as text)."
    )
    objective: float | None = Field(None, description="The objective's final value.")


class TuningStatus(StatusModel):
    """A search's progress (spec.tuning): trials so far and the best ones."""

    trials: str | None = Field(None, description="Trials ended / maxTrials, e.g. 7/20.")
    done: int | None = Field(None, ge=0, description="Trials ended (completed or failed).")
    total: int | None = Field(None, ge=0, description="spec.tuning.maxTrials.")
    metric: str | None = Field(None, description="The objective's metric (as in metadata.json).")
    best: str | None = Field(
        None, description="The best trial's objective for kubectl get, e.g. 'accuracy 0.9700'."
    )
    best_trial: TrialStatus | None = Field(None, description="The best completed trial.")
    top: list[TrialStatus] | None = Field(
        None, max_length=5, description="The best completed trials, best first."
    )
    last_trial: TrialStatus | None = Field(None, description="The trial that ended last.")
    last_trial_status: Literal["completed", "failed"] | None = Field(
        None, description="How the last trial ended."
    )
    last_trial_message: str | None = Field(
        None, description="Why the last trial failed or stopped early."
    )


class QueueStatus(StatusModel):
    """Where a queued job stands in Kueue (spec.queueName)."""

    local_queue: str | None = Field(None, description="The LocalQueue the job waits in.")
    cluster_queue: str | None = Field(None, description="The ClusterQueue that admitted it.")
    flavors: dict[str, str] | None = Field(
        None, description="Resource -> ResourceFlavor Kueue assigned, e.g. nvidia.com/gpu: a100."
    )
    workload: str | None = Field(None, description="Kueue's Workload of the trainer Job.")


class KerasTrainingJobStatus(StatusModel):
    """Observed state of a KerasTrainingJob, written only by the operator."""

    phase: TrainingPhase | None = Field(None, description="Summary of the job's state.")
    conditions: list[Condition] | None = Field(
        None,
        max_length=32,
        description="Created, Running, Succeeded, Failed, Suspended; Admitted when queued.",
        json_schema_extra=_CONDITIONS_EXTRA,
    )
    observed_generation: int | None = Field(
        None, ge=0, description="metadata.generation the status describes."
    )
    start_time: str | None = Field(
        None, json_schema_extra={"format": "date-time"}, description="When training started."
    )
    completion_time: str | None = Field(
        None,
        json_schema_extra={"format": "date-time"},
        description="When the job succeeded or failed.",
    )
    epoch: int | None = Field(None, ge=0, description="Last completed epoch (1-based).")
    epochs: int | None = Field(None, ge=0, description="Epochs planned.")
    progress: str | None = Field(None, description="epoch/epochs, e.g. 3/10 (for kubectl get).")
    metrics: dict[str, float] | None = Field(
        None, description="Metrics of the last completed epoch, e.g. loss, accuracy, val_loss."
    )
    final_metrics: dict[str, float] | None = Field(
        None, description="Final validation metrics of the written model version."
    )
    display: MetricsDisplay | None = Field(
        None,
        description="Rounded accuracy and loss for kubectl get: the final ones once the job"
        " succeeded, else the last epoch's, validation metrics where there are some.",
    )
    tensorboard_path: str | None = Field(
        None,
        description="TensorBoard logs (training.tensorboard), relative to the model volume:"
        " <modelName>/tensorboard/<job uid>.",
    )
    model_name: str | None = Field(None, description="Name in the model store.")
    model_version: int | None = Field(None, ge=1, description="Version this job wrote.")
    model_path: str | None = Field(
        None, description="<modelName>/<version> relative to the model volume."
    )
    model_claim_name: str | None = Field(None, description="PVC holding the model store.")
    model_formats: list[str] | None = Field(
        None,
        max_length=8,
        description="What the version holds: keras, savedmodel, onnx (with onnx the operator"
        " serves it from the slim serving image).",
    )
    data_fingerprint: str | None = Field(
        None, max_length=80, description="sha256 over the training data files (lineage)."
    )
    workers: WorkersStatus | None = Field(None, description="Trainer pods by state.")
    tuning: TuningStatus | None = Field(None, description="The search's trials (spec.tuning).")
    queue: QueueStatus | None = Field(None, description="Kueue admission (spec.queueName).")
    failure: FailureStatus | None = Field(None, description="Set when phase is Failed.")


# The rollout keeps these in its status as the baseline of a phase and judges the window
# since then (VersionCounters.since). Bucket keys are the `le` labels as `+Inf` or
# repr(float) (bucket_key), so a baseline read back from the status matches what a pod
# reports. (The class docstring is the CRD's description.)
class VersionCounters(StatusModel):
    """Cumulative server counters of one version, summed over the server pods."""

    requests: float = Field(0, ge=0, description="Requests answered by this version.")
    errors: float = Field(0, ge=0, description="Of which failed.")
    buckets: dict[str, float] | None = Field(
        None, description="Latency histogram: upper bound in seconds (or +Inf) -> cumulative count."
    )
    shadow_compared: float = Field(0, ge=0, description="Shadow answers compared with stable.")
    shadow_agreed: float = Field(0, ge=0, description="Of which agreed.")
    shadow_errors: float = Field(0, ge=0, description="Shadow requests that failed.")

    def since(self, base: VersionCounters | None) -> VersionCounters:
        """The window since ``base``; a counter that went down (pod restarted) counts from 0."""
        if base is None:
            return self

        def delta(now: float, before: float) -> float:
            return now - before if now >= before else now

        before = base.buckets or {}
        return VersionCounters(
            requests=delta(self.requests, base.requests),
            errors=delta(self.errors, base.errors),
            buckets={le: delta(n, before.get(le, 0.0)) for le, n in (self.buckets or {}).items()},
            shadow_compared=delta(self.shadow_compared, base.shadow_compared),
            shadow_agreed=delta(self.shadow_agreed, base.shadow_agreed),
            shadow_errors=delta(self.shadow_errors, base.shadow_errors),
        )

    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def p99_ms(self) -> float | None:
        """Upper bound of the bucket holding the 99th percentile (None without data)."""
        buckets = {float(le): n for le, n in (self.buckets or {}).items()}
        total = buckets.get(math.inf, 0.0)
        if total <= 0:
            return None
        for le in sorted(buckets):
            if buckets[le] >= 0.99 * total:
                return le * 1000 if math.isfinite(le) else math.inf
        return None

    def agreement(self) -> float | None:
        return self.shadow_agreed / self.shadow_compared if self.shadow_compared else None


def bucket_key(le: float) -> str:
    """How a histogram bucket's upper bound keys :attr:`VersionCounters.buckets`."""
    return "+Inf" if math.isinf(le) else repr(le)


class RolloutStatus(StatusModel):
    """Where the rollout of a new version stands (the operator resumes from this)."""

    state: str | None = Field(
        None, description="Stable, Shadow, Canary 10%, Refused or RolledBack (for kubectl get)."
    )
    phase: Literal["Stable", "Shadow", "Canary"] | None = Field(None, description="Rollout phase.")
    stable: int | None = Field(
        None, ge=1, description="Version taking the traffic not sent to the candidate."
    )
    candidate: int | None = Field(None, ge=1, description="Version being shadowed or canaried.")
    step: int | None = Field(None, ge=0, description="Index of the current canary step.")
    weight: int | None = Field(
        None, ge=0, le=100, description="Percent of requests sent to the candidate."
    )
    phase_started: float | None = Field(
        None, ge=0, description="Unix time the current shadow phase or canary step began."
    )
    baseline: dict[str, VersionCounters] | None = Field(
        None,
        description="Per-version server counters when the step began (the window starts here).",
    )
    last: str | None = Field(
        None, description="Outcome of the last rollout: Promoted, Refused, RolledBack."
    )
    message: str | None = Field(None, description="What the rollout is doing or why it ended.")


class VersionHistoryEntry(StatusModel):
    """One model version the service has seen, with its lineage and fate."""

    version: int = Field(..., ge=1, description="Model version.")
    seen_at: str | None = Field(None, description="When the operator first saw it.")
    job: str | None = Field(None, description="Training job that wrote it.")
    spec_hash: str | None = Field(None, description="Hash of the training job spec.")
    data_fingerprint: str | None = Field(None, description="sha256 over the training data files.")
    model_formats: list[str] | None = Field(
        None, max_length=8, description="What the version holds: keras, savedmodel, onnx."
    )
    metrics: dict[str, float] | None = Field(None, description="Final validation metrics.")
    outcome: str | None = Field(None, description="Promoted, Refused or RolledBack.")
    reason: str | None = Field(None, description="Why.")
    at: str | None = Field(None, description="When the outcome happened.")


class KerasModelServiceStatus(StatusModel):
    """Observed state of a KerasModelService, written only by the operator."""

    phase: ServicePhase | None = Field(None, description="Summary of the service's state.")
    conditions: list[Condition] | None = Field(
        None,
        max_length=32,
        description=(
            "Ready, Progressing, Degraded, ModelAvailable; ModelStoreReachable when the model"
            " store is a bucket."
        ),
        json_schema_extra=_CONDITIONS_EXTRA,
    )
    observed_generation: int | None = Field(
        None, ge=0, description="metadata.generation the status describes."
    )
    replicas: int | None = Field(
        None, ge=0, description="Server pods that exist (scale subresource)."
    )
    ready_replicas: int | None = Field(None, ge=0, description="Server pods that are ready.")
    ready: str | None = Field(
        None, description="readyReplicas/replicas, e.g. 2/2 (for kubectl get)."
    )
    selector: str | None = Field(
        None, description="Label selector of the server pods, as a string (scale subresource)."
    )
    serving_version: int | None = Field(None, ge=1, description="Model version being served.")
    model_name: str | None = Field(None, description="Model name in the store.")
    url: str | None = Field(None, description="In-cluster URL of the model server.")
    rollout: RolloutStatus | None = Field(
        None, description="Gate, shadow and canary of a new version."
    )
    history: list[VersionHistoryEntry] | None = Field(
        None,
        max_length=50,
        description="Every version seen (newest 50): lineage, metrics, outcome.",
    )


def progress(epoch: int | None, epochs: int | None) -> str | None:
    """``status.progress`` from epoch counters (``None`` until epochs is known)."""
    if epochs is None:
        return None
    return f"{epoch or 0}/{epochs}"


def ready(ready_replicas: int | None, replicas: int | None) -> str:
    """``status.ready`` from replica counters."""
    return f"{ready_replicas or 0}/{replicas or 0}"


def metrics_display(
    metrics: dict[str, float] | None, final_metrics: dict[str, float] | None
) -> dict[str, float | str] | None:
    """``status.display`` from the last epoch's and the final metrics.

    The final metrics (evaluated after training) win; they are measured on the
    validation data when the epochs reported validation metrics. Before that, an
    epoch's ``val_`` metrics win over its training ones.
    """
    metrics = metrics or {}
    validated = any(k.startswith("val_") for k in metrics)
    if final_metrics:
        source, prefix = final_metrics, ""
    else:
        source, prefix = metrics, "val_" if validated else ""
    shown: dict[str, float | str] = {
        name: float(f"{source[prefix + name]:.4g}")
        for name in ("accuracy", "loss")
        if prefix + name in source
    }
    if not shown:
        return None
    shown["measuredOn"] = "validation" if validated else "training"
    return shown
