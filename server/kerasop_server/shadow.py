"""The shadow phase: copies of live requests answered again by the candidate, and compared.

Stable answers the client; :meth:`Shadow.offer` queues a copy of the request and of
stable's answer, and :meth:`Shadow.run` feeds the candidate batches of those copies on its
inference thread, counting agreement per candidate version (what the rollout judges).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import numpy as np

from .loader import ServedModel
from .metrics import Metrics
from .routing import SHADOW_QUEUE_SIZE, requests_agree, rows_agree

log = logging.getLogger(__name__)


class Shadow:
    def __init__(
        self,
        metrics: Metrics,
        max_batch_size: int,
        candidate: Callable[[], ServedModel | None],
        tolerance: Callable[[], float],
    ) -> None:
        """``candidate``: the version shadowed now; ``tolerance``: the plan's for numbers."""
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self._candidate = candidate
        self._tolerance = tolerance
        self.queue: asyncio.Queue[tuple[ServedModel, np.ndarray, np.ndarray]] = asyncio.Queue(
            SHADOW_QUEUE_SIZE
        )

    def offer(self, batch: np.ndarray, answer: np.ndarray) -> None:
        """Queue a copy for the candidate; a full queue drops it (the live path never waits)."""
        candidate = self._candidate()
        if candidate is None:
            return
        try:
            self.queue.put_nowait((candidate, batch, answer))
        except asyncio.QueueFull:
            self.metrics.shadow.labels(str(candidate.version), "dropped").inc()

    async def run(self) -> None:
        """Take what is queued (up to a batch of rows) and run it as one model call on
        the candidate's inference thread; copies queued meanwhile wait (or are dropped)."""
        queue = self.queue
        while True:
            copies = [await queue.get()]
            rows = len(copies[0][1])
            while rows < self.max_batch_size and not queue.empty():
                copies.append(queue.get_nowait())
                rows += len(copies[-1][1])
            candidate = self._candidate()
            current = [c for c in copies if c[0] is candidate]  # else the rollout moved on
            if candidate is None or not current:
                continue
            by_shape: dict[tuple[int, ...], list[tuple[np.ndarray, np.ndarray]]] = {}
            for _, batch, answer in current:
                by_shape.setdefault(batch.shape[1:], []).append((batch, answer))
            for group in by_shape.values():
                try:
                    await self._compare(candidate, group)
                except Exception:  # a comparison bug must not end the shadow for good
                    log.exception("comparing shadow answers of version %d", candidate.version)

    async def _compare(
        self, candidate: ServedModel, copies: list[tuple[np.ndarray, np.ndarray]]
    ) -> None:
        """One model call on the candidate for ``copies`` (same row shape), then one
        vectorised comparison with stable's answers."""
        label = str(candidate.version)
        started = time.perf_counter()
        try:
            batch = copies[0][0] if len(copies) == 1 else np.concatenate([b for b, _ in copies])
            shadow_answer = await candidate.predict(batch, background=True)
            answer = np.concatenate([a for _, a in copies])
        except Exception as exc:
            self.metrics.shadow.labels(label, "error").inc(len(copies))
            log.debug("shadow prediction on version %s failed: %s", label, exc)
            return
        seconds = time.perf_counter() - started
        latency = self.metrics.shadow_latency.labels(label)
        for _ in copies:
            latency.observe(seconds)
        kind = (candidate.metadata.get("output") or {}).get("kind")
        tolerance = self._tolerance()
        same = requests_agree(
            rows_agree(answer, shadow_answer, kind, tolerance), [len(b) for b, _ in copies]
        )
        agreed = int(same.sum())
        self.metrics.shadow.labels(label, "agree").inc(agreed)
        self.metrics.shadow.labels(label, "disagree").inc(len(copies) - agreed)
