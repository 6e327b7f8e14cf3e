"""A KerasTrainingJob's status from what was observed (pure)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from kerasop import events as ev
from kerasop.spec import SpecError
from kerasop.status import (
    FailureStatus,
    KerasTrainingJobStatus,
    MetricsDisplay,
    QueueStatus,
    TrainingPhase,
    WorkersStatus,
    metrics_display,
    progress,
)

from ..conditions import Cond, status_conditions
from .logs import failure_info, finite_metrics, progress_from_log, store_path
from .names import TERMINAL_PHASES, models_claim_name, parse, trainer_job_name
from .observed import (
    job_conditions,
    job_pods,
    pod_running,
    termination,
    trainer_state,
    worker0_pod,
)
from .queueing import ObservedQueue, QueueState, queue_state

# --------------------------------------------------------------------------------------------
# observed state -> status


@dataclass
class ObservedTraining:
    """What the handler read from the cluster for one job."""

    job: dict[str, Any] | None = None  # the batch/v1 Job, None if absent
    pods: list[dict[str, Any]] = field(default_factory=list)  # pods labelled with the job
    log_lines: list[str] | None = None  # tail of worker 0's trainer log, if read
    spec_error: str | None = None
    apply_error: str | None = None  # the API server refused a child (e.g. a bad podTemplate)
    queue: ObservedQueue | None = None  # the job is queued (Kueue): its Workload


def pod_stuck_detail(pod: dict[str, Any]) -> tuple[str, str] | None:
    """Why this trainer pod cannot start (image pull, scheduling) as (reason, message), or None."""
    waiting = trainer_state(pod).get("waiting") or {}
    if waiting.get("reason") and waiting["reason"] != "ContainerCreating":
        return waiting["reason"], waiting.get("message") or waiting["reason"]
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return cond.get("reason") or "Unschedulable", cond.get("message") or ""
    return None


def _pending_detail(pods: list[dict[str, Any]]) -> tuple[str, str]:
    """Why trainer pods are not running yet (image pulls, scheduling), as (reason, message)."""
    for pod in pods:
        detail = pod_stuck_detail(pod)
        if detail:
            return detail
    if pods:
        return "PodsStarting", "trainer pods are starting"
    return "PodsPending", "waiting for the Job controller to create trainer pods"


# Status fields a new observation keeps from the old status unless it replaces them.
_CARRIED_OVER = (
    "startTime",
    "completionTime",
    "epoch",
    "epochs",
    "metrics",
    "finalMetrics",
    "dataFingerprint",
    "modelName",
    "modelVersion",
    "modelPath",
    "modelClaimName",
    "modelFormats",
    "tuning",
    "tensorboardPath",
    "failure",
    "queue",
)


def training_status(
    body: dict[str, Any],
    observed: ObservedTraining,
    *,
    now: str,
) -> dict[str, Any]:
    """The complete ``status`` of a KerasTrainingJob from what was observed.

    Pure: depends only on its arguments (the old status is ``body["status"]``),
    so the same observation always produces the same status.
    """
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    old = body.get("status") or {}
    generation = meta.get("generation")
    name = meta.get("name", "")

    st = KerasTrainingJobStatus.model_validate(
        {k: old[k] for k in _CARRIED_OVER if old.get(k) is not None}
    )
    st.observed_generation = generation
    output = spec.get("output") or {}
    if not output.get("uri"):  # a model store in a bucket has no claim
        storage = output.get("storage") or {}
        st.model_claim_name = storage.get("claimName") or models_claim_name(name)
    if observed.spec_error:
        return _invalid_spec_status(st, observed.spec_error, old, now, generation)
    if st.epochs is None:
        with contextlib.suppress(SpecError):
            st.epochs = parse(body).spec.training.epochs

    job = observed.job
    pods = job_pods(job, observed.pods)
    queued = (
        queue_state(observed.queue, job, now=now)
        if observed.queue is not None and job is not None
        else None
    )
    st.phase = _phase(spec, job, pods, old.get("phase"), queued)
    if observed.queue is not None:
        st.queue = _queue_status(observed.queue.name, queued, st.queue)
    if job is not None:
        jstatus = job.get("status") or {}
        st.workers = WorkersStatus(
            desired=int(spec.get("workers") or 1),
            active=int(jstatus.get("active") or 0),
            succeeded=int(jstatus.get("succeeded") or 0),
            failed=int(jstatus.get("failed") or 0),
        )
        _set_times(st, job, now)
    st = st.model_copy(update=progress_from_log(observed.log_lines))
    if job is not None and st.phase == "Succeeded":
        _set_result(st, worker0_pod(pods), observed.log_lines)
    if job is not None and st.phase == "Failed":
        st.failure = failure_info(job, pods, observed.log_lines)
    if st.phase != "Failed":
        st.failure = None
    if st.epochs is not None:
        st.progress = progress(st.epoch, st.epochs)
    display = metrics_display(st.metrics, st.final_metrics)
    if display:
        st.display = MetricsDisplay.model_validate(display)

    st.conditions = status_conditions(
        old.get("conditions"),
        [
            _created(trainer_job_name(name), st.phase, job, observed.apply_error),
            _running(st, job, pods, queued),
            _succeeded(st),
            _failed(st),
            _suspended(st.phase),
            *([queued.condition()] if queued is not None else []),
        ],
        now=now,
        generation=generation,
    )
    return st.to_status()


def _queue_status(
    local_queue: str, queued: QueueState | None, old: QueueStatus | None
) -> QueueStatus:
    """status.queue: the last admission is kept while the Job waits for a new one."""
    if queued is None or not queued.cluster_queue:
        return QueueStatus(
            local_queue=local_queue,
            cluster_queue=old.cluster_queue if old else None,
            flavors=old.flavors if old else None,
            workload=(queued.workload if queued else None) or (old.workload if old else None),
        )
    return QueueStatus(
        local_queue=local_queue,
        cluster_queue=queued.cluster_queue,
        flavors=queued.flavors or None,
        workload=queued.workload,
    )


def _invalid_spec_status(
    st: KerasTrainingJobStatus, error: str, old: dict[str, Any], now: str, generation: Any
) -> dict[str, Any]:
    st.phase = "Failed"
    st.failure = FailureStatus(reason="InvalidSpec", message=error)
    st.completion_time = st.completion_time or now
    st.conditions = status_conditions(
        old.get("conditions"),
        [
            Cond.of("Created", False, "InvalidSpec", error),
            Cond.of("Running", False, "InvalidSpec", "the spec is invalid"),
            Cond.of("Succeeded", False, "InvalidSpec", "the spec is invalid"),
            Cond.of("Failed", True, "InvalidSpec", error),
            Cond.of("Suspended", False, "InvalidSpec", ""),
        ],
        now=now,
        generation=generation,
    )
    return st.to_status()


def _phase(
    spec: dict[str, Any],
    job: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    old_phase: Any,
    queued: QueueState | None = None,
) -> TrainingPhase:
    if job is None:
        # A finished job whose Job was cleaned up (ttlSecondsAfterFinished) keeps its result.
        return old_phase if old_phase in TERMINAL_PHASES else "Pending"
    jconds = job_conditions(job)
    if "Complete" in jconds or "SuccessCriteriaMet" in jconds:
        return "Succeeded"
    if "Failed" in jconds or "FailureTarget" in jconds:
        return "Failed"
    if spec.get("suspend"):
        return "Suspended"
    if queued is not None and queued.phase is not None:
        return queued.phase
    if (job.get("spec") or {}).get("suspend"):
        # Queued: Kueue has yet to start it (or no Kueue serves the queue: Admitted says).
        return "Pending" if queued is not None else "Suspended"
    ready = int((job.get("status") or {}).get("ready") or 0)
    if any(pod_running(p) for p in pods) or ready > 0:
        return "Running"
    return "Pending"


def _set_times(st: KerasTrainingJobStatus, job: dict[str, Any], now: str) -> None:
    jstatus = job.get("status") or {}
    jconds = job_conditions(job)
    if jstatus.get("startTime") and not st.start_time:
        st.start_time = jstatus["startTime"]
    if st.phase == "Running" and not st.start_time:
        st.start_time = now
    if st.phase == "Succeeded":
        done_at = jstatus.get("completionTime") or (jconds.get("Complete") or {}).get(
            "lastTransitionTime"
        )
        st.completion_time = st.completion_time or done_at or now
    if st.phase == "Failed":
        done_at = (jconds.get("Failed") or jconds.get("FailureTarget") or {}).get(
            "lastTransitionTime"
        )
        st.completion_time = st.completion_time or done_at or now


def _set_result(
    st: KerasTrainingJobStatus, worker0: dict[str, Any] | None, log_lines: list[str] | None
) -> None:
    """The version and final metrics of a finished job: worker 0's termination message,
    else the ``done`` event in its log."""
    term = termination(worker0) or {}
    done = ev.decode(term.get("message") or "")
    if not isinstance(done, ev.DoneEvent):
        done = ev.last_events(log_lines or []).done
    if done is None:
        return
    st.model_name = done.model_name or st.model_name
    if done.model_version is not None and done.model_version >= 1:
        st.model_version = done.model_version
    st.model_path = store_path(done, st.model_name, st.model_version) or st.model_path
    st.final_metrics = finite_metrics(done.metrics) or st.final_metrics
    if done.epochs_run is not None:
        st.epoch = done.epochs_run
    if done.data_fingerprint:  # lineage, for the service's version history
        st.data_fingerprint = done.data_fingerprint[:80]
    # Describes this done's version only (an older trainer reports none).
    st.model_formats = done.model_formats


def _created(
    jname: str, phase: TrainingPhase | None, job: dict[str, Any] | None, apply_error: str | None
) -> Cond:
    if apply_error:
        return Cond.of("Created", job is not None, "ApplyFailed", apply_error)
    if job is not None:
        return Cond.of("Created", True, "JobCreated", f"Job {jname} created")
    if phase in TERMINAL_PHASES:
        return Cond.of(
            "Created", True, "JobCleanedUp", f"Job {jname} was removed after it finished"
        )
    return Cond.of("Created", False, "Creating", f"creating Job {jname}")


def _running(
    st: KerasTrainingJobStatus,
    job: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    queued: QueueState | None,
) -> Cond:
    if st.phase == "Running":
        return Cond.of("Running", True, "TrainerRunning", _progress_message(st))
    if st.phase == "Pending" and queued is not None and queued.stage != "Admitted":
        return Cond.of("Running", False, queued.stage, queued.message)
    if st.phase == "Pending":
        reason, message = _pending_detail(pods) if job is not None else ("Creating", "")
        return Cond.of("Running", False, reason, message)
    if queued is not None and st.phase in ("Queued", "Preempted"):
        return Cond.of("Running", False, st.phase, queued.message)
    if st.phase == "Suspended":
        return Cond.of("Running", False, "Suspended", "the job is suspended")
    if st.phase == "Succeeded":
        return Cond.of("Running", False, "Completed", "training finished")
    return Cond.of("Running", False, "Failed", "training failed")


def _succeeded(st: KerasTrainingJobStatus) -> Cond:
    if st.phase != "Succeeded":
        return Cond.of("Succeeded", False, "Failed" if st.phase == "Failed" else "NotCompleted", "")
    if not st.model_version:
        return Cond.of(
            "Succeeded", True, "Completed", "the trainer finished but reported no model version"
        )
    return Cond.of(
        "Succeeded",
        True,
        "ModelWritten",
        f"model {st.model_name} version {st.model_version} written"
        + (f" to claim {st.model_claim_name}" if st.model_claim_name else ""),
    )


def _failed(st: KerasTrainingJobStatus) -> Cond:
    if st.phase != "Failed":
        return Cond.of("Failed", False, "NoFailure", "")
    fail = st.failure or FailureStatus()
    return Cond.of("Failed", True, fail.reason or "TrainerError", fail.message or "")


def _suspended(phase: TrainingPhase | None) -> Cond:
    if phase != "Suspended":
        return Cond.of("Suspended", False, "NotSuspended", "")
    return Cond.of(
        "Suspended", True, "JobSuspended", "trainer pods are stopped until spec.suspend is false"
    )


def _progress_message(st: KerasTrainingJobStatus) -> str:
    if st.epochs:
        msg = f"epoch {st.epoch or 0}/{st.epochs}"
        metrics = st.metrics or {}
        if metrics:
            msg += " " + " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))
        return msg
    return "training"
