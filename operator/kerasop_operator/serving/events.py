"""Kubernetes Events posted when a service's phase or served version changes."""

from __future__ import annotations

from typing import Any


def phase_event(old: dict[str, Any] | None, new: dict[str, Any]) -> tuple[str, str, str] | None:
    """Kubernetes Events for a service: phase transitions and a newly served version."""
    old = old or {}
    if new.get("servingVersion") and new.get("servingVersion") != old.get("servingVersion"):
        before = old.get("servingVersion")
        return (
            "Normal",
            "Serving",
            f"serving model {new.get('modelName')} version {new['servingVersion']}"
            + (f" (was {before})" if before else ""),
        )
    before, after = old.get("phase"), new.get("phase")
    if before == after or after is None:
        return None
    if after == "Failed":
        reason = next(
            (c.get("reason") for c in new.get("conditions") or [] if c.get("type") == "Degraded"),
            "",
        )
        return ("Warning", "Failed", f"model server failing: {reason}")
    if after == "Ready":
        return ("Normal", "Ready", f"model server ready ({new.get('ready')})")
    if after == "Progressing":
        return ("Normal", "RollingOut", "rolling out the model server")
    return None
