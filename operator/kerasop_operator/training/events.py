"""Kubernetes Events posted when a job's phase changes."""

from __future__ import annotations

from typing import Any


def _job_missing(st: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Created" and c.get("status") == "False"
        for c in st.get("conditions") or []
    )


def phase_event(old: dict[str, Any] | None, new: dict[str, Any]) -> tuple[str, str, str] | None:
    """The Kubernetes Event (type, reason, message) for a phase transition, if any."""
    before = (old or {}).get("phase")
    after = new.get("phase")
    if after == "Pending":
        # Only once the Job exists: a refused Job has its own event (ApplyFailed, NameConflict)
        # and gets this one when a later attempt creates it. Out of a queue, queue_event's
        # Admitted says it.
        if (
            _job_missing(new)
            or (before == "Pending" and not _job_missing(old or {}))
            or before in ("Queued", "Preempted")
        ):
            return None
        return ("Normal", "Created", "trainer Job created, waiting for pods")
    if before == after or after in (None, "Queued", "Preempted"):  # queue_event says why
        return None
    if after == "Running":
        if before in ("Suspended", "Preempted"):
            return ("Normal", "Resumed", "training resumed")
        return ("Normal", "Running", "training started")
    if after == "Suspended":
        return ("Normal", "Suspended", "training suspended")
    if after == "Succeeded":
        metrics = new.get("finalMetrics") or {}
        shown = " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))
        version = new.get("modelVersion")
        msg = (
            f"model {new.get('modelName')} version {version} written"
            if version
            else "training finished"
        )
        return ("Normal", "Succeeded", f"{msg}{' (' + shown + ')' if shown else ''}")
    fail = new.get("failure") or {}
    return ("Warning", "Failed", f"{fail.get('reason', 'TrainerError')}: {fail.get('message', '')}")


def phase_events(old: dict[str, Any] | None, new: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The Events of a phase transition: :func:`phase_event`'s, after a ``Created`` when the
    job's first status is already past ``Pending`` (its pods ran before the operator first
    looked, as on a loaded operator), so that every job that got a Job says so once."""
    event = phase_event(old, new)
    first_seen = not (old or {}).get("phase")
    past_pending = new.get("phase") in ("Running", "Succeeded", "Failed", "Suspended")
    if first_seen and past_pending and not _job_missing(new):
        created = phase_event(old, {**new, "phase": "Pending"})
        return [e for e in (created, event) if e is not None]
    return [event] if event is not None else []


# Admitted condition reason (queueing.Stage) -> Event type; WaitingForWorkload posts none.
_QUEUE_EVENTS = {
    "Queued": "Normal",
    "Admitted": "Normal",
    "Deactivated": "Normal",
    "Preempted": "Warning",
    "QueueNotServed": "Warning",
}


def _admitted(st: dict[str, Any] | None) -> tuple[Any, Any, Any]:
    for c in (st or {}).get("conditions") or []:
        if c.get("type") == "Admitted":
            return c.get("status"), c.get("reason"), c.get("message")
    return None, None, None


def queue_event(old: dict[str, Any] | None, new: dict[str, Any]) -> tuple[str, str, str] | None:
    """The Event (type, reason, message) when Kueue's decision on a queued job changes."""
    before, after = _admitted(old), _admitted(new)
    reason = after[1]
    if after[:2] == before[:2] or reason not in _QUEUE_EVENTS:
        return None
    return (_QUEUE_EVENTS[reason], reason, after[2] or "")
