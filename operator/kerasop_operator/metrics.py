"""Prometheus metrics of the operator (served on ``KERASOP_METRICS_PORT``)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from kerasop.status import TRAINING_PHASES

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

# Training progress, from each KerasTrainingJob's status (the dashboard's training panels).
TRAINING_EPOCH = Gauge(
    "kerasop_training_job_epoch", "Last completed epoch of a training job.", ["namespace", "name"]
)
TRAINING_EPOCHS = Gauge(
    "kerasop_training_job_epochs", "Epochs planned for a training job.", ["namespace", "name"]
)
TRAINING_METRIC = Gauge(
    "kerasop_training_job_metric",
    "Metrics of a training job's last completed epoch (loss, accuracy, val_loss, ...).",
    ["namespace", "name", "metric"],
)
TRAINING_PHASE = Gauge(
    "kerasop_training_job_phase",
    "1 for the phase a training job is in, 0 for the others.",
    ["namespace", "name", "phase"],
)
# The series each job has set, so that its update removes exactly those: Gauge.remove_by_labels
# scans every series of the gauge, which made each event cost O(jobs) (10 ms at 1000 jobs).
_job_series: dict[tuple[str, str], list[tuple[Gauge, tuple[str, ...]]]] = {}
_job_series_lock = threading.Lock()


def observe_training_job(body: dict[str, Any], *, deleted: bool = False) -> None:
    """Set the training gauges from a job's status; drop its series when it is deleted."""
    meta = body.get("metadata") or {}
    key = (meta.get("namespace") or "", meta.get("name") or "")
    series: list[tuple[Gauge, tuple[str, ...], float]] = []
    if not deleted:
        st = body.get("status") or {}
        for gauge, field in ((TRAINING_EPOCH, "epoch"), (TRAINING_EPOCHS, "epochs")):
            if isinstance(st.get(field), int):
                series.append((gauge, key, st[field]))
        for metric, value in (st.get("metrics") or {}).items():
            if isinstance(value, int | float):
                series.append((TRAINING_METRIC, (*key, metric), value))
        for phase in TRAINING_PHASES:
            series.append((TRAINING_PHASE, (*key, phase), 1 if st.get("phase") == phase else 0))
    with _job_series_lock:
        for gauge, labels in _job_series.pop(key, []):  # metrics no longer reported go too
            gauge.remove(*labels)
        for gauge, labels, value in series:
            gauge.labels(*labels).set(value)
        if series:
            _job_series[key] = [(gauge, labels) for gauge, labels, _ in series]


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
