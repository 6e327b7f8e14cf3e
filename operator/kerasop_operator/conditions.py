"""Status conditions with Kubernetes semantics.

``lastTransitionTime`` changes only when a condition's ``status`` flips; a new
``reason`` or ``message`` with the same status keeps the old timestamp.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from kerasop.status import Condition

ConditionStatus = Literal["True", "False", "Unknown"]


@dataclass(frozen=True)
class Cond:
    """What the operator observed for one condition type (no timestamp yet)."""

    type: str
    status: ConditionStatus
    reason: str
    message: str = ""

    @classmethod
    def of(cls, type: str, value: bool, reason: str, message: str = "") -> Cond:
        return cls(type, "True" if value else "False", reason, message)


def merge_conditions(
    old: list[dict[str, Any]] | None,
    observed: list[Cond],
    *,
    now: str,
    generation: int | None = None,
) -> list[dict[str, Any]]:
    """The new ``status.conditions`` list.

    Conditions in ``observed`` come first, in that order; conditions of other
    types already present in ``old`` (set by someone else) are kept unchanged.
    """
    previous = {c.get("type"): c for c in old or [] if isinstance(c, dict)}
    out: list[dict[str, Any]] = []
    for cond in observed:
        before = previous.get(cond.type)
        if before is not None and before.get("status") == cond.status:
            since = before.get("lastTransitionTime") or now
        else:
            since = now
        item: dict[str, Any] = {
            "type": cond.type,
            "status": cond.status,
            "reason": cond.reason,
            "message": cond.message,
            "lastTransitionTime": since,
        }
        if generation is not None:
            item["observedGeneration"] = generation
        out.append(item)
    mine = {c.type for c in observed}
    out.extend(c for t, c in previous.items() if t not in mine)
    return out


def status_conditions(
    old: list[dict[str, Any]] | None,
    observed: list[Cond],
    *,
    now: str,
    generation: int | None = None,
) -> list[Condition]:
    """``merge_conditions`` as the typed conditions of a status model."""
    merged = merge_conditions(old, observed, now=now, generation=generation)
    return [Condition.model_validate(c) for c in merged]


def find(conditions: list[dict[str, Any]] | None, type: str) -> dict[str, Any] | None:
    for cond in conditions or []:
        if isinstance(cond, dict) and cond.get("type") == type:
            return cond
    return None
