"""The closed loop on this machine: what the operator does for a KerasModelService with
``spec.rollout``, for ``kerasop serve`` (no cluster).

A thread steps the same state machine (``kerasop.rollout``) every few seconds:
the store's latest version and its ``metadata.json`` (metrics, lineage) in, the
local server's ``/metrics`` as the per-version counters, and out come the
rollout file the server polls and a status file (the local ``status``):

    <workdir>/rollout/<service>.json          the plan (stable, candidate, weight, shadow)
    <workdir>/rollout/<service>.status.json   {"rollout": ..., "history": [...]}

``kerasop history`` prints a model's versions from the store, with the outcome
and reason from that status file when there is one.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, TextIO

from kerasop import rollout
from kerasop.server_metrics import parse_server_metrics
from kerasop.spec import RolloutSpec
from kerasop.status import now_rfc3339
from kerasop.store import ModelStore, write_json_atomic


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class LocalRollout:
    """Gate/shadow/canary of new versions for one locally served model."""

    def __init__(
        self,
        policy: RolloutSpec,
        store: Path,
        model: str,
        plan_file: Path,
        metrics_url: str,
        *,
        pinned: int | None = None,
        interval: float = 2.0,
        out: TextIO = sys.stderr,
    ) -> None:
        self.policy, self.store, self.model = policy, ModelStore(store), model
        self.plan_file = plan_file
        self.status_file = plan_file.with_suffix(".status.json")
        self.metrics_url, self.pinned, self.interval, self.out = metrics_url, pinned, interval, out
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="local-rollout", daemon=True)

    def start(self) -> None:
        self.step()  # the plan exists before the server starts: it never serves an ungated version
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.step()
            except Exception as exc:  # keep stepping: the server keeps serving the last plan
                print(f"rollout: {exc}", file=self.out)

    def _metadata(self, version: int) -> dict[str, Any]:
        try:
            return self.store.metadata(self.model, version).to_json_dict()
        except (OSError, ValueError):
            return {}

    def _counters(self) -> rollout.Counters:
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=3) as response:
                return parse_server_metrics([response.read().decode()])
        except OSError:
            return {}  # not up yet

    def step(self) -> rollout.RolloutState:
        saved = read_json(self.status_file)
        state = rollout.RolloutState.from_status(saved.get("rollout"))
        history = list(saved.get("history") or [])
        latest = self.pinned or self.store.latest(self.model)
        metadata = rollout.known_metadata(
            history, latest, self._metadata(latest) if latest is not None else {}
        )
        decision = rollout.step(
            self.policy,
            state,
            history,
            latest=latest,
            metadata=metadata,
            counters=self._counters() if state.candidate else {},
            now=time.time(),
            now_text=now_rfc3339(),
            pinned=self.pinned,
            manual=rollout.Manual.of(self.policy, None),
        )
        self.plan_file.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.status_file, {"rollout": decision.state.to_status(),
                                             "history": decision.history})  # fmt: skip
        write_json_atomic(self.plan_file, rollout.routing(decision.state))
        for kind, reason, message in decision.events:
            print(f"rollout: {kind} {reason}: {message}", file=self.out, flush=True)
        return decision.state


def history_rows(store: Path, model: str, status_file: Path | None = None) -> list[dict[str, Any]]:
    """Every version of ``model`` in the store: lineage and metrics, outcome when known."""
    outcomes = {
        e.get("version"): e
        for e in (read_json(status_file).get("history") or [] if status_file else [])
    }
    rows = []
    models = ModelStore(store)
    for version in models.versions(model):
        meta: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            meta = models.metadata(model, version).to_json_dict()
        lineage = meta.get("lineage") or {}
        known = outcomes.get(version) or {}
        rows.append(
            {
                "version": version,
                "created": meta.get("createdAt", "?"),
                "job": lineage.get("job", "?"),
                "specHash": lineage.get("specHash", "?"),
                "data": (lineage.get("dataFingerprint") or "?").removeprefix("sha256:")[:12],
                "metrics": " ".join(
                    f"{k}={v:.4g}"
                    for k, v in sorted((meta.get("metrics") or {}).items())
                    if isinstance(v, int | float)
                ),
                "outcome": known.get("outcome", ""),
                "reason": known.get("reason", ""),
            }
        )
    return rows


def format_history(rows: list[dict[str, Any]]) -> str:
    columns = ["version", "created", "job", "specHash", "data", "metrics", "outcome", "reason"]
    table = [[c.upper() for c in columns]] + [[str(r[c]) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in table
    )
