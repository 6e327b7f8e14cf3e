"""Waiting on a condition: the one polling helper of the component and e2e tiers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

NOT_THERE_YET = (AssertionError, KeyError, TypeError, IndexError)


def wait_for(
    what: str,
    probe: Callable[[], Any],
    *,
    timeout: float = 30,
    interval: float = 0.2,
    diagnose: Callable[[], str] | None = None,
    fail_if: Callable[[Any], str | None] | None = None,
) -> Any:
    """Poll ``probe`` until it returns something truthy; return that value.

    A probe that raises one of NOT_THERE_YET (an object not created yet, a flaky API call)
    is polled again. ``fail_if(value)`` may return a message to stop early (a job that
    Failed while we wait for Succeeded). On timeout or early stop, fails with the last value
    or error and ``diagnose()`` appended.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    last_exc: BaseException | None = None
    while True:
        try:
            last = probe()
            last_exc = None
        except NOT_THERE_YET as exc:
            last_exc = exc
            last = None
        if last:
            return last
        if fail_if is not None:
            reason = fail_if(last)
            if reason:
                _fail(f"while waiting for {what}: {reason}", last, last_exc, diagnose)
        if time.monotonic() > deadline:
            _fail(f"timed out after {timeout:.0f}s waiting for {what}", last, last_exc, diagnose)
        time.sleep(interval)


def _fail(
    msg: str, last: Any, exc: BaseException | None, diagnose: Callable[[], str] | None
) -> None:
    parts = [msg]
    if exc is not None:
        parts.append(f"last error: {exc!r}")
    elif last is not None:
        parts.append(f"last value: {str(last)[:2000]}")
    if diagnose is not None:
        try:
            parts.append(diagnose())
        except Exception as dexc:
            parts.append(f"(diagnostics failed: {dexc})")
    pytest.fail("\n".join(parts), pytrace=False)
