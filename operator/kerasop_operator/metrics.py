"""Prometheus metrics of the operator (served on ``KERASOP_METRICS_PORT``)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from prometheus_client import Counter, Histogram

RECONCILES = Counter(
    "kerasop_reconcile_total",
    "Reconciles run, by resource kind and what triggered them.",
    ["kind", "trigger"],
)
ERRORS = Counter(
    "kerasop_reconcile_errors_total",
    "Reconciles that raised, by resource kind and error class.",
    ["kind", "error"],
)
DURATION = Histogram(
    "kerasop_reconcile_duration_seconds",
    "Wall time of one reconcile.",
    ["kind"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CHILD_WRITES = Counter(
    "kerasop_child_writes_total",
    "Writes to child objects (Jobs, Deployments, Services, ...): created, patched, deleted.",
    ["kind", "action"],
)
STATUS_WRITES = Counter(
    "kerasop_status_writes_total",
    "Status subresource writes of the custom resources.",
    ["kind"],
)
PHASE_TRANSITIONS = Counter(
    "kerasop_phase_transitions_total",
    "Phase changes of the custom resources, by the phase entered.",
    ["kind", "phase"],
)


@contextlib.contextmanager
def reconcile(kind: str, trigger: str) -> Iterator[None]:
    """Count and time one reconcile; count its error if it raises."""
    RECONCILES.labels(kind=kind, trigger=trigger).inc()
    start = time.monotonic()
    try:
        yield
    except Exception as exc:
        ERRORS.labels(kind=kind, error=type(exc).__name__).inc()
        raise
    finally:
        DURATION.labels(kind=kind).observe(time.monotonic() - start)
