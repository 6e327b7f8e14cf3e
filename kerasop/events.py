"""Trainer -> operator/CLI progress protocol (documented in trainer/README.md).

The trainer prints one JSON object per line on stdout, each with a
``"kerasop"`` key naming the event, and writes the final event to the
container termination-message file, so the result survives pod cleanup::

    {"kerasop": "start",  "epochs": 5, "resumedFromEpoch": 0, "workers": 1}
    {"kerasop": "epoch",  "epoch": 3, "epochs": 5, "metrics": {"loss": 0.4, ...}}
    {"kerasop": "done",   "modelName": "m", "modelVersion": 2, "modelPath": "...",
                          "metrics": {...}, "epochsRun": 5}
    {"kerasop": "failed", "reason": "BadData", "message": "...", "exitCode": 3}

Lines without the key (Keras' own output, warnings) are ignored by readers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

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


def encode(event: str, **fields: Any) -> str:
    return json.dumps({"kerasop": event, **fields}, separators=(",", ":"), default=float)


def decode(line: str) -> dict[str, Any] | None:
    """The event in one log line, or None for any other line."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) and "kerasop" in obj else None


def last_events(lines: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The latest event of each kind found in ``lines``."""
    out: dict[str, dict[str, Any]] = {}
    for line in lines:
        event = decode(line)
        if event is not None:
            out[event["kerasop"]] = event
    return out
