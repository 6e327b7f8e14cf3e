"""Trainer -> operator/CLI progress protocol (documented in trainer/README.md).

The trainer prints one JSON object per line on stdout, each with a
``"kerasop"`` key naming the event, and writes the final event to the
container termination-message file, so the result survives pod cleanup::

    {"kerasop": "start",  "epochs": 5, "resumedFromEpoch": 0, "workers": 1}
    {"kerasop": "epoch",  "epoch": 3, "epochs": 5, "metrics": {"loss": 0.4, ...}}
    {"kerasop": "checkpoint", "epoch": 3, "step": 41, "stepsDone": 341}
    {"kerasop": "done",   "modelName": "m", "modelVersion": 2, "modelPath": "...",
                          "metrics": {...}, "epochsRun": 5}
    {"kerasop": "failed", "reason": "BadData", "message": "...", "exitCode": 3}
    {"kerasop": "trial",  "trialId": "3", "status": "completed", "values": {...},
                          "objective": 0.91, "done": 4, "total": 6, "best": [...]}

A trainer stopped by SIGTERM between two batches prints ``checkpoint``: it saved the model
after ``epoch`` epochs and ``step`` batches of the next (``stepsDone``: the optimizer's step
count), and a rerun's ``start`` event names where it resumed (``resumedFromStep``,
``stepsDone``): the two step counts differ by the batches trained twice.

A search (``spec.tuning``, docs/tuning.md) prints a ``trial`` event per ended trial; the
``start`` and ``epoch`` events of its trials carry a ``trialId``.

Lines without the key (Keras' own output, warnings) are ignored by readers, and so
is a line whose event does not validate as one of the models below.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.alias_generators import to_camel

# Exit codes: distinct per failure class so the operator can tell them apart
# without parsing logs, and so Kubernetes podFailurePolicy can stop retrying.
EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_SPEC = 2
EXIT_BAD_DATA = 3
EXIT_MODEL_MISMATCH = 4
EXIT_BAD_MODEL = 5  # the user's model file does not load
EXIT_USER_CODE = 6  # the user's builder code or training script failed

FAILURE_REASONS = {
    EXIT_BAD_SPEC: "InvalidSpec",
    EXIT_BAD_DATA: "BadData",
    EXIT_MODEL_MISMATCH: "ModelDataMismatch",
    EXIT_BAD_MODEL: "BadModel",
    EXIT_USER_CODE: "UserCodeError",
    EXIT_INTERNAL: "TrainerError",
}
# Failures that retrying cannot fix.
PERMANENT_EXIT_CODES = (
    EXIT_BAD_SPEC,
    EXIT_BAD_DATA,
    EXIT_MODEL_MISMATCH,
    EXIT_BAD_MODEL,
    EXIT_USER_CODE,
)

TERMINATION_MESSAGE_LIMIT = 4096  # bytes Kubernetes keeps of the termination message


def _numbers_only(value: Any) -> dict[str, Any]:
    """Metric values that are not numbers (a custom metric returning a string) are left out."""
    if not isinstance(value, dict):
        return {}
    return {
        str(k): v
        for k, v in value.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


Metrics = Annotated[dict[str, float], BeforeValidator(_numbers_only)]


class _Event(BaseModel):
    """camelCase on the wire; fields a reader does not know are kept, not refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="allow",
        protected_namespaces=(),  # fields named model_* (model_formats) are ours
    )


class StartEvent(_Event):
    kerasop: Literal["start"] = "start"
    epochs: int
    resumed_from_epoch: int = 0
    resumed_from_step: int = 0  # batches of epoch resumed_from_epoch + 1 already trained
    steps_done: int | None = None  # the optimizer's step count when training (re)starts
    workers: int = 1
    tensorboard_path: str | None = None  # training.tensorboard: logs, relative to the store root


class EpochEvent(_Event):
    kerasop: Literal["epoch"] = "epoch"
    epoch: int
    epochs: int
    metrics: Metrics = Field(default_factory=dict)


class CheckpointEvent(_Event):
    """Stopped by SIGTERM: saved after ``epoch`` epochs and ``step`` batches of the next."""

    kerasop: Literal["checkpoint"] = "checkpoint"
    epoch: int
    step: int
    steps_done: int | None = None


class DoneEvent(_Event):
    """The model is published; a non-chief worker of a multi-worker job has no version."""

    kerasop: Literal["done"] = "done"
    model_name: str | None = None
    model_version: int | None = None
    model_path: str | None = None
    metrics: Metrics = Field(default_factory=dict)
    epochs_run: int | None = None
    data_fingerprint: str | None = None  # lineage: sha256 over the training data files
    model_formats: list[str] | None = None  # kerasop.store.model_formats of the version


class FailedEvent(_Event):
    kerasop: Literal["failed"] = "failed"
    reason: str
    message: str = ""
    exit_code: int | None = None


class TrialSummary(_Event):
    """One finished trial of a search (spec.tuning): its values and its objective."""

    trial_id: str
    values: dict[str, Any] = Field(default_factory=dict)  # space path -> value
    objective: float | None = None


class TrialEvent(_Event):
    """A trial of a search ended (completed or failed); ``best``: the search's best
    completed trials so far, best first (at most :data:`BEST_TRIALS`), ``done``: trials
    ended so far in the whole search."""

    kerasop: Literal["trial"] = "trial"
    trial_id: str
    status: Literal["completed", "failed"]
    values: dict[str, Any] = Field(default_factory=dict)
    objective: float | None = None
    metric: str | None = None  # the objective's metric (as in metadata.json)
    reason: str | None = None  # failed: why
    message: str = ""
    done: int = 0
    total: int = 0
    best: list[TrialSummary] = Field(default_factory=list)


BEST_TRIALS = 5

Event = Annotated[
    StartEvent | EpochEvent | CheckpointEvent | DoneEvent | FailedEvent | TrialEvent,
    Field(discriminator="kerasop"),
]
_EVENT = TypeAdapter(Event)


def encode(event: str, **fields: Any) -> str:
    """One event line; ``fields`` must validate as that event (a trainer bug otherwise)."""
    payload = {"kerasop": event, **fields}
    _EVENT.validate_python(payload)
    return json.dumps(payload, separators=(",", ":"), default=float)


def decode(line: str) -> Event | None:
    """The event in one log line, or None for any other line."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    if not isinstance(obj, dict) or "kerasop" not in obj:
        return None
    try:
        return _EVENT.validate_python(obj)
    except ValidationError:
        return None


@dataclass
class LastEvents:
    """The latest event of each kind found in a log."""

    start: StartEvent | None = None
    epoch: EpochEvent | None = None
    checkpoint: CheckpointEvent | None = None
    done: DoneEvent | None = None
    failed: FailedEvent | None = None
    trial: TrialEvent | None = None


def last_events(lines: Iterable[str]) -> LastEvents:
    """The latest event of each kind found in ``lines``."""
    out = LastEvents()
    for line in lines:
        event = decode(line)
        if event is not None:
            setattr(out, event.kerasop, event)
    return out
