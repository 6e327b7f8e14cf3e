"""A search (``spec.tuning``): its pods, its status, its Events (pure).

With ``tuning.parallelism`` > 1 the trainer Job is Indexed with ``parallelism`` pods in
keras-tuner's distributed mode: index 0 is the ``chief`` (it serves keras-tuner's oracle on
:data:`ORACLE_PORT` behind the headless workers Service, runs trials as ``tuner0``, then
publishes the best trial), indexes 1..parallelism-1 are tuner workers ``tuner1``, ... that
run trials. A pod
restarted with its index keeps its tuner id, and keras-tuner gives it its ongoing trial back
(which resumes from its checkpoints). With ``parallelism: 1`` one pod runs the whole search.

The chief prints a ``trial`` event (:class:`kerasop.events.TrialEvent`) each time the oracle
records a trial's end; the latest one, read from the chief's log, is the search's status.
"""

from __future__ import annotations

from typing import Any

from kerasop import events as ev
from kerasop.contracts import (
    ENV_KERASTUNER_ORACLE_IP,
    ENV_KERASTUNER_ORACLE_PORT,
    ENV_TUNER_INDEX,
)
from kerasop.spec import KerasTrainingJob
from kerasop.status import TrialStatus, TuningStatus

ORACLE_PORT = 8000
TOP_TRIALS = ev.BEST_TRIALS


def distributed(job: KerasTrainingJob) -> bool:
    """Whether the search runs as a chief and tuner workers (parallelism > 1)."""
    return job.spec.tuning is not None and job.spec.tuning.parallelism > 1


def pod_count(job: KerasTrainingJob) -> int:
    """Pods of the trainer Job: the workers, or a search's trials in flight (the chief runs
    trials too)."""
    if distributed(job):
        assert job.spec.tuning is not None
        return job.spec.tuning.parallelism
    return job.spec.workers


def tuning_env(chief_host: str) -> list[dict[str, Any]]:
    """keras-tuner's distributed environment; the trainer turns the index into the tuner id
    (0: ``chief``, i: ``tuner<i>``) and binds the chief to all addresses."""
    return [
        {"name": ENV_KERASTUNER_ORACLE_IP, "value": chief_host},
        {"name": ENV_KERASTUNER_ORACLE_PORT, "value": str(ORACLE_PORT)},
        {
            "name": ENV_TUNER_INDEX,
            "valueFrom": {
                "fieldRef": {
                    "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"
                }
            },
        },
    ]


def _trial(summary: ev.TrialSummary | ev.TrialEvent) -> TrialStatus:
    return TrialStatus(
        trial_id=summary.trial_id,
        values={k: str(v) for k, v in summary.values.items()},
        objective=summary.objective,
    )


def tuning_status(event: ev.TrialEvent) -> TuningStatus:
    """``status.tuning`` from the latest ``trial`` event of the search."""
    best = event.best[0] if event.best else None
    shown = None
    if best is not None and best.objective is not None:
        shown = f"{event.metric or 'objective'} {best.objective:.4f}"
    return TuningStatus(
        trials=f"{event.done}/{event.total}",
        done=event.done,
        total=event.total,
        metric=event.metric,
        best=shown,
        best_trial=_trial(best) if best is not None else None,
        top=[_trial(t) for t in event.best[:TOP_TRIALS]] or None,
        last_trial=_trial(event),
        last_trial_status=event.status,
        last_trial_message=event.message or None,
    )


def trial_event(old: dict[str, Any] | None, new: dict[str, Any]) -> tuple[str, str, str] | None:
    """The Kubernetes Event (type, reason, message) for trials that ended since ``old``."""
    before = int(((old or {}).get("tuning") or {}).get("done") or 0)
    tuning = new.get("tuning") or {}
    done = int(tuning.get("done") or 0)
    last = tuning.get("lastTrial") or {}
    if done <= before or not last:
        return None
    values = " ".join(f"{k}={v}" for k, v in (last.get("values") or {}).items())
    status = tuning.get("lastTrialStatus") or "completed"
    more = f" ({done - before} trials ended since the last report)" if done - before > 1 else ""
    head = f"trial {last.get('trialId')} {status} [{tuning.get('trials')}]: {values}{more}"
    message = tuning.get("lastTrialMessage")
    if status == "failed":
        return ("Warning", "TrialFailed", f"{head}: {message or 'failed'}")
    objective = last.get("objective")
    text = f"{head} -> {tuning.get('metric')} {objective:.4g}" if objective is not None else head
    if tuning.get("best"):
        text += f"; best {tuning['best']} (trial {(tuning.get('bestTrial') or {}).get('trialId')})"
    if message:
        text += f"; {message}"
    return ("Normal", "TrialCompleted", text)
