"""Helpers of the trainer tests (fixtures are in conftest.py)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kerasop import events
from kerasop.spec import KerasTrainingJob

DENSE_MODEL = {
    "layers": [
        {"type": "Dense", "units": 10, "activation": "relu"},
        {"type": "Dense", "units": 1, "activation": "sigmoid"},
    ]
}


def small_cnn(units: int = 1, activation: str = "sigmoid") -> dict[str, Any]:
    return {
        "layers": [
            {"type": "Rescaling", "scale": 1 / 255},
            {"type": "Conv2D", "filters": 4, "kernelSize": 3, "activation": "relu"},
            {"type": "MaxPooling2D", "poolSize": 2},
            {"type": "Flatten"},
            {"type": "Dense", "units": units, "activation": activation},
        ]
    }


def make_job(
    name: str,
    data: dict[str, Any],
    model: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    **spec: Any,
) -> KerasTrainingJob:
    return KerasTrainingJob.model_validate(
        {
            "apiVersion": "kerasop.io/v1alpha1",
            "kind": "KerasTrainingJob",
            "metadata": {"name": name},
            "spec": {
                "data": data,
                "model": model or DENSE_MODEL,
                "training": {"seed": 1, **(training or {})},
                **spec,
            },
        }
    )


def decoded(line: str) -> dict[str, Any] | None:
    """A trainer event line as its wire dict (camelCase), None for other lines."""
    event = events.decode(line)
    return event.model_dump(by_alias=True, exclude_none=True) if event is not None else None


class Events:
    """An ``emit`` callable that keeps the decoded events."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in map(decoded, self.lines) if e and e["kerasop"] == kind]


class Interrupted(BaseException):
    """Stands for a killed trainer: raised from the progress output after an epoch."""


def stop_after(epoch: int) -> Events:
    """Events that raise :class:`Interrupted` after ``epoch``."""

    class Stopping(Events):
        def __call__(self, line: str) -> None:
            super().__call__(line)
            event = decoded(line)
            if event and event["kerasop"] == "epoch" and event["epoch"] >= epoch:
                raise Interrupted()

    return Stopping()


def assert_store_clean(store: Path, model_name: str) -> None:
    """No version and no staging directory for ``model_name``."""
    base = store / model_name
    if not base.exists():
        return
    leftovers = [
        p.name for p in base.iterdir() if p.name.isdigit() or p.name.startswith(".staging")
    ]
    assert leftovers == [], f"store has {leftovers} after a failure"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
