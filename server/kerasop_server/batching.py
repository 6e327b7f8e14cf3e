"""Server-side dynamic batching.

Requests are queued; one task per loaded model version takes the first
waiting request and every other one already waiting (up to
``max_batch_size`` rows), merges them into one array and runs one model call
on the version's inference thread. While that call runs, new requests queue
up, so under load batches form without any waiting.

The batcher waits (at most ``timeout`` seconds) for more requests only while
others are on their way in: announced with :meth:`Batcher.arriving` by the
HTTP handler while it reads and decodes a body. A lone client (concurrency 1)
is therefore never kept waiting for a batch window that nobody will fill, and
a fast model is not held back by a window it does not need.

A model that answers in well under a millisecond (the last call's time per
row times the rows, below ``INLINE_SECONDS``) runs on the event loop itself:
the hand-off to the inference thread and back costs more than such a call.
A lone request (nothing else queued or arriving) runs there too when the model
answers it within ``LONE_INLINE_SECONDS``: no other request waits on the loop
meanwhile, so the thread would only add its two wake-ups to that client's latency.
Work submitted as ``background`` (shadow copies) always runs on the inference
thread: it must never hold up the event loop that answers live requests.

- A request is never split: one with more rows than ``max_batch_size`` runs
  as a batch of its own. ``max_batch_size=1`` therefore turns merging off.
- Only requests whose rows have the same shape are merged (models with a
  dimension of free size).
- A request whose client went away (its future was cancelled) is skipped.
- A model failure fails every request of that batch with :class:`ModelError`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

# Model calls expected to take less than this run on the event loop (see Batcher._inline).
INLINE_SECONDS = 0.0003
# ... and so does a lone request's call up to this (nothing else waits on the loop meanwhile).
LONE_INLINE_SECONDS = 0.005


class ModelError(RuntimeError):
    """The model failed on a batch (a server-side error: HTTP 500)."""


class BatcherClosed(RuntimeError):
    """The batcher was shut down before the request ran (HTTP 503)."""


@dataclass
class _Item:
    batch: np.ndarray
    future: asyncio.Future[np.ndarray]
    background: bool = False
    queued_at: float = field(default_factory=time.perf_counter)


BatchObserver = Callable[[int, float, float], None]  # rows, seconds in model, queue wait


class Batcher:
    def __init__(
        self,
        predict: Callable[[np.ndarray], np.ndarray],
        *,
        max_batch_size: int,
        timeout: float,
        executor: concurrent.futures.Executor,
        observe: BatchObserver | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self._predict = predict
        self.max_batch_size = max_batch_size
        self.timeout = max(0.0, timeout)
        self._executor = executor
        self._observe = observe
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._arriving = 0  # requests being read and decoded, soon to be submitted
        self._row_seconds: float | None = None  # the last call's model time per row
        self.batches = 0  # model calls made (for tests and logs)
        self.rows = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Mark a request whose body is being read and decoded: a batch being
        collected waits for it (up to ``timeout``). Leave the block right
        before :meth:`submit` (no ``await`` in between)."""
        self._arriving += 1
        try:
            yield
        finally:
            self._arriving -= 1

    async def submit(self, batch: np.ndarray, *, background: bool = False) -> np.ndarray:
        """Queue ``batch`` (rows along axis 0); returns the model's rows for it.
        ``background``: never run it on the event loop (see the module notes)."""
        if self._closed:
            raise BatcherClosed("the model version is being unloaded")
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(batch, future, background))
        return await future

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def close(self) -> None:
        """Stop the batching task; requests still queued fail with BatcherClosed."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if not item.future.done():
                item.future.set_exception(BatcherClosed("the model version was unloaded"))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        carry: _Item | None = None
        while True:
            first = carry if carry is not None else await self._queue.get()
            carry = None
            if first.future.done():  # cancelled by its client
                continue
            items, rows = [first], len(first.batch)
            row_shape = first.batch.shape[1:]
            deadline = loop.time() + self.timeout
            while rows < self.max_batch_size:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if self._arriving == 0 or remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self._queue.get(), remaining)
                    except TimeoutError:
                        break
                if item.future.done():
                    continue
                if (
                    rows + len(item.batch) > self.max_batch_size
                    or item.batch.shape[1:] != row_shape
                ):
                    carry = item  # first in line for the next batch
                    break
                items.append(item)
                rows += len(item.batch)
            await self._execute(items, rows)

    def _timed_predict(self, batch: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        out = self._predict(batch)
        self._row_seconds = (time.perf_counter() - started) / max(1, len(batch))
        return out

    def _inline(self, items: list[_Item], rows: int) -> bool:
        """Run on the event loop when the model is known to answer this batch in
        well under a millisecond, or a lone request within a few milliseconds while
        no other request is queued or arriving: handing it to the inference thread
        and back (two wake-ups, each late on a busy CPU) would cost more than it saves."""
        if self._row_seconds is None or any(i.background for i in items):
            return False
        expected = self._row_seconds * rows
        lone = len(items) == 1 and self._queue.empty() and self._arriving == 0
        return expected < (LONE_INLINE_SECONDS if lone else INLINE_SECONDS)

    async def _execute(self, items: list[_Item], rows: int) -> None:
        loop = asyncio.get_running_loop()
        batch = items[0].batch if len(items) == 1 else np.concatenate([i.batch for i in items])
        started = time.perf_counter()
        wait = started - min(i.queued_at for i in items)
        try:
            if self._inline(items, rows):
                out = self._timed_predict(batch)
            else:
                out = await loop.run_in_executor(self._executor, self._timed_predict, batch)
            out = np.asarray(out)
            if out.ndim == 0 or out.shape[0] != rows:
                raise ModelError(
                    f"the model returned {out.shape[0] if out.ndim else 'a scalar'} rows for {rows}"
                )
        except asyncio.CancelledError:
            for item in items:
                if not item.future.done():
                    item.future.set_exception(BatcherClosed("the model version was unloaded"))
            raise
        except Exception as exc:
            error = (
                exc if isinstance(exc, ModelError) else ModelError(f"{type(exc).__name__}: {exc}")
            )
            for item in items:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        finally:
            self.batches += 1
            self.rows += rows
            if self._observe is not None:
                self._observe(rows, time.perf_counter() - started, wait)
        offset = 0
        for item in items:
            n = len(item.batch)
            if not item.future.done():
                item.future.set_result(out[offset : offset + n])
            offset += n
