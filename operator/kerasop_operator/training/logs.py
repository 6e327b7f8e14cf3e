"""The trainer's own words: progress from its log, results and failures from its events."""

from __future__ import annotations

from typing import Any

from kerasop import events as ev
from kerasop.contracts import STORE_ROOT
from kerasop.status import LOG_TAIL_LIMIT, FailureStatus

from .names import LOG_TAIL_LINES
from .observed import job_conditions, termination
from .tuning import tuning_status


def progress_from_log(lines: list[str] | None) -> dict[str, Any]:
    """epoch, epochs, metrics from the trainer's JSON events in a log tail."""
    if not lines:
        return {}
    last = ev.last_events(lines)
    out: dict[str, Any] = {}
    if last.start is not None:
        out["epochs"] = last.start.epochs
        if last.start.tensorboard_path:
            out["tensorboard_path"] = last.start.tensorboard_path
    if last.epoch is not None:
        out["epoch"] = last.epoch.epoch
        out["epochs"] = last.epoch.epochs
        metrics = finite_metrics(last.epoch.metrics)
        if metrics:
            out["metrics"] = metrics
    if last.trial is not None:
        out["tuning"] = tuning_status(last.trial)
    return out


def finite_metrics(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if v == v}  # drop NaN


def _tail(text: str | None, lines: int = LOG_TAIL_LINES) -> str | None:
    if not text:
        return None
    kept = "\n".join(text.rstrip("\n").splitlines()[-lines:])
    return kept[-LOG_TAIL_LIMIT:] or None


def store_path(event: ev.DoneEvent, name: str | None, version: int | None) -> str | None:
    path = event.model_path
    if path:
        prefix = STORE_ROOT.rstrip("/") + "/"
        return path[len(prefix) :] if path.startswith(prefix) else path.lstrip("/")
    if name and version:
        return f"{name}/{version}"
    return None


def failure_info(
    job: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    log_lines: list[str] | None,
) -> FailureStatus:
    """status.failure from the Job's Failed condition, the pods' exit codes and messages.

    The trainer's own ``failed`` event (termination message) wins; then an
    OOM kill; then the exit code's class (kerasop.events); a deadline is
    reported as DeadlineExceeded whatever the killed pod's exit code was.
    """
    conds = job_conditions(job)
    job_failed = conds.get("Failed") or conds.get("FailureTarget") or {}
    job_reason = job_failed.get("reason")
    job_message = job_failed.get("message") or ""

    failed = []
    for pod in pods:
        term = termination(pod)
        if term and term.get("exitCode", 0) != 0:
            failed.append((term.get("finishedAt") or "", term))
    failed.sort(key=lambda t: t[0])
    term = failed[-1][1] if failed else None

    out: dict[str, Any] = {}
    raw_message: str | None = None  # a termination message that is the log tail (fallback)
    if term is not None:
        exit_code: int = term.get("exitCode") or 0
        out["exitCode"] = term.get("exitCode")
        event = ev.decode(term.get("message") or "")
        if isinstance(event, ev.FailedEvent):
            out["reason"] = event.reason or ev.FAILURE_REASONS.get(exit_code, "TrainerError")
            out["message"] = event.message
            if event.exit_code is not None:
                out["exitCode"] = event.exit_code
        else:
            raw_message = term.get("message")
            if term.get("reason") == "OOMKilled":
                out["reason"] = "OOMKilled"
                out["message"] = "the trainer ran out of memory (raise spec.resources.memory)"
            else:
                out["reason"] = ev.FAILURE_REASONS.get(exit_code, "TrainerError")
                out["message"] = f"the trainer exited with code {term.get('exitCode')}"
    if job_reason == "DeadlineExceeded":
        out["reason"] = "DeadlineExceeded"
        out["message"] = job_message or "the job ran longer than spec.activeDeadlineSeconds"
    elif "reason" not in out:
        out["reason"] = job_reason or "TrainerError"
        out["message"] = job_message or "the trainer failed"
    elif job_reason == "BackoffLimitExceeded" and job_message:
        out["message"] = f"{out['message']} ({job_message})" if out["message"] else job_message
    tail = _tail("\n".join(log_lines)) if log_lines else _tail(raw_message)
    if tail:
        out["logTail"] = tail
    return FailureStatus.model_validate(out)
