"""Two versions in one server: the rollout plan, the weighted split, shadow comparison.

The operator (or ``kerasop serve`` locally) writes the plan into a small JSON
file the server polls (in a pod: a ConfigMap volume)::

    {"stable": 3, "candidate": 4, "weight": 10, "shadow": false, "tolerance": 0.0}

- ``weight``: percent of requests without a version in their path that go to
  the candidate. The split is a deterministic accumulator, not a coin: after
  n requests the candidate has answered ``floor(n * weight / 100)`` of them
  (exact with one replica, and per pod with several).
- ``shadow``: the candidate gets a copy of every request stable answered, in
  a background task fed by a bounded queue (a full queue drops the copy, so the
  live path never waits for the shadow); its answer is only compared. The
  task merges the queued copies into one model call on the candidate's
  inference thread (never on the event loop) and compares them in one go.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SHADOW_QUEUE_SIZE = 64


@dataclass(frozen=True)
class RolloutPlan:
    stable: int | None = None
    candidate: int | None = None
    weight: int = 0
    shadow: bool = False
    tolerance: float = 0.0

    @classmethod
    def from_json(cls, data: Any) -> RolloutPlan:
        if not isinstance(data, dict):
            raise ValueError("the rollout file must hold a JSON object")

        def version(key: str) -> int | None:
            value = data.get(key)
            if value is None:
                return None
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key} must be a version number >= 1")
            return value

        weight = data.get("weight", 0)
        if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= 100:
            raise ValueError("weight must be an integer between 0 and 100")
        tolerance = data.get("tolerance", 0.0)
        if not isinstance(tolerance, int | float) or tolerance < 0:
            raise ValueError("tolerance must be a number >= 0")
        return cls(
            stable=version("stable"),
            candidate=version("candidate"),
            weight=weight,
            shadow=bool(data.get("shadow", False)),
            tolerance=float(tolerance),
        )


def read_plan(path: Path) -> RolloutPlan | None:
    """The plan in ``path``; ``None`` when the file does not exist. Raises on a bad file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return RolloutPlan.from_json(json.loads(text))


class WeightedSplit:
    """Deterministic weighted choice: every 100 requests, exactly ``weight`` go to the candidate.

    A smooth accumulator spreads them evenly (10% = every tenth request), so a
    short window already holds the right share.
    """

    def __init__(self) -> None:
        self.weight = 0
        self._acc = 0

    def set_weight(self, weight: int) -> None:
        if weight != self.weight:
            self.weight, self._acc = weight, 0

    def to_candidate(self) -> bool:
        self._acc += self.weight
        if self._acc >= 100:
            self._acc -= 100
            return True
        return False


def rows_agree(
    stable: np.ndarray, shadow: np.ndarray, output_kind: str | None, tolerance: float
) -> np.ndarray:
    """For each row, whether the shadow's answer agrees with stable's (one vectorised
    comparison for a whole batch of shadow copies)."""
    a, b = np.asarray(stable, dtype=np.float64), np.asarray(shadow, dtype=np.float64)
    if a.shape != b.shape:
        return np.zeros(len(a), dtype=bool)
    if output_kind == "multiclass" or (output_kind is None and a.ndim == 2 and a.shape[1] > 1):
        same = a.argmax(axis=-1) == b.argmax(axis=-1)
    elif output_kind == "binary":
        same = (a > 0.5) == (b > 0.5)
    else:
        same = np.abs(a - b) <= tolerance
    agreed: np.ndarray = same.reshape(len(a), -1).all(axis=1)
    return agreed


def requests_agree(row_agreement: np.ndarray, request_rows: list[int]) -> np.ndarray:
    """For each request (``request_rows`` rows each, in order), whether all its rows agree."""
    starts = np.cumsum([0, *request_rows[:-1]])
    return np.logical_and.reduceat(row_agreement, starts)
